"""Patient buckets: contiguous SUBJECT_ID ranges that hold about the same number of admissions.

Stage 1 of prepare streams each input table once and writes its rows, as strings, into one
Arrow IPC file per bucket (``<work>/<TABLE>/bucket=<b>/part-0.arrow``; IPC, not Parquet, because
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

from medmplm.data.tables import NOTEEVENTS, TableFile, open_table_stream

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
    """Bucket (int32) of each SUBJECT_ID string; ``INVALID_SUBJECT_BUCKET`` where it is not an integer."""
    text = pc.utf8_trim_whitespace(subject_id)
    valid = pc.fill_null(pc.match_substring_regex(text, _SUBJECT_PATTERN), False)
    values = pc.cast(pc.if_else(valid, text, pa.scalar("0")), pa.int64()).to_numpy(zero_copy_only=False)
    buckets = np.searchsorted(boundaries, values, side="right").astype(np.int32)
    buckets[~valid.to_numpy(zero_copy_only=False)] = INVALID_SUBJECT_BUCKET
    return pa.array(buckets, pa.int32())


def bucketize_table(
    table_file: TableFile, work_dir: str | os.PathLike, boundaries: np.ndarray, note_categories: pa.Array
) -> int:
    """Stream one input table into per-bucket Parquet files under ``work_dir/<TABLE>/``.

    NOTEEVENTS rows outside ``note_categories`` (trimmed, lower-cased) keep every column but TEXT,
    so they are still counted downstream without carrying their text.

    Returns:
        The number of rows read.
    """
    reader = open_table_stream(table_file, block_size=4 << 20)
    schema = reader.schema.append(pa.field(BUCKET_COLUMN, pa.int32()))
    rows_read = 0

    def with_buckets():
        nonlocal rows_read
        for batch in reader:
            rows_read += batch.num_rows
            columns = list(batch.columns)
            if table_file.table == NOTEEVENTS:
                text_index = schema.get_field_index("TEXT")
                category = pc.utf8_lower(pc.utf8_trim_whitespace(batch.column("CATEGORY")))
                selected = pc.fill_null(pc.is_in(category, value_set=note_categories), False)
                columns[text_index] = pc.if_else(selected, columns[text_index], pa.scalar(None, pa.string()))
            columns.append(assign_buckets(batch.column("SUBJECT_ID"), boundaries))
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    pads.write_dataset(
        pa.RecordBatchReader.from_batches(schema, with_buckets()),
        Path(work_dir) / table_file.table,
        format="ipc",
        file_options=pads.IpcFileFormat().make_write_options(compression="lz4"),
        partitioning=pads.partitioning(pa.schema([pa.field(BUCKET_COLUMN, pa.int32())]), flavor="hive"),
        basename_template="part-{i}.arrow",
        existing_data_behavior="delete_matching",
        use_threads=False,
        max_rows_per_group=1 << 16,
    )
    return rows_read


def read_bucket(work_dir: str | os.PathLike, table: str, bucket: int, columns: list[str]) -> pa.Table:
    """All rows of ``table`` in ``bucket`` (strings), or an empty table with ``columns`` if there are none."""
    directory = Path(work_dir) / table / f"{BUCKET_COLUMN}={bucket}"
    schema = pa.schema([pa.field(name, pa.string()) for name in columns])
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
