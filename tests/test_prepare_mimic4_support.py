"""Hand-built tiny MIMIC-IV (hosp/ + note/) tables for the MIMIC-IV prepare tests (no tests here).

Written by hand, not by the synthetic generator, in MIMIC-IV's layout: lower-case directories, file and column
names, ``.csv.gz`` for some tables and ``.csv`` for others. What they cover:

* patient 10001 (F, anchor age 60 in 2150): admission 20001 in the ICD-9 era, 20002 in the ICD-10 era (discharged
  against advice), readmitted as 20003 within 30 days; ICD-9's E8809 and ICD-10's E8809 in one patient;
* patient 10002 (anchor age 91: over 89): admission 20004 ends in death;
* a diagnosis row without icd_version, one with version 11, an ICD-10 code with a dot, a 10-character ICD-10-PCS code;
* a lab of an item d_labitems lacks, an outpatient lab;
* a discharge note of an admission that does not exist, one without hadm_id, and a radiology report.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
from pathlib import Path

COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": [
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ],
    "diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
    "prescriptions": [
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "starttime",
        "stoptime",
        "drug_type",
        "drug",
        "ndc",
        "dose_val_rx",
        "dose_unit_rx",
        "route",
    ],
    "labevents": [
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "charttime",
        "storetime",
        "value",
        "valuenum",
        "valueuom",
        "ref_range_lower",
        "ref_range_upper",
        "flag",
        "priority",
        "comments",
    ],
    "d_labitems": ["itemid", "label", "fluid", "category"],
    "discharge": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
    "radiology": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"],
}
HOSP = ("patients", "admissions", "diagnoses_icd", "procedures_icd", "prescriptions", "labevents", "d_labitems")
NOTE = ("discharge", "radiology")
GZIPPED = {"labevents", "admissions", "discharge"}


def admission(subject, hadm, admit, disch, kind="EW EMER.", location="HOME", death=None, expire="0"):
    return {
        "subject_id": subject,
        "hadm_id": hadm,
        "admittime": admit,
        "dischtime": disch,
        "deathtime": death,
        "admission_type": kind,
        "admission_location": "EMERGENCY ROOM",
        "discharge_location": location,
        "insurance": "Medicare",
        "hospital_expire_flag": expire,
    }


def code(subject, hadm, seq, icd, version):
    return {"subject_id": subject, "hadm_id": hadm, "seq_num": seq, "icd_code": icd, "icd_version": version}


def lab(labevent_id, subject, hadm, itemid, charttime, value="1.0", valuenum="1.0"):
    return {
        "labevent_id": labevent_id,
        "subject_id": subject,
        "hadm_id": hadm,
        "itemid": itemid,
        "charttime": charttime,
        "value": value,
        "valuenum": valuenum,
        "valueuom": "mg/dL",
    }


def note(note_id, subject, hadm, seq, charttime, text, note_type="DS"):
    return {
        "note_id": note_id,
        "subject_id": subject,
        "hadm_id": hadm,
        "note_type": note_type,
        "note_seq": seq,
        "charttime": charttime,
        "text": text,
    }


BASE = {
    "patients": [
        {"subject_id": 10001, "gender": "F", "anchor_age": 60, "anchor_year": 2150, "anchor_year_group": "2014 - 2016"},
        {"subject_id": 10002, "gender": "M", "anchor_age": 91, "anchor_year": 2160, "anchor_year_group": "2008 - 2010"},
    ],
    "admissions": [
        admission(10001, 20001, "2148-03-01 10:00:00", "2148-03-05 12:00:00", kind="ELECTIVE"),
        admission(10001, 20002, "2152-06-01 08:00:00", "2152-06-04 08:00:00", location="AGAINST ADVICE"),
        admission(10001, 20003, "2152-06-20 08:00:00", "2152-06-22 08:00:00"),
        admission(
            10002,
            20004,
            "2161-01-01 00:00:00",
            "2161-01-03 00:00:00",
            location="DIED",
            death="2161-01-03 00:00:00",
            expire="1",
        ),
    ],
    "diagnoses_icd": [
        code(10001, 20001, 1, "4019", 9),
        code(10001, 20001, 2, "E8809", 9),  # ICD-9: fall on stairs
        code(10001, 20002, 2, "E119", 10),
        code(10001, 20002, 1, "I2510", 10),
        code(10001, 20002, 3, "E8809", 10),  # ICD-10: plasma-protein disorder
        code(10001, 20002, 4, "U071", 10),  # not in the 2018 GEM
        code(10001, 20003, 1, "N179", 10),
        code(10001, 20003, 2, "J189", None),  # icd_version missing
        code(10001, 20003, 3, "J189", 11),  # no such version
        code(10001, 20003, 4, "I25.10", 10),  # dotted: not the release's shape
        code(10002, 20004, 1, "A419", 10),
    ],
    "procedures_icd": [
        dict(code(10001, 20001, 1, "3893", 9), chartdate="2148-03-02"),
        dict(code(10001, 20002, 1, "0016070", 10), chartdate="2152-06-02"),
        dict(code(10001, 20002, 2, "0016070ABC", 10), chartdate="2152-06-02"),  # 10 characters
    ],
    "prescriptions": [
        {
            "subject_id": 10001,
            "hadm_id": 20002,
            "starttime": "2152-06-01 12:00:00",
            "drug": "Aspirin",
            "ndc": "00904198861",
        },
        {
            "subject_id": 10001,
            "hadm_id": 20002,
            "starttime": "2152-06-02 12:00:00",
            "drug": "Insulin",
            "ndc": "00002751001",
        },
    ],
    "labevents": [
        lab(1, 10001, 20002, 50912, "2152-06-01 10:00:00"),
        lab(2, 10001, 20002, 99999, "2152-06-01 11:00:00"),  # not in d_labitems
        lab(3, 10001, None, 50912, "2152-05-01 10:00:00"),  # outpatient
    ],
    "d_labitems": [
        {"itemid": 50912, "label": "Creatinine", "fluid": "Blood", "category": "Chemistry"},
        {"itemid": 50931, "label": "Glucose", "fluid": "Blood", "category": "Chemistry"},
    ],
    "discharge": [
        note("10001-DS-2", 10001, 20002, 2, "2152-06-04 00:00:00", "Discharge summary of the ICD-10 stay."),
        note("10001-DS-9", 10001, 29999, 9, "2152-07-01 00:00:00", "Summary of an admission that is not there."),
        note("10001-DS-8", 10001, None, 8, "2152-07-02 00:00:00", "Summary without an admission id."),
    ],
    "radiology": [
        note("10001-RR-1", 10001, 20002, 1, "2152-06-02 09:00:00", "Chest radiograph report.", note_type="RR"),
    ],
}


def mimic4_tables() -> dict[str, list[dict]]:
    """A fresh deep copy of the tiny MIMIC-IV."""
    return copy.deepcopy(BASE)


def write_mimic4(directory: Path, tables: dict[str, list[dict]] | None = None, *, notes: bool = True) -> Path:
    """Write the tables as ``hosp/<name>.csv[.gz]`` and (unless ``notes=False``) ``note/<name>.csv[.gz]``."""
    tables = mimic4_tables() if tables is None else tables
    for name in HOSP + (NOTE if notes else ()):
        folder = directory / ("hosp" if name in HOSP else "note")
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS[name])
        for row in tables[name]:
            writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS[name]])
        if name in GZIPPED:
            (folder / f"{name}.csv.gz").write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))
        else:
            (folder / f"{name}.csv").write_text(buffer.getvalue())
    return directory
