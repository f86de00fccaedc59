"""MIMIC-III v1.4 table layouts and the rendering of simulated patients into their CSV rows.

Column lists and order follow the MIT-LCP mimic-code ``postgres_create_tables.sql`` for v1.4.
The full release writes a quoted upper-case header, quotes every string value (so ICD-9 codes and
NDCs keep their leading zeros), leaves numbers and timestamps bare and nulls empty. The public demo
(``column_case="lower"``) has a lower-case header and quotes only values that need it.

Rows are built as text here rather than with ``csv``/``pyarrow.csv`` because neither can quote by
column type the way the release does (strings quoted, numbers and timestamps bare); drug and lab
fields that repeat are rendered once and cached.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np

from medmplm.synthetic.catalogue.drugs import DRUGS
from medmplm.synthetic.catalogue.icd9cm import diagnosis_titles, procedure_titles
from medmplm.synthetic.catalogue.labs import LAB_ITEMS
from medmplm.synthetic.formulary import Formulary
from medmplm.synthetic.model import Admission, LabBatch, Patient
from medmplm.synthetic.notes import NoteRow

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "PATIENTS": ("ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"),
    "ADMISSIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ),
    "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "PROCEDURES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    "PRESCRIPTIONS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTDATE",
        "ENDDATE",
        "DRUG_TYPE",
        "DRUG",
        "DRUG_NAME_POE",
        "DRUG_NAME_GENERIC",
        "FORMULARY_DRUG_CD",
        "GSN",
        "NDC",
        "PROD_STRENGTH",
        "DOSE_VAL_RX",
        "DOSE_UNIT_RX",
        "FORM_VAL_DISP",
        "FORM_UNIT_DISP",
        "ROUTE",
    ),
    "NOTEEVENTS": (
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ),
    "LABEVENTS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"),
    "D_ICD_DIAGNOSES": ("ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"),
    "D_ICD_PROCEDURES": ("ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"),
    "D_LABITEMS": ("ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"),
}

# Rates of the MIMIC data quirks the prepare pipeline must survive.
DUPLICATE_PRESCRIPTION_RATE = 0.005
DUPLICATE_LAB_RATE = 0.002
ADMISSION_WITHOUT_DIAGNOSES_RATE = 0.001
NULL_DIAGNOSIS_ROW_RATE = 0.0008
DUPLICATE_DIAGNOSIS_RATE = 0.004
NOTE_ERROR_RATE = 0.0005


class CsvStyle:
    """How a MIMIC-III release writes its CSV values and header."""

    def __init__(self, column_case: str) -> None:
        if column_case not in ("upper", "lower"):
            raise ValueError(f"column_case must be 'upper' or 'lower', got {column_case!r}")
        self.column_case = column_case
        self._quote_all_strings = column_case == "upper"

    def text(self, value: str | None) -> str:
        """A string value as it appears in the file (empty for null)."""
        if value is None:
            return ""
        if self._quote_all_strings or "," in value or '"' in value or "\n" in value or "\r" in value:
            return '"' + value.replace('"', '""') + '"'
        return value

    def header(self, table: str) -> str:
        """The header line of ``table``."""
        columns = TABLE_COLUMNS[table]
        if self.column_case == "upper":
            return ",".join(f'"{column}"' for column in columns) + "\n"
        return ",".join(column.lower() for column in columns) + "\n"


def timestamp(when: datetime | None) -> str:
    """MIMIC's timestamp text, ``2101-10-20 19:08:00`` (empty for null)."""
    return "" if when is None else when.isoformat(" ")


def _number(value: int | None) -> str:
    return "" if value is None else str(value)


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


