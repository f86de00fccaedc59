"""The ``bert-mlm`` family: note windows, masking with transformers' collator, the MLM objective and statistics, model
building (from scratch and continued), the Hugging Face round trip, and (slow) pretraining through the recipe."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM, BertModel

from medmplm.config import ConfigError, ModelSection
from medmplm.data.features import clean_note_text
from medmplm.models.bert_mlm import bert_config_for
from medmplm.models.tokenization import train_wordpiece_tokenizer
from medmplm.pretraining import get_family
from medmplm.pretraining.bert_mlm import (
    IGNORE_INDEX,
    NOTE_WINDOWS,
    OPTIONS_CONFIG_KEY,
    PRESETS,
    WORD_IDS,
    MaskedLanguageModelingTask,
    NoteWindowFeaturizer,
    log_window_counts,
    window_counts,
)
from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars

NOTES = [
    "Patient admitted with chest pain and shortness of breath. Troponin elevated; started on heparin drip.",
    "History of hypertension, type II diabetes mellitus (insulin dependent), chronic kidney disease stage 3.",
    "Discharged home on metoprolol, lisinopril and atorvastatin. Follow up with cardiology in two weeks.",
    "Echocardiogram showed ejection fraction of 35 percent with anterior wall hypokinesis.",
]
LONG_NOTE = " ".join(NOTES * 3)
SHORT_NOTE = "Chest pain."


@pytest.fixture(scope="module")
def tokenizer():
    """A WordPiece tokenizer trained on the notes above, windows of 16 tokens (14 of content)."""
    return train_wordpiece_tokenizer(
        [clean_note_text(note) for note in NOTES] * 10, vocab_size=150, model_max_length=16
    )


def content_ids(tokenizer, note: str) -> list[int]:
    return tokenizer(clean_note_text(note), add_special_tokens=False)["input_ids"]


def windows_by_note(rows: dict[str, np.ndarray]) -> list[list[int]]:
    """Row indices of each note's windows (a note's first window carries its window count)."""
    starts = list(np.flatnonzero(rows[NOTE_WINDOWS] > 0)) + [len(rows[NOTE_WINDOWS])]
    return [list(range(start, end)) for start, end in zip(starts[:-1], starts[1:])]


# --------------------------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [0, 3])
def test_windows_cover_every_token_of_a_note_in_cls_sep_frames(tokenizer, stride):
    featurizer = NoteWindowFeaturizer(tokenizer, window_stride=stride, word_ids=True)
    notes = np.array([LONG_NOTE, None, "", "  \n ", NOTES[1]], dtype=object)
    rows = featurizer({"note_text": notes})

    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    content = 16 - 2
    notes_with_text = [LONG_NOTE, NOTES[1]]  # None, "" and blank give no row
    groups = windows_by_note(rows)
    assert len(groups) == len(notes_with_text)
    for note, group in zip(notes_with_text, groups):
        ids = content_ids(tokenizer, note)
        step = content - stride
        expected = 1 if len(ids) <= content else math.ceil((len(ids) - stride) / step)
        assert len(group) == expected == rows[NOTE_WINDOWS][group[0]]
        covered = set()
        for index, row in enumerate(group):
            input_ids, attention = rows["input_ids"][row], rows["attention_mask"][row]
            length = int(attention.sum())
            assert input_ids[0] == cls and input_ids[length - 1] == sep
            assert (input_ids[length:] == pad).all() and not attention[length:].any()
            np.testing.assert_array_equal(rows["special_tokens_mask"][row], np.isin(input_ids, [cls, sep, pad]))
            window = list(input_ids[1 : length - 1])
            assert window == ids[index * step : index * step + content]
            covered.update(range(index * step, index * step + len(window)))
            words = tokenizer(clean_note_text(note), add_special_tokens=False).word_ids()
            assert list(rows[WORD_IDS][row][1 : length - 1]) == words[index * step : index * step + len(window)]
            assert (rows[WORD_IDS][row][rows["special_tokens_mask"][row] == 1] == -1).all()
        assert covered == set(range(len(ids)))
    for name, column in rows.items():
        assert column.dtype in (np.int32, np.int8), name
        assert column.shape[0] == len(rows["input_ids"])


def test_visits_without_a_note_give_no_rows(tokenizer):
    rows = NoteWindowFeaturizer(tokenizer, word_ids=True)({"note_text": np.array([None, "", " "], dtype=object)})
    assert {name: column.shape for name, column in rows.items()} == {
        "input_ids": (0, 16),
        "attention_mask": (0, 16),
        "special_tokens_mask": (0, 16),
        WORD_IDS: (0, 16),
        NOTE_WINDOWS: (0,),
    }


def test_window_cap_keeps_first_windows_and_is_counted_and_logged(tokenizer, caplog):
    notes = np.array([LONG_NOTE, None, SHORT_NOTE, LONG_NOTE], dtype=object)
    full = NoteWindowFeaturizer(tokenizer)({"note_text": notes})
    capped = NoteWindowFeaturizer(tokenizer, max_windows_per_note=2)({"note_text": notes})
    long_windows = len(windows_by_note(full)[0])
    assert long_windows > 2
    assert [len(group) for group in windows_by_note(capped)] == [2, 1, 2]
    # The kept windows are each note's first ones.
    first, _, last = windows_by_note(full)
    np.testing.assert_array_equal(capped["input_ids"][:2], full["input_ids"][first[:2]])
    np.testing.assert_array_equal(capped["input_ids"][3:], full["input_ids"][last[:2]])

    # Counted from the note_windows column, over batches.
    counts = window_counts([capped[NOTE_WINDOWS][:3], capped[NOTE_WINDOWS][3:]], cap=2)
    assert counts == {
        "windows": 5,
        "notes": 3,
        "windows_before_cap": len(full[NOTE_WINDOWS]),
        "capped_notes": 2,
    }
    with caplog.at_level(logging.INFO, logger="medmplm.pretraining.bert_mlm"):
        log_window_counts("train", 4, counts, cap=2)
    assert "train: 4 visits, 3 notes -> 5 windows (1.67 per note); 1 visits without a note" in caplog.text
    assert (
        f"train: 2 notes had more than max_windows_per_note=2 windows; {len(full[NOTE_WINDOWS]) - 5} windows dropped"
        in caplog.text
    )
    with pytest.raises(ValueError, match="train: none of the 3 visits has note text"):
        log_window_counts("train", 3, window_counts([np.zeros(0, np.int32)], cap=None), cap=None)


def test_stride_must_leave_the_window_moving(tokenizer):
    with pytest.raises(ValueError, match="window_stride must be in"):
        NoteWindowFeaturizer(tokenizer, window_stride=14)


# --------------------------------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------------------------------


def random_windows(tokenizer, rows: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Windows of random ordinary tokens, [CLS] ... [SEP] then padding, of random lengths."""
    generator = torch.Generator().manual_seed(seed)
    specials = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in specials])
    input_ids = torch.full((rows, length), tokenizer.pad_token_id)
    special = torch.ones(rows, length, dtype=torch.int8)
    attention = torch.zeros(rows, length, dtype=torch.int8)
    for row in range(rows):
        used = int(torch.randint(3, length + 1, (1,), generator=generator))
        input_ids[row, 1 : used - 1] = ordinary[torch.randint(len(ordinary), (used - 2,), generator=generator)]
        input_ids[row, 0], input_ids[row, used - 1] = tokenizer.cls_token_id, tokenizer.sep_token_id
        special[row, 1 : used - 1] = 0
        attention[row, :used] = 1
    return {"input_ids": input_ids.int(), "attention_mask": attention, "special_tokens_mask": special}


