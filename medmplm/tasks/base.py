"""What every fine-tuning task shares: the example layout, reading prepared visits, exclusions.

An *example* is a short sequence of visits of one patient, oldest first, whose last visit is the *target* visit the
label belongs to. Single-visit tasks (readmission, ICD coding) have sequences of length 1; medication recommendation
puts the patient's earlier visits before the target. Each task decides, when it builds its examples, which fields of
which visit are visible (e.g. the target visit's medications are blanked out for medication recommendation, its
diagnoses for ICD coding), so a model cannot see a label whatever it reads.

A task may instead read its own corpus (NER reads i2b2-format documents, not visits): it then has an
``own_examples(config)`` method returning :class:`OwnExamples`, and the runner trains and scores what it returns
through the same loop, checkpoints and result records (:func:`reads_own_examples`).

Visits a task cannot use (no label, no history, ...) are never dropped silently: they are listed, with the reason, in
:attr:`ExampleSet.excluded`, which the fine-tuning entry point writes beside its results.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from medmplm.data import schema

# Columns of VISIT_SCHEMA the tasks read.
VISIT_COLUMNS = (
    "subject_id",
    "hadm_id",
    "admittime",
    "diagnoses",
    "medications",
    "note_text",
    "readmission_30d",
    "readmission_30d_nonelective",
)

# Per-visit input fields of an example, oldest visit first, the target visit last.
SEQUENCE_FIELDS = ("note_text", "diagnoses", "medications")

_INPUT_FIELDS = [
    pa.field("subject_id", pa.int64(), nullable=False),
    # The target visit.
    pa.field("hadm_id", pa.int64(), nullable=False),
    pa.field("note_text", pa.list_(pa.string()), nullable=False),
    pa.field("diagnoses", pa.list_(pa.list_(pa.string())), nullable=False),
    pa.field("medications", pa.list_(pa.list_(pa.string())), nullable=False),
]
# Multi-label tasks: the target visit's label codes (all inside the task's label space).
MULTILABEL_EXAMPLE_SCHEMA = pa.schema([*_INPUT_FIELDS, pa.field("label_codes", pa.list_(pa.string()), nullable=False)])
BINARY_EXAMPLE_SCHEMA = pa.schema([*_INPUT_FIELDS, pa.field("label", pa.int8(), nullable=False)])

EXCLUDED_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("hadm_id", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


class PreparedDataError(ValueError):
    """A prepared directory is missing a split or a column the tasks need."""


class NoExamplesError(ValueError):
    """A split of a prepared directory left a task with no example: a one-line message with the exclusion counts and
    a hint.

    Attributes:
        prepared_dir: the prepared directory.
        split: ``train``, ``val`` or ``test``.
        task: the task name.
        exclusion_counts: excluded visits by reason (:meth:`ExampleSet.exclusion_counts`).
    """

    def __init__(
        self, prepared_dir: str | os.PathLike, split: str, task: str, exclusion_counts: dict[str, int]
    ) -> None:
        self.prepared_dir = str(prepared_dir)
        self.split = split
        self.task = task
        self.exclusion_counts = dict(exclusion_counts)
        counts = ", ".join(f"{reason} {count}" for reason, count in sorted(exclusion_counts.items())) or "none"
        if exclusion_counts and max(exclusion_counts, key=exclusion_counts.get) == "no_note":
            hint = "most visits have no note: finetune.task_options.require_note=false keeps them"
        elif split == "train":
            hint = "a larger finetune.train_ratio, or other finetune.task_options, may leave some"
        else:
            hint = "check the task's options (finetune.task_options) against this prepared directory"
        super().__init__(
            f"{self.prepared_dir}: the {split} split has no {task} examples (excluded visits: {counts}); {hint}"
        )


@dataclass
class ExampleSet:
    """A task's examples for one split, and the visits it could not use.

    Attributes:
        examples: one row per example (``MULTILABEL_EXAMPLE_SCHEMA`` or ``BINARY_EXAMPLE_SCHEMA``).
        excluded: ``subject_id, hadm_id, reason`` of every visit of the split that is not a target of an example.
        dropped_label_codes: label codes of target visits left out because they are outside the label space (codes
            never seen in training, or beyond the top-k); they are neither predicted nor scored.
    """

    examples: pa.Table
    excluded: pa.Table
    dropped_label_codes: int = 0

    def exclusion_counts(self) -> dict[str, int]:
        """Number of excluded visits by reason."""
        return dict(sorted(Counter(self.excluded.column("reason").to_pylist()).items()))

    def __len__(self) -> int:
        return self.examples.num_rows

    def restricted_to(self, selection: ExampleSet) -> ExampleSet:
        """These examples less those a training selection over a superset of them left out (e.g. the negatives
        :func:`subsample_negatives` dropped from the whole split); those join ``excluded`` with the selection's reason.
        """
        target_ids = self.examples.column("hadm_id")
        kept = pc.is_in(target_ids, value_set=selection.examples.column("hadm_id"))
        left_out = pc.filter(target_ids, pc.invert(kept))
        reasons = selection.excluded.filter(pc.is_in(selection.excluded.column("hadm_id"), value_set=left_out))
        if reasons.num_rows != len(left_out):
            raise ValueError("the selection is not over a superset of these examples: it does not say why some are out")
        return ExampleSet(
            self.examples.filter(kept), pa.concat_tables([self.excluded, reasons]), self.dropped_label_codes
        )


class Task(Protocol):
    """A fine-tuning task: builds labelled examples from prepared visits and scores predictions.

    Attributes:
        name: the ``--task`` name.
        multilabel: labels are a set of codes (``label_codes``) rather than one 0/1 ``label``.
        max_visits: longest visit sequence of an example (1 for single-visit tasks).
        target_modalities: the modalities (``"text"``, ``"codes"``) shown for the target visit.
    """

    name: str
    multilabel: bool
    max_visits: int
    target_modalities: frozenset[str]

    def label_space(self, train_visits: pa.Table) -> list[str]:
        """The codes predicted (one output each), chosen from the training split only; empty for binary tasks."""
        ...

    def build_examples(self, visits: pa.Table, label_space: Sequence[str]) -> ExampleSet:
        """Examples of one split (``visits``: VISIT_COLUMNS of that split)."""
        ...

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        """The examples actually trained on (e.g. after subsampling negatives); evaluation never uses this.

        Called once on the whole training split: a smaller train ratio keeps the selected examples of its patients
        (:meth:`ExampleSet.restricted_to`), so the example sets of nested patient subsets are nested.
        """
        ...

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        """Evaluation metrics (``medmplm.metrics``) of predicted probabilities."""
        ...


@dataclass
class OwnExamples:
    """What a task that reads its own corpus hands the runner (``medmplm.tasks.runner``).

    Attributes:
        featurized: split (``train``, ``val``, ``test``) -> column -> array of fixed shape per split: the training
            task's model inputs, and any columns its ``model_inputs`` leaves out (they reach ``evaluate`` of the final
            predictions, e.g. to join windows of one sentence).
        num_examples: split -> examples as the task counts them (sentences, not windows).
        training_task: trains and scores the model in the shared loop (``medmplm.train.task.TrainingTask`` with
            ``collect`` and ``evaluate``); ``evaluate`` also gives the record's metrics.
        build_model: ``build_model(directory)`` saves the initial model there (``save_pretrained``).
        init: the export the model's pretrained weights came from; ``None`` when trained from scratch.
        data: what was read (a corpus directory), in place of a prepared directory.
        details: JSON-serialisable counts and settings for the result record.
    """

    featurized: dict[str, dict[str, np.ndarray]]
    num_examples: dict[str, int]
    training_task: Any
    build_model: Any
    init: str | None
    data: str
    details: dict[str, Any]


def reads_own_examples(task: Any) -> bool:
    """Whether ``task`` reads its own corpus (``own_examples``) rather than prepared visits."""
    return callable(getattr(task, "own_examples", None))


def read_visits(prepared_dir: str | os.PathLike, split: str) -> pa.Table:
    """The VISIT_COLUMNS of one split of a prepared directory, ordered by (subject_id, admittime, hadm_id).

    Raises:
        PreparedDataError: naming the directory, split or column that is missing, or a schema-version mismatch.
    """
    prepared_dir = Path(prepared_dir)
    if split not in schema.SPLITS:
        raise PreparedDataError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
    read_manifest(prepared_dir)
    split_dir = prepared_dir / schema.VISITS_DIR / split
    files = sorted(split_dir.glob("*.parquet"))
    if not files:
        raise PreparedDataError(f"{split_dir}: no visit files (*.parquet)")
    dataset = ds.dataset(files, format="parquet")
    missing = [c for c in VISIT_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise PreparedDataError(f"{split_dir}: visit files lack column(s) {missing}")
    table = dataset.to_table(columns=list(VISIT_COLUMNS))
    return sort_visits(table)


def read_manifest(prepared_dir: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a prepared directory whose visits this code can read.

    Raises:
        PreparedDataError: naming the directory when it has no manifest, or the manifest on a schema-version mismatch.
    """
    manifest_path = Path(prepared_dir) / schema.MANIFEST_FILE
    if not manifest_path.is_file():
        raise PreparedDataError(f"{prepared_dir}: not a prepared directory (no {schema.MANIFEST_FILE})")
    manifest = json.loads(manifest_path.read_text())
    version = manifest.get("schema_version")
    if version not in schema.READABLE_SCHEMA_VERSIONS:
        raise PreparedDataError(
            f"{manifest_path}: schema_version {version!r}, but this code reads versions "
            f"{', '.join(map(str, schema.READABLE_SCHEMA_VERSIONS))}"
        )
    return manifest


