"""The ``mbehrt`` pretraining family: M-BEHRT on patient histories (time-stamped codes and lab events, and notes).

* Model: :class:`~medmplm.models.mbehrt.MBehrtForPretraining`. Its vocabularies are the prepared directory's
  ``vocab/{diagnosis,procedure,medication,lab}.tsv`` and the gender values, its lab value statistics (quantile bin
  edges, or means and standard deviations) the training split's lab events; its text encoder (when it reads notes) is
  ``model.text_checkpoint`` (a ``bert-mlm`` export or any local BERT checkpoint) or a fresh BERT with the prepared
  WordPiece tokenizer (or ``model.tokenizer_dir``). Or continued from ``model.init_from``.
* Rows: one per patient (:class:`PatientSequenceBuilder`): the patient's visits in admission order, truncated from the
  oldest end, counted.
* Objective (:class:`MBehrtPretrainingTask`): masked token modelling (15% of codes and lab items: 80% [MASK], 10% a
  random token of the same type, 10% kept), masked lab-value prediction (15% of present values hidden) and, with both
  modalities, the visit alignment of tabular and note vectors.

Fine-tuning reads the same rows, one per task example (``medmplm.tasks.patient``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medmplm.data import schema
from medmplm.data.features import clean_note_text
from medmplm.data.vocab import CLS_ID, PAD_ID, UNK_ID
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from medmplm.config import ModelSection, PretrainConfig
    from medmplm.models.mbehrt import MBehrtConfig, MBehrtForPretraining

logger = logging.getLogger("medmplm.pretraining.mbehrt")

SECONDS_PER_HOUR = 3600

# VISIT_SCHEMA columns the featuriser reads (schema version 2: gender and age).
VISIT_COLUMNS = (
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "gender",
    "age",
    "diagnoses",
    "procedures",
    "medications",
    "labs",
    "note_text",
)
# A visit's code columns, in token order, and their token types.
CODE_COLUMNS = (("diagnoses", "diagnosis"), ("procedures", "procedure"), ("medications", "medication"))

# Featuriser outputs the model reads, by modality ("values" only under lab_value_embedding="projection").
TABULAR_COLUMNS = (
    "input_ids",
    "attention_mask",
    "age_ids",
    "segment_ids",
    "visit_ids",
    "time_hours",
    "gap_hours",
    "value_ids",
)
TEXT_COLUMNS = (
    "note_input_ids",
    "note_attention_mask",
    "note_mask",
    "note_age_ids",
    "note_segment_ids",
    "note_visit_ids",
    "note_time_hours",
    "note_gap_hours",
)
# Featuriser outputs counted for the run log (or a result record), then dropped.
COUNT_COLUMNS = (
    "num_visits",
    "visits_dropped",
    "tokens_dropped",
    "empty_visits",
    "unknown_tokens",
    "lab_events_dropped",
    "lab_values_missing",
    "lab_values_without_statistics",
    "lab_values_clipped",
    "ages_clamped",
    "notes_truncated",
)

PRESETS: dict[str, dict[str, Any]] = {
    # Small enough that a step of 16 patients takes well under a second on a laptop CPU.
    "tiny": {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "max_length": 128,
        "max_visits": 16,
        "max_lab_events_per_visit": 16,
        "text_hidden_size": 64,
        "text_num_layers": 2,
        "text_num_heads": 2,
        "text_intermediate_size": 128,
        "text_vocab_size": 2000,
        "text_num_frozen_layers": 1,
        "text_max_length": 128,
    },
    # BEHRT-sized (hidden 288, 6 layers x 12 heads, intermediate 512, 256 tokens) with a BERT-base text encoder reading
    # the head of each visit's note, its first 10 layers frozen (MedM-PLM's paper preset).
    "paper": {},
}


def _has_note(note: Any) -> bool:
    return isinstance(note, str) and bool(clean_note_text(note))


@dataclass
class Visit:
    """One visit as :class:`PatientSequenceBuilder` reads it (:func:`as_visit` makes one from a visit record); the
    code columns by name, the lab events as VISIT_SCHEMA's structs, the note ``None`` when it has no text."""

    hadm_id: int
    admittime: np.datetime64
    dischtime: np.datetime64
    age: float | None
    codes: dict[str, list[str]]
    labs: list[Mapping[str, Any]]
    note: str | None


def _code_list(value: Any, column: str, hadm_id: int) -> list[str]:
    if value is None or isinstance(value, str | bytes):
        raise ValueError(
            f"column {column!r}, hadm_id {hadm_id}: expected a list of code strings, got {type(value).__name__}"
        )
    return [str(code) for code in value]