def test_masking_rates_and_never_masked_specials(tokenizer):
    task = MaskedLanguageModelingTask(tokenizer=tokenizer, mlm_probability=0.15)
    batch = random_windows(tokenizer, rows=64, length=64)
    original = batch["input_ids"].long()
    eligible = batch["special_tokens_mask"] == 0
    masked = mask_token = replaced = kept = drawn_eligible = 0
    for seed in range(20):
        inputs = task.model_inputs(batch, torch.Generator().manual_seed(seed), training=True)
        labels = inputs["labels"]
        chosen = labels != IGNORE_INDEX
        assert not chosen[~eligible].any(), "a special token or padding was labelled"
        assert torch.equal(inputs["input_ids"][~eligible], original[~eligible]), "a special token or padding changed"
        assert torch.equal(labels[chosen], original[chosen])
        assert torch.equal(inputs["attention_mask"], batch["attention_mask"].long())
        masked += int(chosen.sum())
        drawn_eligible += int(eligible.sum())
        mask_token += int((inputs["input_ids"][chosen] == tokenizer.mask_token_id).sum())
        kept += int((inputs["input_ids"][chosen] == original[chosen]).sum())
        replaced += int(
            (
                (inputs["input_ids"][chosen] != tokenizer.mask_token_id)
                & (inputs["input_ids"][chosen] != original[chosen])
            ).sum()
        )
    assert masked / drawn_eligible == pytest.approx(0.15, abs=0.01)
    assert mask_token / masked == pytest.approx(0.8, abs=0.02)
    assert replaced / masked == pytest.approx(0.1, abs=0.02)
    assert kept / masked == pytest.approx(0.1, abs=0.02)
    # The featurised batch itself is untouched (the loop may reuse it).
    assert torch.equal(batch["input_ids"].long(), original)


