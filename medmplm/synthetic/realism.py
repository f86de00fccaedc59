"""Code-vocabulary statistics of a MIMIC-III directory, to hold the generator against the real data.

:func:`code_statistics` measures the first ``admissions`` admissions by HADM_ID (the public demo has
129): rows per admission, distinct codes and the share of them seen only once, for diagnoses,
procedures and NDCs. :data:`REAL_DEMO` holds the same figures for the MIMIC-III v1.4 demo (as measured
in issue #11 with this definition); ``benchmarks/synthetic_realism.py`` prints the comparison.
"""

from __future__ import annotations

import os
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data.tables import ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS, PROCEDURES_ICD, locate_table, read_table
from medmplm.synthetic.catalogue.icd9cm import diagnosis_category

STATISTICS: tuple[tuple[str, str], ...] = (
    ("diagnosis_rows_per_admission", "diagnosis rows per admission"),
    ("distinct_diagnosis_codes", "distinct diagnosis codes"),
    ("diagnosis_codes_seen_once", "diagnosis codes seen once"),
    ("distinct_diagnosis_categories", "distinct 3-digit diagnosis categories"),
    ("procedure_rows_per_admission", "procedure rows per admission"),
    ("distinct_procedure_codes", "distinct procedure codes"),
    ("procedure_codes_seen_once", "procedure codes seen once"),
    ("prescription_rows_per_admission", "prescription rows per admission"),
    ("distinct_ndcs", "distinct NDCs"),
    ("ndcs_seen_once", "NDCs seen once"),
)
SHARES = frozenset(name for name, _ in STATISTICS if name.endswith("_seen_once"))

# MIMIC-III v1.4 demo, first 129 admissions by HADM_ID (all of them), from issue #11.
REAL_DEMO: dict[str, float] = {
    "diagnosis_rows_per_admission": 13.7,
    "distinct_diagnosis_codes": 581,
    "diagnosis_codes_seen_once": 0.55,
    "distinct_diagnosis_categories": 275,
    "procedure_rows_per_admission": 3.9,
    "distinct_procedure_codes": 164,
    "procedure_codes_seen_once": 0.57,
    "prescription_rows_per_admission": 69.1,
    "distinct_ndcs": 995,
    "ndcs_seen_once": 0.28,
}


def _column_of_admissions(mimic_dir: str | os.PathLike, table: str, column: str, hadm_ids: list[int]) -> list:
    rows = read_table(locate_table(mimic_dir, table, ("HADM_ID", column)), ["HADM_ID", column])
    keep = pc.is_in(rows["HADM_ID"], value_set=pa.array([str(hadm_id) for hadm_id in hadm_ids]))
    return rows.filter(keep)[column].to_pylist()


def _tail(codes: list[str]) -> tuple[int, float]:
    counts = Counter(codes)
    once = sum(1 for count in counts.values() if count == 1)
    return len(counts), (once / len(counts) if counts else 0.0)


def code_statistics(mimic_dir: str | os.PathLike, admissions: int = 129) -> dict[str, float]:
    """The :data:`STATISTICS` of the first ``admissions`` admissions by HADM_ID.

    Null codes are not rows; NDC ``0`` (base solutions) is a row but not an NDC.
    """
    table = read_table(locate_table(mimic_dir, ADMISSIONS, ("HADM_ID",)), ["HADM_ID"])
    ids = sorted(int(value) for value in table["HADM_ID"].to_pylist())[:admissions]
    if len(ids) < admissions:
        raise ValueError(f"{mimic_dir}: {ADMISSIONS} has {len(ids)} admissions, fewer than the {admissions} asked for")
    diagnoses = [code for code in _column_of_admissions(mimic_dir, DIAGNOSES_ICD, "ICD9_CODE", ids) if code]
    procedures = [code for code in _column_of_admissions(mimic_dir, PROCEDURES_ICD, "ICD9_CODE", ids) if code]
    ndc_rows = _column_of_admissions(mimic_dir, PRESCRIPTIONS, "NDC", ids)
    ndcs = [ndc for ndc in ndc_rows if ndc and ndc != "0"]
    statistics: dict[str, float] = {}
    statistics["diagnosis_rows_per_admission"] = len(diagnoses) / admissions
    statistics["distinct_diagnosis_codes"], statistics["diagnosis_codes_seen_once"] = _tail(diagnoses)
    statistics["distinct_diagnosis_categories"] = len({diagnosis_category(code) for code in diagnoses})
    statistics["procedure_rows_per_admission"] = len(procedures) / admissions
    statistics["distinct_procedure_codes"], statistics["procedure_codes_seen_once"] = _tail(procedures)
    statistics["prescription_rows_per_admission"] = len(ndc_rows) / admissions
    statistics["distinct_ndcs"], statistics["ndcs_seen_once"] = _tail(ndcs)
    return statistics


def relative_gap(measured: float, reference: float) -> float:
    """``measured / reference - 1`` (0.1: 10% above the reference)."""
    return measured / reference - 1.0


def format_statistic(name: str, value: float) -> str:
    """A statistic as the comparison table shows it (shares in per cent)."""
    if name in SHARES:
        return f"{100 * value:.0f}%"
    if name.endswith("_per_admission"):
        return f"{value:.1f}"
    return f"{value:.0f}"
