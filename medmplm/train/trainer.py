"""Driver side of a training run: Ray Train ``TorchTrainer`` from the config, run naming and resume, export.

Library code: it expects Ray to be initialised by the entry point (``ray.init()``) and never parses argv.

A run lives in ``<storage_path>/<name>/``: Ray Train's checkpoints (``checkpoint_step<N>/``) and run snapshot,
``initial_model/`` (the model the run started from, so a resumed run starts from the very same weights and
tokenizer), ``tensorboard/``, and by default ``export/``. Rerunning with the same name resumes from the latest
checkpoint (Ray Train V2 finds the run snapshot in storage); a new run gets a new unique name.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmplm.config import BatchPlan, DeepSpeedSection, LoggingSection, RunSection, ScalingSection, TrainSection, batch_plan
from medmplm.train import storage
from medmplm.train.bundle import ModelBundle
from medmplm.train.checkpoint import MODEL_DIR, TRAINER_STATE_FILE
from medmplm.train.engine import resolve_backend
from medmplm.train.loop import LoopSpec, train_loop_per_worker
from medmplm.train.progress import ProgressPrinter, ProgressRelay
from medmplm.train.task import TrainingTask

logger = logging.getLogger(__name__)

INITIAL_MODEL_DIR = "initial_model"
MODEL_MARKER = "config.json"


class DatasetTooSmallError(ValueError):
    """The training split cannot fill one optimizer step."""


@dataclass
class TrainingOutcome:
    """What a finished run left behind.

    Attributes:
        run_name: the run's name.
        run_dir: ``<storage_path>/<run_name>``.
        best_checkpoint: the checkpoint with the best validation score (``ray.train.Checkpoint``).
        best_metrics: the metrics reported with it.
        latest_metrics: the metrics of the run's last report.
        steps_per_epoch: optimizer steps per epoch.
        result: Ray Train's ``Result``.
    """

    run_name: str
    run_dir: str
    best_checkpoint: Any
    best_metrics: dict[str, Any]
    latest_metrics: dict[str, Any]
    steps_per_epoch: int
    result: Any


def steps_per_epoch(num_rows: int, plan: BatchPlan) -> int:
    """Optimizer steps per epoch: Ray Data's equal split gives each worker ``num_rows // world`` rows, each worker
    drops its last partial micro-batch, and leftover micro-batches short of an accumulation cycle are dropped.

    Raises:
        DatasetTooSmallError: when that is 0.
    """
    rows_per_worker = num_rows // plan.world_size
    steps = rows_per_worker // plan.micro_batch_size // plan.accumulation_steps
    if steps == 0:
        raise DatasetTooSmallError(
            f"the training split has {num_rows} visits: fewer than one global batch of {plan.global_batch_size} "
            f"({plan.world_size} workers x {plan.micro_batch_size} x {plan.accumulation_steps} accumulation); "
            "use more data or a smaller train.global_batch_size"
        )
    return steps


def initial_model_bundle(run_dir: str, build: Callable[[Path], None]) -> tuple[ModelBundle, bool]:
    """The run's initial model: read back from ``<run_dir>/initial_model`` when the run already has one (a resume),
    otherwise built by ``build(directory)`` (which must ``save_pretrained`` into ``directory``) and stored there.

    Returns:
        (bundle, reused): ``reused`` is True when an earlier attempt's model was found.
    """
    location = storage.join(run_dir, INITIAL_MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="medmplm-initial-") as scratch:
        local = Path(scratch) / INITIAL_MODEL_DIR
        if storage.exists(storage.join(location, MODEL_MARKER)):
            storage.download_directory(location, local)
            return ModelBundle.from_directory(local), True
        build(local)
        storage.upload_directory(local, location, marker=MODEL_MARKER)
        return ModelBundle.from_directory(local), False


def fit(
    task: TrainingTask,
    datasets: dict[str, Any],
    model: Any,
    *,
    train: TrainSection,
    deepspeed: DeepSpeedSection,
    scaling: ScalingSection,
    run: RunSection,
    logging: LoggingSection,
    run_name: str,
    config_yaml: str,
    config_file_name: str,
    progress_bar: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainingOutcome:
    """Train ``task`` on ``datasets`` (``train`` and ``val`` Ray Datasets, featurised) with Ray Train + DeepSpeed.

    A materialised training split is cut once into equal shards, one per worker (``medmplm.train.ingest``); a streamed
    one is dealt by Ray Data's streaming split with ``preserve_order``: either way the same rows go to the same worker
    in every run; every worker reads the whole validation split and scores its share of batches.

    Args:
        model: ``ray.put(ModelBundle)`` of the initial model.
        run_name: the run's name (see :func:`medmplm.train.storage.new_run_name`); an existing run of that name under
            ``run.storage_path`` is resumed.
        config_yaml: the resolved configuration, saved beside every checkpoint as ``config_file_name``.
        progress_bar: show a progress bar (on a terminal); otherwise one line per ``logging.console_interval_s``.
        callbacks: Ray Train callbacks of the run (a Tune sweep passes ``TuneReportCallback``, which hands every
            validation's metrics to the trial).

    Raises:
        ray.train.TrainingFailedError: when workers keep failing beyond ``run.max_failures``.
    """
    import ray.train
    from ray.data import DataContext
    from ray.train.torch import TorchConfig, TorchTrainer

    from medmplm.train.ingest import PresplitDataConfig, split_materialized

    for name in ("train", "val"):
        if name not in datasets:
            raise KeyError(f"datasets lacks {name!r}; the loop trains on 'train' and validates on 'val'")
    plan = batch_plan(train.global_batch_size, train.micro_batch_size, scaling.num_workers)
    num_train = datasets["train"].count()
    num_val = datasets["val"].count()
    if num_val == 0:
        raise DatasetTooSmallError("the validation split is empty: there is nothing to validate or early-stop on")
    spe = steps_per_epoch(num_train, plan)
    storage_path = storage.resolve_storage_path(run.storage_path)
    run_dir = storage.join(storage_path, run_name)
    spec = LoopSpec(
        task=task,
        model=model,
        train=train,
        deepspeed=deepspeed,
        logging=logging,
        plan=plan,
        steps_per_epoch=spe,
        use_gpu=scaling.use_gpu,
        run_name=run_name,
        run_dir=run_dir,
        config_yaml=config_yaml,
        config_file_name=config_file_name,
        cpu_threads=None if scaling.use_gpu else max(1, int(scaling.cpus_per_worker)),
    )
    logger.info(
        "training: %d train / %d val examples, %d worker(s), global batch %d (%d micro x %d accumulation x %d), "
        "%d steps per epoch, up to %d steps",
        num_train,
        num_val,
        plan.world_size,
        plan.global_batch_size,
        plan.micro_batch_size,
        plan.accumulation_steps,
        plan.world_size,
        spe,
        spec.total_steps,
    )
    resources = {"CPU": scaling.cpus_per_worker, **scaling.extra_resources}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    # Deterministic ingest: with preserve_order a streaming split deals blocks in order instead of by locality, and every
    # iterator (pre-split shards included) hands its batches over in order.
    ingest = copy.deepcopy(DataContext.get_current().execution_options)
    ingest.preserve_order = True
    relay = ProgressRelay(ProgressPrinter(task.name, bar=progress_bar, interval_s=logging.console_interval_s))
    spec.progress_inbox = relay.inbox
    trainer = TorchTrainer(
        train_loop_per_worker,
        # By reference: Ray Train's controller deserialises the loop config, and the spec's classes would make it
        # import torch, transformers and the task's modules (~5 s on every run's critical path) for nothing.
        train_loop_config={"spec": ray.put(spec)},
        torch_config=TorchConfig(backend=resolve_backend(deepspeed, scaling.use_gpu)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute=task.score_metric,
                checkpoint_score_order=task.score_mode,
            ),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            # Ray Train's per-report INFO lines would drown the loop's own rank-0 log.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        dataset_config=PresplitDataConfig(
            split_materialized(datasets, ["train"], plan.world_size),
            datasets_to_split=["train"],
            execution_options=ingest,
        ),
    )
    with relay:
        result = trainer.fit()
    best_checkpoint, best_metrics = _best(result, task)
    return TrainingOutcome(
        run_name=run_name,
        run_dir=run_dir,
        best_checkpoint=best_checkpoint,
        best_metrics=best_metrics,
        latest_metrics=dict(result.metrics or {}),
        steps_per_epoch=spe,
        result=result,
    )


def _best(result: Any, task: TrainingTask) -> tuple[Any, dict[str, Any]]:
    """The validated checkpoint with the best score; the latest checkpoint if none was validated."""
    sign = 1.0 if task.score_mode == "min" else -1.0
    scored = [
        (checkpoint, metrics)
        for checkpoint, metrics in (result.best_checkpoints or [])
        if metrics.get("validated") == 1 and isinstance(metrics.get(task.score_metric), int | float)
    ]
    if scored:
        return min(scored, key=lambda item: sign * item[1][task.score_metric])
    if result.checkpoint is None:
        raise RuntimeError(f"run at {result.path} reported no checkpoint")
    return result.checkpoint, dict(result.metrics or {})


def export_checkpoint(
    checkpoint: Any, export_dir: str, config_yaml: str, config_file_name: str, info: dict[str, Any]
) -> str:
    """Copy a checkpoint's model (``save_pretrained`` layout) to ``export_dir`` with the resolved config and
    ``export_info.json`` (run, checkpoint, step, metrics); ``config.json`` is written last. Returns ``export_dir``."""
    export_dir = storage.resolve_storage_path(export_dir)
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory(prefix="medmplm-export-") as scratch:
        staging = Path(scratch) / "export"
        model_dir = Path(directory) / MODEL_DIR
        if not (model_dir / MODEL_MARKER).is_file():
            raise FileNotFoundError(f"{model_dir}: no saved model in checkpoint {checkpoint.path}")
        _copy_tree(model_dir, staging)
        (staging / config_file_name).write_text(config_yaml, encoding="utf-8")
        state = json.loads((Path(directory) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        details = {**info, "checkpoint": checkpoint.path, "global_step": state["global_step"], "epoch": state["epoch"]}
        (staging / "export_info.json").write_text(json.dumps(details, indent=2, default=str) + "\n", encoding="utf-8")
        storage.upload_directory(staging, export_dir, marker=MODEL_MARKER)
    return export_dir


def _copy_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