def as_visit(record: Mapping[str, Any]) -> Visit:
    """A visit record (VISIT_SCHEMA fields: a Python row, or one row of a numpy batch) as the builder reads it.

    Raises:
        ValueError: naming the ``hadm_id`` and column of a field that is not what the schema says.
    """
    hadm_id = int(record["hadm_id"])
    age = record["age"]
    if age is not None and not np.isfinite(age):
        age = None
    if age is not None and age < 0:
        raise ValueError(f"column 'age', hadm_id {hadm_id}: negative age {age}")
    note = record["note_text"]
    if note is not None and not isinstance(note, str):
        if isinstance(note, float) and np.isnan(note):
            note = None
        else:
            raise ValueError(
                f"column 'note_text', hadm_id {hadm_id}: expected a string or null, got {type(note).__name__}"
            )
    labs = record["labs"]
    if labs is None or isinstance(labs, str | bytes):
        raise ValueError(f"column 'labs', hadm_id {hadm_id}: expected a list of lab events, got {type(labs).__name__}")
    return Visit(
        hadm_id=hadm_id,
        admittime=np.datetime64(record["admittime"], "s"),
        dischtime=np.datetime64(record["dischtime"], "s"),
        age=None if age is None else float(age),
        codes={column: _code_list(record[column], column, hadm_id) for column, _ in CODE_COLUMNS},
        labs=list(labs),
        note=note if _has_note(note) else None,
    )