def task_options(task: Task) -> dict:
    """Every option of ``task`` with its value, defaults included (the keyword arguments that rebuild it)."""
    return {name: value for name, value in vars(task).items() if not name.startswith("_")}


def sort_visits(visits: pa.Table) -> pa.Table:
    """Visits ordered by patient, then admission time, then admission id (the order history is built in)."""
    return visits.sort_by([("subject_id", "ascending"), ("admittime", "ascending"), ("hadm_id", "ascending")])


def excluded_table(rows: Iterable[tuple[int, int, str]]) -> pa.Table:
    """An ``EXCLUDED_SCHEMA`` table from ``(subject_id, hadm_id, reason)`` rows."""
    rows = list(rows)
    subject_ids, hadm_ids, reasons = zip(*rows) if rows else ((), (), ())
    return pa.table(
        {"subject_id": list(subject_ids), "hadm_id": list(hadm_ids), "reason": list(reasons)}, schema=EXCLUDED_SCHEMA
    )


def code_frequencies(visits: pa.Table, column: str) -> list[tuple[str, int]]:
    """``(code, number of visits listing it)`` for a list-of-codes column, most frequent first, ties by code."""
    flat = pc.list_flatten(visits.column(column))
    # A code listed twice in one visit counts once: count distinct (visit, code) pairs.
    parents = pc.list_parent_indices(visits.column(column))
    pairs = pa.table({"visit": parents, "code": flat}).group_by(["visit", "code"]).aggregate([])
    counts = pairs.group_by("code").aggregate([("visit", "count")])
    items = zip(counts.column("code").to_pylist(), counts.column("visit_count").to_pylist())
    return sorted(items, key=lambda item: (-item[1], item[0]))