class RowIds:
    """Sequential ROW_ID per table, in file order."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {table: 1 for table in TABLE_COLUMNS}

    def take(self, table: str) -> int:
        """The next ROW_ID of ``table``."""
        value = self._next[table]
        self._next[table] = value + 1
        return value

    def number(self, table: str, lines: list[str]) -> list[str]:
        """Prefix each of ``lines`` with the next ROW_ID of ``table`` and a comma."""
        first = self._next[table]
        self._next[table] = first + len(lines)
        return [f"{row_id},{line}" for row_id, line in enumerate(lines, first)]

    def count(self, table: str) -> int:
        """Rows taken so far for ``table``."""
        return self._next[table] - 1


class MimicRenderer:
    """Turns simulated patients into MIMIC-III CSV lines, table by table."""

    def __init__(self, style: CsvStyle, formulary: Formulary) -> None:
        self._style = style
        self._formulary = formulary
        self.row_ids = RowIds()
        self._prescription_segments: dict[tuple[int, int, int], str] = {}
        text = style.text
        self._lab_prefix = [f"{item.itemid}," for item in LAB_ITEMS]
        self._lab_unit = [text(item.unit) for item in LAB_ITEMS]
        self._lab_format = [f".{item.decimals}f" for item in LAB_ITEMS]
        self._lab_low = np.array([item.low for item in LAB_ITEMS])
        self._lab_high = np.array([item.high for item in LAB_ITEMS])
        self._lab_scale = np.array([10.0**item.decimals for item in LAB_ITEMS])
        self._lab_categories = [tuple(text(category) for category in item.categories) for item in LAB_ITEMS]
        self._lab_abnormal_level = 2
        self._abnormal = text("abnormal")

    # Dictionaries -----------------------------------------------------------------------------

    def dictionary_lines(self) -> dict[str, list[str]]:
        """Rows of the D_ tables: every ICD-9-CM v32 code with its CMS titles, as MIMIC-III's dictionaries hold."""
        text = self._style.text
        lines: dict[str, list[str]] = {"D_ICD_DIAGNOSES": [], "D_ICD_PROCEDURES": [], "D_LABITEMS": []}
        for table, titles in (("D_ICD_DIAGNOSES", diagnosis_titles()), ("D_ICD_PROCEDURES", procedure_titles())):
            for code, (short, long) in titles.items():
                lines[table].append(f"{self.row_ids.take(table)},{text(code)},{text(short)},{text(long)}\n")
        for item in LAB_ITEMS:
            lines["D_LABITEMS"].append(
                f"{self.row_ids.take('D_LABITEMS')},{item.itemid},{text(item.label)},{text(item.fluid)},{text(item.category)},{text(item.loinc)}\n"
            )
        return lines

    # Patient tables ---------------------------------------------------------------------------

    def patient_line(self, patient: Patient) -> str:
        """The PATIENTS row."""
        text = self._style.text
        expire = 1 if patient.dod is not None else 0
        return (
            f"{self.row_ids.take('PATIENTS')},{patient.subject_id},{text(patient.gender)},{timestamp(patient.dob)},"
            f"{timestamp(patient.dod)},{timestamp(patient.dod_hosp)},{timestamp(patient.dod_ssn)},{expire}\n"
        )

    def admission_line(self, patient: Patient, admission: Admission) -> str:
        """The ADMISSIONS row."""
        text = self._style.text
        return (
            f"{self.row_ids.take('ADMISSIONS')},{patient.subject_id},{admission.hadm_id},{timestamp(admission.admittime)},"
            f"{timestamp(admission.dischtime)},{timestamp(admission.deathtime)},{text(admission.admission_type)},"
            f"{text(admission.admission_location)},{text(admission.discharge_location)},{text(admission.insurance)},"
            f"{text(patient.language)},{text(patient.religion)},{text(admission.marital_status)},{text(patient.ethnicity)},"
            f"{timestamp(admission.edregtime)},{timestamp(admission.edouttime)},{text(admission.diagnosis_text)},"
            f"{1 if admission.died else 0},{1 if admission.has_chartevents else 0}\n"
        )

    def diagnosis_lines(self, patient: Patient, admission: Admission, rng: random.Random) -> list[str]:
        """DIAGNOSES_ICD rows, with MIMIC's quirks: a few admissions uncoded, null rows, repeated codes."""
        if rng.random() < ADMISSION_WITHOUT_DIAGNOSES_RATE:
            return []
        text = self._style.text
        codes = list(admission.diagnoses)
        if len(codes) > 2 and rng.random() < DUPLICATE_DIAGNOSIS_RATE:
            codes.append(codes[rng.randrange(1, len(codes))])
        prefix = f"{patient.subject_id},{admission.hadm_id},"
        lines = [
            f"{self.row_ids.take('DIAGNOSES_ICD')},{prefix}{seq},{text(code)}\n" for seq, code in enumerate(codes, 1)
        ]
        if rng.random() < NULL_DIAGNOSIS_ROW_RATE:
            lines.append(f"{self.row_ids.take('DIAGNOSES_ICD')},{prefix},\n")
        return lines

    def procedure_lines(self, patient: Patient, admission: Admission) -> list[str]:
        """PROCEDURES_ICD rows."""
        text = self._style.text
        prefix = f"{patient.subject_id},{admission.hadm_id},"
        return [
            f"{self.row_ids.take('PROCEDURES_ICD')},{prefix}{seq},{text(code)}\n"
            for seq, code in enumerate(admission.procedures, 1)
        ]

    def prescription_lines(self, patient: Patient, admission: Admission, rng: random.Random) -> list[str]:
        """PRESCRIPTIONS rows; about 0.5% are repeated under a new ROW_ID, as in MIMIC."""
        batch = admission.prescriptions
        if batch is None or len(batch) == 0:
            return []
        midnight = datetime(admission.admittime.year, admission.admittime.month, admission.admittime.day)
        days = int(max(batch.start_day.max(), batch.end_day.max())) + 1
        day_text = [timestamp(midnight + timedelta(days=offset)) for offset in range(days)]
        prefix = f"{patient.subject_id},{admission.hadm_id},{_number(admission.icustay_id)},"
        lines = []
        duplicate = rng.random
        for drug, start, end, dose, product in zip(
            batch.drug.tolist(),
            batch.start_day.tolist(),
            batch.end_day.tolist(),
            batch.dose.tolist(),
            batch.product.tolist(),
        ):
            segment = self._prescription_segment(drug, product, dose)
            body = f"{prefix}{day_text[start]},{day_text[end] if end >= 0 else ''},{segment}"
            lines.append(body)
            if duplicate() < DUPLICATE_PRESCRIPTION_RATE:
                lines.append(body)
        return self.row_ids.number("PRESCRIPTIONS", lines)

    def _prescription_segment(self, drug_index: int, product: int, dose_index: int) -> str:
        key = (drug_index, product, dose_index)
        cached = self._prescription_segments.get(key)
        if cached is not None:
            return cached
        text = self._style.text
        drug = DRUGS[drug_index]
        if drug.ndc_zero:
            ndc: str | None = "0"
        elif product < 0:
            ndc = None
        else:
            ndc = self._formulary.products[drug.key][product].ndc
        dose = drug.doses[dose_index]
        try:
            form_value = _trim(float(dose) / drug.unit_dose) if drug.unit_dose > 0 else "1"
        except ValueError:
            form_value = "1"
        base = drug.drug_type == "BASE"
        segment = (
            ",".join(
                (
                    text(drug.drug_type),
                    text(drug.name),
                    text(None if base else drug.name),
                    text(None if base else drug.generic),
                    text(drug.formulary_cd),
                    text(self._formulary.gsn[drug.key]),
                    text(ndc),
                    text(drug.strength),
                    text(dose),
                    text(drug.dose_unit),
                    text(form_value),
                    text(drug.form_unit),
                    text(drug.route),
                )
            )
            + "\n"
        )
        self._prescription_segments[key] = segment
        return segment

    def lab_lines(self, subject_id: int, hadm_id: int | None, batch: LabBatch | None, rng: random.Random) -> list[str]:
        """LABEVENTS rows (``hadm_id`` None for outpatient draws); about 0.2% repeated, as in MIMIC."""
        if batch is None or len(batch) == 0:
            return []
        text = self._style.text
        times = [timestamp(when) for when in batch.times]
        item = batch.item
        rounded = np.round(batch.value * self._lab_scale[item]) / self._lab_scale[item]
        abnormal = (rounded < self._lab_low[item]) | (rounded > self._lab_high[item])
        prefix = f"{subject_id},{_number(hadm_id)},"
        duplicate = rng.random
        lines = []
        for position, draw, value, is_abnormal in zip(
            item.tolist(), batch.draw.tolist(), rounded.tolist(), abnormal.tolist()
        ):
            categories = self._lab_categories[position]
            if categories:
                level = int(value)
                body = (
                    f"{prefix}{self._lab_prefix[position]}{times[draw]},{categories[level]},,{self._lab_unit[position]},"
                    f"{self._abnormal if level >= self._lab_abnormal_level else ''}\n"
                )
            else:
                shown = format(value, self._lab_format[position])
                body = (
                    f"{prefix}{self._lab_prefix[position]}{times[draw]},{text(shown)},{value:g},{self._lab_unit[position]},"
                    f"{self._abnormal if is_abnormal else ''}\n"
                )
            lines.append(body)
            if duplicate() < DUPLICATE_LAB_RATE:
                lines.append(body)
        return self.row_ids.number("LABEVENTS", lines)

    def note_line(self, subject_id: int, note: NoteRow, rng: random.Random) -> str:
        """A NOTEEVENTS row; CHARTDATE is a bare date, as in the release."""
        text = self._style.text
        chartdate = note.chartdate
        error = "1" if rng.random() < NOTE_ERROR_RATE else None
        return (
            f"{self.row_ids.take('NOTEEVENTS')},{subject_id},{_number(note.hadm_id)},"
            f"{chartdate.year:04d}-{chartdate.month:02d}-{chartdate.day:02d},{timestamp(note.charttime)},"
            f"{timestamp(note.storetime)},{text(note.category)},{text(note.description)},{_number(note.cgid)},"
            f"{text(error)},{text(note.text)}\n"
        )