class PatientSequenceBuilder:
    """Visits of one patient -> one row of fixed-shape arrays for :class:`~medmplm.models.mbehrt.MBehrtModel`
    (picklable; deterministic).

    Visits arrive oldest first. A visit's tabular tokens are its diagnoses (record order), procedures and medications,
    each code once per visit, then its first ``max_lab_events_per_visit`` lab events by time (each its item, with its
    value: a quantile bin, or the standardised value clipped to +-``lab_value_clip``); codes outside the vocabularies
    become [UNK]. A visit with neither a token nor a note is left out (``empty_visits``). When the tokens exceed
    ``max_length`` (less [CLS] and the gender token) or the visits ``max_visits - 1``, whole visits are dropped from
    the oldest end; a most recent visit longer than the sequence on its own keeps its first tokens. Each kept visit
    (oldest first, visit id 1, 2, ...) gives its tokens, and under ``text`` its note slot ``visit id - 1``, the same
    history inputs: age id (``1 + whole years``, at most ``1 + max_age``; 0 unknown), segment (1, 2 alternating),
    hours since the first kept admission (a lab event: plus its hours since admission) and hours since the previous
    visit's discharge (0 for the patient's first visit, and for overlapping stays).

    Output, ``P`` rows, ``L = max_length``, ``V = max_visits - 1``, ``N = K * T`` note tokens (K windows of T tokens):

    ================================  ==========  ===============================================================
    ``input_ids``                     [P, L]      [CLS], the gender token (when known), then the kept visits' tokens
    ``attention_mask``                [P, L]      1 on [CLS] and tokens
    ``age_ids``, ``segment_ids``,     [P, L]      history inputs per token (0 on [CLS], gender and padding)
    ``visit_ids``, ``time_hours``,
    ``gap_hours``
    ``value_ids``                     [P, L]      0 no value, 2 + bin (``binned``) or 2 (``projection``) a value
    ``values``                        [P, L]      float32 standardised values (``projection`` only)
    ``note_input_ids``,               [P, V, N]   each slot's note tokens (text only)
    ``note_attention_mask``
    ``note_mask``                     [P, V]      1 where the slot's visit has a note
    ``note_age_ids`` ...              [P, V]      the slot's visit's history inputs
    ``num_visits`` ...                [P]         the counts of :data:`COUNT_COLUMNS`
    ================================  ==========  ===============================================================

    Args:
        config: the model's configuration.
        tokenizer: the text encoder's tokenizer (needed when the model reads text).
    """

    def __init__(self, config: MBehrtConfig, tokenizer: Any = None) -> None:
        from medmplm.data.features import VisitFeaturizer
        from medmplm.data.vocab import CodeVocab
        from medmplm.models.mbehrt.configuration_mbehrt import NO_VALUE_ID, PRESENT_VALUE_ID, TOKEN_TYPES

        # Kept here: the per-token methods must not run an import statement for every lab event.
        self.no_value_id, self.present_value_id = NO_VALUE_ID, PRESENT_VALUE_ID
        self.reads_tabular = "tabular" in config.modalities
        self.reads_text = "text" in config.modalities
        self.token_ids: dict[str, dict[str, int]] = {}
        for token_type in TOKEN_TYPES:
            start, _ = config.token_range(token_type)
            self.token_ids[token_type] = {code: start + i for i, code in enumerate(config.vocabularies[token_type])}
        self.max_length = config.max_length
        self.max_visits = config.max_visits
        self.max_age = config.max_age
        self.max_lab_events = config.max_lab_events_per_visit
        self.binned = config.lab_value_embedding == "binned"
        self.edges = {item: np.asarray(edges, dtype=np.float64) for item, edges in config.lab_value_edges.items()}
        self.means, self.stds, self.clip = config.lab_value_means, config.lab_value_stds, float(config.lab_value_clip)
        self.notes = None
        self.note_length = 0
        if self.reads_text:
            if tokenizer is None:
                raise ValueError("the model reads text: the builder needs its tokenizer")
            # Notes are read exactly as MedM-PLM's visit featuriser reads them (head, head and tail, or windows).
            self.notes = VisitFeaturizer(
                tokenizer,
                CodeVocab("diagnosis", []),
                CodeVocab("medication", []),
                text_max_length=config.text_max_length,
                max_codes=1,
                long_note=config.text_long_note,
                max_windows=config.text_max_windows,
                stride=config.text_window_stride,
            )
            self.note_length = self.notes.num_windows * config.text_max_length

    @property
    def model_columns(self) -> tuple[str, ...]:
        """The output columns the model reads."""
        columns: tuple[str, ...] = ()
        if self.reads_tabular:
            columns += TABULAR_COLUMNS + (() if self.binned else ("values",))
        if self.reads_text:
            columns += TEXT_COLUMNS
        return columns

    def build(self, patients: Sequence[tuple[Sequence[Visit], str | None]]) -> dict[str, np.ndarray]:
        """One row per ``(visits oldest first, gender)`` (see the class docstring)."""
        size, slots = len(patients), self.max_visits - 1
        out: dict[str, np.ndarray] = {}
        if self.reads_tabular:
            for name in TABULAR_COLUMNS:
                out[name] = np.zeros((size, self.max_length), dtype=np.int64)
            out["input_ids"][:] = PAD_ID
            if not self.binned:
                out["values"] = np.zeros((size, self.max_length), dtype=np.float32)
        if self.reads_text:
            out["note_input_ids"] = np.full((size, slots, self.note_length), self.notes.pad_token_id, dtype=np.int64)
            out["note_attention_mask"] = np.zeros((size, slots, self.note_length), dtype=np.int64)
            for name in TEXT_COLUMNS[2:]:
                out[name] = np.zeros((size, slots), dtype=np.int64)
        for name in COUNT_COLUMNS:
            out[name] = np.zeros(size, dtype=np.int64)
        notes: list[tuple[int, int, str]] = []
        for index, (visits, gender) in enumerate(patients):
            notes += self._write_patient(out, index, visits, gender)
        if notes:
            encoded = self.notes(
                {
                    "note_text": _object_array([note for _, _, note in notes]),
                    "diagnoses": _object_array([[] for _ in notes]),
                    "medications": _object_array([[] for _ in notes]),
                }
            )
            rows = np.array([row for row, _, _ in notes], dtype=np.int64)
            slots_of_notes = np.array([slot for _, slot, _ in notes], dtype=np.int64)
            out["note_input_ids"][rows, slots_of_notes] = encoded["input_ids"]
            out["note_attention_mask"][rows, slots_of_notes] = encoded["attention_mask"]
            np.add.at(out["notes_truncated"], rows, encoded["text_truncated"])
        return out

    def _lab_value(self, item: str, value: Any, counts: dict[str, int]) -> tuple[int, float]:
        """A lab event's (value id, standardised value)."""
        no_value = (self.no_value_id, 0.0)
        if value is None or not np.isfinite(value):
            counts["lab_values_missing"] += 1
            return no_value
        if self.binned:
            if item not in self.edges:
                counts["lab_values_without_statistics"] += 1
                return no_value
            return self.present_value_id + int(np.searchsorted(self.edges[item], value, side="right")), 0.0
        if item not in self.means:
            counts["lab_values_without_statistics"] += 1
            return no_value
        std = float(self.stds[item])
        # A constant item (standard deviation 0) is only centred.
        standardised = (float(value) - float(self.means[item])) / (std if std > 0 else 1.0)
        if abs(standardised) > self.clip:
            counts["lab_values_clipped"] += 1
            standardised = float(np.clip(standardised, -self.clip, self.clip))
        return self.present_value_id, standardised

    def _visit_tokens(self, visit: Visit, counts: dict[str, int]) -> list[tuple[int, int, float, float]]:
        """``(token id, value id, standardised value, hours since admission)`` of a visit's tabular tokens."""
        if not self.reads_tabular:
            return []
        tokens = []
        for column, token_type in CODE_COLUMNS:
            ids = self.token_ids[token_type]
            codes = dict.fromkeys(visit.codes[column])
            tokens += [(ids.get(code, UNK_ID), self.no_value_id, 0.0, 0.0) for code in codes]
        events = []
        for event in visit.labs:
            hours = event["hours_since_admit"]
            if hours is None or not np.isfinite(hours):
                raise ValueError(f"column 'labs', hadm_id {visit.hadm_id}: a lab event without hours_since_admit")
            events.append((float(hours), event))
        events.sort(key=lambda timed: timed[0])
        counts["lab_events_dropped"] += max(0, len(events) - self.max_lab_events)
        labs = self.token_ids["lab"]
        for hours, event in events[: self.max_lab_events]:
            item = str(event["itemid"])
            value_id, value = self._lab_value(item, event["valuenum"], counts)
            tokens.append((labs.get(item, UNK_ID), value_id, value, hours))
        return tokens

    def _select(
        self, visits: Sequence[Visit], gender: str | None, counts: dict[str, int]
    ) -> tuple[list[tuple[Visit, list[tuple[int, int, float, float]], int]], int | None]:
        """The kept visits of one patient, oldest first, each with its tokens and its hours since the previous visit's
        discharge, and the gender token (``None``: no gender); adds to ``counts``."""
        candidates = []
        previous_discharge = None
        for visit in visits:
            tokens = self._visit_tokens(visit, counts)
            gap = 0
            if previous_discharge is not None:
                hours = (visit.admittime - previous_discharge) / np.timedelta64(1, "s") / SECONDS_PER_HOUR
                gap = max(0, int(np.rint(hours)))
            previous_discharge = visit.dischtime
            if tokens or (self.reads_text and visit.note is not None):
                candidates.append((visit, tokens, gap))
            else:
                counts["empty_visits"] += 1

        gender_token = None
        if self.reads_tabular and gender is not None:
            gender_token = self.token_ids["gender"].get(str(gender), UNK_ID)
        first = 1 + (gender_token is not None)
        # The most recent visits that fit, whole.
        budget = self.max_length - first if self.reads_tabular else np.inf
        kept = []
        for visit, tokens, gap in reversed(candidates):
            if len(kept) == self.max_visits - 1 or len(tokens) > budget:
                break
            kept.append((visit, tokens, gap))
            budget -= len(tokens)
        if candidates and not kept:
            visit, tokens, gap = candidates[-1]
            kept = [(visit, tokens[: self.max_length - first], gap)]
        kept.reverse()
        counts["num_visits"] += len(kept)
        counts["visits_dropped"] += len(candidates) - len(kept)
        counts["tokens_dropped"] += sum(len(tokens) for _, tokens, _ in candidates) - sum(len(t) for _, t, _ in kept)
        counts["unknown_tokens"] += sum(token == UNK_ID for _, tokens, _ in kept for token, *_ in tokens)
        counts["unknown_tokens"] += int(gender_token == UNK_ID)
        counts["ages_clamped"] += sum(visit.age is not None and visit.age > self.max_age for visit, _, _ in kept)
        return kept, gender_token

    def count(self, patients: Sequence[tuple[Sequence[Visit], str | None]]) -> dict[str, int]:
        """The :data:`COUNT_COLUMNS` summed over ``patients`` without building their rows; notes are not tokenised,
        so ``notes_truncated`` is not among them."""
        counts = dict.fromkeys(COUNT_COLUMNS, 0)
        for visits, gender in patients:
            self._select(visits, gender, counts)
        del counts["notes_truncated"]
        return counts

    def _age_id(self, age: float | None) -> int:
        return 0 if age is None else 1 + min(int(age), self.max_age)

    def _write_patient(
        self, out: dict[str, np.ndarray], index: int, visits: Sequence[Visit], gender: str | None
    ) -> list[tuple[int, int, str]]:
        """Write one patient's row ``index``; returns ``(row, slot, note)`` of the kept visits' notes."""
        counts = dict.fromkeys(COUNT_COLUMNS, 0)
        kept, gender_token = self._select(visits, gender, counts)
        notes = []
        position = 1 + (gender_token is not None)
        start = kept[0][0].admittime if kept else None
        for visit_id, (visit, tokens, gap) in enumerate(kept, start=1):
            age_id, segment = self._age_id(visit.age), 2 - visit_id % 2
            offset = (visit.admittime - start) / np.timedelta64(1, "s") / SECONDS_PER_HOUR
            if tokens:
                end = position + len(tokens)
                token_ids, value_ids, values, hours = (np.array(column) for column in zip(*tokens))
                span = slice(position, end)
                out["input_ids"][index, span] = token_ids
                out["value_ids"][index, span] = value_ids
                out["age_ids"][index, span] = age_id
                out["segment_ids"][index, span] = segment
                out["visit_ids"][index, span] = visit_id
                out["time_hours"][index, span] = np.rint(offset + hours)
                out["gap_hours"][index, span] = gap
                if not self.binned:
                    out["values"][index, span] = values
                position = end
            if self.reads_text:
                slot = visit_id - 1
                out["note_age_ids"][index, slot] = age_id
                out["note_segment_ids"][index, slot] = segment
                out["note_visit_ids"][index, slot] = visit_id
                out["note_time_hours"][index, slot] = np.rint(offset)
                out["note_gap_hours"][index, slot] = gap
                if visit.note is not None:
                    out["note_mask"][index, slot] = 1
                    notes.append((index, slot, visit.note))
        if self.reads_tabular:
            out["input_ids"][index, 0] = CLS_ID
            if gender_token is not None:
                out["input_ids"][index, 1] = gender_token
            out["attention_mask"][index, :position] = 1
        for name, value in counts.items():
            out[name][index] = value
        return notes