def test_masks_come_from_the_given_generator_only(tokenizer):
    task = MaskedLanguageModelingTask(tokenizer=tokenizer)
    batch = random_windows(tokenizer, rows=8, length=32)
    first = task.model_inputs(batch, torch.Generator().manual_seed(7), training=True)
    torch.manual_seed(123)  # the global generator plays no part
    again = task.model_inputs(batch, torch.Generator().manual_seed(7), training=True)
    other = task.model_inputs(batch, torch.Generator().manual_seed(8), training=True)
    assert torch.equal(first["labels"], again["labels"]) and torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["labels"], other["labels"])
    # Nothing of the generator stays in the task, which travels to the workers by pickle.
    assert task.collator.generator is None
    restored = pickle.loads(pickle.dumps(task))
    assert torch.equal(restored.model_inputs(batch, torch.Generator().manual_seed(7), True)["labels"], first["labels"])


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer):
    featurizer = NoteWindowFeaturizer(tokenizer, word_ids=True)
    rows = featurizer({"note_text": np.array([LONG_NOTE] * 4, dtype=object)})
    batch = {name: torch.from_numpy(rows[name]) for name in featurizer.model_columns}
    word_ids = batch[WORD_IDS]
    assert (word_ids[:, 1:] == word_ids[:, :-1]).any(), "the test needs words of several pieces"
    task = MaskedLanguageModelingTask(tokenizer=tokenizer, mlm_probability=0.2, whole_word_mask=True)
    masked_words = total_words = 0
    for seed in range(30):
        inputs = task.model_inputs(batch, torch.Generator().manual_seed(seed), training=True)
        chosen = inputs["labels"] != IGNORE_INDEX
        assert not chosen[batch["special_tokens_mask"].bool()].any()
        for row in range(len(word_ids)):
            for word in word_ids[row][word_ids[row] >= 0].unique():
                pieces = chosen[row][word_ids[row] == word]
                assert pieces.all() or not pieces.any(), f"word {int(word)} of row {row} partly masked"
                masked_words += int(pieces.all())
                total_words += 1
        # transformers' whole-word masking replaces every masked token by [MASK].
        assert (inputs["input_ids"][chosen] == tokenizer.mask_token_id).all()
    assert masked_words / total_words == pytest.approx(0.2, abs=0.03)


def test_a_batch_with_nothing_drawn_still_predicts_one_token(tokenizer):
    task = MaskedLanguageModelingTask(tokenizer=tokenizer, mlm_probability=0.01)
    batch = random_windows(tokenizer, rows=1, length=8, seed=3)
    eligible = batch["special_tokens_mask"][0] == 0
    for seed in range(5):
        inputs = task.model_inputs(batch, torch.Generator().manual_seed(seed), training=True)
        chosen = inputs["labels"][0] != IGNORE_INDEX
        assert int(chosen.sum()) >= 1 and eligible[chosen].all()


# --------------------------------------------------------------------------------------------------------------------
# Objective, statistics, Hugging Face round trip
# --------------------------------------------------------------------------------------------------------------------


