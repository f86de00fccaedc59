"""MEDS (Medical Event Data Standard) input: ``DIR/data/**/*.parquet`` events (``subject_id, time, code,
numeric_value, text_value``, checked against the ``meds`` package's ``DataSchema``), ``DIR/metadata/
subject_splits.parquet`` (optional).

Events become visits by their codes, with the prefixes of :class:`MedsCodes` (defaults: the codes the MIMIC-IV MEDS
ETL emits; ``--meds-config FILE`` overrides any of them in YAML). Codes are ``//``-separated.

What this reader assumes about admissions:

* An admission is an admission event (code ``HOSPITAL_ADMISSION`` or ``HOSPITAL_ADMISSION//<type>//...``; the first
  segment after the prefix is the admission type) and a discharge event (``HOSPITAL_DISCHARGE//<location>``) of the
  same subject. When the data has an ``hadm_id`` column (the MIMIC-IV ETL keeps it), the two are paired by it and it
  is the visit's ``hadm_id``. Otherwise an admission is paired with the subject's first discharge at or after it and
  no later than the subject's next admission, and its ``hadm_id`` is derived: the first 63 bits of
  blake2b("<subject_id>:<admission time in µs>"). An admission without a discharge, or a discharge without an
  admission, is quarantined.
* An event belongs to the admission its ``hadm_id`` names, when it has one; else to the subject's admission whose
  [admission time, discharge time] holds its time (both ends included: the ETL stamps diagnoses and procedures with
  the discharge time), the latest-starting one if stays overlap. Other events are dropped (counted): outside every
  admission, or without a time (MEDS's static events; ``GENDER//`` ones give the visit's gender).
* In-hospital death: a ``MEDS_DEATH`` event within the admission. Age: from the subject's ``MEDS_BIRTH`` event
  (``medmplm.data.demographics``).
* Diagnoses and procedures take the system of their prefix (``DIAGNOSIS//ICD//10//I10`` -> ``ICD10CM:I10``) and its
  shape check, in time then file order; medications are the rest of the code after their prefix, unique in order of
  first event; labs are ``<itemid>//<unit>`` after their prefix, with ``numeric_value`` and ``text_value``; notes are
  the ``text_value`` of note events, joined in time order.
* Splits: ``metadata/subject_splits.parquet``'s ``train``, ``tuning``, ``held_out`` are train, val, test; subjects it
  does not list are split by the seeded hash, as for MIMIC.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from medmplm.data import demographics, locations
from medmplm.data import quarantine as q
from medmplm.data.buckets import write_buckets
from medmplm.data.labels import MIMIC4_NON_ELECTIVE_TYPES
from medmplm.data.quarantine import RowLedger
from medmplm.data.schema import LAB_EVENT_TYPE
from medmplm.data.sources.base import Source, StatsRow, input_record
from medmplm.data.tables import MissingTableError, PrepareInputError, file_sha256
from medmplm.data.visits import (
    ADM_INDEX,
    INVALID_CODE_REASONS,
    NOTE_SEPARATOR,
    VisitOptions,
    combined,
    drop_exact_duplicates,
    gem_mapped,
    list_column,
    prefixed_codes,
    visit_table,
)
from medmplm.ontology import SYSTEM_PATTERNS

EVENTS = "EVENTS"
SEPARATOR = "//"
HADM_ID = "hadm_id"
SPLIT_NAMES = {meds.train_split: 0, meds.tuning_split: 1, meds.held_out_split: 2}
# The events' columns as bucketed: MEDS's own, text_value as a plain string, and hadm_id when the data has it.
EVENT_FIELDS = [
    pa.field("subject_id", pa.int64()),
    pa.field("time", pa.timestamp("us")),
    pa.field("code", pa.string()),
    pa.field("numeric_value", pa.float32()),
    pa.field("text_value", pa.string()),
]
_ORDER = "__order"


class MedsFormatError(PrepareInputError):
    """A MEDS directory or file does not follow the standard, or a --meds-config is malformed."""


@dataclass(frozen=True)
class MedsCodes:
    """Which MEDS codes are what (``--meds-config`` YAML sets any of these keys).

    Attributes:
        admission_prefix: admission events; the first ``//`` segment after it is the admission type.
        discharge_prefix: discharge events; the rest is the discharge location.
        diagnosis_prefixes: prefix -> code system (``ICD9CM``, ``ICD10CM``) of diagnosis events.
        procedure_prefixes: prefix -> code system (``ICD9Proc``, ``ICD10PCS``) of procedure events.
        medication_prefixes: medication events; the rest of the code is the medication.
        medication_vocabulary: how medication codes are organised: ``drug`` (flat) or ``atc3`` (an ATC-3 tree).
        lab_prefixes: lab events; the rest is ``<itemid>`` or ``<itemid>//<unit>``.
        note_prefixes: note events, their text in ``text_value``.
        gender_prefix: the rest is the gender.
        birth_code: birth event (age at admission).
        death_code: death event (in-hospital death when within an admission).
        hadm_id_column: the admission id column, when the data has it.
        non_elective_types: admission types the non-elective readmission label counts.
    """

    admission_prefix: str = "HOSPITAL_ADMISSION"
    discharge_prefix: str = "HOSPITAL_DISCHARGE"
    diagnosis_prefixes: dict[str, str] = field(
        default_factory=lambda: {"DIAGNOSIS//ICD//9//": "ICD9CM", "DIAGNOSIS//ICD//10//": "ICD10CM"}
    )
    procedure_prefixes: dict[str, str] = field(
        default_factory=lambda: {"PROCEDURE//ICD//9//": "ICD9Proc", "PROCEDURE//ICD//10//": "ICD10PCS"}
    )
    medication_prefixes: tuple[str, ...] = ("MEDICATION//START//",)
    medication_vocabulary: str = "drug"
    lab_prefixes: tuple[str, ...] = ("LAB//RESULT//",)
    note_prefixes: tuple[str, ...] = ("NOTE//DISCHARGE",)
    gender_prefix: str = "GENDER//"
    birth_code: str = meds.birth_code
    death_code: str = meds.death_code
    hadm_id_column: str = HADM_ID
    non_elective_types: tuple[str, ...] = MIMIC4_NON_ELECTIVE_TYPES

    def __post_init__(self) -> None:
        diagnosis = {"ICD9CM", "ICD10CM"}
        procedure = {"ICD9Proc", "ICD10PCS"}
        for name, systems, allowed in (
            ("diagnosis_prefixes", self.diagnosis_prefixes, diagnosis),
            ("procedure_prefixes", self.procedure_prefixes, procedure),
        ):
            unknown = sorted(set(systems.values()) - allowed)
            if unknown:
                raise MedsFormatError(f"{name}: unknown code system(s) {unknown}; use {sorted(allowed)}")
        if self.medication_vocabulary not in ("drug", "atc3"):
            raise MedsFormatError(f"medication_vocabulary must be drug or atc3, got {self.medication_vocabulary!r}")

    @classmethod
    def from_yaml(cls, location: str) -> MedsCodes:
        """Defaults overridden by the keys of a YAML mapping.

        Raises:
            MedsFormatError: naming the file and the key that is unknown or of the wrong type.
        """
        with locations.open_input_stream(locations.resolve(location)) as stream:
            try:
                values = yaml.safe_load(stream.read().decode("utf-8")) or {}
            except yaml.YAMLError as error:
                raise MedsFormatError(f"{location}: not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise MedsFormatError(f"{location}: expected a mapping of settings, got {type(values).__name__}")
        defaults = cls()
        known = {f.name: f for f in dataclasses.fields(cls)}
        settings = {}
        for key, value in values.items():
            if key not in known:
                raise MedsFormatError(f"{location}: unknown key {key!r}; known: {', '.join(known)}")
            default = getattr(defaults, key)
            if isinstance(default, tuple) and isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = tuple(value)
            elif isinstance(default, dict) and isinstance(value, dict):
                value = {str(k): str(v) for k, v in value.items()}
            elif not isinstance(value, type(default)):
                raise MedsFormatError(f"{location}: {key} must be a {type(default).__name__}, got {value!r}")
            settings[key] = value
        return cls(**settings)


def is_meds_layout(input_dir: str) -> bool:
    """Whether ``input_dir`` holds a MEDS ``data/`` directory."""
    return any(is_dir and name == meds.data_subdirectory for name, is_dir in locations.list_entries(input_dir))


def _derived_hadm_id(subject: int, admit_us: int) -> int:
    digest = hashlib.blake2b(f"{subject}:{admit_us}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _rest(code: pa.Array, prefix: str) -> pa.Array:
    return pc.utf8_slice_codeunits(code, len(prefix))


def _first_segment(text: pa.Array) -> pa.Array:
    parts = pc.split_pattern(text, SEPARATOR, max_splits=1)
    first = pc.list_element(parts, 0)
    return pc.if_else(pc.equal(first, ""), pa.scalar(None, pa.string()), first)


def _starts(code: pa.Array, prefixes) -> pa.Array:
    mask = pa.array(np.zeros(len(code), dtype=bool))
    for prefix in prefixes:
        mask = pc.or_(mask, pc.fill_null(pc.starts_with(code, prefix), False))
    return mask


def _is_code(code: pa.Array, prefix: str) -> pa.Array:
    """The code is ``prefix`` or starts with ``prefix//``."""
    return pc.fill_null(pc.or_(pc.equal(code, prefix), pc.starts_with(code, prefix + SEPARATOR)), False)


