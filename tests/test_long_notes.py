"""Long notes: a label carried only by words past token 512 is learnable when the note is read in windows, not when
only its head is read."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medmplm.data.features import VisitFeaturizer
from medmplm.models import MedMPLMConfig, MedMPLMModel
from medmplm.models.testing_utils import write_tiny_prepared_dir
from medmplm.models.tokenization import train_wordpiece_tokenizer
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.tasks.encoders import TextOnlyEncoder

# Single letters: each is one WordPiece token (the alphabet), so word i of a note is token i. The filler is the same
# in every note, so nothing before the markers tells the labels apart (nor can be memorised).
FILLER = "a"
MARKERS = ("x", "y")
# The note's last words, past the 512 tokens the paper (and `head` of any BERT) reads, like a discharge summary's
# discharge diagnoses.
MARKER_SPAN = slice(516, 530)
NOTE_LENGTH = 530


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def notes(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``count`` notes, half of each label, of the filler word ending in a run of one marker word: its kind is the
    label."""
    labels = np.random.default_rng(seed).permutation(np.arange(count) % 2)
    texts = []
    for label in labels:
        words = [FILLER] * NOTE_LENGTH
        words[MARKER_SPAN] = [MARKERS[label]] * (MARKER_SPAN.stop - MARKER_SPAN.start)
        texts.append(" ".join(words))
    return texts, labels.astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_wordpiece_tokenizer([" ".join([FILLER, *MARKERS])] * 4, vocab_size=64, model_max_length=128).save_pretrained(
        directory
    )
    return directory


def held_out_accuracy(prepared: Path, tokenizer_dir: Path, **note_reading) -> float:
    """Train MedM-PLM's text part (one layer) with a linear head on 16 notes; its accuracy on 16 others."""
    torch.manual_seed(0)
    config = MedMPLMConfig.from_preset(
        "tiny",
        text_num_layers=1,
        text_hidden_size=32,
        text_intermediate_size=64,
        text_num_frozen_layers=0,
        text_dropout=0.0,
        text_max_length=128,
        **note_reading,
    )
    backbone = build_medmplm(MedMPLMModel, prepared, config, tokenizer_dir=tokenizer_dir)
    featurizer = VisitFeaturizer.from_model(backbone)
    encoder = TextOnlyEncoder(backbone)
    head = nn.Linear(encoder.text_size, 1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)

    def inputs(texts: list[str]) -> dict[str, torch.Tensor]:
        empty = np.empty(len(texts), dtype=object)
        empty[:] = [[] for _ in texts]
        arrays = featurizer({"note_text": np.array(texts, dtype=object), "diagnoses": empty, "medications": empty})
        return {k: torch.from_numpy(arrays[k]) for k in ("input_ids", "attention_mask")}

    train_texts, train_labels = notes(16, seed=1)
    test_texts, test_labels = notes(16, seed=2)
    train_inputs, test_inputs = inputs(train_texts), inputs(test_texts)
    for _ in range(30):
        logits = head(encoder(**train_inputs).text).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(train_labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = head(encoder(**test_inputs).text).squeeze(-1) > 0
    return float((predicted.numpy() == test_labels.astype(bool)).mean())


def test_words_past_token_512_are_learnable_in_windows_and_not_from_the_head(tmp_path: Path, tokenizer_dir: Path) -> None:
    prepared = write_tiny_prepared_dir(tmp_path / "prepared", num_visits=6)
    # Five windows of 126 note tokens, none shared, read the first 630: the marker is in the fifth.
    windows = held_out_accuracy(prepared, tokenizer_dir, text_long_note="windows", text_max_windows=5, text_window_stride=126)
    head = held_out_accuracy(prepared, tokenizer_dir, text_long_note="head", text_max_windows=1)
    assert windows == 1.0
    # The head of every note is the same: one prediction for all, right on half of them.
    assert head == 0.5
