"""ICD coding (MedM-PLM eq. 16).

From one visit's note and medication codes, predict its ICD-9 diagnosis codes. The diagnoses are the labels, so they
are never part of the input. Labels are the ``top_k`` diagnosis codes most frequent in the training split (50 by
default, as MIMIC-III-50), or every training code with ``top_k=None``; visits with none of them are excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from medmplm.metrics import DEFAULT_ICD_THRESHOLD, icd_metrics
from medmplm.tasks.base import (
    MULTILABEL_EXAMPLE_SCHEMA,
    ExampleSet,
    code_frequencies,
    excluded_table,
    has_note,
    visits_as_rows,
)


@dataclass
class IcdCoding:
    """The ``icd`` task.

    Args:
        top_k: number of most frequent training diagnosis codes to predict; ``None`` for all of them.
        threshold: probability at or above which a code is assigned (F1, accuracy).
        require_note: exclude visits without a discharge summary (reason ``no_note``), as the paper did (the
            comparison grid sets it); off by default, as for ``readmission``: the model masks the missing text out.
    """

    top_k: int | None = 50
    threshold: float = DEFAULT_ICD_THRESHOLD
    require_note: bool = False

    name = "icd"
    multilabel = True
    target_modalities = frozenset({"text", "codes"})
    max_visits = 1

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"icd: top_k must be >= 1 or None (all codes), got {self.top_k}")

    def label_space(self, train_visits: pa.Table) -> list[str]:
        """The ``top_k`` diagnosis codes listed in the most training visits (ties broken by code)."""
        codes = [code for code, _ in code_frequencies(train_visits, "diagnoses")]
        return codes if self.top_k is None else codes[: self.top_k]

    def build_examples(self, visits: pa.Table, label_space: Sequence[str]) -> ExampleSet:
        labels = set(label_space)
        examples: dict[str, list] = {name: [] for name in MULTILABEL_EXAMPLE_SCHEMA.names}
        excluded: list[tuple[int, int, str]] = []
        dropped_label_codes = 0
        for visit in visits_as_rows(visits):
            if self.require_note and not has_note(visit["note_text"]):
                excluded.append((visit["subject_id"], visit["hadm_id"], "no_note"))
                continue
            # Unique codes: MIMIC lists a diagnosis once per SEQ_NUM, and a label is a set.
            visit_labels = list(dict.fromkeys(code for code in visit["diagnoses"] if code in labels))
            dropped_label_codes += len(set(visit["diagnoses"])) - len(visit_labels)
            if not visit_labels:
                excluded.append((visit["subject_id"], visit["hadm_id"], "no_diagnosis_in_label_space"))
                continue
            examples["subject_id"].append(visit["subject_id"])
            examples["hadm_id"].append(visit["hadm_id"])
            examples["note_text"].append([visit["note_text"]])
            examples["diagnoses"].append([[]])
            examples["medications"].append([visit["medications"]])
            examples["label_codes"].append(visit_labels)
        return ExampleSet(
            pa.table(examples, schema=MULTILABEL_EXAMPLE_SCHEMA), excluded_table(excluded), dropped_label_codes
        )

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        return examples

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        return icd_metrics(y_true, y_score, threshold=self.threshold)
