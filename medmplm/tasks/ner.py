"""The NER auxiliary check: concept extraction (problem, test, treatment) on an i2b2-2010-format corpus with a
BiLSTM-CRF, its word vectors from scratch or from a pretrained text encoder (the paper's Table V).

Unlike the visit tasks, NER reads no prepared visits: the task reads its corpus (``finetune.ner_corpus``,
:mod:`medmplm.data.i2b2`), splits it by document, featurises its sentences and hands the shared runner
(:func:`medmplm.tasks.runner.run_finetune`) an :class:`~medmplm.tasks.base.OwnExamples`: featurised windows per split,
the initial model, and the :class:`NerTrainingTask` the shared loop trains and evaluates with.

Splits: ``val_fraction`` and ``test_fraction`` of the documents, drawn with ``split_seed`` (not the run's seed, so that
every seed is scored on the same test documents); a corpus that ships ``train/`` and ``test/`` keeps them, and its
validation documents are drawn from ``train/``. ``finetune.train_ratio`` keeps that fraction of the training documents
(drawn with the run's seed, nested across ratios).

Windows: a sentence longer than ``max_words`` words, or than the encoder's piece window (``max_pieces``, ``[CLS]`` and
``[SEP]`` included), is split into consecutive windows, never cut; the final metrics join a sentence's windows again
before scoring. (Validation during training scores windows as they are: the same unless a concept crosses a window
boundary.) Only counts are logged, never sentence text.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medmplm.data.i2b2 import OUTSIDE, Corpus, Document, read_corpus
from medmplm.metrics import ner_metrics
from medmplm.tasks.base import OwnExamples

# torch, transformers and the model are imported where they are used: the task registry (medmplm.tasks) is imported
# by `--help`, which must load neither torch nor Ray.

logger = logging.getLogger(__name__)

NAME = "ner"
SPLITS = ("train", "val", "test")
# Featurised columns that identify a window rather than feed the model.
WINDOW_ID_COLUMNS = ("sentence_index", "window_index")


class NerDataError(ValueError):
    """A corpus that cannot give the run what it needs (too few documents to split, a word longer than a window)."""


def split_documents(
    corpus: Corpus, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Document]]:
    """Train, validation and test documents (see the module docstring).

    Raises:
        NerDataError: when a split would be left without a document.
    """
    rng = np.random.default_rng(seed)

    def draw(documents: list[Document], fraction: float) -> tuple[list[Document], list[Document]]:
        order = rng.permutation(len(documents))
        count = int(round(fraction * len(documents)))
        return [documents[i] for i in sorted(order[count:])], [documents[i] for i in sorted(order[:count])]

    if "all" in corpus.documents:
        rest, test = draw(corpus.documents["all"], test_fraction)
        train, val = draw(rest, val_fraction / (1.0 - test_fraction))
    else:
        train, val = draw(corpus.documents["train"], val_fraction)
        test = corpus.documents["test"]
    splits = {"train": train, "val": val, "test": test}
    empty = [name for name, documents in splits.items() if not documents]
    if empty:
        counts = ", ".join(f"{name} {len(documents)}" for name, documents in splits.items())
        raise NerDataError(
            f"the corpus's documents split as {counts}: no {' or '.join(empty)} document; use a larger corpus or "
            "other finetune.task_options.val_fraction / test_fraction"
        )
    return splits


def subset_documents(documents: list[Document], ratio: float, seed: int) -> list[Document]:
    """``ratio`` of ``documents`` (at least one), drawn with ``seed``; a smaller ratio keeps a subset of a larger
    one's documents."""
    if ratio == 1.0:
        return documents
    order = np.random.default_rng(seed).permutation(len(documents))
    kept = sorted(order[: max(1, math.ceil(ratio * len(documents)))])
    return [documents[i] for i in kept]


