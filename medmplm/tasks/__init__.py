"""Fine-tuning tasks: medication recommendation, 30-day readmission, ICD coding, next-visit diagnosis categories, and
the NER auxiliary check (see each module)."""

from __future__ import annotations

from medmplm.tasks.base import ExampleSet, NoExamplesError, PreparedDataError, Task, read_visits
from medmplm.tasks.disease10 import Disease10
from medmplm.tasks.icd import IcdCoding
from medmplm.tasks.medrec import MedicationRecommendation
from medmplm.tasks.ner import ConceptExtraction
from medmplm.tasks.next_dx import NextVisitDiagnosis
from medmplm.tasks.readmission import Readmission

TASKS: dict[str, type] = {
    MedicationRecommendation.name: MedicationRecommendation,
    Readmission.name: Readmission,
    IcdCoding.name: IcdCoding,
    Disease10.name: Disease10,
    NextVisitDiagnosis.name: NextVisitDiagnosis,
    ConceptExtraction.name: ConceptExtraction,
}


def build_task(name: str, **options) -> Task:
    """The task called ``name`` with its options (the keyword arguments of its class).

    Raises:
        ValueError: for an unknown task name or option, naming what is accepted.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    task_class = TASKS[name]
    accepted = set(task_class.__dataclass_fields__)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"task {name!r} has no option(s) {unknown}; it accepts {sorted(accepted)}")
    return task_class(**options)


__all__ = [
    "TASKS",
    "ConceptExtraction",
    "Disease10",
    "ExampleSet",
    "IcdCoding",
    "MedicationRecommendation",
    "NextVisitDiagnosis",
    "NoExamplesError",
    "PreparedDataError",
    "Readmission",
    "Task",
    "build_task",
    "read_visits",
]
