"""Next-visit diagnosis prediction (BEHRT's headline task).

For the t-th visit of a patient with at least two visits (t >= 2), predict the diagnosis categories of that visit from
the patient's earlier visits only: a category is a diagnosis code's 3-digit ICD category (``ICD9CM:4019`` ->
``ICD9CM:401``; an ICD-9 E code keeps its E and 3 digits, ``E8809`` -> ``E880``, as the ontology's ICD-9 tree;
``ICD10CM:I2510`` -> ``ICD10CM:I25``; schema-1 bare ICD-9 codes stay bare). Labels are the ``top_k`` categories listed
in the most training visits; a target visit with none of them is excluded. Nothing of the target visit is part of the
input: its example slot is blank (a visit model sees the ``max_history`` visits before it; a patient-level model,
M-BEHRT, sees the patient's whole history before it, ``medmplm.tasks.patient``), so the input ends before the target
visit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from medmplm.metrics import DEFAULT_NEXT_DX_THRESHOLD, next_dx_metrics
from medmplm.ontology import ICD9CM, ICD10CM, SYSTEM_SEPARATOR, is_icd9_diagnosis, split_system_code, system_code
from medmplm.tasks.base import MULTILABEL_EXAMPLE_SCHEMA, ExampleSet, excluded_table, visits_as_rows


def diagnosis_category(code: str) -> str:
    """The 3-character ICD category of a diagnosis code (4 characters for an ICD-9 E code), with the code's system
    prefix when it has one.

    Raises:
        ValueError: naming the code when it is neither an ICD-9-CM nor an ICD-10-CM diagnosis code.
    """
    if SYSTEM_SEPARATOR in code:
        system, bare = split_system_code(code)
        if system not in (ICD9CM, ICD10CM):
            raise ValueError(f"{code!r} is not a diagnosis code (expected {ICD9CM} or {ICD10CM})")
    elif is_icd9_diagnosis(code):
        system, bare = None, code
    else:
        raise ValueError(f"{code!r} is neither a system-prefixed diagnosis code nor a bare ICD-9-CM code")
    length = 4 if system != ICD10CM and bare.startswith("E") else 3
    return bare[:length] if system is None else system_code(system, bare[:length])


def visit_categories(diagnoses: Sequence[str], hadm_id: int) -> list[str]:
    """A visit's distinct diagnosis categories, in order of first appearance.

    Raises:
        ValueError: naming the visit and the code that has no category.
    """
    try:
        return list(dict.fromkeys(diagnosis_category(code) for code in diagnoses))
    except ValueError as error:
        raise ValueError(f"column 'diagnoses', hadm_id {hadm_id}: {error}") from None


@dataclass
class NextVisitDiagnosis:
    """The ``next_dx`` task.

    Args:
        top_k: number of most frequent training diagnosis categories to predict; ``None`` for all of them.
        threshold: probability at or above which a category is predicted (F1, accuracy).
        max_history: earlier visits a visit model reads before the target, most recent ones (a patient-level model
            reads the whole history, truncated by its own sequence length).
    """

    top_k: int | None = 100
    threshold: float = DEFAULT_NEXT_DX_THRESHOLD
    max_history: int = 8

    name = "next_dx"
    multilabel = True
    # Nothing of the target visit is shown: the input ends before it.
    target_modalities = frozenset()

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"next_dx: top_k must be >= 1 or None (all categories), got {self.top_k}")
        if self.max_history < 1:
            raise ValueError(f"next_dx: max_history must be >= 1, got {self.max_history}")

    @property
    def max_visits(self) -> int:
        return self.max_history + 1

    def label_space(self, train_visits: pa.Table) -> list[str]:
        """The ``top_k`` categories listed in the most training visits (ties broken by category)."""
        counts: dict[str, int] = {}
        for hadm_id, diagnoses in zip(
            train_visits.column("hadm_id").to_pylist(), train_visits.column("diagnoses").to_pylist()
        ):
            for category in visit_categories(diagnoses, hadm_id):
                counts[category] = counts.get(category, 0) + 1
        categories = [category for category, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
        return categories if self.top_k is None else categories[: self.top_k]

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
                categories = visit_categories(target["diagnoses"], target["hadm_id"])
                target_labels = [category for category in categories if category in labels]
                dropped_label_codes += len(categories) - len(target_labels)
                if not categories:
                    excluded.append((subject_id, target["hadm_id"], "no_diagnoses"))
                    continue
                if not target_labels:
                    excluded.append((subject_id, target["hadm_id"], "no_diagnosis_in_label_space"))
                    continue
                history = patient[max(0, t - self.max_history) : t]
                examples["subject_id"].append(subject_id)
                examples["hadm_id"].append(target["hadm_id"])
                # The target's slot is blank: nothing of the visit whose diagnoses are the labels.
                examples["note_text"].append([visit["note_text"] for visit in history] + [None])
                examples["diagnoses"].append([visit["diagnoses"] for visit in history] + [[]])
                examples["medications"].append([visit["medications"] for visit in history] + [[]])
                examples["label_codes"].append(target_labels)
        return ExampleSet(
            pa.table(examples, schema=MULTILABEL_EXAMPLE_SCHEMA), excluded_table(excluded), dropped_label_codes
        )

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        return examples

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        return next_dx_metrics(y_true, y_score, threshold=self.threshold)