def _object_array(items: list) -> np.ndarray:
    # np.array on a list of equal-length lists would build a 2-D array; one object per visit is wanted.
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


class PatientSequenceFeaturizer:
    """Visit records -> one row per patient (a ``map_groups`` function over ``subject_id``; picklable): each patient's
    visits ordered by ``admittime`` (then ``hadm_id``) through :class:`PatientSequenceBuilder`, plus ``subject_id``.
    A patient's gender is the first one their visits record."""

    def __init__(self, builder: PatientSequenceBuilder) -> None:
        self.builder = builder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise the visits of one or more patients (VISIT_SCHEMA columns; extra columns are ignored)."""
        missing = [c for c in VISIT_COLUMNS if c not in batch]
        if missing:
            raise KeyError(
                f"visit batch lacks column(s) {missing}; expected VISIT_SCHEMA columns {list(VISIT_COLUMNS)}"
            )
        subject_ids = np.asarray(batch["subject_id"], dtype=np.int64)
        patients, patient_of_row = np.unique(subject_ids, return_inverse=True)
        histories = []
        for index in range(len(patients)):
            rows = np.flatnonzero(patient_of_row == index)
            rows = rows[np.lexsort((np.asarray(batch["hadm_id"])[rows], np.asarray(batch["admittime"])[rows]))]
            visits = [as_visit({column: batch[column][row] for column in VISIT_COLUMNS}) for row in rows]
            genders = [batch["gender"][row] for row in rows if isinstance(batch["gender"][row], str)]
            histories.append((visits, genders[0] if genders else None))
        out = self.builder.build(histories)
        out["subject_id"] = patients
        return out


def model_rows(batch: dict[str, np.ndarray], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's ``columns`` of the patients with a kept visit (``map_batches`` after the featuriser)."""
    keep = batch["num_visits"] > 0
    return {name: batch[name][keep] for name in columns}


