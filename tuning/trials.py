"""A sweep's trials: one fine-tuning run each (``medmplm.tasks.runner.run_finetune``).

A trial's Tune config is a *cell*: ``task``, ``variant`` (model, pretrained or ``-scratch``), ``train_ratio``,
``seed`` and ``lr``. :func:`run_trial` turns it into a fine-tuning config (the sweep's ``finetune`` keys, the task's
options, the variant's exports), runs it with Ray Train's ``TuneReportCallback`` (:class:`ValidatedReports`) so that
every validation reaches Tune (schedulers such as ASHA act on it), and returns the record's validation and test
metrics as the trial's last result.

Trials share their featurised examples: the driver featurises every (task, featuriser) once
(:func:`featurize_for_sweep`) and hands the blocks to every trial through the object store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from medmplm.config import load_config
from medmplm.data.prepared import local_prepared_dir
from medmplm.train import storage
from tuning.config import SweepConfig, init_keys, model_variant
from tuning.slots import trial_slot

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"
RUNS_DIR = "runs"
# Tune's Repeater numbers the repeats of one searched configuration 0, 1, ...: the index of the trial's seed.
REPEAT_INDEX = "__trial_index__"
# A torch trial's own process only waits on its Ray Train run, so it holds no CPU (Tune cannot place a trial that asks
# for nothing at all: it holds a token of memory instead).
DRIVER_RESOURCES = {"CPU": 0.0, "memory": float(1 << 20)}
# Ray Data's small tasks that a trial's process starts (``ray.data.from_arrow``'s metadata tasks, featurisation when
# not shared) each ask for a whole free CPU: with every CPU held by trials' Train workers, a starting trial would wait
# until another trial's training ended, and the sweep would train one trial at a time. A sweep leaves them one CPU.
DATA_TASKS_CPU = 1


def grid_cells(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every (task, variant, train ratio, learning rate, seed) of the grid; a model without a learning rate
    (``logreg``) has one cell per (task, ratio, seed), with ``lr`` 0."""
    cells = []
    for task in sweep.tasks:
        for variant in sweep.models:
            model, _ = model_variant(variant)
            rates = sweep.learning_rates[task] if has_learning_rate(model) else [0.0]
            for ratio in sweep.train_ratios:
                for lr in rates:
                    for seed in sweep.seeds:
                        cells.append({"task": task, "variant": variant, "train_ratio": ratio, "lr": lr, "seed": seed})
    return cells


def has_learning_rate(model: str) -> bool:
    """Whether ``model`` trains with a learning rate (every torch model; not the scikit-learn ``logreg``)."""
    from medmplm.tasks.encoders import model_spec

    return model_spec(model).trains_in_loop


def trial_name(cell: Mapping[str, Any]) -> str:
    """A readable, file-name-safe name of a cell: ``readmission-medmplm-r0.1-lr2e-05-s0``."""
    variant = cell["variant"].replace("+", "_")
    lr = f"-lr{cell['lr']:.3g}" if cell["lr"] else ""
    return f"{cell['task']}-{variant}-r{cell['train_ratio']:g}{lr}-s{cell['seed']}"


def trial_config(sweep: SweepConfig, sweep_dir: str, cell: Mapping[str, Any], run_name: str) -> Any:
    """The fine-tuning config of one cell (``medmplm.tasks.config.FinetuneConfig``)."""
    from medmplm.tasks.config import FinetuneConfig

    model, _ = model_variant(cell["variant"])
    task = cell["task"]
    overrides = {
        **dotted(sweep.finetune),
        "data.prepared_dir": sweep.prepared_dir,
        "finetune.task": task,
        "finetune.model": model,
        "finetune.train_ratio": cell["train_ratio"],
        "finetune.results_dir": results_dir(sweep_dir),
        "train.seed": cell["seed"],
        "run.name": run_name,
        "run.storage_path": storage.join(sweep_dir, RUNS_DIR),
        **resource_keys(sweep),
        **init_keys(cell["variant"], sweep.exports),
        **{f"finetune.task_options.{key}": value for key, value in sweep.task_options.get(task, {}).items()},
    }
    if task == "ner":
        overrides["finetune.ner_corpus"] = sweep.ner_corpus
    if has_learning_rate(model):
        overrides["train.lr"] = cell["lr"]
        # Checkpoints are ranked, and training stopped early, on the sweep's primary metric: the one that selects.
        overrides.setdefault("finetune.score_metric", f"val_{sweep.primary_metric[task]}")
        overrides.setdefault("finetune.score_mode", "max")
    return load_config(FinetuneConfig, None, overrides)


