"""30-day readmission prediction (MedM-PLM eq. 14).

From one visit's note, diagnoses and medications, predict ``readmission_30d`` (computed by ``medmplm.prepare``: the
next admission starts within 30 days of this discharge). Visits whose label is null (in-hospital death, newborn) are
excluded. Training may keep every positive and an equal number of randomly drawn negatives, as the paper does;
validation and test are never subsampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from medmplm.metrics import DEFAULT_BINARY_THRESHOLD, binary_metrics
from medmplm.tasks.base import (
    BINARY_EXAMPLE_SCHEMA,
    ExampleSet,
    excluded_table,
    has_note,
    subsample_negatives,
    visits_as_rows,
)

LABEL_COLUMNS = ("readmission_30d", "readmission_30d_nonelective")


@dataclass
class Readmission:
    """The ``readmission`` task.

    Args:
        threshold: probability at or above which a visit is predicted readmitted (F1, accuracy).
        subsample_negatives: train on all positives and as many random negatives (1:1).
        require_note: exclude visits without a discharge summary (reason ``no_note``), as the paper did so that every
            model, text or code, is compared on the same visits carrying both modalities (the comparison grid,
            ``benchmarks/finetune_table.py``, sets it). Off by default: a code-only model never needs a note, and a
            multimodal model masks the missing text out (``has_note``).
        label_column: ``readmission_30d``, or ``readmission_30d_nonelective`` to count only non-elective returns.
    """

    threshold: float = DEFAULT_BINARY_THRESHOLD
    subsample_negatives: bool = False
    require_note: bool = False
    label_column: str = "readmission_30d"

    name = "readmission"
    multilabel = False
    target_modalities = frozenset({"text", "codes"})
    max_visits = 1

    def __post_init__(self) -> None:
        if self.label_column not in LABEL_COLUMNS:
            raise ValueError(f"readmission: label_column must be one of {LABEL_COLUMNS}, got {self.label_column!r}")

    def label_space(self, train_visits: pa.Table) -> list[str]:
        return []

    def build_examples(self, visits: pa.Table, label_space: Sequence[str]) -> ExampleSet:
        examples: dict[str, list] = {name: [] for name in BINARY_EXAMPLE_SCHEMA.names}
        excluded: list[tuple[int, int, str]] = []
        for visit in visits_as_rows(visits):
            label = visit[self.label_column]
            if label is None:
                excluded.append((visit["subject_id"], visit["hadm_id"], "label_undefined"))
                continue
            if self.require_note and not has_note(visit["note_text"]):
                excluded.append((visit["subject_id"], visit["hadm_id"], "no_note"))
                continue
            examples["subject_id"].append(visit["subject_id"])
            examples["hadm_id"].append(visit["hadm_id"])
            examples["note_text"].append([visit["note_text"]])
            examples["diagnoses"].append([visit["diagnoses"]])
            examples["medications"].append([visit["medications"]])
            examples["label"].append(label)
        return ExampleSet(pa.table(examples, schema=BINARY_EXAMPLE_SCHEMA), excluded_table(excluded))

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        return subsample_negatives(examples, seed) if self.subsample_negatives else examples

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        return binary_metrics(y_true, y_score, threshold=self.threshold)