def sequence_counts(dataset: Any) -> dict[str, int]:
    """Patients and the builder's counts over a (materialised) dataset of featurised patient rows."""
    counts = {"patients": 0, "without_visits": 0, "truncated": 0, **dict.fromkeys(COUNT_COLUMNS, 0)}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        counts["patients"] += len(batch["num_visits"])
        counts["without_visits"] += int((batch["num_visits"] == 0).sum())
        counts["truncated"] += int(((batch["tokens_dropped"] > 0) | (batch["visits_dropped"] > 0)).sum())
        for name in COUNT_COLUMNS:
            counts[name] += int(batch[name].sum())
    return counts


def describe_counts(counts: Mapping[str, int]) -> str:
    """The builder's counts in one line, for a run log (notes not read to their end when counted)."""
    line = (
        f"visits kept {counts['num_visits']}, dropped from the oldest end {counts['visits_dropped']} "
        f"({counts['tokens_dropped']} tokens), empty {counts['empty_visits']}; tokens not in the vocabularies "
        f"{counts['unknown_tokens']}; lab events beyond the per-visit limit {counts['lab_events_dropped']}; lab values "
        f"not embedded: {counts['lab_values_missing']} without a number, {counts['lab_values_without_statistics']} of "
        f"items without training statistics; lab values clipped {counts['lab_values_clipped']}; ages above the age "
        f"table {counts['ages_clamped']}"
    )
    if "notes_truncated" in counts:
        line += f"; notes not read to their end {counts['notes_truncated']}"
    return line