def small_bert(tokenizer) -> BertForMaskedLM:
    torch.manual_seed(0)
    values = {**PRESETS["tiny"], "hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 32}
    return BertForMaskedLM(bert_config_for(values, len(tokenizer), tokenizer.pad_token_id)).eval()


def test_loss_is_cross_entropy_over_masked_tokens_and_accuracy_counts_argmax_hits(tokenizer):
    model = small_bert(tokenizer)
    batch = random_windows(tokenizer, rows=2, length=12, seed=1)
    input_ids, attention_mask = batch["input_ids"].long(), batch["attention_mask"].long()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    predicted = logits.argmax(dim=-1)
    # Three predicted positions: two labelled with the model's argmax (hits), one with another token (a miss).
    positions = [(0, 1), (0, 2), (1, 1)]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, 1], labels[0, 2] = predicted[0, 1], predicted[0, 2]
    labels[1, 1] = (predicted[1, 1] + 1) % len(tokenizer)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    with torch.no_grad():
        output = model(**inputs)
    rows, columns = zip(*positions)
    expected = F.cross_entropy(logits[list(rows), list(columns)], labels[list(rows), list(columns)])
    torch.testing.assert_close(output.loss, expected)

    stats = MaskedLanguageModelingTask(tokenizer=tokenizer).batch_statistics(output, inputs)
    assert set(stats) == {"loss_mlm", "masked_token_accuracy"}
    total, weight = stats["loss_mlm"]
    assert float(weight) == 3
    torch.testing.assert_close(total, expected * 3)
    hits, weight = stats["masked_token_accuracy"]
    assert (float(hits), float(weight)) == (2, 3)


