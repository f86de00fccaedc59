"""Patient buckets: contiguous SUBJECT_ID ranges that hold about the same number of admissions.

Stage 1 of prepare streams each input table once and writes its rows (MIMIC: as strings; MEDS: typed
events) into one Arrow IPC file per bucket (``<work>/<TABLE>/bucket=<b>/part-0.arrow``; IPC, not Parquet, because
these files are read once and Parquet's string encoding made writing and reading them ~5x slower). Stage 2 then builds the
visits of one bucket at a time from those files, so every step works on a few thousand patients
with all of their rows, and buckets taken in order give rows sorted by SUBJECT_ID.

Rows whose SUBJECT_ID is not an integer go to bucket -1 (quarantined in stage 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from medmplm.data.tables import TableFile, open_table_stream

BUCKET_COLUMN = "bucket"
INVALID_SUBJECT_BUCKET = -1
_SUBJECT_PATTERN = r"^[0-9]{1,18}$"


def bucket_boundaries(admission_subject_ids: np.ndarray, num_buckets: int) -> np.ndarray:
    """Upper-exclusive SUBJECT_ID boundaries splitting admissions into ``num_buckets`` ranges of similar size.

    Args:
        admission_subject_ids: SUBJECT_ID of every admission (repeats weigh a patient by admissions).
        num_buckets: number of ranges; the result has ``num_buckets - 1`` non-decreasing boundaries.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    subjects, counts = np.unique(np.asarray(admission_subject_ids, dtype=np.int64), return_counts=True)
    if len(subjects) == 0:
        return np.zeros(num_buckets - 1, dtype=np.int64)
    cumulative = np.cumsum(counts)
    targets = cumulative[-1] * np.arange(1, num_buckets) / num_buckets
    first_above = np.minimum(np.searchsorted(cumulative, targets, side="right"), len(subjects) - 1)
    return subjects[first_above]


def assign_buckets(subject_id: pa.ChunkedArray | pa.Array, boundaries: np.ndarray) -> pa.Array:
    """Bucket (int32) of each SUBJECT_ID (a string, or an integer as in MEDS); ``INVALID_SUBJECT_BUCKET`` where it is
    not a non-negative integer."""
    if pa.types.is_integer(subject_id.type):
        valid = pc.fill_null(pc.greater_equal(subject_id, 0), False)
        values = pc.fill_null(pc.cast(subject_id, pa.int64()), 0).to_numpy(zero_copy_only=False)
    else:
        text = pc.utf8_trim_whitespace(subject_id)
        valid = pc.fill_null(pc.match_substring_regex(text, _SUBJECT_PATTERN), False)
        values = pc.cast(pc.if_else(valid, text, pa.scalar("0")), pa.int64()).to_numpy(zero_copy_only=False)
    buckets = np.searchsorted(boundaries, values, side="right").astype(np.int32)
    buckets[~valid.to_numpy(zero_copy_only=False)] = INVALID_SUBJECT_BUCKET
    return pa.array(buckets, pa.int32())


def write_buckets(
    reader: pa.RecordBatchReader,
    work_dir: str | os.PathLike,
    table: str,
    boundaries: np.ndarray,
    *,
    subject_column: str = "SUBJECT_ID",
    file_tag: str = "",
    transform=None,
) -> int:
    """Stream ``reader``'s batches into per-bucket IPC files under ``work_dir/<table>/``; returns the rows read.

    Args:
        subject_column: the column whose value picks the bucket.
        file_tag: distinguishes the files of several inputs that fill one table (MEDS shards): files are named
            ``part-<tag><i>.arrow`` and other inputs' files are left alone. Empty: the table has one input, and a
            previous run's files are replaced.
        transform: applied to each batch before it is written (same schema), e.g. to drop text nobody reads.
    """
    schema = reader.schema.append(pa.field(BUCKET_COLUMN, pa.int32()))
    rows_read = 0

    def with_buckets():
        nonlocal rows_read
        for batch in reader:
            rows_read += batch.num_rows
            if transform is not None:
                batch = transform(batch)
            columns = [*batch.columns, assign_buckets(batch.column(subject_column), boundaries)]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
            # Arrow's allocator keeps freed pages, and what it kept grew with the file's length: 20% of MIMIC-IV's
            # LABEVENTS peaked at 553 MiB, 460 MiB with this, in the same time (benchmarks/prepare.py: stage bucket).
            pa.default_memory_pool().release_unused()

    pads.write_dataset(
        pa.RecordBatchReader.from_batches(schema, with_buckets()),
        Path(work_dir) / table,
        format="ipc",
        file_options=pads.IpcFileFormat().make_write_options(compression="lz4"),
        partitioning=pads.partitioning(pa.schema([pa.field(BUCKET_COLUMN, pa.int32())]), flavor="hive"),
        basename_template=f"part-{file_tag}{{i}}.arrow",
        existing_data_behavior="overwrite_or_ignore" if file_tag else "delete_matching",
        use_threads=False,
        max_rows_per_group=1 << 16,
    )
    return rows_read


def bucketize_table(
    table_file: TableFile,
    work_dir: str | os.PathLike,
    boundaries: np.ndarray,
    note_categories: pa.Array | None = None,
) -> int:
    """Stream one input CSV table into per-bucket files under ``work_dir/<TABLE>/``.

    With ``note_categories`` (trimmed, lower-cased; MIMIC-III's NOTEEVENTS), rows outside those CATEGORY values keep
    every column but TEXT, so they are still counted downstream without carrying their text.

    Returns:
        The number of rows read.
    """
    reader = open_table_stream(table_file, block_size=4 << 20)
    transform = None
    if note_categories is not None:
        text_index = reader.schema.get_field_index("TEXT")

        def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
            category = pc.utf8_lower(pc.utf8_trim_whitespace(batch.column("CATEGORY")))
            selected = pc.fill_null(pc.is_in(category, value_set=note_categories), False)
            text = pc.if_else(selected, batch.column(text_index), pa.scalar(None, pa.string()))
            return batch.set_column(text_index, "TEXT", text)

    return write_buckets(reader, work_dir, table_file.table, boundaries, transform=transform)


def read_bucket(
    work_dir: str | os.PathLike, table: str, bucket: int, columns: list[str], schema: pa.Schema | None = None
) -> pa.Table:
    """All rows of ``table`` in ``bucket``, or an empty table if there are none (of ``schema``; default: ``columns``
    as strings)."""
    directory = Path(work_dir) / table / f"{BUCKET_COLUMN}={bucket}"
    schema = schema if schema is not None else pa.schema([pa.field(name, pa.string()) for name in columns])
    files = sorted(directory.glob("*.arrow"), key=lambda p: p.name) if directory.is_dir() else []
    if not files:
        return schema.empty_table()
    tables = []
    for path in files:
        with pa.ipc.open_file(path) as reader:
            tables.append(reader.read_all().select(columns))
    # Stage 1 appends one small batch per CSV block to every bucket, so a bucket arrives in as many
    # chunks as its table had blocks; compute kernels run per chunk, so join them first.
    return pa.concat_tables(tables).combine_chunks()
