"""The BiLSTM-CRF tagger: CRF decoding on a hand-built example, piece pooling, windows, save/load, and a falling
loss for each kind of word vectors (in process; tests/test_ner_finetune.py runs the shared loop)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForTokenClassification, BertConfig, BertModel

from medmplm.models.ner import NO_TAG, BiLstmCrfConfig, BiLstmCrfForTokenClassification, pool_pieces
from medmplm.models.text_encoder import text_config_dict
from medmplm.models.tokenization import train_wordpiece_tokenizer
from medmplm.tasks.ner import NerDataError, SentenceFeaturizer, join_windows, tag_names

TAGS = tag_names(["problem", "test"])
SENTENCES = [
    ["chest", "pain", "resolved", "after", "aspirin"],
    ["cxr", "showed", "pneumonia"],
    ["denies", "fever", ",", "chills", "or", "chest", "pain"],
    ["troponin", "was", "negative"],
]
SENTENCE_TAGS = [
    ["B-problem", "I-problem", "O", "O", "O"],
    ["B-test", "O", "B-problem"],
    ["O", "B-problem", "O", "B-problem", "O", "B-problem", "I-problem"],
    ["B-test", "O", "O"],
]


def tagger_config(**values) -> BiLstmCrfConfig:
    return BiLstmCrfConfig(
        id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)}, lstm_hidden_size=16, **values
    )


def tiny_bert(vocab_size: int) -> BertModel:
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(config, add_pooling_layer=False)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [" ".join(s) for s in SENTENCES] * 5
    return train_wordpiece_tokenizer(texts, vocab_size=120, model_max_length=64)


class FixedEmissions(nn.Module):
    """Stands in for the emission layer: the same hand-built scores whatever the BiLSTM computed."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(states.shape[0], -1, -1)