def test_round_trip_through_auto_classes_gives_identical_outputs(tokenizer, tmp_path):
    model = small_bert(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    batch = random_windows(tokenizer, rows=3, length=16, seed=2)
    inputs = {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}

    masked_lm = AutoModelForMaskedLM.from_pretrained(tmp_path, local_files_only=True).eval()
    encoder = AutoModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert isinstance(masked_lm, BertForMaskedLM) and isinstance(encoder, BertModel)
    with torch.no_grad():
        torch.testing.assert_close(masked_lm(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
        torch.testing.assert_close(
            encoder(**inputs).last_hidden_state, model.bert(**inputs).last_hidden_state, rtol=0, atol=0
        )
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded(clean_note_text(NOTES[0]))["input_ids"] == tokenizer(clean_note_text(NOTES[0]))["input_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Building the model
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes_prepared(tmp_path_factory) -> Path:
    """A prepared directory as far as bert-mlm reads it: training visits with note text."""
    prepared = tmp_path_factory.mktemp("prepared")
    (prepared / "visits" / "train").mkdir(parents=True)
    table = pa.table({"note_text": [*NOTES, None] * 5})
    pq.write_table(table, prepared / "visits" / "train" / "part-0.parquet")
    return prepared


def build(prepared: Path, **section) -> object:
    torch.manual_seed(0)
    return get_family("bert-mlm").build_model(str(prepared), ModelSection(family="bert-mlm", **section))


def test_build_from_scratch_records_window_and_options(notes_prepared):
    built = build(notes_prepared, options={"window_stride": 8, "whole_word_mask": True})
    config = built.model.config
    assert isinstance(built.model, BertForMaskedLM)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        64,
        2,
        2,
        128,
    )
    assert config.vocab_size == len(built.tokenizer) <= 2000
    assert config.pad_token_id == built.tokenizer.pad_token_id
    assert built.tokenizer.model_max_length == 128
    assert getattr(config, OPTIONS_CONFIG_KEY) == {
        "mlm_probability": 0.15,
        "whole_word_mask": True,
        "window_stride": 8,
        "max_windows_per_note": None,
    }
    assert built.description.startswith(f"tiny preset from scratch, WordPiece {len(built.tokenizer)} trained on the")
    assert "windows of 128 tokens (stride 8)" in built.description


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"options": {"mask_rate": 0.2}}, "model.options.mask_rate"),
        ({"options": {"mlm_probability": 1.5}}, "model.options.mlm_probability"),
        ({"options": {"window_stride": 126}}, "model.options.window_stride"),
        ({"options": {"max_windows_per_note": 0}}, "model.options.max_windows_per_note"),
        ({"overrides": {"hidden_layers": 3}}, "model.overrides.hidden_layers"),
        ({"overrides": {"hidden_size": 65}}, "model.overrides"),
        ({"preset": "huge"}, "model.preset"),
    ],
)
def test_wrong_settings_name_their_key(notes_prepared, section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(notes_prepared, **section)


def test_continue_from_a_checkpoint_or_a_bare_encoder(notes_prepared, tmp_path):
    first = build(notes_prepared)
    checkpoint = tmp_path / "mlm"
    first.model.save_pretrained(checkpoint)
    first.tokenizer.save_pretrained(checkpoint)

    continued = build(notes_prepared, text_checkpoint=str(checkpoint), options={"mlm_probability": 0.2})
    assert continued.description.startswith(f"continued from {checkpoint};")
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(continued.model.state_dict()[name], tensor), name
    assert continued.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert continued.tokenizer.model_max_length == 128
    assert getattr(continued.model.config, OPTIONS_CONFIG_KEY)["mlm_probability"] == 0.2

    # A BertModel (no MLM head): the encoder is the checkpoint's, the head starts fresh, and the description says so.
    encoder_only = tmp_path / "encoder"
    first.model.bert.save_pretrained(encoder_only)
    first.tokenizer.save_pretrained(encoder_only)
    headless = build(notes_prepared, init_from=str(encoder_only), overrides={"max_length": 64})
    assert "(fresh MLM head)" in headless.description
    for name, tensor in first.model.bert.state_dict().items():
        assert torch.equal(headless.model.bert.state_dict()[name], tensor), name
    assert headless.tokenizer.model_max_length == 64

    with pytest.raises(ConfigError, match=r"model\.overrides\.hidden_size: the checkpoint"):
        build(notes_prepared, text_checkpoint=str(checkpoint), overrides={"hidden_size": 32})
    with pytest.raises(ConfigError, match=r"model\.text_checkpoint: .* has no config\.json"):
        build(notes_prepared, text_checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"model\.overrides\.max_length: expected an integer in \[3, 512\]"):
        build(notes_prepared, text_checkpoint=str(checkpoint), overrides={"max_length": 1024})


def test_task_and_datasets_read_the_options_saved_with_the_initial_model(notes_prepared, tmp_path):
    built = build(notes_prepared, options={"whole_word_mask": True, "mlm_probability": 0.3})
    built.model.save_pretrained(tmp_path)
    built.tokenizer.save_pretrained(tmp_path)
    family = get_family("bert-mlm")
    task = family.task(tmp_path)
    assert (task.mlm_probability, task.whole_word_mask) == (0.3, True)
    model = task.load_model(tmp_path)
    assert isinstance(model, BertForMaskedLM) and model.training
    assert family.load_model(tmp_path).training


# --------------------------------------------------------------------------------------------------------------------
# End to end through the recipe
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_zero2_pretraining_exports_a_text_checkpoint_medmplm_accepts(ray_local, synthetic_prepared, tmp_path):
    run_dir = tmp_path / "mlm"
    run_pretraining(
        "model.family=bert-mlm",
        # Two windows of each note: about 20 steps per epoch.
        "model.options.max_windows_per_note=2",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=mlm",
        "train.epochs=2",
        "train.checkpoint_every_steps=null",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "mlm.log",
    )
    values = tensorboard_scalars(run_dir / "tensorboard")
    losses = values["train/loss"]
    assert len(losses) >= 8, losses
    first, last = np.mean([v for _, v in losses[:3]]), np.mean([v for _, v in losses[-3:]])
    assert last < first * 0.9, f"train loss did not go down: first steps {losses[:3]}, last steps {losses[-3:]}"
    assert values["val/masked_token_accuracy"], "validation reports no masked_token_accuracy"

    export = run_dir / "export"
    encoder = AutoModel.from_pretrained(export, local_files_only=True).eval()
    masked_lm = AutoModelForMaskedLM.from_pretrained(export, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(export, local_files_only=True)
    assert isinstance(encoder, BertModel) and isinstance(masked_lm, BertForMaskedLM)
    assert tokenizer.model_max_length == 128
    inputs = tokenizer([clean_note_text(note) for note in NOTES], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(**inputs).last_hidden_state, masked_lm.bert(**inputs).last_hidden_state, rtol=0, atol=0
        )
    # The export holds trained weights, the tied decoder still the word embeddings.
    initial = BertForMaskedLM.from_pretrained(run_dir / "initial_model", local_files_only=True).state_dict()
    trained = masked_lm.state_dict()
    assert not torch.equal(
        trained["bert.encoder.layer.0.attention.self.query.weight"],
        initial["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert torch.equal(masked_lm.cls.predictions.decoder.weight, masked_lm.bert.embeddings.word_embeddings.weight)

    # MedM-PLM takes the export as its text encoder.
    run_pretraining(
        "model.family=medmplm",
        f"model.text_checkpoint={export}",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=medmplm",
        "scaling.num_workers=2",
        "train.epochs=1",
        "train.max_steps=2",
        "train.global_batch_size=16",
        "train.micro_batch_size=8",
        "logging.progress_bar=false",
        log=tmp_path / "medmplm.log",
    )