def read_visit_table(prepared_dir: str | Path, split: str, columns: Sequence[str] = VISIT_COLUMNS) -> pa.Table:
    """``columns`` of one split's visit records (a local prepared directory), read with pyarrow.

    Raises:
        FileNotFoundError: naming the split directory when it holds no visit files.
        ValueError: naming the split directory and the columns it lacks (a schema version 1 directory has no
            ``gender`` and ``age``).
    """
    import pyarrow.dataset as ds

    split_dir = Path(prepared_dir) / schema.VISITS_DIR / split
    files = sorted(split_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no visit files (*.parquet); expected a prepared directory")
    dataset = ds.dataset(files, format="parquet")
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise ValueError(
            f"{split_dir}: visit files lack column(s) {missing}; M-BEHRT reads schema version "
            f"{schema.SCHEMA_VERSION} (ages, genders, lab events): prepare the data again "
            "(python -m medmplm.prepare)"
        )
    return dataset.to_table(columns=list(columns))


def lab_value_statistics(
    prepared_dir: str | Path, items: Sequence[str], bins: int
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Per lab item of ``items``, from the training split's numeric lab values: the ``bins - 1`` inner quantile edges
    (numpy's linear interpolation), the mean and the (population) standard deviation. Items without a numeric
    training value have none.

    Returns:
        ``(edges, means, stds)``, each keyed by item.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    events = pc.list_flatten(read_visit_table(prepared_dir, "train", ("labs",)).column("labs").combine_chunks())
    item_column = pc.struct_field(events, "itemid")
    value_column = pc.struct_field(events, "valuenum")
    usable = pc.and_(pc.is_finite(value_column), pc.is_in(item_column, value_set=pa.array(list(items), pa.string())))
    usable = pc.fill_null(usable, False)
    encoded = pc.dictionary_encode(pc.filter(item_column, usable))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = pc.filter(value_column, usable).to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((values, codes))
    codes, values = codes[order], values[order]
    starts = np.searchsorted(codes, np.arange(len(encoded.dictionary) + 1))
    quantiles = np.arange(1, bins) / bins
    edges, means, stds = {}, {}, {}
    for code, item in enumerate(encoded.dictionary.to_pylist()):
        group = values[starts[code] : starts[code + 1]]
        edges[item] = [float(edge) for edge in np.quantile(group, quantiles)]
        means[item] = float(group.mean())
        stds[item] = float(group.std())
    return edges, means, stds


def prepared_vocabularies(prepared_dir: str | Path, min_count: int) -> dict[str, list[str]]:
    """The token vocabularies of a prepared directory: the gender values, and the diagnosis, procedure, medication
    and lab codes of ``vocab/`` seen at least ``min_count`` times in the training split, most frequent first (a type
    may be empty: a directory without lab events has no lab token)."""
    from medmplm.data.vocab_io import read_vocab
    from medmplm.models.mbehrt.configuration_mbehrt import GENDERS

    vocab_dir = Path(prepared_dir) / schema.VOCAB_DIR
    vocabularies = {"gender": list(GENDERS)}
    for token_type in ("diagnosis", "procedure", "medication", "lab"):
        entries = read_vocab(vocab_dir / f"{token_type}.tsv")
        vocabularies[token_type] = [code for code, count in entries if count >= min_count]
    return vocabularies


def build_mbehrt(
    model_class: type,
    prepared_dir: str | Path,
    values: Mapping[str, Any],
    tokenizer_dir: str | None = None,
    text_checkpoint: str | None = None,
) -> Any:
    """A freshly initialised M-BEHRT model (``MBehrtModel`` or ``MBehrtForPretraining``) of configuration ``values``
    for a prepared directory: its vocabularies, lab value statistics and (when it reads text) its text side
    (:func:`~medmplm.pretraining.medmplm.build_text_side`), tokenizer attached.

    Raises:
        ValueError: naming the field of ``values`` that is wrong.
    """
    from medmplm.models.mbehrt import MBehrtConfig
    from medmplm.pretraining.medmplm import build_text_side

    config = MBehrtConfig(**values)
    config.vocabularies = prepared_vocabularies(prepared_dir, config.code_min_count)
    edges, means, stds = lab_value_statistics(prepared_dir, config.vocabularies["lab"], config.lab_value_bins)
    if config.lab_value_embedding == "binned":
        config.lab_value_edges = edges
    else:
        config.lab_value_means, config.lab_value_stds = means, stds
    backbone = tokenizer = None
    if "text" in config.modalities:
        backbone, tokenizer = build_text_side(config, prepared_dir, tokenizer_dir, text_checkpoint)
    config.validate_fields()
    model = model_class(config, text_backbone=backbone)
    model.tokenizer = tokenizer
    return model


def load_pretraining_model(directory: Path) -> MBehrtForPretraining:
    """The :class:`~medmplm.models.mbehrt.MBehrtForPretraining` saved in ``directory``, in training mode."""
    from medmplm.models.mbehrt import MBehrtForPretraining

    model = MBehrtForPretraining.from_pretrained(directory)
    model.train()
    return model


@dataclass
class MBehrtPretrainingTask:
    """Masked token modelling, masked lab-value prediction and visit alignment
    (:class:`~medmplm.models.mbehrt.MBehrtForPretraining`).

    Masking, per position, with the loop's generator only: every tabular token (not [PAD], [CLS], [MASK] or [UNK]) is
    a target with probability ``mask_prob``; of the targets, ``mask_token_prob`` become [MASK], ``random_token_prob`` a
    random token of the same type (drawn from ``token_ranges``), the rest stay. Independently, every present lab value
    is hidden with probability ``value_mask_prob`` (its value id becomes ``MASKED_VALUE_ID``, its standardised value 0)
    and is a value target.

    Args:
        token_ranges: ``[start, end)`` of each token type in the tabular token space.
        binned: the model embeds values by bins (targets: bin indices) rather than by projection (standardised values).
        model_columns: the featurised columns the model reads.
        mask_prob, mask_token_prob, random_token_prob, value_mask_prob: as ``MBehrtConfig``.
    """

    token_ranges: tuple[tuple[int, int], ...]
    binned: bool
    model_columns: tuple[str, ...]
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    value_mask_prob: float = 0.15
    name: str = "mbehrt"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    @classmethod
    def from_config(cls, config: MBehrtConfig, model_columns: Sequence[str]) -> MBehrtPretrainingTask:
        """The task for an M-BEHRT model: its token types' ranges, value embedding and masking rates."""
        from medmplm.models.mbehrt.configuration_mbehrt import TOKEN_TYPES

        return cls(
            token_ranges=tuple(config.token_range(token_type) for token_type in TOKEN_TYPES),
            binned=config.lab_value_embedding == "binned",
            model_columns=tuple(model_columns),
            mask_prob=config.mask_prob,
            mask_token_prob=config.mask_token_prob,
            random_token_prob=config.random_token_prob,
            value_mask_prob=config.value_mask_prob,
        )

    def load_model(self, directory: Path) -> MBehrtForPretraining:
        """The pretraining model saved in ``directory``, in training mode."""
        return load_pretraining_model(directory)

    def mask_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids -> (masked ids, labels: the original id at targets, -100 elsewhere)."""
        from medmplm.data.masking import mask_sequence_tokens

        return mask_sequence_tokens(
            input_ids,
            attention_mask,
            generator,
            self.token_ranges,
            self.mask_prob,
            self.mask_token_prob,
            self.random_token_prob,
        )

    def mask_values(
        self, value_ids: torch.Tensor, values: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Hide lab values -> (value ids, standardised values, value labels: the bin index, or the standardised value,
        at hidden values)."""
        import torch

        from medmplm.data.masking import IGNORE_INDEX
        from medmplm.models.mbehrt.configuration_mbehrt import MASKED_VALUE_ID, PRESENT_VALUE_ID

        draw = torch.rand(value_ids.shape, generator=generator, device=generator.device).to(value_ids.device)
        hidden = (value_ids >= PRESENT_VALUE_ID) & (draw < self.value_mask_prob)
        if self.binned:
            labels = torch.where(hidden, value_ids - PRESENT_VALUE_ID, torch.full_like(value_ids, IGNORE_INDEX))
        else:
            labels = torch.where(hidden, values, torch.zeros_like(values))
            values = torch.where(hidden, torch.zeros_like(values), values)
        return torch.where(hidden, torch.full_like(value_ids, MASKED_VALUE_ID), value_ids), values, labels

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask tokens and values and add their labels; validation batches are masked too (its loss is the score)."""
        missing = [c for c in self.model_columns if c not in batch]
        if missing:
            raise KeyError(
                f"batch lacks {missing}; expected the mbehrt patient-sequence columns {list(self.model_columns)}"
            )
        inputs = {name: batch[name] for name in self.model_columns}
        inputs["input_ids"], inputs["labels"] = self.mask_tokens(batch["input_ids"], batch["attention_mask"], generator)
        value_ids, values, inputs["value_labels"] = self.mask_values(batch["value_ids"], batch.get("values"), generator)
        inputs["value_ids"] = value_ids
        if values is not None:
            inputs["values"] = values
        return inputs

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each objective's loss weighted by its targets; masked-token and (binned) masked-value accuracy."""
        statistics = {}
        for name, loss in output.losses.items():
            count = output.target_counts[name].detach().float()
            statistics[f"loss_{name}"] = (loss.detach().float() * count, count)
        masked = output.target_counts["mtm"].detach().float()
        statistics["masked_token_accuracy"] = (output.masked_token_accuracy.detach().float() * masked, masked)
        if output.masked_value_accuracy is not None:
            hidden = output.target_counts["mvp"].detach().float()
            statistics["masked_value_accuracy"] = (output.masked_value_accuracy.detach().float() * hidden, hidden)
        return statistics


class MBehrtFamily:
    """The ``mbehrt`` family of the pretraining recipe (see :class:`~medmplm.pretraining.family.PretrainingFamily`)."""

    name = "mbehrt"
    summary = "M-BEHRT on patient histories: time-stamped codes and labs (+ notes), masked tokens and lab values"
    presets = PRESETS
    default_preset = "tiny"
    options: dict[str, Any] = {}

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        """A preset M-BEHRT for the prepared directory (see the module docstring), or the mbehrt model of
        ``model.init_from``.

        Raises:
            ConfigError: naming ``model.preset``, ``model.overrides``, ``model.options``, ``model.init_from`` or
                ``model.text_checkpoint`` when wrong (a text-only model, which has no pretraining objective; late
                fusion without the alignment loss, which would leave its text side untrained; frozen text layers of
                a random BERT without ``model.allow_random_frozen``).
        """
        from medmplm.config import ConfigError
        from medmplm.models.mbehrt import MBehrtConfig, MBehrtForPretraining

        resolve_options(self, model.options)
        if model.init_from is not None:
            if model.overrides:
                raise ConfigError(
                    f"model.overrides: {sorted(model.overrides)} cannot change a model continued from model.init_from"
                )
            model_type = saved_model_type(model.init_from)
            if model_type != MBehrtConfig.model_type:
                raise ConfigError(
                    f"model.init_from: {model.init_from} holds a {model_type!r} model, expected an mbehrt export"
                )
            return BuiltModel(
                MBehrtForPretraining.from_pretrained(model.init_from), description=f"continued from {model.init_from}"
            )

        values = preset_values(self, model)
        unknown = sorted(set(model.overrides) - settable_fields())
        if unknown:
            raise ConfigError(
                f"model.overrides.{unknown[0]}: not an MBehrtConfig field; known: {sorted(settable_fields())}"
            )
        key = "model.overrides" if model.overrides else "model.preset"
        try:
            config = MBehrtConfig(**values)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{key}: {error}") from error
        if "tabular" not in config.modalities:
            raise ConfigError(
                "model.overrides.modalities: a text-only M-BEHRT has no pretraining objective (masked tokens and lab "
                "values are tabular); pretrain its text encoder with model.family=bert-mlm and fine-tune "
                "--model mbehrt-text from that export"
            )
        if config.fused and config.fusion == "late" and config.loss_weights["alignment"] == 0:
            raise ConfigError(
                "model.overrides.loss_weights: late fusion trains its text side in pretraining only through the "
                "alignment loss, which is off; give it a weight > 0, or pretrain modalities=[tabular]"
            )
        reads_text = "text" in config.modalities
        frozen = config.text_num_frozen_layers
        if reads_text and model.text_checkpoint is None and frozen > 0 and not model.allow_random_frozen:
            raise ConfigError(
                f"model.text_checkpoint: none given, so the text encoder starts from random weights, and {frozen} of "
                "its layers (and its embeddings) would stay frozen: random features that never learn. Pass a "
                "bert-mlm export as model.text_checkpoint=DIR, or set model.overrides.text_num_frozen_layers=0, or "
                "model.allow_random_frozen=true"
            )
        if not reads_text and (model.text_checkpoint is not None or model.tokenizer_dir is not None):
            text_key = "model.text_checkpoint" if model.text_checkpoint is not None else "model.tokenizer_dir"
            raise ConfigError(f"{text_key}: this M-BEHRT reads no text (modalities {config.modalities}); unset it")
        try:
            built = build_mbehrt(MBehrtForPretraining, prepared_dir, values, model.tokenizer_dir, model.text_checkpoint)
        except ValueError as error:
            raise ConfigError(f"{key}: {error}") from error
        config = built.config
        preset = model.preset or self.default_preset
        codes = ", ".join(f"{len(values)} {kind}" for kind, values in config.vocabularies.items() if kind != "gender")
        text = ""
        if reads_text:
            text = f", text encoder {'from ' + model.text_checkpoint if model.text_checkpoint else 'random'}"
        layout = f"{config.fusion} fusion" if config.fused else f"{config.modalities[0]} only"
        return BuiltModel(
            built,
            description=f"{preset} preset, {layout}, {config.lab_value_embedding} lab values, codes {codes}{text}",
        )

    def load_model(self, directory: Path) -> MBehrtForPretraining:
        """The pretraining model saved in ``directory``, in training mode, on the CPU."""
        return load_pretraining_model(directory)

    def builder(self, model_dir: Path) -> PatientSequenceBuilder:
        """The patient-sequence builder of the model saved in ``model_dir`` (its tokenizer, when it reads text)."""
        from medmplm.models.mbehrt import MBehrtConfig
        from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer

        config = MBehrtConfig.from_pretrained(model_dir)
        tokenizer = load_tokenizer(model_dir) if (Path(model_dir) / TOKENIZER_MARKER).is_file() else None
        return PatientSequenceBuilder(config, tokenizer)

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """``train`` and ``val`` Ray Datasets of patient sequences (the model's columns), counts logged.

        Raises:
            ConfigError: naming ``data.text_cache`` (M-BEHRT reads each visit's note from its tokens).
        """
        from medmplm.config import ConfigError
        from medmplm.pretraining.medbert import patient_sequences, read_patient_visits

        if config.data.text_cache:
            raise ConfigError(
                "data.text_cache: the mbehrt family encodes notes from their tokens; set data.text_cache=false"
            )
        builder = self.builder(model_dir)
        featurizer = PatientSequenceFeaturizer(builder)
        datasets = {}
        for split in ("train", "val"):
            # One partition per training worker: the parallelism the run has, whatever the data size.
            visits = read_patient_visits(prepared_dir, split, VISIT_COLUMNS)
            dataset = patient_sequences(visits, featurizer, num_partitions=max(1, config.scaling.num_workers))
            if config.data.materialize:
                dataset = dataset.materialize()
                counts = sequence_counts(dataset)
                logger.info(
                    "%s: %d patient sequences (%d patients without a visit dropped), %d truncated; %s",
                    split,
                    counts["patients"] - counts["without_visits"],
                    counts["without_visits"],
                    counts["truncated"],
                    describe_counts(counts),
                )
            dataset = dataset.map_batches(
                model_rows, batch_format="numpy", fn_kwargs={"columns": builder.model_columns}
            )
            # Materialised after the projection too: the training workers then hold every CPU, and a lazy projection
            # would wait for one forever.
            datasets[split] = dataset.materialize() if config.data.materialize else dataset
        return datasets

    def task(self, model_dir: Path) -> MBehrtPretrainingTask:
        """The masking / statistics task for the model in ``model_dir``."""
        from medmplm.models.mbehrt import MBehrtConfig

        config = MBehrtConfig.from_pretrained(model_dir)
        return MBehrtPretrainingTask.from_config(config, self.builder(model_dir).model_columns)


def settable_fields() -> set[str]:
    """``MBehrtConfig``'s fields that a preset or ``model.overrides`` may set (vocabularies, lab value statistics and
    the text encoder's config come from the data and the checkpoint)."""
    from medmplm.models.mbehrt import MBehrtConfig

    derived = {"vocabularies", "lab_value_edges", "lab_value_means", "lab_value_stds", "text_config", "text_pretrained"}
    return set(MBehrtConfig.__annotations__) - derived


def saved_model_type(directory: str) -> str | None:
    """``model_type`` of the ``config.json`` in a ``save_pretrained`` directory."""
    import json

    return json.loads((Path(directory) / "config.json").read_text(encoding="utf-8")).get("model_type")


FAMILY = MBehrtFamily()
