"""Visit featurisation: VISIT_SCHEMA batches -> fixed-shape int64 arrays for the model.

:class:`VisitFeaturizer` turns a batch of visit records (as Ray Data hands numpy batches to
``map_batches``: one array per column, list columns as object arrays of arrays) into:

==================  ==============  ====================================================
key                 shape           meaning
==================  ==============  ====================================================
``input_ids``       [B, K * L]      WordPiece ids of the cleaned note: K windows of L tokens, each
                                    [CLS] ... [SEP] and padded (K = 1 unless ``long_note="windows"``)
``attention_mask``  [B, K * L]      1 on real tokens; all 0 over a window the note does not reach
``has_note``        [B]             1 when the visit has a non-empty note
``text_windows``    [B]             windows the note fills (1 for a note of one window or less)
``diag_ids``        [B, 1 + C]      [CLS] + distinct diagnosis code ids, padded with [PAD]
``diag_mask``       [B, 1 + C]      1 on [CLS] and codes
``med_ids``         [B, 1 + C]      [CLS] + medication code ids
``med_mask``        [B, 1 + C]
``text_truncated``  [B]             1 when part of the note is not read (beyond the head, between head
                                    and tail, or beyond ``max_windows`` windows)
``diag_truncated``  [B]             distinct diagnosis codes dropped beyond C
``med_truncated``   [B]
``diag_unknown``    [B]             diagnosis codes not in the vocabulary (encoded [UNK])
``med_unknown``     [B]
``hadm_id``         [B]             passed through when the batch has it
==================  ==============  ====================================================

A code listed twice in one visit (MIMIC lists a diagnosis once per sequence number) is kept once, where it first
appears: a second copy would stay visible when masked pretraining hides the first, and leak the masked code.

A visit without a note still gets a valid text input (``[CLS] [SEP]`` in its first window) so the text encoder never
sees an all-padding row; ``has_note = 0`` tells the model to mask the text modality out.

A note longer than one window of L tokens is read in one of three ways (``long_note``):

* ``head``: its first L - 2 tokens (BERT's and the paper's truncation);
* ``head_tail``: its first quarter and last three quarters of L - 2 tokens, joined (Sun et al. 2019, "How to fine-tune
  BERT for text classification", found head + tail best for long documents); the discharge diagnoses and medications
  sit at the end of a discharge summary;
* ``windows``: overlapping windows, each [CLS] ... [SEP], whose starts are ``stride`` tokens apart, up to
  ``max_windows`` of them. The note is tokenised once; the tokenizers library splits it (its ``stride`` argument is
  the overlap, L - 2 - ``stride`` here).
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

LONG_NOTE_MODES = ("head", "head_tail", "windows")

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
    copy = tokenizers.Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


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
        text_max_length: tokens per window L, special tokens included (the whole note under ``head`` and
            ``head_tail``).
        max_codes: distinct codes per type kept (first ones, in record order); the sequence adds [CLS].
        pad_token_id: the text tokenizer's padding id (read from ``tokenizer`` when it has one).
        long_note: ``head``, ``head_tail`` or ``windows`` (see the module docstring).
        max_windows: K, windows per note under ``windows`` (must be 1 otherwise).
        stride: note tokens between the starts of consecutive windows, in [1, L - 2]; ``None``: three quarters of
            L - 2 (a quarter of each window repeats the end of the previous one).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | tokenizers.Tokenizer,
        diagnosis_vocab: CodeVocab,
        medication_vocab: CodeVocab,
        text_max_length: int,
        max_codes: int,
        pad_token_id: int | None = None,
        long_note: str = "head",
        max_windows: int = 1,
        stride: int | None = None,
    ) -> None:
        if text_max_length < 2:
            raise ValueError(f"text_max_length must be >= 2 (room for the special tokens), got {text_max_length}")
        if max_codes < 1:
            raise ValueError(f"max_codes must be >= 1, got {max_codes}")
        pad_token_id = pad_token_id if pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            raise ValueError("the text tokenizer has no padding token; pass pad_token_id")
        if long_note not in LONG_NOTE_MODES:
            raise ValueError(f"long_note must be one of {list(LONG_NOTE_MODES)}, got {long_note!r}")
        if max_windows < 1 or (long_note != "windows" and max_windows != 1):
            raise ValueError(f"max_windows must be >= 1, and 1 unless long_note is 'windows'; got {max_windows}")
        self.text_tokenizer = _backend_tokenizer(tokenizer)
        probe = self.text_tokenizer.encode("a")
        if not any(probe.special_tokens_mask):
            raise ValueError("the text tokenizer adds no special tokens; it needs a post-processor ([CLS] ... [SEP])")
        # Special tokens around a note's content: [CLS] and [SEP] for BERT, <s> and </s> for RoBERTa.
        special = probe.special_tokens_mask
        self.num_prefix_tokens = special.index(0)
        self.num_suffix_tokens = special[::-1].index(0)
        content_length = text_max_length - self.num_prefix_tokens - self.num_suffix_tokens
        if content_length < 1:
            raise ValueError(f"text_max_length {text_max_length} leaves no room beside the special tokens")
        self.long_note, self.max_windows = long_note, max_windows
        self.stride = window_stride(content_length, stride)
        # head_tail reads the whole note, then keeps its two ends.
        self.full_tokenizer = _backend_tokenizer(tokenizer) if long_note == "head_tail" else None
        overlap = content_length - self.stride if long_note == "windows" else 0
        self.text_tokenizer.enable_truncation(max_length=text_max_length, stride=overlap)
        self.text_tokenizer.enable_padding(length=text_max_length, pad_id=pad_token_id)
        self.pad_token_id = pad_token_id
        self.diagnosis_vocab = diagnosis_vocab
        self.medication_vocab = medication_vocab
        self.text_max_length = text_max_length
        self.max_codes = max_codes

    @property
    def num_windows(self) -> int:
        """K: windows per note in the output (1 unless ``long_note="windows"``)."""
        return self.max_windows if self.long_note == "windows" else 1

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
            long_note=model.config.text_long_note,
            max_windows=model.config.text_max_windows,
            stride=model.config.text_window_stride,
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
        input_ids, attention_mask, windows, truncated = self._encode_notes(texts)

        out: dict[str, np.ndarray] = {}
        if row_ids is not None:
            out["hadm_id"] = row_ids
        out["input_ids"] = input_ids
        out["attention_mask"] = attention_mask
        out["has_note"] = np.array([1 if t else 0 for t in texts], dtype=np.int64)
        out["text_windows"] = windows
        out["text_truncated"] = truncated
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

    def _encode_notes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cleaned notes -> (input_ids [B, K * L], attention_mask [B, K * L], windows filled [B], truncated [B])."""
        batch_size, length, num_windows = len(texts), self.text_max_length, self.num_windows
        input_ids = np.full((batch_size, num_windows, length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((batch_size, num_windows, length), dtype=np.int64)
        windows = np.ones(batch_size, dtype=np.int64)
        truncated = np.zeros(batch_size, dtype=np.int64)
        for row, encoding in enumerate(self.text_tokenizer.encode_batch(texts)):
            parts = [encoding, *encoding.overflowing]
            kept = parts[:num_windows]
            for k, part in enumerate(kept):
                input_ids[row, k] = part.ids
                attention_mask[row, k] = part.attention_mask
            windows[row] = len(parts)
            truncated[row] = len(parts) > len(kept)
        if self.full_tokenizer is not None:
            long_rows = np.flatnonzero(truncated)
            for row, encoding in zip(long_rows, self.full_tokenizer.encode_batch([texts[i] for i in long_rows])):
                input_ids[row, 0] = self._head_and_tail(encoding.ids)
        return (
            input_ids.reshape(batch_size, num_windows * length),
            attention_mask.reshape(batch_size, num_windows * length),
            windows,
            truncated,
        )

    def _head_and_tail(self, ids: list[int]) -> list[int]:
        """A note's token ids (special tokens included) longer than one window -> its head and tail in one window."""
        prefix, suffix = self.num_prefix_tokens, self.num_suffix_tokens
        content = ids[prefix : len(ids) - suffix]
        budget = self.text_max_length - prefix - suffix
        head = budget // 4
        return [*ids[:prefix], *content[:head], *content[len(content) - (budget - head) :], *ids[len(ids) - suffix :]]


def window_stride(content_length: int, stride: int | None) -> int:
    """Note tokens between the starts of consecutive windows whose content (special tokens aside) is
    ``content_length`` tokens: ``stride``, or by default three quarters of a window's content.

    Raises:
        ValueError: the stride is outside [1, content_length].
    """
    if stride is None:
        return max(1, 3 * content_length // 4)
    if not 1 <= stride <= content_length:
        raise ValueError(
            f"stride must be in [1, {content_length}] (a window's tokens besides its special tokens), got {stride}"
        )
    return stride