@dataclass
class MedsSource(Source):
    """A MEDS dataset; see the module docstring.

    Attributes:
        data_files: the event files, relative to ``data/``.
        has_hadm_id: whether the events carry ``codes.hadm_id_column``.
        codes: which codes are what.
        options: what to keep (the readmission discharge filter compares the discharge code's location).
        subject_splits: ``subject_id`` -> split index (0 train, 1 val, 2 test) from the metadata, if any.
        splits_file: where the splits were read.
        gem: ICD-10-CM -> ICD-9-CM targets when diagnoses are mapped (``--icd10-to-icd9``).
        gem_file: the GEM file read (None: the packaged copy).
    """

    input_dir: str
    data_files: list[str]
    has_hadm_id: bool
    codes: MedsCodes
    options: VisitOptions
    subject_splits: pa.Table | None = None
    splits_file: str | None = None
    gem: pa.Table | None = None
    gem_file: str | None = None
    config_file: str | None = None

    name: ClassVar[str] = "meds"

    def __post_init__(self) -> None:
        self.work_tables = (EVENTS,)
        self.raw_columns = {EVENTS: [f.name for f in self.event_schema]}

    @property
    def event_schema(self) -> pa.Schema:
        extra = [pa.field(self.codes.hadm_id_column, pa.int64())] if self.has_hadm_id else []
        return pa.schema(EVENT_FIELDS + extra)

    def _location(self, unit: str) -> str:
        return locations.join(self.input_dir, meds.data_subdirectory, unit)

    def work_units(self) -> list[str]:
        return sorted(self.data_files, key=lambda unit: -locations.file_size(self._location(unit)))

    def bucket_schema(self, table: str) -> pa.Schema:
        return self.event_schema

    def _reader(self, unit: str) -> pa.RecordBatchReader:
        location = self._location(unit)
        fs, path = locations.filesystem(location)
        parquet = pq.ParquetFile(fs.open_input_file(path))
        schema = self.event_schema
        present = [name for name in schema.names if name in parquet.schema_arrow.names]

        def batches():
            for batch in parquet.iter_batches(batch_size=1 << 16, columns=present):
                columns = [
                    batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(batch.num_rows, f.type)
                    for f in schema
                ]
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def bucketize(self, unit: str, work_dir: str, boundaries: np.ndarray) -> list[StatsRow]:
        tag = f"{self.data_files.index(unit):05d}-"
        rows_read = write_buckets(
            self._reader(unit), work_dir, EVENTS, boundaries, subject_column="subject_id", file_tag=tag
        )
        location = self._location(unit)
        return [
            ("rows_read", EVENTS, "", rows_read),
            ("input_bytes", f"data/{unit}", unit, locations.file_size(location)),
            ("input_sha256", f"data/{unit}", file_sha256(location), 0),
        ]

    def admission_subjects(self) -> np.ndarray:
        paths = [locations.filesystem(self._location(unit))[1] for unit in self.data_files]
        fs = locations.filesystem(self._location(self.data_files[0]))[0] if self.data_files else None
        if fs is None:
            return np.zeros(0, np.int64)
        dataset = pads.dataset(paths, format="parquet", filesystem=fs)
        admissions = dataset.to_table(columns=["subject_id"], filter=_admission_filter(self.codes.admission_prefix))
        return pc.drop_null(admissions["subject_id"]).to_numpy()

    def quarantine_invalid_subjects(self, tables: dict[str, pa.Table], ledger: RowLedger) -> None:
        rows = tables[EVENTS]
        ledger.reject(EVENTS, rows, pa.array(np.ones(rows.num_rows, dtype=bool)), q.INVALID_SUBJECT_ID, quarantine=True)

    def split_index(self, subject_ids: np.ndarray, seed: int, ratios: tuple[float, float, float]) -> np.ndarray:
        hashed = super().split_index(subject_ids, seed, ratios)
        if self.subject_splits is None:
            return hashed
        position = pc.index_in(pa.array(subject_ids, pa.int64()), value_set=self.subject_splits["subject_id"])
        listed = pc.take(self.subject_splits["split"], position)
        return np.where(pc.is_valid(listed).to_numpy(zero_copy_only=False), pc.fill_null(listed, 0).to_numpy(), hashed)

    def build_visits(self, tables: dict[str, pa.Table], ledger: RowLedger) -> tuple[pa.Table, list[StatsRow]]:
        return build_meds_visits(tables[EVENTS], self, ledger), []

    def extra_inputs(self) -> dict[str, dict[str, Any]]:
        records = {}
        if self.splits_file is not None:
            records[meds.subject_splits_filepath] = input_record(self.splits_file)
        if self.config_file is not None:
            records["meds_config"] = input_record(self.config_file)
        if self.gem_file is not None:
            records["icd10_to_icd9_gem"] = input_record(self.gem_file)
        return records

    def medications(self, stats: dict[tuple[str, str, str], int], tables: dict[str, Any]) -> dict[str, Any]:
        return {"vocabulary": self.codes.medication_vocabulary, "prefixes": list(self.codes.medication_prefixes)}

    def medication_ontology(self) -> str:
        return self.codes.medication_vocabulary

    def option_values(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "meds_codes": dataclasses.asdict(self.codes),
            "hadm_id_column_present": self.has_hadm_id,
            "subject_splits": self.splits_file is not None,
            "icd10_to_icd9": self.gem is not None,
            "gem_file": self.gem_file,
        }

    def definitions(self) -> dict[str, str]:
        definitions = {
            "admissions": (
                "an admission event paired with a discharge event of the same subject (by hadm_id when the data has "
                "it, else the first discharge at or after it and before the next admission); unpaired events "
                "quarantined"
            ),
            "events": (
                "an event belongs to the admission its hadm_id names, else to the admission whose [admission, "
                "discharge] times hold its time (latest-starting if overlapping); others dropped"
            ),
            "split": "metadata/subject_splits.parquet (train, tuning, held_out) where it lists the subject, else hashed",
            "duplicates": "events equal in every column; one is kept",
            "age": "(admission time - MEDS_BIRTH time) / 365.2425 days; over 89 is 90.0",
            "readmission_30d_nonelective": (
                "as readmission_30d, counting only " + ", ".join(self.codes.non_elective_types) + " next admissions"
            ),
        }
        if self.gem is not None:
            from medmplm.data.icd_gem import GEM_RULES

            definitions["icd10_to_icd9"] = GEM_RULES
        return definitions

    def is_synthetic(self) -> bool:
        from medmplm.data.manifest import is_synthetic_release

        return is_synthetic_release(self.input_dir)


