"""Pretraining throughput: bare PyTorch vs Ray Train (1 and 2 workers), frozen-prefix caching, model FLOPs utilisation.

    python benchmarks/pretrain_throughput.py [--prepared DIR | --patients 3000] [--micro-batch 16] [--steps 150]
        [--threads 1] [--rounds 1] [--cache-batch 2] [--cache-steps 3] [--skip-ray] [--ceilings] [--skip-cache]

Prints, for the same model (``tiny``), data (synthetic MIMIC-III prepared by the real pipeline) and micro-batch:

1. this machine's matmul peak (fp32 ``torch.matmul`` of 2048 x 2048 matrices) with ``--threads`` threads and with all
   cores;
2. training samples/s of a bare PyTorch loop (AdamW, same masking, gradient clipping; features precomputed in
   memory) and of Ray Train + DeepSpeed with the ``tiny`` config's settings (ZeRO stage 0) with 1 worker and with 2
   workers, then with 2 workers at ZeRO-2 (the ``paper`` config's stage); each worker one micro-batch per step,
   ``--threads`` CPUs per worker. The bare loop runs before, between and after the Ray runs, and each Ray run is
   compared with the mean of the bare runs just before and just after it: this machine's speed drifts by several
   percent over minutes. ``--rounds N`` repeats the Ray runs (each followed by a bare run) and prints the mean
   ratio with its range. The Ray figures are the loop's own ``perf/samples_per_s`` windows from TensorBoard, first
   window (warm-up) left out, so startup, validation and checkpoints do not count. ``--ceilings`` adds runs of the
   same step with less around it, each timed over ``--steps`` steps per rank after ``--warmup``: the DeepSpeed
   engine's step in 1 and 2 Ray Train workers, the bare step (its gradients all-reduced over gloo, timed) in 2 Ray
   Train workers, and in 2 plain processes with no Ray at all; features in memory, Ray started as the product starts
   it. Read down the 2-worker rows, each step adds one layer: synchronous data parallelism, Ray's processes,
   DeepSpeed, then medmplm's loop (Ray Data ingest, masking, metrics, reporting);
3. the ``paper`` preset's text encoder (BERT-base, 10 of 12 layers frozen), forward + backward, with and without the
   cached frozen prefix, on real synthetic notes at 512 tokens; plus the full ``paper`` model's training step
   (optimizer included) both ways and the one-off cost of computing the cache;
4. model FLOPs utilisation: FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` x steps/s,
   divided by the matmul peak for the same number of threads.

The throughput figures end as one table with the machine, the thread counts and the load average before and after,
the share of each Ray run's training time its workers spent waiting for their next batch (``perf/data_wait_share``,
the loop's own measure), and the share they spent ready to run while another thread or process held their core
(``perf/cpu_wait_share``, from Linux's per-thread scheduler statistics). With 2 workers on 2 cores there is no core
to spare: every wake-up of Ray's other processes (the process of each idle Ray actor wakes about 100 times a
second) takes a core from a training thread, and the other worker then waits for it at the next all-reduce. The Ray
runs start their local Ray as ``python -m medmplm.pretrain`` does, with the same processes.

Targets: Ray Train 1 worker >= 0.95x the bare loop; 2 workers >= 1.7x the bare single-thread loop (on 2 cores); data
wait <= 3%; caching >= 2.5x faster per text-encoder step (arithmetic limit ~2.7x: 12 forward + 2x2 backward
layer-passes against 2 forward + 2x2 backward).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import queue
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from medmplm.config import PretrainConfig, load_config
from medmplm.console import configure_output, start_ray
from medmplm.data.features import VisitFeaturizer
from medmplm.data.masking import CodeMasker
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
from medmplm.models.testing_utils import read_split_batch
from medmplm.pretraining.medmplm import build_medmplm


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul throughput over ``repeats`` products of two ``size`` x ``size`` matrices."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def step_flops(step) -> int:
    """FLOPs of one call of ``step()`` (forward + backward), as counted by torch's FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def prepare_data(args: argparse.Namespace, workdir: Path) -> Path:
    if args.prepared:
        return Path(args.prepared)
    import ray

    from medmplm.data.pipeline import PrepareOptions, prepare
    from medmplm.synthetic import generate_mimic3

    raw, prepared = workdir / "mimic3", workdir / "prepared"
    generate_mimic3(raw, patients=args.patients, seed=0)
    # As `python -m medmplm.prepare` starts its local Ray (without it, Ray Data prints its progress lines here).
    start_ray(verbose=False, address="local", num_cpus=2, include_dashboard=False)
    try:
        prepare(raw, prepared, PrepareOptions(ndc_map_dir=str(raw)))
    finally:
        ray.shutdown()
    return prepared