def subsample_negatives(examples: ExampleSet, seed: int) -> ExampleSet:
    """Keep every positive and as many negatives, drawn without replacement with ``seed`` (binary examples).

    The dropped negatives are added to ``excluded`` with reason ``negative_subsampled``. When negatives are fewer than
    positives, all examples are kept.
    """
    labels = examples.examples.column("label").to_numpy()
    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels == 0)
    if negatives.size <= positives.size:
        return examples
    rng = np.random.default_rng(seed)
    kept_negatives = rng.choice(negatives, size=positives.size, replace=False)
    keep = np.sort(np.concatenate([positives, kept_negatives]))
    dropped = np.setdiff1d(negatives, kept_negatives)
    table = examples.examples
    dropped_rows = excluded_table(
        [
            (s, h, "negative_subsampled")
            for s, h in zip(
                table.column("subject_id").take(dropped).to_pylist(), table.column("hadm_id").take(dropped).to_pylist()
            )
        ]
    )
    return ExampleSet(
        table.take(keep), pa.concat_tables([examples.excluded, dropped_rows]), examples.dropped_label_codes
    )


def visits_as_rows(visits: pa.Table) -> list[dict]:
    """The VISIT_COLUMNS of ``visits`` as Python dicts in :func:`sort_visits` order (tasks build examples from these).

    Raises:
        PreparedDataError: naming the missing columns.
    """
    missing = [c for c in VISIT_COLUMNS if c not in visits.column_names]
    if missing:
        raise PreparedDataError(f"visits lack column(s) {missing}")
    return sort_visits(visits.select(list(VISIT_COLUMNS))).to_pylist()


def has_note(note_text: str | None) -> bool:
    """Whether a visit has a note with any non-blank text."""
    return note_text is not None and bool(note_text.strip())