def _admission_filter(prefix: str) -> pc.Expression:
    code = pc.field("code")
    return (code == prefix) | pc.starts_with(code, prefix + SEPARATOR)


_UNPAIRED = ["time_discharge", "row_discharge", "rest_discharge"]


def _pair_by_time(admit: pd.DataFrame, discharge: pd.DataFrame) -> pd.DataFrame:
    """Each admission with the subject's first discharge at or after it and no later than its next admission."""
    admit = admit.sort_values(["subject_id", "time", "row"], kind="stable")
    admit["next_time"] = admit.groupby("subject_id")["time"].shift(-1)
    pairs = pd.merge_asof(
        admit.sort_values("time", kind="stable"),
        discharge.sort_values(["time_discharge", "row_discharge"], kind="stable"),
        left_on="time",
        right_on="time_discharge",
        by="subject_id",
        direction="forward",
    )
    pairs.loc[pairs["next_time"].notna() & (pairs["time_discharge"] > pairs["next_time"]), _UNPAIRED] = np.nan
    # Admissions at the same time would share a discharge: it closes only the last of them.
    pairs = pairs.sort_values(["row_discharge", "row"], kind="stable")
    pairs.loc[pairs["row_discharge"].notna() & pairs.duplicated("row_discharge", keep="last"), _UNPAIRED] = np.nan
    return pairs.drop(columns=["next_time"])


