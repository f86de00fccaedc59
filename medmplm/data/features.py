"""Visit featurisation: VISIT_SCHEMA batches -> fixed-shape int64 arrays for the model.

:class:`VisitFeaturizer` turns a batch of visit records (as Ray Data hands numpy batches to
``map_batches``: one array per column, list columns as object arrays of arrays) into:

==================  ==============  ====================================================
key                 shape           meaning
==================  ==============  ====================================================
``input_ids``       [B, L_text]     WordPiece ids of the cleaned note, [CLS] ... [SEP], padded
``attention_mask``  [B, L_text]     1 on real tokens
``has_note``        [B]             1 when the visit has a non-empty note
``diag_ids``        [B, 1 + C]      [CLS] + distinct diagnosis code ids, padded with [PAD]
``diag_mask``       [B, 1 + C]      1 on [CLS] and codes
``med_ids``         [B, 1 + C]      [CLS] + medication code ids
``med_mask``        [B, 1 + C]
``text_truncated``  [B]             1 when the note was cut at L_text tokens
``diag_truncated``  [B]             distinct diagnosis codes dropped beyond C
``med_truncated``   [B]
``diag_unknown``    [B]             diagnosis codes not in the vocabulary (encoded [UNK])
``med_unknown``     [B]
``hadm_id``         [B]             passed through when the batch has it
==================  ==============  ====================================================

A code listed twice in one visit (MIMIC lists a diagnosis once per sequence number) is kept once, where it first
appears: a second copy would stay visible when masked pretraining hides the first, and leak the masked code.

A visit without a note still gets a valid text input (``[CLS] [SEP]``) so the text encoder never
sees an all-padding row; ``has_note = 0`` tells the model to mask the text modality out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import tokenizers

from medmplm.data.vocab import CLS_ID, PAD_ID, UNK_ID, CodeVocab

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_LINE_BREAKS = re.compile(r"[\r\n]+")
_SPACES = re.compile(r"[ \t\f\v]+")

REQUIRED_COLUMNS = ("diagnoses", "medications", "note_text")


def clean_note_text(text: str) -> str:
    """Normalise a clinical note as ClinicalBERT does: line breaks removed, lowercased.

    Line breaks become single spaces and runs of spaces collapse, so that the same note always
    tokenises the same way. This is the only text normalisation in the project: tokenizer
    training and featurisation both call it.
    """
    return _SPACES.sub(" ", _LINE_BREAKS.sub(" ", text)).strip().lower()


def _backend_tokenizer(tokenizer: PreTrainedTokenizerBase | tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    backend = (
        tokenizer if isinstance(tokenizer, tokenizers.Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    )
    if backend is None:
        raise TypeError(f"VisitFeaturizer needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}")
    # A private copy: enabling padding/truncation mutates the tokenizer in place.
    return tokenizers.Tokenizer.from_str(backend.to_str())


def encode_code_column(
    column: np.ndarray, name: str, vocab: CodeVocab, max_codes: int, row_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One code column of a visit batch -> ``[CLS]`` + its distinct codes' ids (first ``max_codes``, in record order).

    Returns:
        (ids [B, 1 + max_codes], mask [B, 1 + max_codes], codes dropped beyond ``max_codes`` [B], codes encoded as
        [UNK] [B]).

    Raises:
        ValueError: naming the column and the row (``hadm_id`` when given) that is not a list of codes.
    """
    batch_size = len(column)
    ids = np.full((batch_size, 1 + max_codes), PAD_ID, dtype=np.int64)
    mask = np.zeros_like(ids)
    ids[:, 0] = CLS_ID
    mask[:, 0] = 1
    truncated = np.zeros(batch_size, dtype=np.int64)
    unknown = np.zeros(batch_size, dtype=np.int64)
    for row, codes in enumerate(column):
        if codes is None or isinstance(codes, str | bytes) or not isinstance(codes, Iterable):
            where = f"hadm_id {row_ids[row]}" if row_ids is not None else f"row {row}"
            raise ValueError(f"column {name!r}, {where}: expected a list of code strings, got {type(codes).__name__}")
        encoded = vocab.encode(list(dict.fromkeys(codes)))
        kept = encoded[:max_codes]
        ids[row, 1 : 1 + len(kept)] = kept
        mask[row, 1 : 1 + len(kept)] = 1
        truncated[row] = len(encoded) - len(kept)
        unknown[row] = sum(1 for i in encoded if i == UNK_ID)
    return ids, mask, truncated, unknown


