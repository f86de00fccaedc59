"""MIMIC table readers: locate ``<table>.csv[.gz]``, check columns, stream rows as strings.

Every column is read as a string (codes keep their leading zeros: ``0389`` never becomes
``389``); typed parsing, with quarantine of rows that do not parse, happens later in
``medmplm.data.visits``. File and column names are matched case-insensitively (MIMIC-III's full
release is upper case, its public demo and MIMIC-IV lower case) and columns returned upper case.
Files are local paths or URIs (``s3://``, ``gs://``), read through ``pyarrow.fs``.

The MIMIC-III table names and columns are here; MIMIC-IV's are in ``medmplm.data.sources.mimic4``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv

from medmplm.data import locations

ADMISSIONS = "ADMISSIONS"
DIAGNOSES_ICD = "DIAGNOSES_ICD"
PROCEDURES_ICD = "PROCEDURES_ICD"
PRESCRIPTIONS = "PRESCRIPTIONS"
LABEVENTS = "LABEVENTS"
NOTEEVENTS = "NOTEEVENTS"
PATIENTS = "PATIENTS"

# Columns prepare reads from each table (ROW_ID, when present, only breaks ties deterministically).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    ADMISSIONS: (
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "HOSPITAL_EXPIRE_FLAG",
    ),
    DIAGNOSES_ICD: ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    PROCEDURES_ICD: ("SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"),
    PRESCRIPTIONS: ("SUBJECT_ID", "HADM_ID", "STARTDATE"),
    LABEVENTS: ("SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"),
    NOTEEVENTS: ("SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "CATEGORY", "ISERROR", "TEXT"),
    PATIENTS: ("SUBJECT_ID", "GENDER", "DOB"),
}
TABLES = tuple(REQUIRED_COLUMNS)
ROW_ID = "ROW_ID"

# Only NOTEEVENTS has quoted values that span lines; the other tables parse faster without it.
MULTILINE_TABLES = frozenset({NOTEEVENTS})

_CSV_SUFFIXES = (".csv", ".csv.gz")


class PrepareInputError(ValueError):
    """The input cannot be prepared as given (missing file or column, bad option)."""


class MissingTableError(PrepareInputError):
    """A required ``<table>.csv`` / ``<table>.csv.gz`` is not in the input directory."""


class MissingColumnError(PrepareInputError):
    """A table's header lacks a column prepare needs."""


class MalformedCsvError(PrepareInputError):
    """A CSV row does not have the header's number of fields (the message never quotes the row)."""


@dataclass(frozen=True)
class TableFile:
    """A located input table.

    Attributes:
        table: canonical table name, e.g. ``"ADMISSIONS"``.
        location: the ``.csv`` or ``.csv.gz`` file (local path or URI).
        columns: header names exactly as in the file, in file order.
        multiline: quoted values may span lines (notes); other tables parse faster without it.
    """

    table: str
    location: str
    columns: tuple[str, ...]
    multiline: bool = False

    @property
    def name(self) -> str:
        """The file name, e.g. ``admissions.csv.gz``."""
        return self.location.rstrip("/").rsplit("/", 1)[-1]

    @property
    def size(self) -> int:
        """The file's size in bytes (compressed size for ``.gz``)."""
        return locations.file_size(self.location)

    @property
    def canonical_columns(self) -> tuple[str, ...]:
        """Header names upper-cased, in file order."""
        return tuple(name.upper() for name in self.columns)

    @property
    def compression(self) -> str | None:
        return "gzip" if self.location.lower().endswith(".gz") else None


def find_table(directory: str | os.PathLike, table: str) -> str:
    """Location of ``<table>.csv`` or ``<table>.csv.gz`` in ``directory`` (a local path or URI; file names matched
    case-insensitively).

    Raises:
        MissingTableError: when neither exists, or when both do (ambiguous).
    """
    directory = locations.resolve(str(directory))
    if not locations.is_dir(directory):
        raise MissingTableError(f"input directory {directory} does not exist or is not a directory")
    wanted = {f"{table}{suffix}".lower() for suffix in _CSV_SUFFIXES}
    matches = sorted(
        name for name, is_dir in locations.list_entries(directory) if name.lower() in wanted and not is_dir
    )
    if not matches:
        raise MissingTableError(
            f"table {table} not found: expected {locations.join(directory, table + '.csv')} or "
            f"{locations.join(directory, table + '.csv.gz')}"
        )
    if len(matches) > 1:
        raise MissingTableError(
            f"table {table} is ambiguous in {directory}: found {', '.join(matches)}; keep only one of them"
        )
    return locations.join(directory, matches[0])


