"""Benchmark ``medmplm.prepare``: wall time, rows/s, peak memory per stage, output and vocabulary sizes, per scale.

    python benchmarks/prepare.py --mimic /tmp/mimic_full --scales 0.1,0.5,1.0
    python benchmarks/prepare.py --patients 46520 --scales 1.0     # generates synthetic data first

A scale below 1 keeps the patients with ``SUBJECT_ID % 1000 < scale * 1000`` (every table
filtered by patient, written once into ``--work``; not timed). Memory is sampled every
``--sample-interval`` seconds over the whole process tree (this driver, the Ray processes it
started and their workers): RSS summed over processes (an upper bound: shared pages count once
per process) and PSS summed (shared pages split between the processes that map them). CPU
seconds (user + system, summed over the tree) are printed too: on a machine shared with other
work they show the cost of a stage better than its wall time does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medmplm.data.ndc_atc import NDC_MAP_FILES
from medmplm.data.pipeline import PrepareOptions, prepare
from medmplm.data.tables import TABLES, locate_table, open_table_stream
from medmplm.data.visits import parse_int

FULL_SCALE_PATIENTS = 46520
GiB = 1 << 30


class TreeMemorySampler:
    """Samples summed RSS and PSS of this process and all its descendants in a background thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[float, int, int, float]:
        root = psutil.Process(os.getpid())
        rss = pss = 0
        cpu = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            cpu += times.user + times.system
        return time.perf_counter(), rss, pss, cpu

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
    """Copy the tables of ``source`` keeping patients with SUBJECT_ID % 1000 < scale * 1000."""
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
        "unmapped_ndc_share": manifest.medications["unmapped_ndc_rows"]
        / max(manifest.tables["PRESCRIPTIONS"]["rows_read"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mimic", type=Path, help="full-scale MIMIC-III directory (default: generate synthetic)")
    parser.add_argument("--patients", type=int, default=FULL_SCALE_PATIENTS, help="patients to generate at scale 1")
    parser.add_argument("--scales", default="1.0", help="comma-separated fractions of patients, e.g. 0.1,0.5,1.0")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medmplm_bench_prepare"))
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--object-store-memory", type=int, default=512 << 20)
    parser.add_argument("--num-shards-per-split", type=int, default=PrepareOptions.num_shards_per_split)
    parser.add_argument("--admissions-per-bucket", type=int, default=PrepareOptions.admissions_per_bucket)
    parser.add_argument("--sample-interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)

    mimic = args.mimic
    if mimic is None:
        from medmplm.synthetic import generate_mimic3

        mimic = args.work / f"synthetic-{args.patients}"
        if not (mimic / "ADMISSIONS.csv").exists():
            print(f"generating {args.patients} synthetic patients into {mimic} ...", flush=True)
            generate_mimic3(mimic, patients=args.patients, seed=0)
    inputs = {s: mimic if s >= 1.0 else subset_by_patients(mimic, args.work / f"subset-{s}", s) for s in scales}

    import ray

    ray_start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=args.object_store_memory,
        include_dashboard=False,
        log_to_driver=False,
    )
    print(f"ray.init: {time.perf_counter() - ray_start:.1f} s (not counted below)")
    options = PrepareOptions(
        num_shards_per_split=args.num_shards_per_split, admissions_per_bucket=args.admissions_per_bucket
    )
    # A first prepare in a fresh Ray pays for starting its worker processes; do that on a 1% subset
    # so the timed scales compare like with like.
    warmup_start = time.perf_counter()
    prepare(
        subset_by_patients(mimic, args.work / "subset-warmup", 0.01),
        args.work / "out-warmup",
        PrepareOptions(overwrite=True),
    )
    print(f"warm-up prepare on a 1% subset: {time.perf_counter() - warmup_start:.1f} s (not counted below)")
    with TreeMemorySampler(args.sample_interval) as sampler:
        time.sleep(2 * args.sample_interval)
        baseline = sampler.peak(0, time.perf_counter())
        print(f"idle process tree: RSS {baseline[0] / GiB:.2f} GiB, PSS {baseline[1] / GiB:.2f} GiB")
        results = {s: run_scale(inputs[s], args.work / f"out-{s}", sampler, options) for s in scales}
    ray.shutdown()

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