class VisitFeaturizer:
    """Deterministic, picklable visit -> array featuriser (see module docstring for the outputs).

    Args:
        tokenizer: a fast transformers tokenizer (or a ``tokenizers.Tokenizer``) whose
            post-processor adds the model's special tokens (BERT: [CLS] ... [SEP]).
        diagnosis_vocab: ids for diagnosis codes.
        medication_vocab: ids for medication codes.
        text_max_length: tokens per note, special tokens included; longer notes are truncated.
        max_codes: distinct codes per type kept (first ones, in record order); the sequence adds [CLS].
        pad_token_id: the text tokenizer's padding id (read from ``tokenizer`` when it has one).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | tokenizers.Tokenizer,
        diagnosis_vocab: CodeVocab,
        medication_vocab: CodeVocab,
        text_max_length: int,
        max_codes: int,
        pad_token_id: int | None = None,
    ) -> None:
        if text_max_length < 2:
            raise ValueError(f"text_max_length must be >= 2 (room for the special tokens), got {text_max_length}")
        if max_codes < 1:
            raise ValueError(f"max_codes must be >= 1, got {max_codes}")
        pad_token_id = pad_token_id if pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            raise ValueError("the text tokenizer has no padding token; pass pad_token_id")
        self.text_tokenizer = _backend_tokenizer(tokenizer)
        self.text_tokenizer.enable_truncation(max_length=text_max_length)
        self.text_tokenizer.enable_padding(length=text_max_length, pad_id=pad_token_id)
        if len(self.text_tokenizer.encode("").ids) == 0 or self.text_tokenizer.encode("").attention_mask[0] != 1:
            raise ValueError("the text tokenizer adds no special tokens; it needs a post-processor ([CLS] ... [SEP])")
        self.diagnosis_vocab = diagnosis_vocab
        self.medication_vocab = medication_vocab
        self.text_max_length = text_max_length
        self.max_codes = max_codes

    @classmethod
    def from_model(cls, model: Any) -> VisitFeaturizer:
        """The featuriser matching a MedM-PLM model's tokenizer, vocabularies and lengths."""
        if getattr(model, "tokenizer", None) is None:
            raise ValueError("the model has no tokenizer attached; build it with medmplm.pretraining.medmplm.build_medmplm or from_pretrained")
        return cls(
            model.tokenizer,
            model.diagnosis_vocab,
            model.medication_vocab,
            text_max_length=model.config.text_max_length,
            max_codes=model.config.max_codes,
        )

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise a batch of VISIT_SCHEMA columns (extra columns are ignored)."""
        missing = [c for c in REQUIRED_COLUMNS if c not in batch]
        if missing:
            raise KeyError(
                f"visit batch lacks column(s) {missing}; expected VISIT_SCHEMA columns {list(REQUIRED_COLUMNS)}"
            )
        notes = batch["note_text"]
        batch_size = len(notes)
        for name in REQUIRED_COLUMNS:
            if len(batch[name]) != batch_size:
                raise ValueError(f"column {name!r} has {len(batch[name])} rows, 'note_text' has {batch_size}")
        row_ids = np.array(batch["hadm_id"], dtype=np.int64) if "hadm_id" in batch else None

        texts: list[str] = []
        for row, note in enumerate(notes):
            if note is None or (isinstance(note, float) and np.isnan(note)):
                texts.append("")
            elif isinstance(note, str):
                texts.append(clean_note_text(note))
            else:
                where = f"hadm_id {row_ids[row]}" if row_ids is not None else f"row {row}"
                raise ValueError(f"column 'note_text', {where}: expected a string or null, got {type(note).__name__}")
        encodings = self.text_tokenizer.encode_batch(texts)

        out: dict[str, np.ndarray] = {}
        if row_ids is not None:
            out["hadm_id"] = row_ids
        out["input_ids"] = np.array([e.ids for e in encodings], dtype=np.int64).reshape(
            batch_size, self.text_max_length
        )
        out["attention_mask"] = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(
            batch_size, self.text_max_length
        )
        out["has_note"] = np.array([1 if t else 0 for t in texts], dtype=np.int64)
        out["text_truncated"] = np.array([1 if e.overflowing else 0 for e in encodings], dtype=np.int64)
        for prefix, column, vocab in (
            ("diag", "diagnoses", self.diagnosis_vocab),
            ("med", "medications", self.medication_vocab),
        ):
            ids, mask, truncated, unknown = encode_code_column(batch[column], column, vocab, self.max_codes, row_ids)
            out[f"{prefix}_ids"] = ids
            out[f"{prefix}_mask"] = mask
            out[f"{prefix}_truncated"] = truncated
            out[f"{prefix}_unknown"] = unknown
        return out