def read_header(location: str) -> tuple[str, ...]:
    """Column names of a CSV / CSV.gz file (local path or URI), as written in its first line."""
    compression = "gzip" if location.lower().endswith(".gz") else None
    with locations.open_input_stream(location, compression) as stream:
        # Only the header matters here; rows are checked (without quoting them) when streamed.
        parse_options = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")
        reader = pacsv.open_csv(stream, parse_options=parse_options)
        return tuple(reader.schema.names)


def locate_table(
    directory: str | os.PathLike,
    table: str,
    required: tuple[str, ...] | None = None,
    *,
    file_stem: str | None = None,
    multiline: bool | None = None,
) -> TableFile:
    """Find a table and check that its header has every required column (case-insensitively).

    Args:
        directory: directory holding the CSV files (local path or URI).
        table: canonical table name (one of ``TABLES`` for MIMIC-III).
        required: columns to require; defaults to ``REQUIRED_COLUMNS[table]``.
        file_stem: the file's name without ``.csv[.gz]`` when it is not ``table`` (MIMIC-IV's ``note/discharge``).
        multiline: whether quoted values may span lines; defaults to ``table in MULTILINE_TABLES``.

    Raises:
        MissingTableError: the file is missing or ambiguous.
        MissingColumnError: naming the file and every missing column.
    """
    location = find_table(directory, file_stem or table)
    columns = read_header(location)
    upper = [name.upper() for name in columns]
    duplicated = sorted({name for name in upper if upper.count(name) > 1})
    if duplicated:
        raise MissingColumnError(
            f"{location}: column(s) {', '.join(duplicated)} appear more than once (case-insensitively)"
        )
    needed = REQUIRED_COLUMNS[table] if required is None else required
    missing = [name for name in needed if name not in upper]
    if missing:
        raise MissingColumnError(
            f"{location}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
            "column names are matched case-insensitively"
        )
    return TableFile(
        table=table,
        location=location,
        columns=columns,
        multiline=table in MULTILINE_TABLES if multiline is None else multiline,
    )


def open_table_stream(table_file: TableFile, block_size: int = 16 << 20) -> pa.RecordBatchReader:
    """Stream a table's rows as record batches with every column a string, names upper-cased.

    Empty fields are nulls (and only empty fields: ``NA`` or ``NULL`` stay strings). One row
    (e.g. a note) must fit in ``block_size`` bytes.

    Raises:
        MalformedCsvError: when a row has the wrong number of fields. pyarrow's own message quotes
            the row, which may be clinical text, so it is replaced by one giving the position only.
    """
    stream = locations.open_input_stream(table_file.location, table_file.compression)
    malformed: list[tuple[int, int]] = []

    def on_invalid_row(row) -> str:
        malformed.append((row.expected_columns, row.actual_columns))
        return "skip"

    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=block_size),
        parse_options=pacsv.ParseOptions(newlines_in_values=table_file.multiline, invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in table_file.columns},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    schema = pa.schema([pa.field(name, pa.string()) for name in table_file.canonical_columns])

    def malformed_error(first_row: int, last_row: int) -> MalformedCsvError:
        expected, actual = malformed[0]
        return MalformedCsvError(
            f"{table_file.location}: {len(malformed)} row(s) with the wrong number of fields (expected {expected}, "
            f"got {actual}) around data rows {first_row}-{last_row}; fix the file (row text not shown: it may be "
            "clinical text)"
        )

    def renamed():
        rows = 0
        for batch in reader:
            if malformed:
                raise malformed_error(rows + 1, rows + batch.num_rows + len(malformed))
            rows += batch.num_rows
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        if malformed:
            raise malformed_error(rows + 1, rows + len(malformed))

    return pa.RecordBatchReader.from_batches(schema, renamed())


def read_table(table_file: TableFile, columns: list[str] | None = None) -> pa.Table:
    """Read a whole (small) table as strings, names upper-cased; ``columns`` selects canonical names."""
    table = open_table_stream(table_file).read_all()
    return table if columns is None else table.select(columns)


def file_sha256(location: str | os.PathLike, chunk_size: int = 8 << 20) -> str:
    """Hex sha256 of a file's bytes (of the compressed bytes for ``.gz``); a local path or URI."""
    digest = hashlib.sha256()
    with locations.open_input_stream(locations.resolve(str(location))) as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