class BareSteps:
    """The bare loop's training step on one rank of ``world``: plain AdamW with the gradients all-reduced over the
    process group (one flat bucket, as DeepSpeed's stage 0 does), or the product's DeepSpeed engine
    (``deepspeed=True``). As in medmplm's loop, rank ``r`` trains on the ``r``-th of ``world`` contiguous equal shards
    of the rows, shuffled (seeded by the rank); one rank reads the rows in order. Which rows two ranks step on
    together changes how long one waits for the other: 2 plain processes ran at 1.88-1.97x one bare loop on
    neighbouring micro-batches, 1.77-1.79x on unshuffled contiguous shards and 1.82-1.95x on shuffled ones."""

    def __init__(
        self, prepared: Path, model_dir: Path, micro_batch: int, rank: int = 0, world: int = 1, deepspeed: bool = False
    ) -> None:
        self.model = MedMPLMForPretraining.from_pretrained(model_dir)
        self.model.train()
        arrays = VisitFeaturizer.from_model(self.model)(read_split_batch(prepared, "train"))
        self.features = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.masker = CodeMasker.from_model(self.model)
        self.micro_batch, self.rank, self.world = micro_batch, rank, world
        shard = len(self.features["input_ids"]) // world
        self.rows = torch.arange(rank * shard, (rank + 1) * shard)
        if world > 1:
            self.rows = self.rows[torch.randperm(shard, generator=torch.Generator().manual_seed(rank))]
        self.batches = shard // micro_batch
        self.all_reduce_seconds = 0.0
        self.engine = None
        if deepspeed:
            from medmplm.config import batch_plan
            from medmplm.train.engine import initialize_engine

            tiny = load_config(PretrainConfig, overrides=[])
            plan = batch_plan(micro_batch * world, micro_batch, world)
            self.engine, _ = initialize_engine(
                self.model, tiny.train, tiny.deepspeed, plan, 10**9, "gloo", torch.device("cpu")
            )
        else:
            self.parameters = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(self.parameters, lr=5e-4)

    def __call__(self, index: int) -> None:
        position = index * self.world + self.rank
        start = index % self.batches * self.micro_batch
        rows = self.rows[start : start + self.micro_batch]
        batch = {k: v[rows] for k, v in self.features.items()}
        inputs = self.masker(batch, torch.Generator().manual_seed(position))
        if self.engine is not None:
            loss = self.engine(**inputs).loss
            self.engine.backward(loss)
            self.engine.step()
            return
        self.model(**inputs).loss.backward()
        if self.world > 1:
            self._all_reduce_gradients()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _all_reduce_gradients(self) -> None:
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        gradients = [p.grad for p in self.parameters]
        flat = _flatten_dense_tensors(gradients)
        start = time.perf_counter()
        dist.all_reduce(flat)
        self.all_reduce_seconds += time.perf_counter() - start
        flat /= self.world
        for gradient, reduced in zip(gradients, _unflatten_dense_tensors(flat, gradients)):
            gradient.copy_(reduced)

    def timed(self, warmup: int, steps: int) -> tuple[float, float, float]:
        """This rank's samples/s over ``steps`` steps after ``warmup``, and the shares of that time spent in the
        all-reduce and waiting for a core."""
        import torch.distributed as dist

        from medmplm.train.loop import CpuWait

        for index in range(warmup):
            self(index)
        if self.world > 1:
            dist.barrier()
        self.all_reduce_seconds = 0.0
        cpu_wait = CpuWait()
        start = time.perf_counter()
        for index in range(steps):
            self(warmup + index)
        elapsed = time.perf_counter() - start
        return steps * self.micro_batch / elapsed, self.all_reduce_seconds / elapsed, cpu_wait.seconds / elapsed


