"""Benchmark ``medmplm.prepare``: wall time, rows/s, peak memory per stage, output and vocabulary sizes, per scale.

    python benchmarks/prepare.py --mimic /tmp/mimic_full --scales 0.1,0.5,1.0
    python benchmarks/prepare.py --patients 46520 --scales 1.0     # generates synthetic data first
    python benchmarks/prepare.py --layout mimic4 --scales 0.05,0.1,0.2   # synthetic MIMIC-IV, 5-20% of its size
    python benchmarks/prepare.py --layout meds --scales 0.05,0.1,0.2     # the same, converted to MEDS
    python benchmarks/prepare.py --layout mimic4 --scales 0.05,0.1,0.2 --worker-per-task   # a fresh worker per task

A scale is a fraction of the full release: MIMIC-III (``--patients``, default 46,520) or MIMIC-IV (about 430k
admissions: ``--patients`` default 340,000 simulated, of whom the adults are kept). Without ``--mimic`` the
synthetic release is generated once, at the largest scale, and the smaller scales keep the patients with
``SUBJECT_ID % 1000 < (scale / largest) * 1000`` (every table filtered by patient, written once into ``--work``;
not timed). For MIMIC-IV and MEDS, ``--lab-rows-per-admission`` (default 274, MIMIC-IV v2.2's 118M LABEVENTS rows
over its 431k admissions) brings LABEVENTS to its real share: each synthetic lab row is repeated with a new
labevent_id and a charttime one minute later per copy. ``--layout meds`` converts that MIMIC-IV into MEDS events
(the codes the MIMIC-IV MEDS ETL emits, with hadm_id; 8 shards; subject splits), also untimed. After the table, the
largest scale's time and output size are extrapolated linearly to the full release (peak memory should not grow:
the pipeline works one bucket of patients at a time). Each scale runs in a fresh process with its own local Ray, as
each ``python -m medmplm.prepare`` does, after a warm-up prepare of the smallest scale there (untimed). Memory is
sampled every ``--sample-interval`` seconds over that process's tree (its driver, the Ray processes it started and
their workers): RSS summed over processes (an upper bound: shared pages count once per process) and PSS summed
(shared pages split between the processes that map them). CPU
seconds (user + system, summed over the tree) are printed too: on a machine shared with other
work they show the cost of a stage better than its wall time does.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from medmplm.data.ndc_atc import NDC_MAP_FILES
from medmplm.data.pipeline import PrepareOptions, prepare
from medmplm.data.tables import TABLES, locate_table, open_table_stream
from medmplm.data.visits import parse_int

FULL_SCALE_PATIENTS = {"mimic3": 46520, "mimic4": 340_000, "meds": 340_000}
FULL_SCALE_ADMISSIONS = {"mimic3": 58_976, "mimic4": 431_231, "meds": 431_231}
MIMIC4_LAB_ROWS_PER_ADMISSION = 274
MEDS_SHARDS = 8
GiB = 1 << 30


class TreeMemorySampler:
    """Samples summed RSS and PSS of this process and all its descendants in a background thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int, int, float]] = []
        self._cpu_by_process: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[float, int, int, float]:
        root = psutil.Process(os.getpid())
        rss = pss = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            self._cpu_by_process[(process.pid, process.create_time())] = times.user + times.system
        # CPU of processes that have exited since (each prepare task runs in its own worker) still counts, up to
        # their last sample.
        return time.perf_counter(), rss, pss, sum(self._cpu_by_process.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> tuple[int, int]:
        """Peak (RSS, PSS) among samples taken in [start, end] (or the nearest sample if none)."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            window = [min(self.samples, key=lambda s: abs(s[0] - end))]
        return max(s[1] for s in window), max(s[2] for s in window)

    def cpu_seconds(self, start: float, end: float) -> float:
        """Tree CPU time used between the samples nearest to ``start`` and ``end``."""
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        return last[3] - first[3]


def subset_by_patients(source: Path, destination: Path, scale: float) -> Path:
    """Copy the MIMIC-III tables of ``source`` keeping patients with SUBJECT_ID % 1000 < scale * 1000."""
    if (destination / "DONE").exists():
        return destination
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    threshold = round(scale * 1000)
    for table in TABLES:
        table_file = locate_table(source, table)
        reader = open_table_stream(table_file)
        with pacsv.CSVWriter(destination / f"{table}.csv", reader.schema) as writer:
            for batch in reader:
                subject, _ = parse_int(batch.column("SUBJECT_ID"))
                keep = pc.fill_null(pc.less(pc.remainder(subject, 1000), threshold), False)
                writer.write_batch(batch.filter(keep))
    for name in NDC_MAP_FILES:
        shutil.copy(source / name, destination / name)
    (destination / "DONE").write_text("")
    return destination


def _csv_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.csv*") if p.is_file())


def subset_mimic4(source: Path, destination: Path, fraction: float, lab_factor: int) -> Path:
    """Copy a MIMIC-IV layout keeping patients with subject_id % 1000 < fraction * 1000, LABEVENTS repeated
    ``lab_factor`` times (each copy a new labevent_id, its charttime one more minute later)."""
    if (destination / "DONE").exists():
        return destination
    shutil.rmtree(destination, ignore_errors=True)
    threshold = round(fraction * 1000)
    for path in _csv_files(source):
        relative = path.relative_to(source)
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        reader = _open_strings(path)
        schema = reader.schema
        with (
            pa.CompressedOutputStream(str(destination / relative), "gzip") as sink,
            pacsv.CSVWriter(sink, schema) as writer,
        ):
            next_id = 1
            for batch in reader:
                if "subject_id" in schema.names:
                    subject, _ = parse_int(batch.column("subject_id"))
                    batch = batch.filter(pc.fill_null(pc.less(pc.remainder(subject, 1000), threshold), False))
                if relative.name.startswith("labevents"):
                    charttime = pc.strptime(batch.column("charttime"), "%Y-%m-%d %H:%M:%S", "s", error_is_null=True)
                    for copy in range(lab_factor):
                        shifted = pc.strftime(
                            pc.add(charttime, pa.scalar(60 * copy, pa.duration("s"))), "%Y-%m-%d %H:%M:%S"
                        )
                        ids = pa.array(np.arange(next_id, next_id + batch.num_rows).astype(str))
                        next_id += batch.num_rows
                        copied = batch.set_column(schema.get_field_index("labevent_id"), "labevent_id", ids)
                        writer.write_batch(copied.set_column(schema.get_field_index("charttime"), "charttime", shifted))
                else:
                    writer.write_batch(batch)
    for name in NDC_MAP_FILES:
        shutil.copy(source / name, destination / name)
    (destination / "DONE").write_text("")
    return destination


def _open_strings(path: Path) -> pa.RecordBatchReader:
    """A CSV(.gz) of the MIMIC-IV layout, streamed with every column a string (notes may span lines)."""
    with pa.input_stream(str(path), compression="detect") as stream:
        names = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    return pacsv.open_csv(
        pa.input_stream(str(path), compression="detect"),
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=path.parent.name == "note"),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=True, null_values=[""]
        ),
    )


def _read_all(path: Path) -> pa.Table:
    return _open_strings(path).read_all()


def _events(subject, time, code, numeric=None, text=None, hadm=None) -> pa.Table:
    length = len(subject)
    return pa.table(
        {
            "subject_id": pc.cast(subject, pa.int64()),
            "time": pc.cast(time, pa.timestamp("us")) if time is not None else pa.nulls(length, pa.timestamp("us")),
            "code": code,
            "numeric_value": pc.cast(numeric, pa.float32()) if numeric is not None else pa.nulls(length, pa.float32()),
            "text_value": pc.cast(text, pa.large_string()) if text is not None else pa.nulls(length, pa.large_string()),
            "hadm_id": pc.cast(hadm, pa.int64()) if hadm is not None else pa.nulls(length, pa.int64()),
        }
    )


def _timestamps(column) -> pa.Array:
    return pc.coalesce(
        pc.strptime(column, "%Y-%m-%d %H:%M:%S", "s", error_is_null=True),
        pc.strptime(column, "%Y-%m-%d", "s", error_is_null=True),
    )


def mimic4_to_meds(source: Path, destination: Path) -> Path:
    """MEDS events of a (synthetic) MIMIC-IV layout, with the codes the MIMIC-IV MEDS ETL emits, its hadm_id column,
    and ``MEDS_SHARDS`` shards by subject; subject splits 80/10/10 by a hash. Reads whole tables: run it at the
    scales benchmarked, not at full size."""
    if (destination / "DONE").exists():
        return destination
    shutil.rmtree(destination, ignore_errors=True)
    hosp, note = source / "hosp", source / "note"
    admissions = _read_all(hosp / "admissions.csv.gz")
    discharge_time = dict(zip(admissions["hadm_id"].to_pylist(), admissions["dischtime"].to_pylist()))
    patients = _read_all(hosp / "patients.csv.gz")
    parts = [
        _events(
            patients["subject_id"],
            None,
            pc.binary_join_element_wise("GENDER", pc.cast(patients["gender"], pa.string()), "//"),
        ),
        _events(
            patients["subject_id"],
            pc.strptime(
                pc.cast(
                    pc.subtract(
                        pc.cast(patients["anchor_year"], pa.int64()), pc.cast(patients["anchor_age"], pa.int64())
                    ),
                    pa.string(),
                ),
                "%Y",
                "s",
            ),
            pa.array(["MEDS_BIRTH"] * patients.num_rows),
        ),
        _events(
            admissions["subject_id"],
            _timestamps(admissions["admittime"]),
            pc.binary_join_element_wise(
                "HOSPITAL_ADMISSION",
                admissions["admission_type"],
                pc.fill_null(admissions["admission_location"], "UNK"),
                "//",
            ),
            hadm=admissions["hadm_id"],
        ),
        _events(
            admissions["subject_id"],
            _timestamps(admissions["dischtime"]),
            pc.binary_join_element_wise(
                "HOSPITAL_DISCHARGE", pc.fill_null(admissions["discharge_location"], "UNK"), "//"
            ),
            hadm=admissions["hadm_id"],
        ),
    ]
    died = admissions.filter(pc.is_valid(admissions["deathtime"]))
    parts.append(_events(died["subject_id"], _timestamps(died["deathtime"]), pa.array(["MEDS_DEATH"] * died.num_rows)))
    for table, kind in (("diagnoses_icd", "DIAGNOSIS"), ("procedures_icd", "PROCEDURE")):
        codes = _read_all(hosp / f"{table}.csv.gz")
        codes = codes.filter(pc.is_valid(codes["icd_code"]))
        times = pa.array([discharge_time[h] for h in codes["hadm_id"].to_pylist()], pa.string())
        code = pc.binary_join_element_wise(
            kind, "ICD", pc.cast(codes["icd_version"], pa.string()), pc.cast(codes["icd_code"], pa.string()), "//"
        )
        parts.append(_events(codes["subject_id"], _timestamps(times), code, hadm=codes["hadm_id"]))
    prescriptions = _read_all(hosp / "prescriptions.csv.gz")
    parts.append(
        _events(
            prescriptions["subject_id"],
            _timestamps(prescriptions["starttime"]),
            pc.binary_join_element_wise("MEDICATION//START", prescriptions["drug"], "//"),
            hadm=prescriptions["hadm_id"],
        )
    )
    for batch in _open_strings(hosp / "labevents.csv.gz"):
        code = pc.binary_join_element_wise(
            "LAB//RESULT",
            pc.cast(batch.column("itemid"), pa.string()),
            pc.fill_null(batch.column("valueuom"), "UNK"),
            "//",
        )
        parts.append(
            _events(
                batch.column("subject_id"),
                _timestamps(batch.column("charttime")),
                code,
                numeric=batch.column("valuenum"),
                text=batch.column("value"),
                hadm=batch.column("hadm_id"),
            )
        )
    for name in ("discharge", "radiology"):
        notes = _read_all(note / f"{name}.csv.gz")
        parts.append(
            _events(
                notes["subject_id"],
                _timestamps(notes["charttime"]),
                pa.array([f"NOTE//{name.upper()}"] * notes.num_rows),
                text=notes["text"],
                hadm=notes["hadm_id"],
            )
        )
    events = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    events = events.sort_by([("subject_id", "ascending"), ("time", "ascending")])
    shard = pc.remainder(events["subject_id"], MEDS_SHARDS)
    (destination / "data").mkdir(parents=True)
    for index in range(MEDS_SHARDS):
        pq.write_table(events.filter(pc.equal(shard, index)), destination / "data" / f"{index}.parquet")
    subjects = pc.unique(events["subject_id"]).to_pylist()
    unit = [int.from_bytes(hashlib.blake2b(str(s).encode(), digest_size=8).digest(), "big") / 2**64 for s in subjects]
    names = ["train" if u < 0.8 else "tuning" if u < 0.9 else "held_out" for u in unit]
    (destination / "metadata").mkdir()
    pq.write_table(
        pa.table({"subject_id": pa.array(subjects, pa.int64()), "split": names}),
        destination / "metadata" / "subject_splits.parquet",
    )
    (destination / "DONE").write_text("")
    return destination


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_scale(mimic: Path, out: Path, sampler: TreeMemorySampler, options: PrepareOptions) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    marks: dict[str, list[float]] = {}

    def on_stage(event: str, stage: str) -> None:
        marks.setdefault(stage, [0.0, 0.0])[0 if event == "start" else 1] = time.perf_counter()

    start = time.perf_counter()
    manifest = prepare(mimic, out, options, on_stage=on_stage)
    end = time.perf_counter()
    rows_in = sum(t["rows_read"] for t in manifest.tables.values())
    time.sleep(2 * sampler.interval)  # let a sample land after the end
    stages = {name: (b - a, *sampler.peak(a, b), sampler.cpu_seconds(a, b)) for name, (a, b) in marks.items()}
    return {
        "wall": end - start,
        "rows_in": rows_in,
        "admissions": sum(s["admissions"] for s in manifest.splits.values()),
        "peak": sampler.peak(start, end),
        "cpu": sampler.cpu_seconds(start, end),
        "stages": stages,
        "input_bytes": sum(i["bytes"] for i in manifest.inputs.values()),
        "output_bytes": directory_bytes(out),
        "vocab": manifest.vocab["sizes"],
        "unmapped_ndc_share": manifest.medications.get("unmapped_ndc_rows", 0)
        / max(manifest.tables.get("PRESCRIPTIONS", {}).get("rows_read", 0), 1),
    }


def measure_scale(mimic: Path, out: Path, warmup_input: Path, options: PrepareOptions, args) -> dict:
    """One scale in this (fresh) process: start Ray, warm its workers up with a prepare of ``warmup_input``, then
    prepare ``mimic`` while sampling the process tree."""
    import ray

    ray_start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=args.object_store_memory,
        include_dashboard=False,
        log_to_driver=False,
    )
    ray_init = time.perf_counter() - ray_start
    # A first prepare in a fresh Ray pays for starting its worker processes; do that on the smallest input so the
    # timed scales compare like with like.
    warmup_start = time.perf_counter()
    prepare(
        warmup_input,
        args.work / "out-warmup",
        PrepareOptions(source=args.layout, overwrite=True, worker_per_task=options.worker_per_task),
    )
    warmup = time.perf_counter() - warmup_start
    with TreeMemorySampler(args.sample_interval) as sampler:
        time.sleep(2 * args.sample_interval)
        idle = sampler.peak(0, time.perf_counter())
        result = run_scale(mimic, out, sampler, options)
    ray.shutdown()
    return {**result, "ray_init": ray_init, "warmup": warmup, "idle": idle}


def synthetic_inputs(args, scales: list[float]) -> dict[float, Path]:
    """Per scale, the input directory: generated at the largest scale, subset for the smaller ones (see module doc)."""
    largest = max(scales)
    patients = round(largest * args.patients)
    if args.layout == "mimic3":
        from medmplm.synthetic import generate_mimic3

        mimic = args.work / f"synthetic-{args.patients}"
        if not (mimic / "ADMISSIONS.csv").exists():
            print(f"generating {args.patients} synthetic patients into {mimic} ...", flush=True)
            generate_mimic3(mimic, patients=args.patients, seed=0)
        return {s: mimic if s >= 1.0 else subset_by_patients(mimic, args.work / f"subset-{s}", s) for s in scales}
    from medmplm.synthetic import generate_mimic4

    mimic4 = args.work / f"synthetic-mimic4-{patients}"
    if not (mimic4 / "synthetic_manifest.json").exists():
        print(f"generating {patients} synthetic MIMIC-IV patients into {mimic4} ...", flush=True)
        counts = generate_mimic4(mimic4, patients=patients, seed=0, overwrite=True)
    else:
        import json

        counts = json.loads((mimic4 / "synthetic_manifest.json").read_text())["row_counts"]
    lab_factor = max(1, round(args.lab_rows_per_admission / (counts["labevents"] / counts["admissions"])))
    print(f"LABEVENTS: {counts['labevents'] / counts['admissions']:.0f} rows per admission generated, x{lab_factor}")
    inputs = {
        s: subset_mimic4(mimic4, args.work / f"mimic4-{s}-x{lab_factor}", s / largest, lab_factor) for s in scales
    }
    if args.layout == "meds":
        inputs = {s: mimic4_to_meds(d, args.work / f"meds-{s}-x{lab_factor}") for s, d in inputs.items()}
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("mimic3", "mimic4", "meds"), default="mimic3")
    parser.add_argument("--mimic", type=Path, help="full-scale MIMIC-III or MIMIC-IV directory (default: synthetic)")
    parser.add_argument("--patients", type=int, default=None, help="patients of the full synthetic release")
    parser.add_argument("--scales", default="1.0", help="comma-separated fractions of patients, e.g. 0.1,0.5,1.0")
    parser.add_argument("--lab-rows-per-admission", type=int, default=MIMIC4_LAB_ROWS_PER_ADMISSION)
    parser.add_argument("--work", type=Path, default=Path("/tmp/medmplm_bench_prepare"))
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--object-store-memory", type=int, default=512 << 20)
    parser.add_argument("--num-shards-per-split", type=int, default=PrepareOptions.num_shards_per_split)
    parser.add_argument("--admissions-per-bucket", type=int, default=PrepareOptions.admissions_per_bucket)
    parser.add_argument(
        "--worker-per-task",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="PrepareOptions.worker_per_task (default: prepare's own rule, on from 50,000 admissions)",
    )
    parser.add_argument("--sample-interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    args.patients = args.patients or FULL_SCALE_PATIENTS[args.layout]
    scales = [float(s) for s in args.scales.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)

    if args.mimic is None:
        inputs = synthetic_inputs(args, scales)
    elif args.layout == "mimic3":
        inputs = {
            s: args.mimic if s >= 1.0 else subset_by_patients(args.mimic, args.work / f"subset-{s}", s) for s in scales
        }
    else:
        inputs = {s: subset_mimic4(args.mimic, args.work / f"real-mimic4-{s}", s, 1) for s in scales}
        if args.layout == "meds":
            inputs = {s: mimic4_to_meds(d, args.work / f"real-meds-{s}") for s, d in inputs.items()}

    options = PrepareOptions(
        source=args.layout,
        num_shards_per_split=args.num_shards_per_split,
        admissions_per_bucket=args.admissions_per_bucket,
        worker_per_task=args.worker_per_task,
    )
    results = {}
    for scale in scales:
        # Each scale in a fresh process with its own Ray, as each `python -m medmplm.prepare` runs: in one long-lived
        # Ray the processes keep memory after a run, and a scale's peak would include what the runs before it left
        # (5% of MIMIC-IV peaked at 2.43 GiB PSS right after a 40% run in the same Ray, at 2.21 GiB fresh).
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results[scale] = pool.submit(
                measure_scale, inputs[scale], args.work / f"out-{scale}", inputs[min(scales)], options, args
            ).result()
        r = results[scale]
        print(
            f"scale {scale:g}: ray.init {r['ray_init']:.1f} s, warm-up prepare on the smallest scale "
            f"{r['warmup']:.1f} s (neither counted below); idle process tree before the run: "
            f"RSS {r['idle'][0] / GiB:.2f} GiB, PSS {r['idle'][1] / GiB:.2f} GiB",
            flush=True,
        )

    print()
    print(
        f"{'scale':>5} {'admissions':>10} {'input rows':>11} {'input MB':>9} {'wall s':>7} {'CPU s':>7} "
        f"{'rows/s':>9} {'peak RSS GiB':>12} {'peak PSS GiB':>12} {'output MB':>9}"
    )
    for scale, r in results.items():
        print(
            f"{scale:>5} {r['admissions']:>10} {r['rows_in']:>11} {r['input_bytes'] / 1e6:>9.0f} {r['wall']:>7.1f} "
            f"{r['cpu']:>7.1f} {r['rows_in'] / r['wall']:>9.0f} {r['peak'][0] / GiB:>12.2f} "
            f"{r['peak'][1] / GiB:>12.2f} {r['output_bytes'] / 1e6:>9.1f}"
        )
    print()
    print(
        f"{'scale':>5} {'diagnosis':>9} {'procedure':>9} {'medication':>10} {'lab':>5} {'unmapped NDC rows':>17}   (vocabularies: train split)"
    )
    for scale, r in results.items():
        v = r["vocab"]
        print(
            f"{scale:>5} {v['diagnosis']:>9} {v['procedure']:>9} {v['medication']:>10} {v['lab']:>5} "
            f"{100 * r['unmapped_ndc_share']:>16.1f}%"
        )
    print()
    print(
        f"{'scale':>5} {'stage':>9} {'wall s':>7} {'CPU s':>7} {'rows/s':>9} {'peak RSS GiB':>12} {'peak PSS GiB':>12}"
    )
    for scale, r in results.items():
        for stage, (seconds, rss, pss, cpu) in r["stages"].items():
            print(
                f"{scale:>5} {stage:>9} {seconds:>7.1f} {cpu:>7.1f} {r['rows_in'] / max(seconds, 1e-9):>9.0f} "
                f"{rss / GiB:>12.2f} {pss / GiB:>12.2f}"
            )
    largest = results[max(scales)]
    full = FULL_SCALE_ADMISSIONS[args.layout]
    factor = full / max(largest["admissions"], 1)
    print()
    print(
        f"extrapolated to the full release ({full:,} admissions, x{factor:.1f} the largest scale, linear): "
        f"wall {largest['wall'] * factor / 60:.0f} min, CPU {largest['cpu'] * factor / 60:.0f} min, "
        f"input {largest['input_bytes'] * factor / 1e9:.1f} GB, output {largest['output_bytes'] * factor / 1e9:.1f} GB; "
        "peak PSS by scale: " + ", ".join(f"{s:g}: {r['peak'][1] / GiB:.2f} GiB" for s, r in results.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