def _pair_admissions(admit: pd.DataFrame, discharge: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Pair admission events (row, subject_id, time, hadm_id, rest) with discharge events (row_discharge, subject_id,
    time_discharge, hadm_id, rest_discharge): by hadm_id where both have one, by time for the others. Returns every
    admission (unpaired ones with null discharge columns) and the rows of the discharges left unpaired."""
    named_admit, named_discharge = admit["hadm_id"].notna(), discharge["hadm_id"].notna()
    by_id = admit[named_admit].merge(
        discharge[named_discharge].drop_duplicates(["subject_id", "hadm_id"]),
        on=["subject_id", "hadm_id"],
        how="left",
    )
    # A second admission event with the same id, or a discharge before its admission, leaves events unpaired.
    by_id.loc[by_id.duplicated(["subject_id", "hadm_id"], keep="first"), _UNPAIRED] = np.nan
    by_id.loc[by_id["time_discharge"] < by_id["time"], _UNPAIRED] = np.nan
    by_time = _pair_by_time(admit[~named_admit].copy(), discharge[~named_discharge].drop(columns=["hadm_id"]))
    pairs = pd.concat([by_id, by_time], ignore_index=True)
    paired = set(pairs["row_discharge"].dropna().astype(np.int64))
    return pairs, np.array(sorted(set(discharge["row_discharge"]) - paired), dtype=np.int64)


def build_meds_visits(events: pa.Table, source: MedsSource, ledger: RowLedger) -> pa.Table:
    """``VISIT_SCHEMA`` rows of the subjects whose events these are (all of them); see the module docstring."""
    codes = source.codes
    raw = source.raw_columns[EVENTS]
    events = drop_exact_duplicates(events, EVENTS, raw, ledger, ("subject_id", "time", "code"), row_id=_ORDER)
    events = events.append_column(_ORDER, pa.array(np.arange(events.num_rows)))
    events = ledger.reject(EVENTS, events, pc.is_null(events["code"]), q.INVALID_CODE, quarantine=True)
    code = combined(events["code"])
    is_boundary = pc.or_(_is_code(code, codes.admission_prefix), _is_code(code, codes.discharge_prefix))
    events = ledger.reject(
        EVENTS, events, pc.and_(is_boundary, pc.is_null(events["time"])), q.INVALID_ADMITTIME, quarantine=True
    )

    code = combined(events["code"])
    admit_mask = _is_code(code, codes.admission_prefix)
    discharge_mask = _is_code(code, codes.discharge_prefix)
    boundary = events.filter(pc.or_(admit_mask, discharge_mask))
    boundary_code = combined(boundary["code"])
    hadm = boundary[codes.hadm_id_column] if source.has_hadm_id else pa.nulls(boundary.num_rows, pa.int64())
    frame = pd.DataFrame(
        {
            "row": boundary[_ORDER].to_numpy(),
            "subject_id": boundary["subject_id"].to_numpy(),
            "time": boundary["time"].to_pandas(),
            "hadm_id": pd.array(hadm.to_pylist(), dtype="Int64"),
        }
    )
    is_admit = _is_code(boundary_code, codes.admission_prefix).to_numpy(zero_copy_only=False)
    admit = frame[is_admit].assign(
        rest=_rest(boundary_code, codes.admission_prefix + SEPARATOR).to_numpy(zero_copy_only=False)[is_admit]
    )
    discharge = frame[~is_admit].rename(columns={"row": "row_discharge", "time": "time_discharge"})
    discharge = discharge.assign(
        rest_discharge=_rest(boundary_code, codes.discharge_prefix + SEPARATOR).to_numpy(zero_copy_only=False)[
            ~is_admit
        ]
    )
    pairs, unpaired_discharges = _pair_admissions(admit, discharge)
    unpaired_admissions = pairs.loc[pairs["row_discharge"].isna(), "row"].to_numpy(dtype=np.int64)
    events = ledger.reject(
        EVENTS,
        events,
        pa.array(np.isin(events[_ORDER].to_numpy(), unpaired_admissions)),
        q.ADMISSION_WITHOUT_DISCHARGE,
        quarantine=True,
    )
    events = ledger.reject(
        EVENTS,
        events,
        pa.array(np.isin(events[_ORDER].to_numpy(), unpaired_discharges)),
        q.DISCHARGE_WITHOUT_ADMISSION,
        quarantine=True,
    )
    pairs = pairs[pairs["row_discharge"].notna()].copy()
    pairs["row_discharge"] = pairs["row_discharge"].astype(np.int64)
    derived = [
        _derived_hadm_id(subject, admit_us)
        for subject, admit_us in zip(pairs["subject_id"], pairs["time"].astype("datetime64[us]").astype(np.int64))
    ]
    pairs["hadm_id"] = np.where(pairs["hadm_id"].isna(), derived, pairs["hadm_id"].fillna(0)).astype(np.int64)
    pairs = pairs.sort_values(["subject_id", "time", "hadm_id"], kind="stable").reset_index(drop=True)

    # Which admission each remaining event belongs to.
    code = combined(events["code"])
    row_numbers = events[_ORDER].to_numpy()
    boundary_rows = np.concatenate([pairs["row"].to_numpy(np.int64), pairs["row_discharge"].to_numpy(np.int64)])
    is_boundary = np.isin(row_numbers, boundary_rows)
    is_gender = pc.fill_null(pc.starts_with(code, codes.gender_prefix), False).to_numpy(zero_copy_only=False)
    is_birth = pc.fill_null(pc.equal(code, codes.birth_code), False).to_numpy(zero_copy_only=False)
    is_death = pc.fill_null(pc.equal(code, codes.death_code), False).to_numpy(zero_copy_only=False)
    adm_index = _assign_admissions(events, pairs, source)
    subject_events = is_gender | is_birth
    no_time = pc.is_null(events["time"]).to_numpy(zero_copy_only=False) & ~subject_events & ~is_boundary
    events = events.append_column(ADM_INDEX, pa.array(adm_index, pa.int64()))
    unknown_hadm = adm_index == -2
    events = ledger.reject(EVENTS, events, pa.array(unknown_hadm), q.UNKNOWN_ADMISSION, quarantine=True)
    keep = ~unknown_hadm
    no_time, is_boundary, subject_events, is_death = (m[keep] for m in (no_time, is_boundary, subject_events, is_death))
    events = ledger.reject(EVENTS, events, pa.array(no_time), q.NO_TIME, quarantine=False)
    keep = ~no_time
    is_boundary, subject_events, is_death = (m[keep] for m in (is_boundary, subject_events, is_death))
    outside = (events[ADM_INDEX].to_numpy() < 0) & ~is_boundary & ~subject_events & ~is_death
    events = ledger.reject(EVENTS, events, pa.array(outside), q.NOT_IN_AN_ADMISSION, quarantine=False)
    keep = ~outside
    is_boundary, subject_events, is_death = (m[keep] for m in (is_boundary, subject_events, is_death))

    admissions = _admission_table(pairs, events, is_death)
    subject_rows = events.filter(pa.array(subject_events))
    in_stay = events.filter(pa.array(~is_boundary & ~subject_events & ~is_death))
    in_stay = in_stay.sort_by([(ADM_INDEX, "ascending"), ("time", "ascending"), (_ORDER, "ascending")])
    used = np.zeros(in_stay.num_rows, dtype=bool)
    diagnoses, used_diagnoses = _code_lists(in_stay, codes.diagnosis_prefixes, admissions, source, ledger)
    procedures, used_procedures = _code_lists(in_stay, codes.procedure_prefixes, admissions, source, ledger)
    medications, used_medications = _medication_lists(in_stay, codes, admissions, ledger)
    labs, used_labs = _lab_lists(in_stay, codes, admissions)
    note_text, num_notes, used_notes = _notes(in_stay, codes, admissions, ledger)
    for mask in (used_diagnoses, used_procedures, used_medications, used_labs, used_notes):
        used |= mask
    ledger.reject(EVENTS, in_stay, pa.array(~used), q.CODE_NOT_USED, quarantine=False)
    gender, age = _subject_demographics(subject_rows, admissions, codes)
    return visit_table(
        admissions,
        gender=gender,
        age=age,
        diagnoses=diagnoses,
        procedures=procedures,
        medications=medications,
        labs=labs,
        note_text=note_text,
        num_notes=num_notes,
        options=source.options,
        non_elective_types=codes.non_elective_types,
    )


def _assign_admissions(events: pa.Table, pairs: pd.DataFrame, source: MedsSource) -> np.ndarray:
    """Admission position of each event: by hadm_id when it has one (-2: an id no kept admission has), else by time
    (-1: none)."""
    frame = pd.DataFrame(
        {
            "subject_id": events["subject_id"].to_numpy(),
            "time": events["time"].to_pandas(),
            "position": np.arange(events.num_rows),
        }
    )
    result = np.full(events.num_rows, -1, dtype=np.int64)
    stays = pairs[["subject_id", "time", "time_discharge"]].assign(adm=np.arange(len(pairs)))
    timed = frame[frame["time"].notna()].sort_values("time", kind="stable")
    if len(stays) and len(timed):
        found = pd.merge_asof(
            timed,
            stays.sort_values("time", kind="stable").rename(columns={"time": "admit"}),
            left_on="time",
            right_on="admit",
            by="subject_id",
            direction="backward",
        )
        inside = found["adm"].notna() & (found["time"] <= found["time_discharge"])
        result[found.loc[inside, "position"].to_numpy()] = found.loc[inside, "adm"].to_numpy(np.int64)
    if source.has_hadm_id:
        hadm = combined(events[source.codes.hadm_id_column])
        named = pc.is_valid(hadm).to_numpy(zero_copy_only=False)
        key = pd.MultiIndex.from_arrays([pairs["subject_id"].to_numpy(np.int64), pairs["hadm_id"].to_numpy(np.int64)])
        wanted = pd.MultiIndex.from_arrays(
            [events["subject_id"].to_numpy()[named], pc.drop_null(hadm).to_numpy().astype(np.int64)]
        )
        position = key.get_indexer(wanted)
        result[np.nonzero(named)[0]] = np.where(position >= 0, position, -2)
    return result


def _admission_table(pairs: pd.DataFrame, events: pa.Table, is_death: np.ndarray) -> pa.Table:
    """``clean_admissions``' columns for the paired admissions (already sorted by subject, time, hadm_id)."""
    deaths = events.filter(pa.array(is_death))
    death_time = pa.nulls(len(pairs), pa.timestamp("us"))
    if deaths.num_rows:
        death_frame = pd.DataFrame({"adm": deaths[ADM_INDEX].to_numpy(), "time": deaths["time"].to_pandas()})
        death_frame = death_frame[death_frame["adm"] >= 0].groupby("adm")["time"].min()
        values = pd.Series(pd.NaT, index=range(len(pairs)), dtype="datetime64[us]")
        values.loc[death_frame.index] = death_frame.to_numpy()
        death_time = pa.array(values, pa.timestamp("us"))
    rest = pa.array(pairs["rest"].fillna("").astype(str), pa.string())
    discharge_rest = pa.array(pairs["rest_discharge"].fillna("").astype(str), pa.string())
    seconds = pa.timestamp("s")
    return pa.table(
        {
            "subject_id": pa.array(pairs["subject_id"], pa.int64()),
            "hadm_id": pa.array(pairs["hadm_id"], pa.int64()),
            "admittime": pc.cast(pa.array(pairs["time"], pa.timestamp("us")), seconds, safe=False),
            "dischtime": pc.cast(pa.array(pairs["time_discharge"], pa.timestamp("us")), seconds, safe=False),
            "deathtime": pc.cast(death_time, seconds, safe=False),
            "admission_type": _first_segment(rest),
            "hospital_death": pc.is_valid(death_time),
            "discharge_location": pc.if_else(
                pc.equal(discharge_rest, ""), pa.scalar(None, pa.string()), discharge_rest
            ),
        }
    )


def _code_lists(
    events: pa.Table, prefixes: dict[str, str], admissions: pa.Table, source: MedsSource, ledger: RowLedger
) -> tuple[pa.ListArray, np.ndarray]:
    """System-prefixed ICD lists per admission from the events of ``prefixes``; which events were used."""
    code = combined(events["code"])
    system = pa.nulls(events.num_rows, pa.string())
    bare = pa.nulls(events.num_rows, pa.string())
    for prefix, name in prefixes.items():
        match = pc.fill_null(pc.starts_with(code, prefix), False)
        system = pc.if_else(match, pa.scalar(name), system)
        bare = pc.if_else(match, _rest(code, prefix), bare)
    used = pc.is_valid(system).to_numpy(zero_copy_only=False)
    rows = events.filter(pa.array(used)).append_column("__system", system.filter(pa.array(used)))
    rows = rows.append_column("__code", bare.filter(pa.array(used)))
    for name in set(prefixes.values()):
        bad = pc.and_(
            pc.equal(rows["__system"], name), pc.invert(pc.match_substring_regex(rows["__code"], SYSTEM_PATTERNS[name]))
        )
        rows = ledger.reject(EVENTS, rows, bad, INVALID_CODE_REASONS[name], quarantine=True)
    adm_index, system, bare = (combined(rows[c]) for c in (ADM_INDEX, "__system", "__code"))
    if source.gem is not None and "ICD10CM" in prefixes.values():
        adm_index, values = gem_mapped(adm_index, system, bare, source.gem, EVENTS, ledger)
    else:
        values = prefixed_codes(system, bare)
    return list_column(adm_index, values, admissions.num_rows), used


def _medication_lists(
    events: pa.Table, codes: MedsCodes, admissions: pa.Table, ledger: RowLedger
) -> tuple[pa.ListArray, np.ndarray]:
    code = combined(events["code"])
    medication = pa.nulls(events.num_rows, pa.string())
    for prefix in codes.medication_prefixes:
        medication = pc.if_else(pc.fill_null(pc.starts_with(code, prefix), False), _rest(code, prefix), medication)
    used = pc.is_valid(medication).to_numpy(zero_copy_only=False)
    rows = events.filter(pa.array(used)).append_column("__code", medication.filter(pa.array(used)))
    bad = pc.or_(pc.equal(rows["__code"], ""), pc.match_substring_regex(rows["__code"], r"[\t\r\n|]"))
    rows = ledger.reject(EVENTS, rows, bad, q.INVALID_MEDICATION_CODE, quarantine=True)
    numbered = rows.select([ADM_INDEX, "__code"]).append_column("order", pa.array(np.arange(rows.num_rows)))
    first = numbered.group_by([ADM_INDEX, "__code"], use_threads=False).aggregate([("order", "min")])
    first = first.sort_by([(ADM_INDEX, "ascending"), ("order_min", "ascending")])
    return list_column(first[ADM_INDEX], combined(first["__code"]), admissions.num_rows), used


def _lab_lists(events: pa.Table, codes: MedsCodes, admissions: pa.Table) -> tuple[pa.ListArray, np.ndarray]:
    code = combined(events["code"])
    rest = pa.nulls(events.num_rows, pa.string())
    for prefix in codes.lab_prefixes:
        rest = pc.if_else(pc.fill_null(pc.starts_with(code, prefix), False), _rest(code, prefix), rest)
    used = pc.is_valid(rest).to_numpy(zero_copy_only=False)
    rows = events.filter(pa.array(used))
    rest = rest.filter(pa.array(used))
    unit = pc.struct_field(pc.extract_regex(rest, r"^.*?//(?P<unit>.*)$"), "unit")
    admittime = pc.take(admissions["admittime"], rows[ADM_INDEX])
    seconds = pc.cast(pc.subtract(pc.cast(rows["time"], pa.timestamp("s"), safe=False), admittime), pa.int64())
    hours = pc.cast(pc.divide(pc.cast(seconds, pa.float64()), 3600.0), pa.float32())
    labs = pa.StructArray.from_arrays(
        [
            combined(_first_segment(rest)),
            combined(rows["text_value"]),
            combined(pc.cast(rows["numeric_value"], pa.float64())),
            combined(unit),
            pa.nulls(rows.num_rows, pa.string()),
            combined(hours),
        ],
        fields=list(LAB_EVENT_TYPE),
    )
    return list_column(rows[ADM_INDEX], labs, admissions.num_rows), used


def _notes(
    events: pa.Table, codes: MedsCodes, admissions: pa.Table, ledger: RowLedger
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    used = _starts(combined(events["code"]), codes.note_prefixes).to_numpy(zero_copy_only=False)
    rows = events.filter(pa.array(used))
    rows = ledger.reject(EVENTS, rows, pc.is_null(rows["text_value"]), q.MISSING_TEXT, quarantine=True)
    notes = list_column(rows[ADM_INDEX], combined(rows["text_value"]), admissions.num_rows)
    num_notes = pc.cast(pc.list_value_length(notes), pa.int32())
    text = pc.binary_join(notes, NOTE_SEPARATOR)
    return pc.if_else(pc.greater(num_notes, 0), text, pa.scalar(None, pa.string())), num_notes, used


def _subject_demographics(rows: pa.Table, admissions: pa.Table, codes: MedsCodes) -> tuple[pa.Array, pa.Array]:
    """``(gender, age)`` per admission from the subjects' gender and birth events (the first of each, in file order)."""
    rows = rows.sort_by([(_ORDER, "ascending")])
    code = combined(rows["code"])
    subjects = admissions["subject_id"]

    def first_per_subject(mask: pa.Array, values: pa.Array) -> pa.Array:
        chosen = pa.table({"subject": rows["subject_id"], "value": values}).filter(mask)
        if chosen.num_rows == 0:
            return pa.nulls(len(subjects), values.type)
        first = pc.index_in(chosen["subject"].unique(), value_set=chosen["subject"])
        return demographics.per_admission(
            subjects, combined(chosen["subject"]).take(first), combined(chosen["value"]).take(first)
        )

    is_gender = pc.fill_null(pc.starts_with(code, codes.gender_prefix), False)
    gender = first_per_subject(is_gender, demographics.gender_values(_rest(code, codes.gender_prefix)))
    birth = first_per_subject(pc.fill_null(pc.equal(code, codes.birth_code), False), combined(rows["time"]))
    return gender, demographics.ages_from_birth(admissions["admittime"], birth)


def locate(
    input_dir: str,
    options: VisitOptions,
    config_file: str | None,
    icd10_to_icd9: bool,
    gem_file: str | None,
) -> MedsSource:
    """Find and check a MEDS dataset's event files and splits, and read the code settings.

    Raises:
        MedsFormatError: no data/ files, a file whose schema is not MEDS's, or bad splits, naming the file.
    """
    data_dir = locations.join(input_dir, meds.data_subdirectory)
    data_files = [f for f in locations.list_files_recursive(data_dir) if f.endswith(".parquet")]
    if not data_files:
        raise MissingTableError(f"{data_dir}: no *.parquet event files; expected a MEDS dataset (data/, metadata/)")
    codes = MedsCodes.from_yaml(config_file) if config_file is not None else MedsCodes()
    has_hadm_id = False
    for relative in data_files:
        location = locations.join(data_dir, relative)
        fs, path = locations.filesystem(location)
        schema = pq.read_schema(fs.open_input_file(path))
        try:
            meds.DataSchema.validate(schema.empty_table())
        except Exception as error:  # flexible_schema's SchemaValidationError, raised by meds' validate
            raise MedsFormatError(f"{location}: not a MEDS data file: {error}") from None
        has_hadm_id = has_hadm_id or codes.hadm_id_column in schema.names
    splits_file = locations.join(input_dir, meds.subject_splits_filepath)
    subject_splits = None
    if locations.is_file(splits_file):
        subject_splits = _read_splits(splits_file)
    else:
        splits_file = None
    gem = None
    if icd10_to_icd9:
        from medmplm.data.icd_gem import load_gem

        gem = load_gem(gem_file)
    return MedsSource(
        input_dir=input_dir,
        data_files=data_files,
        has_hadm_id=has_hadm_id,
        codes=codes,
        options=options,
        subject_splits=subject_splits,
        splits_file=splits_file,
        gem=gem,
        gem_file=gem_file,
        config_file=config_file,
    )


def _read_splits(location: str) -> pa.Table:
    """``subject_id`` -> split index (int8) from MEDS's subject_splits.parquet.

    Raises:
        MedsFormatError: naming the file when its schema is not MEDS's, a split name is unknown, or a subject is
            listed twice.
    """
    fs, path = locations.filesystem(location)
    table = pq.read_table(fs.open_input_file(path))
    try:
        meds.SubjectSplitSchema.validate(table)
    except Exception as error:  # flexible_schema's SchemaValidationError
        raise MedsFormatError(f"{location}: not a MEDS subject_splits file: {error}") from None
    names = pa.array(list(SPLIT_NAMES), pa.string())
    position = pc.index_in(table["split"], value_set=names)
    if position.null_count:
        row = pc.index(pc.is_null(position), True).as_py()
        raise MedsFormatError(
            f"{location}: row {row}: split {table['split'][row].as_py()!r} is not one of {', '.join(SPLIT_NAMES)}"
        )
    if len(pc.unique(table["subject_id"])) != table.num_rows:
        raise MedsFormatError(f"{location}: a subject_id is listed more than once")
    split = pc.take(pa.array(list(SPLIT_NAMES.values()), pa.int8()), position)
    return pa.table({"subject_id": combined(table["subject_id"]), "split": combined(split)})