def bare_loop(prepared: Path, model_dir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Samples/s and FLOPs per sample of a plain single-process loop."""
    torch.set_num_threads(args.threads)
    step = BareSteps(prepared, model_dir, args.micro_batch)
    for index in range(args.warmup):
        step(index)
    flops = step_flops(lambda: step(0))
    speed, _, _ = step.timed(0, args.steps)
    return speed, flops / args.micro_batch


def _bare_rank(
    rank: int, world: int, port: int, prepared: Path, model_dir: Path, args: argparse.Namespace, results
) -> None:
    """One process of the no-Ray ceiling: its own gloo process group, as Ray Train would set it up."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results.put(BareSteps(prepared, model_dir, args.micro_batch, rank, world).timed(args.warmup, args.steps))
    finally:
        dist.destroy_process_group()


def bare_processes(prepared: Path, model_dir: Path, args: argparse.Namespace, workers: int) -> tuple[float, ...]:
    """The bare step in ``workers`` plain processes over gloo, no Ray: what synchronous data parallelism itself costs
    on this machine. Returns (samples/s, all-reduce share, CPU-wait share), shares averaged over ranks."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_bare_rank, args=(rank, workers, port, prepared, model_dir, args, results))
        for rank in range(workers)
    ]
    for process in processes:
        process.start()
    ranks = []
    while len(ranks) < workers:
        try:
            ranks.append(results.get(timeout=5))
        except queue.Empty:
            # A rank that died would leave the other blocked in its next collective and this loop waiting forever.
            failed = [rank for rank, process in enumerate(processes) if process.exitcode not in (None, 0)]
            if failed:
                for process in processes:
                    process.kill()
                raise RuntimeError(
                    f"rank {failed[0]} of the no-Ray ceiling run exited with code {processes[failed[0]].exitcode}"
                ) from None
    for process in processes:
        process.join()
    return _sum_ranks(ranks)


def _sum_ranks(ranks: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return (
        sum(speed for speed, _, _ in ranks),
        statistics.mean(share for _, share, _ in ranks),
        statistics.mean(share for _, _, share in ranks),
    )


def _bare_train_worker(config: dict) -> None:
    import ray.train

    from medmplm.train.engine import select_accelerator

    select_accelerator(use_gpu=False)
    args = config["args"]
    torch.set_num_threads(args.threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    step = BareSteps(config["prepared"], config["model_dir"], args.micro_batch, rank, world, config["deepspeed"])
    result = step.timed(args.warmup, args.steps)
    # Ray Train V2 keeps no metrics reported without a checkpoint: each rank leaves its figures in a file.
    (Path(config["out"]) / f"rank{rank}").write_text(" ".join(map(str, result)))


def bare_ray_train(
    prepared: Path, model_dir: Path, workdir: Path, args: argparse.Namespace, workers: int, deepspeed: bool
) -> tuple[float, ...]:
    """The bare step (or the DeepSpeed engine's) in ``workers`` Ray Train workers, features in memory, Ray started as
    ``python -m medmplm.pretrain`` starts it: what Ray Train's processes (and DeepSpeed) cost without medmplm's loop,
    data ingest and reporting. Returns (samples/s, all-reduce share, CPU-wait share)."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(tempfile.mkdtemp(prefix="ranks-", dir=workdir))
    start_ray(verbose=False, num_cpus=max(2, workers * args.threads))
    try:
        TorchTrainer(
            _bare_train_worker,
            train_loop_config={
                "args": args, "prepared": prepared, "model_dir": model_dir, "deepspeed": deepspeed, "out": str(out)
            },
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": args.threads}),
            run_config=ray.train.RunConfig(name=out.name, storage_path=str(workdir / "runs")),
        ).fit()  # fmt: skip
    finally:
        ray.shutdown()
    return _sum_ranks([tuple(map(float, (out / f"rank{rank}").read_text().split())) for rank in range(workers)])


def ray_train(
    prepared: Path, workdir: Path, args: argparse.Namespace, workers: int, extra_overrides: tuple[str, ...], name: str
) -> tuple[float, float, float]:
    """Mean training samples/s, data-wait share and CPU-wait share of the real loop (TensorBoard perf windows after
    the first)."""
    import ray
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medmplm.pretrain import run

    config = load_config(
        PretrainConfig,
        overrides=[
            f"data.prepared_dir={prepared}",
            f"run.storage_path={workdir / 'runs'}",
            f"run.name={name}",
            f"scaling.num_workers={workers}",
            f"scaling.cpus_per_worker={args.threads}",
            f"train.micro_batch_size={args.micro_batch}",
            f"train.global_batch_size={args.micro_batch * workers}",
            f"train.max_steps={args.warmup + args.steps}",
            "train.epochs=1000",
            "train.checkpoint_every_steps=null",
            "train.log_every_steps=5",
            "train.early_stopping_patience=null",
            "logging.progress_bar=false",
            # The bare loop's model: the tiny preset built from scratch, its frozen layer random.
            "model.allow_random_frozen=true",
            *extra_overrides,
        ],
    )
    # As `python -m medmplm.pretrain` starts its local Ray: the same processes, so the same background load.
    start_ray(verbose=False, num_cpus=max(2, workers * args.threads))
    try:
        run(config, progress_bar=False)
    finally:
        ray.shutdown()
    values: dict[str, list[float]] = {
        "perf/samples_per_s": [],
        "perf/data_wait_share": [],
        "perf/cpu_wait_share": [],
    }
    for path in sorted((workdir / "runs" / name / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag, series in values.items():
            series += [event.value for event in accumulator.Scalars(tag)]
    return tuple(  # type: ignore[return-value]
        statistics.mean(series[1:]) if len(series) > 1 else float("nan") for series in values.values()
    )


# What each run measures: samples/s, then the shares of training time spent waiting for data, waiting for a core and
# in the all-reduce (NaN where the run does not measure one).
RunFigures = tuple[float, float, float, float]


def loop_run(overrides: tuple[str, ...] = ()) -> Callable[..., RunFigures]:
    """A run of ``python -m medmplm.pretrain``'s own loop, with these config overrides."""

    def run(
        prepared: Path, model_dir: Path, workdir: Path, args: argparse.Namespace, workers: int, name: str
    ) -> RunFigures:
        return (*ray_train(prepared, workdir, args, workers, overrides, name), math.nan)

    return run


def ceiling_run(where: str) -> Callable[..., RunFigures]:
    """A run of the bare step with ``workers`` ranks: in plain ``processes``, or in Ray Train workers with the bare
    all-reduce (``ray``) or the DeepSpeed engine (``deepspeed``, whose all-reduce is not timed)."""

    def run(
        prepared: Path, model_dir: Path, workdir: Path, args: argparse.Namespace, workers: int, name: str
    ) -> RunFigures:
        if where == "processes":
            speed, all_reduce, cpu_wait = bare_processes(prepared, model_dir, args, workers)
        else:
            speed, all_reduce, cpu_wait = bare_ray_train(
                prepared, model_dir, workdir, args, workers, where == "deepspeed"
            )
        return speed, math.nan, cpu_wait, math.nan if where == "deepspeed" else all_reduce

    return run


# (label, workers, run): the tiny config as it is, then 2 workers at the paper config's ZeRO stage.
RAY_RUNS = (
    ("Ray Train, 1 worker", 1, loop_run()),
    ("Ray Train, 2 workers", 2, loop_run()),
    ("Ray Train, 2 workers, ZeRO-2", 2, loop_run(("deepspeed.zero_stage=2",))),
)
# --ceilings: the same step with less around it, to tell what synchronous data parallelism, Ray Train's processes and
# DeepSpeed each cost from what medmplm's loop (Ray Data ingest, masking, metrics, reporting) adds.
CEILING_RUNS = (
    ("DeepSpeed step, 1 Ray Train worker", 1, ceiling_run("deepspeed")),
    ("bare step, 2 processes over gloo, no Ray", 2, ceiling_run("processes")),
    ("bare step, 2 Ray Train workers", 2, ceiling_run("ray")),
    ("DeepSpeed step, 2 Ray Train workers", 2, ceiling_run("deepspeed")),
)


def machine() -> str:
    """The CPU model and core count."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores"


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def text_cache_speed(prepared: Path, args: argparse.Namespace) -> None:
    """Text-encoder and full-model steps of the paper preset with and without the cached frozen prefix."""
    torch.set_num_threads(args.cache_threads)
    torch.manual_seed(0)
    model = build_medmplm(MedMPLMForPretraining, prepared, MedMPLMConfig.from_preset("paper"))
    model.train()
    encoder = model.text_encoder
    arrays = VisitFeaturizer.from_model(model)(read_split_batch(prepared, "train"))
    has_note = arrays["has_note"].astype(bool)
    rows = np.flatnonzero(has_note)[: args.cache_batch]
    batch = {k: torch.from_numpy(v[rows]) for k, v in arrays.items()}
    tokens = int(batch["attention_mask"].sum())
    print(
        f"paper text encoder: {sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M parameters, "
        f"{encoder.num_frozen_layers} of {len(encoder.backbone.encoder.layer)} layers frozen; batch {len(rows)} notes x "
        f"{batch['input_ids'].shape[1]} positions ({model.config.text_max_windows} windows of {model.config.text_max_length}; "
        f"{tokens} real tokens); {args.cache_threads} threads"
    )
    length = model.config.text_max_length
    start = time.perf_counter()
    prefix = encoder.frozen_prefix(batch["input_ids"], batch["attention_mask"], window_length=length)
    cache_seconds = time.perf_counter() - start
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    masker = CodeMasker.from_model(model)
    cached_batch = {k: v for k, v in batch.items() if k != "input_ids"} | {"text_hidden_states": prefix}

    def encoder_step(cached: bool) -> None:
        # Forward and backward only: the part caching changes (the optimizer step is the same either way and is
        # timed with the full model below).
        if cached:
            hidden = encoder(text_hidden_states=prefix, attention_mask=batch["attention_mask"], window_length=length)
        else:
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], window_length=length)
        hidden.float().pow(2).mean().backward()
        optimizer.zero_grad(set_to_none=True)

    def model_step(cached: bool) -> None:
        inputs = masker(cached_batch if cached else batch, torch.Generator().manual_seed(0))
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    peak = matmul_peak_gflops(args.cache_threads)
    results = {}
    for label, step in (("text encoder", encoder_step), ("full model", model_step)):
        for cached in (False, True):
            step(cached)  # warm-up
            flops = step_flops(lambda: step(cached))
            times = []
            for _ in range(args.cache_steps):
                start = time.perf_counter()
                step(cached)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            results[(label, cached)] = seconds
            print(
                f"  {label:12s} {'cached  ' if cached else 'uncached'}: {seconds:7.2f} s/step "
                f"{len(rows) / seconds:6.2f} samples/s  {flops / 1e9:7.1f} GFLOP/step  "
                f"MFU {flops / seconds / 1e9 / peak:5.1%} of {peak:.0f} GFLOP/s"
            )
        speedup = results[(label, False)] / results[(label, True)]
        print(f"  {label:12s} caching speed-up: {speedup:.2f}x")
    print(
        f"  building the cache: {cache_seconds:.2f} s for {len(rows)} notes ({cache_seconds / len(rows):.2f} s/note, "
        "once per note for the whole run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", help="a prepared directory (default: generate synthetic data)")
    # 3,000 patients: ~3,100 training visits, ~196 steps of 16 per epoch for 1 worker, so its timed steps stay inside
    # one epoch; 2 workers (~96 steps each per epoch) cross one epoch end, as training does: its validation pass is
    # not counted, the next epoch's first window (and its wait for the first batch) is.
    parser.add_argument("--patients", type=int, default=3000, help="synthetic patients when --prepared is not given")
    parser.add_argument("--micro-batch", type=int, default=16)
    # Ray Train's first windows after start-up are slow: over 40 steps it read 0.71x the bare loop, over 150 0.80x.
    parser.add_argument("--steps", type=int, default=150, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads of the bare loop = CPUs per Ray worker")
    parser.add_argument("--cache-batch", type=int, default=2, help="notes per paper-preset step")
    parser.add_argument("--cache-steps", type=int, default=3)
    parser.add_argument("--cache-threads", type=int, default=torch.get_num_threads())
    # This machine's speed drifts by several percent between minutes: more rounds give each ratio an interval.
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the Ray runs, each followed by a bare run")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--ceilings",
        action="store_true",
        help="also time the same step with less around it: the DeepSpeed engine's in 1 and 2 Ray Train workers, "
        "the bare step in 2 Ray Train workers and in 2 plain processes over gloo (each a round's run, followed by a "
        "bare run)",
    )
    parser.add_argument("--skip-cache", action="store_true")
    args = parser.parse_args()
    # As the entry points: warnings only, and no progress bar from transformers for every model saved and loaded.
    configure_output(verbose=False)

    with tempfile.TemporaryDirectory(prefix="medmplm-throughput-") as scratch:
        workdir = Path(scratch)
        prepared = prepare_data(args, workdir)
        load_before = load_average()
        cores = torch.get_num_threads()
        peak_threads = matmul_peak_gflops(args.threads)
        peak_all = matmul_peak_gflops(cores)

        torch.manual_seed(0)
        model_dir = workdir / "tiny"
        build_medmplm(MedMPLMForPretraining, prepared, MedMPLMConfig.from_preset("tiny")).save_pretrained(model_dir)
        bare_runs = [bare_loop(prepared, model_dir, args)]
        runs = (*RAY_RUNS, *(CEILING_RUNS if args.ceilings else ()))
        figures: dict[str, list[tuple[float, float, RunFigures]]] = {label: [] for label, _, _ in runs}
        for _ in range(0 if args.skip_ray else args.rounds):
            for label, workers, run in runs:
                measured = run(prepared, model_dir, workdir, args, workers, f"run-{len(bare_runs)}")
                bare_runs.append(bare_loop(prepared, model_dir, args))
                # Against the bare runs just before and just after this one.
                neighbours = statistics.mean(bare_speed for bare_speed, _ in bare_runs[-2:])
                figures[label].append((measured[0], measured[0] / neighbours, measured))
        flops_per_sample = bare_runs[0][1]
        bare_speeds = [speed for speed, _ in bare_runs]
        bare = statistics.mean(bare_speeds)
        nan = float("nan")
        rows = [
            (f"bare PyTorch loop ({len(bare_speeds)} runs, {min(bare_speeds):.1f}-{max(bare_speeds):.1f})",
             args.threads, bare, "1.00x", (nan, nan, nan), bare * flops_per_sample / 1e9 / peak_threads)
        ]  # fmt: skip
        for label, workers, _ in runs:
            if not figures[label]:
                continue
            speed = statistics.mean(speed for speed, _, _ in figures[label])
            ratios = [ratio for _, ratio, _ in figures[label]]
            ratio = f"{statistics.mean(ratios):.2f}x"
            if len(ratios) > 1:
                ratio += f" [{min(ratios):.2f}, {max(ratios):.2f}]"
            shares = tuple(statistics.mean(measured[i] for _, _, measured in figures[label]) for i in (1, 2, 3))
            peak = peak_threads if workers * args.threads < cores else peak_all
            mfu = speed * flops_per_sample / 1e9 / peak
            rows.append((label, workers * args.threads, speed, ratio, shares, mfu))
        print(
            f"machine: {machine()}; torch {torch.__version__}; load average before {load_before}, after {load_average()}"
        )
        print(f"matmul peak (fp32, 2048^3): {peak_threads:.1f} GFLOP/s with {args.threads} thread(s), "
              f"{peak_all:.1f} GFLOP/s with {cores}")  # fmt: skip
        print(
            f"tiny, micro-batch {args.micro_batch} per worker, {flops_per_sample / 1e6:.1f} MFLOP per sample (fwd+bwd), "
            f"{args.steps} timed steps after {args.warmup}; {args.threads} thread(s) per worker"
        )
        print(
            "| run | threads | samples/s | x bare | data wait | CPU wait | all-reduce | MFU |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        for name, threads, speed, ratio, shares, mfu in rows:
            waits = " | ".join("-" if math.isnan(share) else f"{share:.1%}" for share in shares)
            print(f"| {name} | {threads} | {speed:.1f} | {ratio} | {waits} | {mfu:.1%} |")
        print(
            f"means over {args.rounds} round(s); x bare: each Ray run against the mean of the bare runs just before and "
            "after it ([min, max] over rounds); CPU wait: share of the training thread's time it was ready to run "
            "while another thread or process held its core; all-reduce: share of the step in the gradient all-reduce "
            "(waiting for the other rank included); targets: 1 worker >= 0.95x bare; 2 workers >= 1.70x "
            "bare; data wait <= 3%"
        )
        if not args.skip_cache:
            text_cache_speed(prepared, args)


if __name__ == "__main__":
    main()