def dotted(keys: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``finetune.train.epochs=4`` on the command line arrives nested, and must set
    one key of the run's config rather than replace its whole ``train`` section."""
    flat: dict[str, Any] = {}
    for key, value in keys.items():
        if isinstance(value, Mapping):
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class ValidatedReports(TuneReportCallback):
    """Ray Train's ``TuneReportCallback`` for the reports that carry a validation: a mid-epoch checkpoint reports a
    placeholder score (``medmplm.train.loop``), which a scheduler must never compare."""

    def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
        if metrics and metrics[0].get("validated") == 1:
            super().after_report(run_context, metrics, checkpoint)


def resource_keys(sweep: SweepConfig) -> dict[str, Any]:
    """The fine-tuning config's scaling keys of a trial."""
    resources = sweep.resources
    keys: dict[str, Any] = {
        "scaling.num_workers": resources.workers_per_trial,
        "scaling.cpus_per_worker": resources.cpus_per_worker,
        "scaling.use_gpu": resources.gpus_per_worker > 0,
        "scaling.extra_resources": dict(resources.extra_resources),
    }
    if resources.gpus_per_worker > 0:
        keys["scaling.gpus_per_worker"] = resources.gpus_per_worker
    return keys


def trial_resources(sweep: SweepConfig, cell: Mapping[str, Any]) -> dict[str, float]:
    """What the trial's own process holds. A torch trial trains in Ray Train workers, which hold their CPUs and GPUs
    themselves, so its driver holds none (:data:`DRIVER_RESOURCES`); the ``logreg`` model fits in the trial's process,
    which holds one worker's CPUs."""
    model, _ = model_variant(cell["variant"])
    return dict(DRIVER_RESOURCES) if has_learning_rate(model) else {"CPU": sweep.resources.cpus_per_worker}


def max_concurrent_trials(sweep: SweepConfig, cluster: Mapping[str, float]) -> int:
    """Trials at once: ``resources.max_concurrent_trials``, else as many torch trials as the cluster's CPUs (and GPUs,
    when trials use them) hold now beside :data:`DATA_TASKS_CPU`, so that no trial waits on another's workers and no
    core runs two trials' threads. An autoscaling cluster starts smaller than it grows: give it
    ``resources.max_concurrent_trials``."""
    resources = sweep.resources
    if resources.max_concurrent_trials is not None:
        return resources.max_concurrent_trials
    workers = resources.workers_per_trial
    cpus = cluster.get("CPU", 0.0) - DATA_TASKS_CPU
    limit = math.floor(cpus / (workers * resources.cpus_per_worker) + 1e-9)
    if resources.gpus_per_worker > 0:
        limit = min(limit, math.floor(cluster.get("GPU", 0.0) / (workers * resources.gpus_per_worker) + 1e-9))
    return max(1, limit)


def results_dir(sweep_dir: str) -> str:
    """Where the sweep's result records go."""
    return storage.join(sweep_dir, RESULTS_DIR)


def featurize_for_sweep(sweep: SweepConfig) -> dict[str, dict[str, list[Any]]]:
    """Every task's examples featurised once per distinct featuriser among the sweep's models (in practice once per
    task: the models of one prepared directory share its tokenizer and vocabularies), as object-store blocks keyed
    by featurizer key (see ``medmplm.tasks.runner.featurize_all_examples``). ``logreg`` trials featurise nothing
    shared: they read multi-hot codes in process; nor do tasks that read their own corpus (``ner``), whose trials
    featurise its sentences themselves."""
    from medmplm.tasks import build_task, read_visits
    from medmplm.tasks.base import reads_own_examples
    from medmplm.tasks.runner import build_backbones, featurize_all_examples, featurizer_key

    visit_tasks = [name for name in sweep.tasks if not reads_own_examples(build_task(name))]
    prepared_dir = local_prepared_dir(sweep.prepared_dir) if visit_tasks else None
    train_visits = read_visits(prepared_dir, "train") if visit_tasks else None
    features: dict[str, dict[str, list[Any]]] = {}
    seen: set[tuple[str, ...]] = set()
    for task_name in visit_tasks:
        for variant in sweep.models:
            model, _ = model_variant(variant)
            if not has_learning_rate(model):
                continue
            cell = {"task": task_name, "variant": variant, "train_ratio": 1.0, "lr": 1.0, "seed": sweep.seeds[0]}
            config = trial_config(sweep, "unused", cell, "featurize")
            identity = (task_name, model, *[str(v) for v in init_keys(variant, sweep.exports).values()])
            if identity in seen:
                continue
            seen.add(identity)
            task = build_task(task_name, **config.finetune.task_options)
            backbones = build_backbones(config, prepared_dir)
            key = featurizer_key(task, task.label_space(train_visits), backbones)
            if key not in features:
                _, features[key] = featurize_all_examples(
                    task, prepared_dir, backbones, config.data.featurize_batch_size
                )
                logger.info("featurised %s examples for %s (featurizer %s)", task_name, variant, key)
    return features


def run_trial(
    cell: dict[str, Any], *, sweep: SweepConfig, sweep_dir: str, features: Mapping[str, Any], slots: str
) -> dict[str, Any]:
    """Tune's trainable: fine-tune and evaluate one cell, or read back its record when an earlier attempt of the
    same trial already wrote it (a driver killed between the record and Tune's bookkeeping). A torch trial trains
    while holding one of the sweep's slots (the actor named ``slots``, see :mod:`tuning.slots`)."""
    import ray.tune

    from medmplm.results import result_location
    from medmplm.tasks.runner import run_finetune
    from medmplm.train import storage

    cell = dict(cell)
    if REPEAT_INDEX in cell:
        cell["seed"] = sweep.seeds[cell.pop(REPEAT_INDEX)]
    run_name = f"{trial_name(cell)}-{ray.tune.get_context().get_trial_id()}"
    location = result_location(results_dir(sweep_dir), run_name)
    model, _ = model_variant(cell["variant"])
    if not storage.exists(location):
        config = trial_config(sweep, sweep_dir, cell, run_name)
        # A trial may run on any node: an s3:// or gs:// prepared directory is read through that node's local copy.
        prepared_dir = local_prepared_dir(sweep.prepared_dir) if sweep.prepared_dir is not None else None
        if has_learning_rate(model):
            with trial_slot(slots):
                run_finetune(config, prepared_dir, run_name, features=features, callbacks=[ValidatedReports()])
        else:
            run_finetune(config, prepared_dir, run_name)
    return {**record_metrics(location), "record": location, "run_name": run_name}


def record_metrics(location: str) -> dict[str, float]:
    """One result record's metrics as ``{<split>_<metric>: value}`` (``val_auroc``, ``test_auroc``, ...)."""
    from medmplm.train import storage

    table = storage.read_parquet(location)
    return {
        f"{split}_{metric}": float(value)
        for split, metric, value in zip(
            table.column("split").to_pylist(), table.column("metric").to_pylist(), table.column("value").to_pylist()
        )
    }
