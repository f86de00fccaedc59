"""What prepare needs from an input layout: a :class:`Source` turns one release (MIMIC-III, MIMIC-IV, MEDS) into the
one visit-record schema, bucket by bucket; ``medmplm.data.pipeline`` runs it.

A source is built on the driver (where it locates and checks its inputs and loads its small lookup tables) and
pickled into the Ray tasks of both stages:

1. ``bucketize(unit)``: one task per input file streams it into per-patient-bucket files (``medmplm.data.buckets``);
2. ``build_visits(tables)``: one task per output shard builds the visits of one bucket at a time.

Stats travel back as ``(kind, scope, key, value)`` rows (``medmplm.data.pipeline.STATS_SCHEMA``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data import locations
from medmplm.data import quarantine as q
from medmplm.data.buckets import bucketize_table
from medmplm.data.ndc_atc import NDC_MAP_FILES, find_ndc_map, load_ndc_to_atc3
from medmplm.data.quarantine import RowLedger
from medmplm.data.tables import ADMISSIONS, TableFile, file_sha256, read_table
from medmplm.data.visits import VisitOptions, parse_int

StatsRow = tuple[str, str, str, int]


def input_record(location: str) -> dict[str, Any]:
    """A manifest ``inputs`` entry: file name, size and sha256 of the file at ``location``."""
    return {
        "file": location.rstrip("/").rsplit("/", 1)[-1],
        "bytes": locations.file_size(location),
        "sha256": file_sha256(location),
    }


class Source(ABC):
    """An input layout; see the module docstring.

    Attributes:
        name: ``mimic3``, ``mimic4`` or ``meds``.
        input_dir: the release directory (local path or URI).
        work_tables: the bucketed tables, in the order their quarantine files and manifest entries appear.
        raw_columns: per work table, the input columns quarantine files keep.
    """

    name: ClassVar[str]
    input_dir: str
    work_tables: tuple[str, ...]
    raw_columns: dict[str, list[str]]

    @abstractmethod
    def work_units(self) -> list[str]:
        """Names of the stage-1 inputs (one task each), largest first."""

    @abstractmethod
    def bucketize(self, unit: str, work_dir: str, boundaries: np.ndarray) -> list[StatsRow]:
        """Stream one input into the buckets; stats include ``rows_read`` (scope: its work table) and the input's
        ``input_bytes`` and ``input_sha256`` (scope: the unit)."""

    @abstractmethod
    def admission_subjects(self) -> np.ndarray:
        """SUBJECT_ID of every admission (int64, repeated per admission), to balance the buckets."""

    def bucket_schema(self, table: str) -> pa.Schema | None:
        """Schema of a work table's bucket files; None: every raw column a string."""
        return None

    @abstractmethod
    def quarantine_invalid_subjects(self, tables: dict[str, pa.Table], ledger: RowLedger) -> None:
        """Quarantine (or drop, by the source's rules) the rows whose SUBJECT_ID did not parse (bucket -1)."""

    @abstractmethod
    def build_visits(self, tables: dict[str, pa.Table], ledger: RowLedger) -> tuple[pa.Table, list[StatsRow]]:
        """``VISIT_SCHEMA`` rows of one bucket, sorted by (subject_id, admittime, hadm_id), and extra stats."""

    def split_index(self, subject_ids: np.ndarray, seed: int, ratios: tuple[float, float, float]) -> np.ndarray:
        """Split (0 train, 1 val, 2 test) of each subject: by default the seeded hash of the subject id."""
        from medmplm.data.pipeline import assign_splits

        return assign_splits(subject_ids, seed, ratios)

    @abstractmethod
    def extra_inputs(self) -> dict[str, dict[str, Any]]:
        """Manifest ``inputs`` entries of the files read on the driver (maps, dictionaries, metadata)."""

    @abstractmethod
    def medications(self, stats: dict[tuple[str, str, str], int], tables: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``medications`` section."""

    @abstractmethod
    def medication_ontology(self) -> str:
        """The ``medmplm.ontology.build_ontology`` kind of the medication codes."""

    @abstractmethod
    def option_values(self) -> dict[str, Any]:
        """The source's settings as recorded in the manifest's ``options``."""

    @abstractmethod
    def definitions(self) -> dict[str, str]:
        """How this source's rows become visits (merged into the manifest's ``definitions``)."""

    @abstractmethod
    def is_synthetic(self) -> bool:
        """Whether the input is a release of the synthetic generator."""


@dataclass
class MimicSource(Source):
    """A MIMIC release as CSV(.gz) tables: what MIMIC-III and MIMIC-IV share.

    Attributes:
        input_dir: the release directory.
        table_files: work table -> located CSV file.
        options: what to keep.
        ndc_map_dir: where the NDC -> ATC files were read (None unless the vocabulary is ``atc3``).
        ndc_atc3: the NDC -> ATC-3 table.
        conflicting_hadm_ids: HADM_IDs found under more than one SUBJECT_ID (ADMISSIONS read once on the driver).
    """

    input_dir: str
    table_files: dict[str, TableFile]
    options: VisitOptions
    ndc_map_dir: str | None = None
    ndc_atc3: pa.Table | None = None
    conflicting_hadm_ids: pa.Array = field(init=False)
    _admission_subjects: np.ndarray = field(init=False)
    # Notes whose category is filtered in stage 1 (MIMIC-III's NOTEEVENTS): TEXT of other categories is not kept.
    category_filtered_notes: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        self.work_tables = tuple(self.table_files)
        self.raw_columns = {t: list(f.canonical_columns) for t, f in self.table_files.items()}
        self._admission_subjects, self.conflicting_hadm_ids = admission_keys(self.table_files[ADMISSIONS])

    def work_units(self) -> list[str]:
        return sorted(self.table_files, key=lambda t: -self.table_files[t].size)

    def bucketize(self, unit: str, work_dir: str, boundaries: np.ndarray) -> list[StatsRow]:
        table_file = self.table_files[unit]
        categories = self.options.note_categories_normalized if unit == self.category_filtered_notes else None
        rows_read = bucketize_table(table_file, work_dir, boundaries, categories)
        return [
            ("rows_read", unit, "", rows_read),
            ("input_bytes", unit, table_file.name, table_file.size),
            ("input_sha256", unit, file_sha256(table_file.location), 0),
        ]

    def admission_subjects(self) -> np.ndarray:
        return self._admission_subjects

    def quarantine_invalid_subjects(self, tables: dict[str, pa.Table], ledger: RowLedger) -> None:
        for table, rows in tables.items():
            if table == self.category_filtered_notes:
                category = pc.utf8_lower(pc.utf8_trim_whitespace(rows["CATEGORY"]))
                selected = pc.fill_null(pc.is_in(category, value_set=self.options.note_categories_normalized), False)
                rows = ledger.reject(table, rows, pc.invert(selected), q.NOTE_CATEGORY, quarantine=False)
            ledger.reject(
                table, rows, pa.array(np.ones(rows.num_rows, dtype=bool)), q.INVALID_SUBJECT_ID, quarantine=True
            )

    def extra_inputs(self) -> dict[str, dict[str, Any]]:
        if self.ndc_map_dir is None:
            return {}
        return {name: input_record(locations.join(self.ndc_map_dir, name)) for name in NDC_MAP_FILES}

    def medication_ontology(self) -> str:
        return self.options.medication_vocab

    def medications(self, stats: dict[tuple[str, str, str], int], tables: dict[str, Any]) -> dict[str, Any]:
        unmapped = {key: v for (kind, _, key), v in stats.items() if kind == "unmapped_ndc"}
        return {
            "vocabulary": self.options.medication_vocab,
            "missing_or_zero_ndc_rows": tables["PRESCRIPTIONS"]["dropped"].get(q.NDC_MISSING, 0),
            "unmapped_ndc_rows": sum(unmapped.values()),
            "unmapped_ndc_distinct": len(unmapped),
            "ndc_map_entries": self.ndc_atc3.num_rows if self.ndc_atc3 is not None else 0,
        }

    def is_synthetic(self) -> bool:
        from medmplm.data.manifest import is_synthetic_release

        return is_synthetic_release(self.input_dir)


def admission_keys(table_file: TableFile) -> tuple[np.ndarray, pa.Array]:
    """SUBJECT_ID of every parseable admission, and HADM_IDs that occur under more than one SUBJECT_ID."""
    keys = read_table(table_file, ["SUBJECT_ID", "HADM_ID"])
    subject, _ = parse_int(keys["SUBJECT_ID"])
    hadm, _ = parse_int(keys["HADM_ID"])
    keys = pa.table({"subject": subject, "hadm": hadm}).filter(pc.and_kleene(pc.is_valid(subject), pc.is_valid(hadm)))
    per_hadm = keys.group_by("hadm", use_threads=False).aggregate([("subject", "count_distinct")])
    conflicting = per_hadm.filter(pc.greater(per_hadm["subject_count_distinct"], 1))["hadm"].combine_chunks()
    return keys["subject"].to_numpy(), conflicting.cast(pa.int64())


def unmapped_ndc_stats(unmapped: pa.Table) -> list[StatsRow]:
    """Stats rows of the unmapped NDCs ``build_visits`` returns."""
    return [("unmapped_ndc", "", n, c) for n, c in zip(unmapped["ndc"].to_pylist(), unmapped["rows"].to_pylist())]


def medication_map(
    options: VisitOptions, ndc_map_dir: str | None, input_dir: str
) -> tuple[str | None, pa.Table | None]:
    """``(directory, NDC -> ATC-3 table)`` when the medication vocabulary is ``atc3`` (the map is looked for in
    ``ndc_map_dir``, else beside the tables), ``(None, None)`` otherwise."""
    if options.medication_vocab != "atc3":
        return None, None
    directory = find_ndc_map(ndc_map_dir if ndc_map_dir is not None else input_dir)
    return str(directory), load_ndc_to_atc3(directory)


MIMIC_DEFINITIONS = {
    "duplicates": "rows equal in every input column but the row id (ROW_ID; MIMIC-IV LABEVENT_ID); the lowest is kept",
    "dischtime_before_admittime": "the admission is quarantined (with its diagnoses, notes, ... as unknown_admission)",
    "labs": "events with a HADM_ID of a kept admission; null HADM_ID (outpatient) dropped (counted)",
    "codes": (
        "diagnoses and procedures as '<system>:<code>' (ICD9CM, ICD10CM; ICD9Proc, ICD10PCS), the system from "
        "ICD_VERSION where the table has it (MIMIC-III: ICD-9), shape checked per system"
    ),
}
