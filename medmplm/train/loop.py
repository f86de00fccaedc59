"""The training loop every Ray Train worker runs: pretraining and fine-tuning alike.

One DeepSpeed rank per worker. Data arrives featurised from Ray Data shards (``get_dataset_shard``); the task turns a
batch into model inputs (pretraining masks codes with a generator seeded per rank and micro-batch). Validation runs at
every epoch end; early stopping watches the task's score. Checkpoints (every ``checkpoint_every_steps`` optimizer
steps and at every epoch end) go through ``ray.train.report``; a restarted or resumed run continues from the latest one
at the exact micro-batch it stopped after.

Row order is reproducible: a materialised training split is cut once into equal shards, shard ``i`` to worker ``i``
(``medmplm.train.ingest``), and a streamed one is dealt by Ray Data's order-preserving streaming split, so the same
rows go to the same worker in every run; each worker shuffles its shard every epoch through a local shuffle buffer
seeded by (run seed, epoch, rank). The same config and seed therefore give the same batches, and a run resumed mid-epoch
replays that epoch's order and skips the micro-batches the checkpoint already covered.

Validation scores every example exactly once whatever the number of workers: each worker reads the whole validation
set and evaluates every ``world_size``-th batch, starting at its rank.

Progress (step metrics, validations, early stopping) goes from rank 0 to the driver as events
(:mod:`medmplm.train.progress`); metric sums stay on the device until a logging step.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmplm.config import BatchPlan, DeepSpeedSection, LoggingSection, TrainSection
from medmplm.train.checkpoint import (
    MODEL_DIR,
    TRAINER_STATE_FILE,
    TrainerState,
    gather_trainable_fp32,
    load_optimizer_shard,
    save_optimizer_shard,
)
from medmplm.train.engine import engine_dtype, for_world_size, initialize_engine, resolve_backend, select_accelerator
from medmplm.train.metrics import MetricSink, WeightedSums, configure_worker_logging
from medmplm.train.progress import send
from medmplm.train.task import TrainingTask, concatenate_collected, has_evaluation


@dataclass
class LoopSpec:
    """Everything a worker needs, built by the driver (:mod:`medmplm.train.trainer`) and shipped with the function.

    Attributes:
        task: the task (model loading, inputs, statistics).
        model: object reference to the :class:`~medmplm.train.bundle.ModelBundle` of the initial model.
        train: optimisation settings.
        deepspeed: engine settings.
        logging: metric sinks.
        plan: micro-batch / accumulation / global batch split.
        steps_per_epoch: optimizer steps per epoch (the same on every worker).
        use_gpu: workers hold GPUs.
        run_name: the run's name.
        run_dir: ``<storage_path>/<run_name>`` (local path or URI).
        config_yaml: the resolved configuration, written beside every checkpoint.
        config_file_name: its file name.
        progress_inbox: handle of the driver's :class:`~medmplm.train.progress.ProgressInbox` (rank 0 sends to it);
            ``None`` sends nothing.
        cpu_threads: intra-op threads per worker on CPU (its reserved CPUs); ``None`` leaves torch's default.
    """

    task: TrainingTask
    model: Any
    train: TrainSection
    deepspeed: DeepSpeedSection
    logging: LoggingSection
    plan: BatchPlan
    steps_per_epoch: int
    use_gpu: bool
    run_name: str
    run_dir: str
    config_yaml: str
    config_file_name: str
    progress_inbox: Any = None
    cpu_threads: int | None = None

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (``epochs x steps_per_epoch``, capped by ``max_steps``)."""
        steps = self.train.epochs * self.steps_per_epoch
        return min(steps, self.train.max_steps) if self.train.max_steps is not None else steps


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry: ``TorchTrainer(train_loop_per_worker, train_loop_config={"spec": ray.put(LoopSpec(...))})``."""
    import ray

    spec: LoopSpec = ray.get(loop_config["spec"])
    # DeepSpeed 0.19.8 calls a torch.distributed function that torch deprecated; nothing to act on here.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    select_accelerator(spec.use_gpu)
    _Worker(spec).run()


class DataWait:
    """Seconds the training thread spends waiting for its next batch (what an input pipeline that keeps up makes
    near zero), on ``clock``."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds = 0.0

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches``, adding the time each one took to arrive to :attr:`seconds`."""
        iterator = iter(batches)
        while True:
            start = self.clock()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.seconds += self.clock() - start
            yield batch


class CpuWait:
    """Seconds the calling thread spent runnable but waiting for a CPU that another thread or process held, from
    Linux's per-thread scheduler statistics (``/proc/thread-self/schedstat``: time on a CPU, time waiting on a run
    queue, time slices). On a host whose cores the training workers fill, this is what every other process costs
    them; NaN where the kernel gives no such file.

    Read from the thread that trains: the statistics are that thread's own.
    """

    def __init__(self, path: str = "/proc/thread-self/schedstat") -> None:
        self.path = path
        self._start = self._read()

    def _read(self) -> float:
        try:
            with open(self.path, encoding="ascii") as stats:
                return int(stats.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return math.nan

    def restart(self) -> None:
        """Count from now."""
        self._start = self._read()

    @property
    def seconds(self) -> float:
        """Seconds spent waiting for a CPU since the last :meth:`restart` (or construction)."""
        return self._read() - self._start


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Turn on transformers' gradient checkpointing in every ``PreTrainedModel`` of ``model`` that supports it (the
    text encoder's layers recompute their activations in the backward; frozen layers, which keep none, are
    unaffected).

    Raises:
        ValueError: no part of the model supports it.
    """
    from transformers import PreTrainedModel

    parts = [
        module
        for module in model.modules()
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing
    ]
    if not parts:
        raise ValueError(
            f"train.gradient_checkpointing: no part of {type(model).__name__} supports gradient checkpointing"
        )
    for part in parts:
        part.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def _copy_companions(initial_model_dir: Path, model_dir: Path) -> None:
    """Copy the files of the initial model directory that ``save_pretrained`` did not write (a tokenizer saved beside
    the weights), so that every checkpoint, and hence the export, is a complete model directory."""
    for path in initial_model_dir.rglob("*"):
        target = model_dir / path.relative_to(initial_model_dir)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (run seed, rank, epoch, micro-batch ...)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the random generators that dropout on ``device`` draws from (the CPU one, and the GPU's).

    Not ``torch.manual_seed``: it also seeds every accelerator backend torch knows, and on a machine without one each
    backend records a formatted stack trace to seed it later, 0.64 ms per call, which at every micro-batch of the
    ``tiny`` preset on CPU (~150 ms a step) cost 0.4% of training time.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


# Score of checkpoints taken between validations (see _Worker._unvalidated_metrics).
UNVALIDATED_SCORE = 1e30

# Seed-stream tags, so training, validation, dropout and shuffling draws never coincide.
_TRAIN, _VALIDATION, _DROPOUT, _SHUFFLE = 1, 2, 3, 4


class _Worker:
    """One rank's training run."""

    def __init__(self, spec: LoopSpec) -> None:
        import ray.train
        import ray.train.torch

        self.spec = spec
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        if self.world_size != spec.plan.world_size:
            raise RuntimeError(f"batch plan is for {spec.plan.world_size} workers, running with {self.world_size}")
        self.device = ray.train.torch.get_device() if spec.use_gpu else torch.device("cpu")
        self.deepspeed = for_world_size(spec.deepspeed, self.world_size, self.device)
        if spec.cpu_threads is not None and not spec.use_gpu:
            torch.set_num_threads(spec.cpu_threads)
        configure_worker_logging(self.rank)
        self.train_shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val")
        self._scratch = tempfile.TemporaryDirectory(prefix="medmplm-worker-")
        self.initial_model_dir = Path(self._scratch.name) / "initial_model"
        ray.get(spec.model).write_to(self.initial_model_dir)
        self._export_model = None

    # ---------------------------------------------------------------------------------------------- setup / restore

    def run(self) -> None:
        import ray.train

        spec, train = self.spec, self.spec.train
        torch.manual_seed(_seed(train.seed, self.rank, _DROPOUT))
        checkpoint = ray.train.get_checkpoint()
        with contextlib.ExitStack() as stack:
            restored_from = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint is not None else None
            if restored_from is None:
                model = spec.task.load_model(self.initial_model_dir)
                state = TrainerState(world_size=self.world_size, zero_stage=self.deepspeed.zero_stage)
            else:
                # The model weights first: the engine's low-precision copies are made from them at initialisation.
                model = spec.task.load_model(restored_from / MODEL_DIR)
                state = TrainerState.load(restored_from / TRAINER_STATE_FILE)
            if train.gradient_checkpointing:
                enable_gradient_checkpointing(model)
            engine, scheduler = initialize_engine(
                model,
                train,
                self.deepspeed,
                spec.plan,
                spec.total_steps,
                resolve_backend(spec.deepspeed, spec.use_gpu),
                self.device,
            )
            if restored_from is not None:
                load_optimizer_shard(engine, restored_from, self.rank, self.world_size, self.deepspeed.zero_stage)
                if state.scheduler:
                    scheduler.load_state_dict(state.scheduler)
                engine.global_steps = state.global_step
                engine.global_samples = state.samples_seen
        self.engine, self.scheduler, self.dtype = engine, scheduler, engine_dtype(engine)

        sink = self._open_sink() if self.rank == 0 else None
        if sink is not None:
            sink.log({"run/resumed_from_step": state.global_step}, state.global_step)
        try:
            self._train(state, sink)
        finally:
            if sink is not None:
                sink.close()
            self._scratch.cleanup()

    def _open_sink(self) -> MetricSink:
        spec = self.spec
        params = {
            "run_name": spec.run_name,
            "global_batch_size": spec.plan.global_batch_size,
            "micro_batch_size": spec.plan.micro_batch_size,
            "accumulation_steps": spec.plan.accumulation_steps,
            "world_size": spec.plan.world_size,
            "lr": spec.train.lr,
            "zero_stage": self.deepspeed.zero_stage,
            "precision": spec.deepspeed.precision,
        }
        return MetricSink(
            tensorboard_dir=f"{spec.run_dir}/tensorboard" if spec.logging.tensorboard else None,
            mlflow_tracking_uri=spec.logging.mlflow_tracking_uri,
            mlflow_experiment=spec.logging.mlflow_experiment,
            run_name=spec.run_name,
            params=params,
        )

    # ----------------------------------------------------------------------------------------------- training

    def _train(self, state: TrainerState, sink: MetricSink | None) -> None:
        spec, train, plan = self.spec, self.spec.train, self.spec.plan
        total_steps = spec.total_steps
        inbox = spec.progress_inbox if self.rank == 0 else None
        if state.stopped_early or state.global_step >= total_steps:
            send(inbox, "note", text=f"run already complete at step {state.global_step}; nothing to train")
            return
        send(inbox, "start", step=state.global_step, total_steps=total_steps)
        micro_per_epoch = spec.steps_per_epoch * plan.accumulation_steps
        stats = WeightedSums(self.device)
        self._data_wait = DataWait()
        self._cpu_wait = CpuWait()
        self._start_window(state, stats)

        for epoch in range(state.epoch, train.epochs):
            skip = state.step_in_epoch * plan.accumulation_steps
            stop = False
            for index, batch in enumerate(self._data_wait.timed(self._train_batches(epoch))):
                # Batches before a mid-epoch resume point, or past the run's end, are read and dropped so that every
                # worker consumes its shard to the end (a streaming split's epochs stay in step).
                if index < skip or index >= micro_per_epoch or stop:
                    continue
                seed_dropout(_seed(train.seed, self.rank, _DROPOUT, state.global_step, index), self.device)
                generator = torch.Generator().manual_seed(_seed(train.seed, self.rank, _TRAIN, epoch, index))
                inputs = self._inputs(batch, generator, training=True)
                output = self.engine(**inputs)
                self.engine.backward(output.loss)
                self.engine.step()
                self._accumulate(stats, output, inputs)
                if (index + 1) % plan.accumulation_steps:
                    continue

                state.global_step += 1
                state.step_in_epoch += 1
                state.samples_seen += plan.global_batch_size
                if state.global_step % train.log_every_steps == 0 or state.global_step == total_steps:
                    self._log_train(stats, sink, state.global_step, epoch, time.perf_counter() - self._window_start)
                    self._start_window(state, stats)
                if state.global_step >= total_steps:
                    stop = True
                elif (
                    train.checkpoint_every_steps is not None
                    and state.global_step % train.checkpoint_every_steps == 0
                    and state.step_in_epoch < spec.steps_per_epoch
                ):
                    self._checkpoint(state, self._unvalidated_metrics(), sink)
                    # Throughput counts training only, not the pause for the checkpoint.
                    self._start_window(state, stats)

            if state.step_in_epoch >= spec.steps_per_epoch:
                state.epoch += 1
                state.step_in_epoch = 0
            validation = self._validate(state, sink)
            self._early_stopping(state, validation)
            send(
                inbox,
                "validation",
                epoch=state.epoch,
                step=state.global_step,
                metric=spec.task.score_metric,
                value=validation[spec.task.score_metric],
                examples=int(validation["val_visits"]),
                best=state.best_score,
                best_epoch=state.best_epoch,
            )
            self._checkpoint(state, {**validation, "validated": 1}, sink)
            if state.stopped_early:
                send(
                    inbox,
                    "early_stop",
                    epoch=state.epoch,
                    metric=spec.task.score_metric,
                    patience=state.epochs_without_improvement,
                )
            if state.stopped_early or state.global_step >= total_steps:
                break
            self._start_window(state, stats)

    def _start_window(self, state: TrainerState, stats: WeightedSums) -> None:
        """Start a throughput window: samples/s, tokens/s and the data- and CPU-wait shares count training from here.

        The loss and accuracy sums keep the steps since the last log; the sample and token counts are dropped, or a
        window opened after a validation or a checkpoint would divide the steps before it by the time after it.
        """
        self._window_start, self._window_first_step = time.perf_counter(), state.global_step
        self._data_wait.seconds = 0.0
        self._cpu_wait.restart()
        stats.discard("samples", "tokens")

    def _train_batches(self, epoch: int) -> Any:
        """This worker's micro-batches of one epoch, in the order the run seed and the epoch fix; prepared
        ``train.prefetch_batches`` ahead (on GPU also pinned and copied to the device ahead)."""
        train, plan = self.spec.train, self.spec.plan
        shuffle = {}
        if train.shuffle:
            shuffle = {
                "local_shuffle_buffer_size": train.shuffle_buffer_size,
                "local_shuffle_seed": _seed(train.seed, _SHUFFLE, epoch, self.rank),
            }
        return self.train_shard.iter_torch_batches(
            batch_size=plan.micro_batch_size,
            drop_last=True,
            prefetch_batches=train.prefetch_batches,
            device=self.device,
            pin_memory=self.device.type == "cuda",
            **shuffle,
        )

    def _inputs(self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool) -> dict[str, Any]:
        inputs = self.spec.task.model_inputs(batch, generator, training)
        return {
            key: value.to(self.device, self.dtype) if torch.is_floating_point(value) else value.to(self.device)
            for key, value in inputs.items()
        }

    def _accumulate(self, stats: WeightedSums, output: Any, inputs: dict[str, torch.Tensor]) -> None:
        batch_size = next(iter(inputs.values())).shape[0]
        stats.add("loss", output.loss.detach() * batch_size, batch_size)
        for name, (total, weight) in self.spec.task.batch_statistics(output, inputs).items():
            stats.add(name, total, weight)
        stats.add("samples", batch_size, 1.0)
        if "attention_mask" in inputs:
            stats.add("tokens", inputs["attention_mask"].sum(), 1.0)

    def _log_train(self, stats: WeightedSums, sink: MetricSink | None, step: int, epoch: int, elapsed: float) -> None:
        totals = stats.reduce_totals()
        metrics = {f"train/{name}": total / weight for name, (total, weight) in totals.items() if weight > 0}
        metrics.pop("train/samples", None)
        metrics.pop("train/tokens", None)
        samples = totals.get("samples", (0.0, 0.0))[0]
        tokens = totals.get("tokens", (0.0, 0.0))[0]
        metrics["perf/samples_per_s"] = samples / elapsed if elapsed > 0 else math.nan
        metrics["perf/tokens_per_s"] = tokens / elapsed if elapsed > 0 else math.nan
        metrics["perf/data_wait_share"] = self._data_wait.seconds / elapsed if elapsed > 0 else math.nan
        metrics["perf/cpu_wait_share"] = self._cpu_wait.seconds / elapsed if elapsed > 0 else math.nan
        metrics["train/lr"] = self.scheduler.get_last_lr()[0]
        metrics["train/epoch"] = float(epoch)
        if sink is not None:
            sink.log(metrics, step)
            send(
                self.spec.progress_inbox,
                "step",
                step=step,
                total_steps=self.spec.total_steps,
                epoch=epoch,
                loss=metrics.get("train/loss", math.nan),
                lr=metrics["train/lr"],
                samples_per_s=metrics["perf/samples_per_s"],
                data_wait_share=metrics["perf/data_wait_share"],
                steps_per_s=(step - self._window_first_step) / elapsed if elapsed > 0 else math.nan,
            )

    # --------------------------------------------------------------------------------------------- validation

    def _validate(self, state: TrainerState, sink: MetricSink | None) -> dict[str, float]:
        import torch.distributed as dist

        task = self.spec.task
        stats = WeightedSums(self.device)
        collected: list[dict[str, np.ndarray]] = []
        self.engine.eval()
        with torch.no_grad():
            for index, batch in enumerate(
                self.val_shard.iter_torch_batches(batch_size=self.spec.plan.micro_batch_size, drop_last=False)
            ):
                if index % self.world_size != self.rank:
                    continue
                # Seeded by the batch alone, so validation masks the same codes whatever the number of workers.
                generator = torch.Generator().manual_seed(_seed(self.spec.train.seed, _VALIDATION, index))
                inputs = self._inputs(batch, generator, training=False)
                output = self.engine(**inputs)
                self._accumulate(stats, output, inputs)
                if has_evaluation(task):
                    collected.append(task.collect(output, inputs))
        self.engine.train()
        totals = stats.reduce_totals()
        metrics = {f"val_{name}": total / weight for name, (total, weight) in totals.items() if weight > 0}
        metrics.pop("val_samples", None)
        metrics.pop("val_tokens", None)
        metrics["val_visits"] = totals.get("samples", (0.0, 0.0))[0]
        if has_evaluation(task):
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, collected)
            extra = [None]
            if self.rank == 0:
                parts = [part for worker in gathered for part in worker]
                extra[0] = {f"val_{k}": float(v) for k, v in task.evaluate(concatenate_collected(parts)).items()}
            dist.broadcast_object_list(extra, src=0)
            metrics.update(extra[0])
        if sink is not None:
            sink.log({name.replace("val_", "val/", 1): value for name, value in metrics.items()}, state.global_step)
        return metrics

    def _early_stopping(self, state: TrainerState, validation: dict[str, float]) -> None:
        task, train = self.spec.task, self.spec.train
        if task.score_metric not in validation:
            raise KeyError(f"validation produced no {task.score_metric!r}; it produced {sorted(validation)}")
        score = validation[task.score_metric]
        if math.isnan(score):
            if not math.isnan(validation.get("val_loss", math.nan)):
                # The loss is finite, so the metric is undefined rather than the training diverged (an AUC on a
                # validation split with one class).
                raise ValueError(
                    f"validation {task.score_metric} is undefined (NaN) on this validation split while val_loss is "
                    "finite (an AUC needs both classes); rank by another metric, e.g. finetune.score_metric=val_loss"
                )
            raise FloatingPointError(f"validation {task.score_metric} is NaN after step {state.global_step}: training diverged")
        sign = 1.0 if task.score_mode == "min" else -1.0
        if state.best_score is None or sign * (state.best_score - score) > train.early_stopping_min_delta:
            state.best_score, state.best_epoch = score, state.epoch
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1
        patience = train.early_stopping_patience
        if patience is not None and state.epochs_without_improvement >= patience:
            state.stopped_early = True

    # --------------------------------------------------------------------------------------------- checkpoints

    def _unvalidated_metrics(self) -> dict[str, float]:
        """Metrics of a mid-epoch checkpoint: the worst possible score, so that keeping the best K by validation
        score drops it first (Ray always keeps the latest checkpoint anyway). NaN or inf would be the honest value,
        but Ray's run snapshot stores them as null, which breaks ranking when a run resumes."""
        worst = UNVALIDATED_SCORE if self.spec.task.score_mode == "min" else -UNVALIDATED_SCORE
        return {self.spec.task.score_metric: worst, "validated": 0}

    def _checkpoint(self, state: TrainerState, metrics: dict[str, float], sink: MetricSink | None) -> None:
        """Every rank writes its optimizer partition; rank 0 the full model, the state and the config."""
        import ray.train

        spec = self.spec
        state.scheduler = self.scheduler.state_dict()
        with tempfile.TemporaryDirectory(prefix="medmplm-checkpoint-") as directory:
            save_optimizer_shard(self.engine, directory, self.rank, self.world_size, self.deepspeed.zero_stage)
            weights = gather_trainable_fp32(self.engine)
            if self.rank == 0:
                model = self._model_for_export()
                missing, unexpected = model.load_state_dict(weights, strict=False)
                frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
                # A tied parameter (BERT's MLM decoder is its word embeddings) is gathered once, under its first name.
                tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
                if unexpected or set(missing) - frozen - tied - {n for n, _ in model.named_buffers()}:
                    raise RuntimeError(f"checkpoint weights do not fit the model: missing {missing}, unexpected {unexpected}")
                model.save_pretrained(Path(directory) / MODEL_DIR)
                _copy_companions(self.initial_model_dir, Path(directory) / MODEL_DIR)
                state.save(Path(directory) / TRAINER_STATE_FILE)
                (Path(directory) / spec.config_file_name).write_text(spec.config_yaml, encoding="utf-8")
            report = {"global_step": state.global_step, "epoch": state.epoch, **metrics}
            ray.train.report(
                report,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint_step{state.global_step:09d}",
            )
        if sink is not None:
            sink.sync()

    def _model_for_export(self) -> Any:
        """A CPU copy of the model on rank 0 that receives the gathered fp32 weights and writes them."""
        if self._export_model is None:
            self._export_model = self.spec.task.load_model(self.initial_model_dir)
        return self._export_model