def test_crf_decoding_follows_transitions_not_the_best_tag_of_each_word():
    tags = ["O", "B-p", "I-p"]
    model = BiLstmCrfForTokenClassification(
        BiLstmCrfConfig(words=["w"], id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
    ).eval()
    with torch.no_grad():
        for parameter in model.crf.parameters():
            parameter.zero_()
        # O -> I-p and a start on I-p: (almost) impossible, as in IOB2.
        model.crf.transitions[0, 2] = -10.0
        model.crf.start_transitions[2] = -10.0
    scores = torch.tensor([[[1.0, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]]])
    model.emissions = FixedEmissions(scores)
    output = model(word_mask=torch.tensor([[1, 1, 1, 0]]), word_ids=torch.tensor([[2, 2, 2, 0]]))
    # Each word's best tag gives O I-p I-p (score 3 - 10); the best path is B-p I-p I-p (2.8), then padding.
    assert scores[0, :3].argmax(-1).tolist() == [0, 2, 2]
    assert output.predictions.tolist() == [[1, 2, 2, NO_TAG]]

    def path_score(path):
        total = model.crf.start_transitions[path[0]] + model.crf.end_transitions[path[-1]]
        total += sum(scores[0, i, tag] for i, tag in enumerate(path))
        return total + sum(model.crf.transitions[a, b] for a, b in zip(path, path[1:]))

    best = max(itertools.product(range(3), repeat=3), key=path_score)
    assert list(best) == output.predictions[0, :3].tolist()


def test_pieces_pool_to_words_by_first_piece_or_mean():
    states = torch.tensor([[[9.0], [1.0], [3.0], [5.0], [9.0], [0.0]]])
    # [CLS] w0 w0 w1 [SEP] pad
    piece_to_word = torch.tensor([[-1, 0, 0, 1, -1, -1]])
    assert pool_pieces(states, piece_to_word, 3, "first")[0, :, 0].tolist() == [1.0, 5.0, 0.0]
    assert pool_pieces(states, piece_to_word, 3, "mean")[0, :, 0].tolist() == [2.0, 5.0, 0.0]


def test_long_sentences_are_split_into_windows_and_joined_back(tokenizer):
    words = SentenceFeaturizer(TAGS, max_words=3, words=["chest", "pain"])
    columns, split_sentences = words(SENTENCES, SENTENCE_TAGS)
    # 5, 3, 7 and 3 words in windows of 3: 2 + 1 + 3 + 1 windows; nothing cut.
    assert split_sentences == 2 and len(columns["labels"]) == 7
    assert columns["word_mask"].sum() == sum(len(s) for s in SENTENCES)
    assert columns["word_ids"][0].tolist() == [2, 3, 1]
    collected = {**columns, "predictions": columns["labels"]}
    order = np.random.default_rng(0).permutation(7)
    shuffled = {key: value[order] for key, value in collected.items()}
    joined = [[TAGS[i] for i in ids] for ids in join_windows(shuffled, "labels")]
    assert joined == SENTENCE_TAGS

    pieces = SentenceFeaturizer(TAGS, max_words=64, tokenizer=tokenizer, max_pieces=6)
    columns, split_sentences = pieces(SENTENCES[:1], SENTENCE_TAGS[:1])
    assert columns["input_ids"].shape[1] <= 6 and split_sentences == 1
    assert columns["word_mask"].sum() == 5
    for row in range(len(columns["labels"])):
        mapped = columns["piece_to_word"][row][columns["attention_mask"][row] == 1]
        # [CLS] and [SEP] map to no word; every word of the window has a piece, in order.
        assert mapped[0] == -1 and mapped[-1] == -1
        assert sorted(set(mapped[1:-1])) == list(range(columns["word_mask"][row].sum()))
    assert len(tokenizer.tokenize("chestpain")) > 1
    with pytest.raises(NerDataError, match="a word of [0-9]+ pieces does not fit a window of 3 pieces"):
        SentenceFeaturizer(TAGS, max_words=64, tokenizer=tokenizer, max_pieces=3)([["chestpain", "x"]], [["O", "O"]])


def test_a_saved_tagger_loads_with_auto_classes_from_safetensors(tmp_path, tokenizer):
    model = BiLstmCrfForTokenClassification(
        tagger_config(encoder_config=text_config_dict(tiny_bert(len(tokenizer)).config), pooling="mean"),
        encoder_backbone=tiny_bert(len(tokenizer)),
    ).eval()
    model.tokenizer = tokenizer
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BiLstmCrfForTokenClassification) and loaded.tokenizer is not None
    columns, _ = SentenceFeaturizer(TAGS, max_words=8, tokenizer=tokenizer)(SENTENCES, SENTENCE_TAGS)
    inputs = {k: torch.tensor(v) for k, v in columns.items() if k not in ("sentence_index", "window_index")}
    assert torch.allclose(model(**inputs).emissions, loaded(**inputs).emissions)
    # The frozen encoder stays frozen after loading.
    assert not any(p.requires_grad for p in loaded.word_vectors.text_encoder.parameters())


@pytest.mark.parametrize("kind", ["scratch", "encoder", "encoder-top-layer"])
def test_the_loss_falls_in_a_few_steps(kind, tokenizer):
    torch.manual_seed(0)
    if kind == "scratch":
        words = sorted({w for s in SENTENCES for w in s})
        model = BiLstmCrfForTokenClassification(tagger_config(words=words, word_embedding_size=16))
        featurizer = SentenceFeaturizer(TAGS, max_words=8, words=words)
    else:
        backbone = tiny_bert(len(tokenizer))
        trainable = 1 if kind == "encoder-top-layer" else 0
        config = tagger_config(encoder_config=text_config_dict(backbone.config), encoder_trainable_layers=trainable)
        model = BiLstmCrfForTokenClassification(config, encoder_backbone=backbone)
        featurizer = SentenceFeaturizer(TAGS, max_words=8, tokenizer=tokenizer)
    columns, _ = featurizer(SENTENCES, SENTENCE_TAGS)
    inputs = {k: torch.tensor(v) for k, v in columns.items() if k not in ("sentence_index", "window_index")}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.02)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    predicted = model(**{k: v for k, v in inputs.items() if k != "labels"}).predictions
    assert (predicted[inputs["word_mask"] == 1] == inputs["labels"][inputs["word_mask"] == 1]).float().mean() > 0.8
