"""Medication recommendation (G-BERT / MedM-PLM eq. 11-13).

For the t-th visit of a patient with at least two visits, predict the set of ATC-3 codes prescribed in it from the
patient's earlier visits (notes, diagnoses, medications of visits 1..t-1) and the diagnoses of visit t. The target
visit's medications and its note (a discharge summary lists the discharge medications) are never part of the input.
Earlier visits without a note are kept: the model pools the text history over the visits that have one
(``medmplm.tasks.modeling``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from medmplm.metrics import DEFAULT_MEDREC_THRESHOLD, medrec_metrics, read_ddi_pairs
from medmplm.tasks.base import (
    MULTILABEL_EXAMPLE_SCHEMA,
    ExampleSet,
    code_frequencies,
    excluded_table,
    visits_as_rows,
)


@dataclass
class MedicationRecommendation:
    """The ``medrec`` task.

    Args:
        threshold: probability at or above which a code is recommended (hard metrics only).
        max_history: earlier visits kept before the target, most recent ones (the paper uses them all; a cap bounds
            the memory of patients with dozens of admissions).
        ddi_table: optional CSV of interacting ATC-3 pairs; adds the ``ddi_rate`` metric.
    """

    threshold: float = DEFAULT_MEDREC_THRESHOLD
    max_history: int = 8
    ddi_table: str | None = None

    name = "medrec"
    multilabel = True
    # The target visit shows only its diagnoses.
    target_modalities = frozenset({"codes"})

    def __post_init__(self) -> None:
        if self.max_history < 1:
            raise ValueError(f"medrec: max_history must be >= 1, got {self.max_history}")
        self._ddi_pairs = read_ddi_pairs(Path(self.ddi_table)) if self.ddi_table else None

    @property
    def max_visits(self) -> int:
        return self.max_history + 1

    def label_space(self, train_visits: pa.Table) -> list[str]:
        """Every ATC-3 code prescribed in a training visit, most frequent first."""
        return [code for code, _ in code_frequencies(train_visits, "medications")]

    def build_examples(self, visits: pa.Table, label_space: Sequence[str]) -> ExampleSet:
        labels = set(label_space)
        examples: dict[str, list] = {name: [] for name in MULTILABEL_EXAMPLE_SCHEMA.names}
        excluded: list[tuple[int, int, str]] = []
        dropped_label_codes = 0
        for subject_id, patient in itertools.groupby(visits_as_rows(visits), key=lambda row: row["subject_id"]):
            patient = list(patient)
            if len(patient) < 2:
                excluded.append((subject_id, patient[0]["hadm_id"], "single_visit_patient"))
                continue
            excluded.append((subject_id, patient[0]["hadm_id"], "first_visit"))
            for t in range(1, len(patient)):
                target = patient[t]
                target_labels = [code for code in target["medications"] if code in labels]
                dropped_label_codes += len(target["medications"]) - len(target_labels)
                if not target["medications"]:
                    excluded.append((subject_id, target["hadm_id"], "no_medications"))
                    continue
                if not target_labels:
                    excluded.append((subject_id, target["hadm_id"], "no_medication_in_label_space"))
                    continue
                history = patient[max(0, t - self.max_history) : t]
                examples["subject_id"].append(subject_id)
                examples["hadm_id"].append(target["hadm_id"])
                examples["note_text"].append([visit["note_text"] for visit in history] + [None])
                examples["diagnoses"].append([visit["diagnoses"] for visit in history] + [target["diagnoses"]])
                examples["medications"].append([visit["medications"] for visit in history] + [[]])
                examples["label_codes"].append(target_labels)
        return ExampleSet(
            pa.table(examples, schema=MULTILABEL_EXAMPLE_SCHEMA), excluded_table(excluded), dropped_label_codes
        )

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        return examples

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        return medrec_metrics(
            y_true, y_score, threshold=self.threshold, label_codes=list(label_space), ddi_pairs=self._ddi_pairs
        )