def tag_names(types: Sequence[str]) -> list[str]:
    """IOB2 tags of concept ``types``: ``O`` first, then ``B-`` and ``I-`` of each type."""
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def word_vocabulary(documents: list[Document], lowercase: bool, min_count: int) -> list[str]:
    """Words of the training documents seen at least ``min_count`` times, most frequent first (ties by word); rarer
    words read as ``[UNK]``, so its embedding is trained too."""
    counts = Counter(
        word.lower() if lowercase else word for d in documents for sentence in d.sentences for word in sentence
    )
    return [word for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if count >= min_count]


def _windows(piece_counts: list[int], max_words: int, max_pieces: int) -> list[tuple[int, int]]:
    """``(first word, end word)`` of consecutive windows of at most ``max_words`` words and ``max_pieces`` pieces."""
    windows, start, pieces = [], 0, 0
    for index, count in enumerate(piece_counts):
        if index > start and (index - start == max_words or pieces + count > max_pieces):
            windows.append((start, index))
            start, pieces = index, 0
        pieces += count
    windows.append((start, len(piece_counts)))
    return windows


@dataclass
class SentenceFeaturizer:
    """Sentences of IOB2-tagged tokens -> fixed-shape windows for a BiLSTM-CRF.

    Columns (padded to the longest window of the call): ``word_mask [N, W]``, ``labels [N, W]`` (tag ids, 0 past the
    end), ``sentence_index`` and ``window_index`` ``[N]``; from-scratch models ``word_ids [N, W]``, encoder-based
    ones ``input_ids``, ``attention_mask`` and ``piece_to_word [N, P]`` (``[CLS]`` pieces ``[SEP]``, -1 off words).

    Attributes:
        tags: the tag names in id order.
        max_words: words per window.
        words: the from-scratch vocabulary (ids from 2), or ``None`` with a ``tokenizer``.
        lowercase: look words up lower-cased.
        tokenizer: a fast tokenizer (``word_ids()``) of the text encoder.
        max_pieces: pieces per window, ``[CLS]`` and ``[SEP]`` included.
    """

    tags: list[str]
    max_words: int
    words: list[str] | None = None
    lowercase: bool = True
    tokenizer: Any = None
    max_pieces: int = 128

    def __post_init__(self) -> None:
        if (self.words is None) == (self.tokenizer is None):
            raise ValueError("give exactly one of words and tokenizer")
        if self.tokenizer is not None and not self.tokenizer.is_fast:
            raise ValueError("the text encoder's tokenizer must be a fast tokenizer (word_ids() maps pieces to words)")
        from medmplm.models.ner import PAD_WORD, UNK_WORD

        self._pad_word, self._unknown_word = PAD_WORD, UNK_WORD
        self._word_ids = {word: index + 2 for index, word in enumerate(self.words or [])}
        self._tag_ids = {tag: index for index, tag in enumerate(self.tags)}

    def _piece_ids(self, sentences: list[list[str]]) -> list[list[list[int]]]:
        """Each word's piece ids, per sentence (one fast-tokenizer call for all)."""
        encoded = self.tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
        pieces = []
        for index, sentence in enumerate(sentences):
            words: list[list[int]] = [[] for _ in sentence]
            for piece, word in zip(encoded["input_ids"][index], encoded.word_ids(index)):
                words[word].append(piece)
            pieces.append(words)
        return pieces

    def __call__(self, sentences: list[list[str]], tags: list[list[str]]) -> tuple[dict[str, np.ndarray], int]:
        """The windows of ``sentences`` (with their ``tags``).

        Returns:
            The columns, and the number of sentences split into several windows.

        Raises:
            NerDataError: when one word has more pieces than a window holds.
        """
        pieces = self._piece_ids(sentences) if self.tokenizer is not None else None
        rows: list[dict[str, Any]] = []
        split_sentences = 0
        for index, (sentence, sentence_tags) in enumerate(zip(sentences, tags)):
            counts = [len(p) for p in pieces[index]] if pieces is not None else [1] * len(sentence)
            if max(counts) > self.max_pieces - 2:
                raise NerDataError(
                    f"a word of {max(counts)} pieces does not fit a window of {self.max_pieces} pieces "
                    "(finetune.task_options.max_pieces)"
                )
            windows = _windows(counts, self.max_words, self.max_pieces - 2)
            split_sentences += len(windows) > 1
            for window_index, (start, end) in enumerate(windows):
                row = {
                    "sentence_index": index,
                    "window_index": window_index,
                    "labels": [self._tag_ids[tag] for tag in sentence_tags[start:end]],
                }
                if pieces is None:
                    row["word_ids"] = [
                        self._word_ids.get(word.lower() if self.lowercase else word, self._unknown_word)
                        for word in sentence[start:end]
                    ]
                else:
                    window = pieces[index][start:end]
                    row["pieces"] = [p for word in window for p in word]
                    row["piece_to_word"] = [w for w, word in enumerate(window) for _ in word]
                rows.append(row)
        return self._pad(rows), split_sentences

    def padding(self) -> dict[str, int]:
        """The value of each 2-D column past a window's end."""
        values = {"word_mask": 0, "labels": 0}
        if self.tokenizer is None:
            return {**values, "word_ids": self._pad_word}
        return {**values, "input_ids": self.tokenizer.pad_token_id, "attention_mask": 0, "piece_to_word": -1}

    def widen(self, columns: dict[str, np.ndarray], widths: dict[str, int]) -> dict[str, np.ndarray]:
        """``columns`` with each 2-D column padded to ``widths[name]`` (splits predicted in one pass share shapes)."""
        widened = dict(columns)
        for name, value in self.padding().items():
            extra = widths[name] - columns[name].shape[1]
            widened[name] = np.pad(columns[name], ((0, 0), (0, extra)), constant_values=value)
        return widened

    def _pad(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        num_words = max(len(row["labels"]) for row in rows)
        columns = {
            "sentence_index": np.array([row["sentence_index"] for row in rows], dtype=np.int64),
            "window_index": np.array([row["window_index"] for row in rows], dtype=np.int64),
            "word_mask": np.zeros((len(rows), num_words), dtype=np.int64),
            "labels": np.zeros((len(rows), num_words), dtype=np.int64),
        }
        if self.tokenizer is None:
            columns["word_ids"] = np.full((len(rows), num_words), self._pad_word, dtype=np.int64)
        else:
            num_pieces = max(len(row["pieces"]) for row in rows) + 2
            columns["input_ids"] = np.full((len(rows), num_pieces), self.tokenizer.pad_token_id, dtype=np.int64)
            columns["attention_mask"] = np.zeros((len(rows), num_pieces), dtype=np.int64)
            columns["piece_to_word"] = np.full((len(rows), num_pieces), -1, dtype=np.int64)
        for i, row in enumerate(rows):
            length = len(row["labels"])
            columns["word_mask"][i, :length] = 1
            columns["labels"][i, :length] = row["labels"]
            if self.tokenizer is None:
                columns["word_ids"][i, :length] = row["word_ids"]
            else:
                ids = [self.tokenizer.cls_token_id, *row["pieces"], self.tokenizer.sep_token_id]
                columns["input_ids"][i, : len(ids)] = ids
                columns["attention_mask"][i, : len(ids)] = 1
                columns["piece_to_word"][i, 1 : len(ids) - 1] = row["piece_to_word"]
        return columns


def join_windows(collected: dict[str, np.ndarray], key: str) -> list[list[int]]:
    """Per sentence, the tag ids of ``collected[key]`` (``labels`` or ``predictions``) over its windows' words in
    order; sentences ordered by ``sentence_index``. Without window ids, each window is a sentence."""
    mask = collected["word_mask"].astype(bool)
    rows = [list(values[m]) for values, m in zip(collected[key], mask)]
    if "sentence_index" not in collected:
        return rows
    order = np.lexsort((collected["window_index"], collected["sentence_index"]))
    sentences: dict[int, list[int]] = {}
    for i in order:
        sentences.setdefault(int(collected["sentence_index"][i]), []).extend(rows[i])
    return [sentences[index] for index in sorted(sentences)]


@dataclass
class NerTrainingTask:
    """The BiLSTM-CRF in the shared loop (``medmplm.train.task.TrainingTask``): CRF loss in training, strict seqeval
    metrics (``val_f1``, ``val_precision``, ...) of the Viterbi tags at every validation."""

    tags: list[str]
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"
    name: str = NAME

    def load_model(self, directory: Path) -> Any:
        """The tagger saved in ``directory`` (a ``BiLstmCrfForTokenClassification``), in training mode."""
        from medmplm.models.ner import BiLstmCrfForTokenClassification

        model = BiLstmCrfForTokenClassification.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(self, batch: dict[str, Any], generator: Any, training: bool) -> dict[str, Any]:
        """The batch less its window ids (nothing random)."""
        return {key: value for key, value in batch.items() if key not in WINDOW_ID_COLUMNS}

    def batch_statistics(self, output: Any, inputs: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """None beyond the loss: the metrics need whole concepts (see :meth:`evaluate`)."""
        return {}

    def collect(self, output: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """True and predicted tag ids of one batch, with the word mask."""
        return {
            "labels": inputs["labels"].detach().cpu().numpy(),
            "predictions": output.predictions.detach().cpu().numpy(),
            "word_mask": inputs["word_mask"].detach().cpu().numpy(),
        }

    def evaluate(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        """:func:`medmplm.metrics.ner_metrics` over whole sentences (windows joined when their ids were collected)."""
        from medmplm.models.ner import NO_TAG

        names = np.array(self.tags)
        predicted_ids = join_windows(collected, "predictions")
        if any(NO_TAG in ids for ids in predicted_ids):
            raise ValueError("a word inside a sentence has no predicted tag")
        true = [list(names[ids]) for ids in join_windows(collected, "labels")]
        predicted = [list(names[np.asarray(ids, dtype=np.int64)]) for ids in predicted_ids]
        return ner_metrics(true, predicted)


@dataclass
class TextEncoderSource:
    """A pretrained text encoder whose states become a tagger's word vectors.

    Attributes:
        backbone: the BERT-family model (no pooler).
        tokenizer: its fast tokenizer.
        source: the export it was loaded from.
    """

    backbone: Any
    tokenizer: Any
    source: str

    @property
    def config_dict(self) -> dict[str, Any]:
        """The backbone's ``transformers`` config as the tagger's config stores it."""
        from medmplm.models.text_encoder import text_config_dict

        return text_config_dict(self.backbone.config)

    @property
    def max_positions(self) -> int:
        """Pieces the encoder can read at once."""
        return int(self.backbone.config.max_position_embeddings)


def encoder_export(model: str, config: Any) -> tuple[str, str] | None:
    """``(config key, directory)`` of the export NER model ``model`` reads its text encoder from (see
    :func:`load_text_encoder`); ``None`` for ``bilstm-crf``. Reads only ``config.json``: a check before Ray starts.

    Raises:
        ConfigError: naming the key when the export is missing or of another kind.
    """
    from medmplm.config import ConfigError

    if model == "bilstm-crf":
        return None
    kind = {"bilstm-crf+bert": "bert", "bilstm-crf+medmplm": "medmplm"}.get(model)
    if kind is None:
        raise ConfigError(f"finetune.model: {model!r} is not a model of the ner task")
    key, directory = "finetune.init_text", config.finetune.init_text
    if kind == "medmplm" and config.model.init_from is not None:
        key, directory = "model.init_from", config.model.init_from
    if directory is None:
        flag = "--init-text" if kind == "bert" else "--init"
        raise ConfigError(f"{key}: --model {model} reads a pretrained {kind} export; name it with {flag} DIR")
    config_file = Path(directory).expanduser() / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{key}: {directory} holds no config.json (not a model export)")
    found = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if (found == "medmplm") != (kind == "medmplm"):
        raise ConfigError(f"{key}: {directory} holds a {found!r} model; --model {model} reads a {kind} export")
    return key, str(directory)


def load_text_encoder(model: str, config: Any) -> TextEncoderSource | None:
    """The text encoder of NER model ``model``: ``None`` for ``bilstm-crf``; for ``bilstm-crf+bert`` the BERT of
    ``finetune.init_text`` (a ``bert-mlm`` export or any local BERT directory with its tokenizer); for
    ``bilstm-crf+medmplm`` the text component of the MedM-PLM export ``model.init_from`` (or ``finetune.init_text``).

    Raises:
        ConfigError: naming the key when the export is missing or of another kind.
    """
    from medmplm.config import ConfigError
    from medmplm.models import MedMPLMModel
    from medmplm.models.text_encoder import load_backbone_checkpoint
    from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer

    export = encoder_export(model, config)
    if export is None:
        return None
    key, directory = export
    if model == "bilstm-crf+medmplm":
        medmplm = MedMPLMModel.from_pretrained(directory)
        if medmplm.tokenizer is None:
            raise ConfigError(f"{key}: {directory} has no tokenizer beside the model")
        return TextEncoderSource(medmplm.text_encoder.backbone, medmplm.tokenizer, str(directory))
    if not (Path(directory).expanduser() / TOKENIZER_MARKER).is_file():
        raise ConfigError(f"{key}: {directory} has no {TOKENIZER_MARKER} (a fast tokenizer) beside the model")
    return TextEncoderSource(load_backbone_checkpoint(directory), load_tokenizer(directory), str(directory))


@dataclass
class ConceptExtraction:
    """The ``ner`` task: its options are ``finetune.task_options``.

    Attributes:
        val_fraction, test_fraction: documents drawn for validation and test (a shipped test split is kept).
        split_seed: seed of those draws.
        on_error: ``error``: a malformed concept line stops the run naming file and line; ``skip``: it is counted
            and left out (the record's details count them by reason).
        max_words: words per window.
        max_pieces: word pieces per window of encoder-based models, ``[CLS]`` and ``[SEP]`` included (at most the
            encoder's positions).
        pooling: a word's vector from its pieces: ``first`` or ``mean``.
        encoder_trainable_layers: the encoder's last layers fine-tuned (0: its states are fixed word vectors).
        word_embedding_size: width of from-scratch word embeddings.
        word_min_count: training occurrences for a word to get its own from-scratch embedding.
        lowercase: from-scratch words are looked up lower-cased.
        lstm_num_layers: stacked BiLSTM layers (their width is ``finetune.head_hidden_size``, the dropout
            ``finetune.head_dropout``).
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    on_error: Literal["error", "skip"] = "error"
    max_words: int = 64
    max_pieces: int = 128
    pooling: Literal["first", "mean"] = "first"
    encoder_trainable_layers: int = 0
    word_embedding_size: int = 100
    word_min_count: int = 2
    lowercase: bool = True
    lstm_num_layers: int = 1

    name = NAME

    def __post_init__(self) -> None:
        fractions = (self.val_fraction, self.test_fraction)
        if not (all(0 < f < 1 for f in fractions) and sum(fractions) < 1):
            raise ValueError("val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        if self.on_error not in ("error", "skip") or self.pooling not in ("first", "mean"):
            raise ValueError("on_error must be 'error' or 'skip', pooling 'first' or 'mean'")
        if self.max_words < 1 or self.max_pieces < 3:
            raise ValueError("max_words must be >= 1 and max_pieces >= 3")

    def own_examples(self, config: Any) -> OwnExamples:
        """Read, split and featurise the corpus of ``config`` (a ``FinetuneConfig``); the initial model to build.

        Raises:
            medmplm.data.i2b2.CorpusError: a malformed corpus (``on_error="error"``).
            NerDataError: a corpus too small to split, or a word longer than a window.
            ConfigError: a model whose encoder export is missing or of the wrong kind.
        """
        import torch

        from medmplm.models.ner import BiLstmCrfConfig, BiLstmCrfForTokenClassification

        section = config.finetune
        corpus = read_corpus(section.ner_corpus, self.on_error)
        splits = split_documents(corpus, self.val_fraction, self.test_fraction, self.split_seed)
        splits["train"] = subset_documents(splits["train"], section.train_ratio, config.train.seed)
        tags = tag_names(corpus.concept_types())
        encoder = load_text_encoder(section.model, config)
        model_config = BiLstmCrfConfig(
            id2label=dict(enumerate(tags)),
            label2id={tag: index for index, tag in enumerate(tags)},
            lstm_hidden_size=section.head_hidden_size,
            lstm_num_layers=self.lstm_num_layers,
            dropout=section.head_dropout,
        )
        if encoder is None:
            model_config.words = word_vocabulary(splits["train"], self.lowercase, self.word_min_count)
            model_config.word_embedding_size = self.word_embedding_size
            model_config.lowercase = self.lowercase
            featurizer = SentenceFeaturizer(tags, self.max_words, words=model_config.words, lowercase=self.lowercase)
        else:
            model_config.encoder_config = encoder.config_dict
            model_config.encoder_trainable_layers = self.encoder_trainable_layers
            model_config.pooling = self.pooling
            model_config.encoder_source = encoder.source
            max_pieces = min(self.max_pieces, encoder.max_positions)
            featurizer = SentenceFeaturizer(tags, self.max_words, tokenizer=encoder.tokenizer, max_pieces=max_pieces)
        featurized, counts = {}, {}
        for split, documents in splits.items():
            sentences = [s for d in documents for s in d.sentences]
            sentence_tags = [t for d in documents for t in d.tags]
            featurized[split], split_sentences = featurizer(sentences, sentence_tags)
            counts[split] = {
                "documents": len(documents),
                "sentences": len(sentences),
                "windows": len(featurized[split]["labels"]),
                "split_sentences": split_sentences,
                "concepts": sum(d.concepts for d in documents),
            }
            logger.info("ner %s: %s", split, ", ".join(f"{k} {v}" for k, v in counts[split].items()))
        widths = {name: max(f[name].shape[1] for f in featurized.values()) for name in featurizer.padding()}
        featurized = {split: featurizer.widen(columns, widths) for split, columns in featurized.items()}
        if corpus.skipped:
            logger.warning("ner: %d concept lines skipped, by reason %s", len(corpus.skipped), corpus.skipped_counts())

        def build(directory: Path) -> None:
            torch.manual_seed(config.train.seed)
            model = BiLstmCrfForTokenClassification(
                model_config, encoder_backbone=encoder.backbone if encoder is not None else None
            )
            model.tokenizer = encoder.tokenizer if encoder is not None else None
            model.save_pretrained(directory)

        return OwnExamples(
            featurized=featurized,
            num_examples={split: counts[split]["sentences"] for split in SPLITS},
            training_task=NerTrainingTask(tags, section.score_metric, section.score_mode),
            build_model=build,
            init=encoder.source if encoder is not None else None,
            data=str(section.ner_corpus),
            details={
                "ner_counts": counts,
                "skipped_concepts": corpus.skipped_counts(),
                "tags": tags,
                "shipped_split": "all" not in corpus.documents,
                "vocabulary_size": len(model_config.words) if model_config.words is not None else None,
                "text_pretrained": encoder.source if encoder is not None else None,
            },
        )

