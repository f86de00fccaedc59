"""Hand-built tiny MIMIC-III tables for the prepare tests (no tests here; Ray comes from conftest's ``ray_local``).

Each table is a list of row dicts keyed by upper-case MIMIC column names; ``write_mimic`` writes
them as CSV (optionally gzipped, optionally with lower-case headers, as in the public demo).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
from pathlib import Path

COLUMNS = {
    "ADMISSIONS": [
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
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ],
    "DIAGNOSES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "PROCEDURES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "PRESCRIPTIONS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTDATE",
        "ENDDATE",
        "DRUG_TYPE",
        "DRUG",
        "NDC",
        "DOSE_VAL_RX",
        "DOSE_UNIT_RX",
        "ROUTE",
    ],
    "LABEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"],
    "NOTEEVENTS": [
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
    ],
    "PATIENTS": ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
}

NDC_TO_RXCUI = {"00002751001": "1001", "00338004904": "1002", "51079025520": "1003", "00000000001": ""}
RXCUI_ATC4_ROWS = [
    # RXCUI, YEAR, MONTH, NDC, ATC4 (the first row per RXCUI wins, as in GAMENet)
    ("1001", "2016", "1", "00002751001", "A10AB"),
    ("1001", "2016", "1", "00002751001", "B01AC"),
    ("1002", "2016", "1", "00338004904", "B05BB"),
    ("1003", "2016", "1", "51079025520", "N02BE"),
]


def admission(row_id, subject, hadm, admit, disch, kind="EMERGENCY", death=None, expire="0"):
    return {
        "ROW_ID": row_id,
        "SUBJECT_ID": subject,
        "HADM_ID": hadm,
        "ADMITTIME": admit,
        "DISCHTIME": disch,
        "DEATHTIME": death,
        "ADMISSION_TYPE": kind,
        "ADMISSION_LOCATION": "EMERGENCY ROOM ADMIT",
        "DISCHARGE_LOCATION": "HOME",
        "INSURANCE": "Medicare",
        "DIAGNOSIS": "CHEST PAIN",
        "HOSPITAL_EXPIRE_FLAG": expire,
        "HAS_CHARTEVENTS_DATA": "1",
    }


def diagnosis(row_id, subject, hadm, seq, code):
    return {"ROW_ID": row_id, "SUBJECT_ID": subject, "HADM_ID": hadm, "SEQ_NUM": seq, "ICD9_CODE": code}


def prescription(row_id, subject, hadm, start, ndc, drug="Drug"):
    return {
        "ROW_ID": row_id,
        "SUBJECT_ID": subject,
        "HADM_ID": hadm,
        "ICUSTAY_ID": None,
        "STARTDATE": start,
        "ENDDATE": start,
        "DRUG_TYPE": "MAIN",
        "DRUG": drug,
        "NDC": ndc,
        "DOSE_VAL_RX": "1",
        "DOSE_UNIT_RX": "mg",
        "ROUTE": "PO",
    }


def lab(row_id, subject, hadm, itemid, charttime, value="1.0", valuenum="1.0", unit="mg/dL", flag=None):
    return {
        "ROW_ID": row_id,
        "SUBJECT_ID": subject,
        "HADM_ID": hadm,
        "ITEMID": itemid,
        "CHARTTIME": charttime,
        "VALUE": value,
        "VALUENUM": valuenum,
        "VALUEUOM": unit,
        "FLAG": flag,
    }


def patient(row_id, subject, gender, dob):
    return {
        "ROW_ID": row_id,
        "SUBJECT_ID": subject,
        "GENDER": gender,
        "DOB": dob,
        "DOD": None,
        "DOD_HOSP": None,
        "DOD_SSN": None,
        "EXPIRE_FLAG": "0",
    }


def note(row_id, subject, hadm, chartdate, text, category="Discharge summary", iserror=None, charttime=None):
    return {
        "ROW_ID": row_id,
        "SUBJECT_ID": subject,
        "HADM_ID": hadm,
        "CHARTDATE": chartdate,
        "CHARTTIME": charttime,
        "STORETIME": None,
        "CATEGORY": category,
        "DESCRIPTION": "Report",
        "CGID": None,
        "ISERROR": iserror,
        "TEXT": text,
    }


BASE_TABLES = {
    "ADMISSIONS": [
        # Patient 101: three admissions; second starts exactly 30 days after the first discharge.
        admission(1, 101, 1001, "2101-01-01 08:00:00", "2101-01-05 12:00:00"),
        admission(2, 101, 1002, "2101-02-04 12:00:00", "2101-02-10 12:00:00", kind="ELECTIVE"),
        admission(3, 101, 1003, "2101-06-01 00:00:00", "2101-06-03 00:00:00"),
        # Patient 102: one admission that ends in death.
        admission(4, 102, 2001, "2120-03-01 00:00:00", "2120-03-02 00:00:00", death="2120-03-02 00:00:00", expire="1"),
        # Patient 103: a newborn admission, then an admission with no diagnoses.
        admission(5, 103, 3001, "2150-05-05 00:00:00", "2150-05-08 00:00:00", kind="NEWBORN"),
        admission(6, 103, 3002, "2150-05-20 00:00:00", "2150-05-22 00:00:00", kind="URGENT"),
    ],
    "DIAGNOSES_ICD": [
        diagnosis(1, 101, 1001, "2", "4019"),
        diagnosis(2, 101, 1001, "1", "0389"),
        diagnosis(3, 101, 1001, "3", "V3000"),
        diagnosis(4, 101, 1002, "1", "E8889"),
        diagnosis(5, 101, 1003, "1", "25000"),
        diagnosis(6, 102, 2001, "1", "042"),
        diagnosis(7, 103, 3001, "1", "V3001"),
    ],
    "PROCEDURES_ICD": [
        diagnosis(1, 101, 1001, "1", "9604"),
        diagnosis(2, 101, 1001, "2", "0040"),
        diagnosis(3, 102, 2001, "1", "3893"),
    ],
    "PRESCRIPTIONS": [
        prescription(1, 101, 1001, "2101-01-02 00:00:00", "51079025520", "Acetaminophen"),
        prescription(2, 101, 1001, "2101-01-01 00:00:00", "00002751001", "Insulin"),
        prescription(3, 101, 1001, "2101-01-03 00:00:00", "51079025520", "Acetaminophen"),
        prescription(4, 101, 1001, "2101-01-03 00:00:00", "0", "Sodium chloride"),
        prescription(5, 101, 1001, "2101-01-03 00:00:00", None, "Heparin flush"),
        prescription(6, 101, 1001, "2101-01-04 00:00:00", "99999999999", "Unmapped drug"),
        prescription(7, 101, 1001, "2101-01-04 00:00:00", "00000000001", "No rxcui"),
        prescription(8, 102, 2001, "2120-03-01 00:00:00", "00338004904", "Dextrose"),
    ],
    "LABEVENTS": [
        lab(1, 101, 1001, "50912", "2101-01-01 20:00:00", value="1.2", valuenum="1.2", flag="abnormal"),
        lab(2, 101, 1001, "50931", "2101-01-01 09:30:00", value="95", valuenum="95"),
        lab(3, 101, None, "50912", "2100-12-01 09:30:00"),
        lab(4, 102, 2001, "51221", "2120-03-01 06:00:00", value="GREATER THAN 40", valuenum=None, unit=None),
    ],
    "NOTEEVENTS": [
        note(1, 101, 1001, "2101-01-05", "Discharge summary one.\nLine two, with a comma."),
        note(2, 101, 1001, "2101-01-04", 'Addendum written first "quoted".'),
        note(3, 101, 1001, "2101-01-03", "Nursing progress note.", category="Nursing"),
        note(4, 101, 1002, "2101-02-10", "Erroneous summary.", iserror="1"),
        note(5, 101, None, "2101-03-01", "Outpatient summary with no admission."),
        note(6, 102, 2001, "2120-03-02", "Death summary."),
    ],
    "PATIENTS": [
        patient(1, 101, "M", "2051-01-01 00:00:00"),
        # Older than 89: MIMIC-III shifts the DOB about 300 years back.
        patient(2, 102, "F", "1820-03-01 00:00:00"),
        patient(3, 103, "F", "2150-05-05 00:00:00"),
    ],
}


def base_tables() -> dict[str, list[dict]]:
    """A fresh deep copy of the tiny default dataset."""
    return copy.deepcopy(BASE_TABLES)


def _csv_text(columns: list[str], rows: list[dict], column_case: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow([c.lower() if column_case == "lower" else c for c in columns])
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buffer.getvalue()


def write_mimic(
    directory: Path,
    tables: dict[str, list[dict]] | None = None,
    *,
    column_case: str = "upper",
    gzip_files: bool = False,
    ndc_map: bool = True,
    columns: dict[str, list[str]] | None = None,
) -> Path:
    """Write tiny MIMIC-III tables (and, unless ``ndc_map=False``, the NDC map files) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = base_tables() if tables is None else tables
    columns = {**COLUMNS, **(columns or {})}
    for name, rows in tables.items():
        text = _csv_text(columns[name], rows, column_case)
        if gzip_files:
            (directory / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            (directory / f"{name}.csv").write_text(text)
    if ndc_map:
        write_ndc_map(directory)
    return directory


def write_ndc_map(directory: Path) -> None:
    (directory / "ndc2rxnorm_mapping.txt").write_text(repr(NDC_TO_RXCUI))
    lines = ["RXCUI,YEAR,MONTH,NDC,ATC4"] + [",".join(r) for r in RXCUI_ATC4_ROWS]
    (directory / "ndc2atc_level4.csv").write_text("\n".join(lines) + "\n")
