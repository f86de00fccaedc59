"""Driver side of a sweep: Ray Tune experiments over the cells of :mod:`tuning.trials`, restorable by path.

A grid without a scheduler is one Tune experiment, ``<storage_path>/<name>/`` (the sweep directory), whose trials are
every cell of the grid. With Optuna or ASHA the learning rates of one (task, model, train ratio) compete with each
other and with nothing else, so each such group is its own experiment under ``<sweep dir>/groups/``, run one after
another. Either way a sweep directory holds ``sweep_config.yaml``, the result records (``results/``) and the trials'
training runs (``runs/``); ``Tuner.restore`` continues each experiment where it stopped: finished trials are not run
again, errored ones are retried up to ``max_failures`` times, their errors kept in their trial directories.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from medmplm.config import to_yaml
from medmplm.metrics import COUNT_METRICS
from medmplm.train import storage
from tuning.config import CONFIG_FILE_NAME, SweepConfig, model_variant
from tuning.slots import SLOTS_ACTOR_PREFIX, start_slots
from tuning.trials import (
    REPEAT_INDEX,
    featurize_for_sweep,
    grid_cells,
    has_learning_rate,
    max_concurrent_trials,
    run_trial,
    trial_name,
    trial_resources,
)

logger = logging.getLogger(__name__)

GROUPS_DIR = "groups"


@dataclass
class Experiment:
    """One Tune experiment of a sweep: where it lives and what it searches.

    Attributes:
        name: the experiment's directory name under ``storage_path``.
        storage_path: its parent directory.
        param_space: Tune's ``param_space``: a ``cell`` (constant parts of the trials' cells) and searched keys.
        num_samples: Tune's ``num_samples``.
        metric: the validation metric of a group experiment (Optuna's objective, ASHA's comparison); none for the grid.
    """

    name: str
    storage_path: str
    param_space: dict[str, Any]
    num_samples: int = 1
    metric: str | None = None

    @property
    def path(self) -> str:
        return storage.join(self.storage_path, self.name)

    @property
    def expected_trials(self) -> int:
        """Trials the experiment runs when it runs to its end: ``num_samples`` times every grid's size. Tune creates
        a grid's trials as slots free up, so an interrupted experiment's ``ResultGrid`` holds fewer."""
        count = self.num_samples
        for value in self.param_space.values():
            if isinstance(value, dict) and "grid_search" in value:
                count *= len(value["grid_search"])
        return count


def experiments(sweep: SweepConfig, sweep_dir: str) -> list[Experiment]:
    """The sweep's Tune experiments (see the module docstring)."""
    from ray import tune

    if sweep.search.algorithm == "grid" and sweep.search.scheduler == "none":
        parent, name = sweep_dir.rstrip("/").rsplit("/", 1)
        return [Experiment(name, parent, {"cell": tune.grid_search(grid_cells(sweep))})]
    groups = []
    for task in sweep.tasks:
        for variant in sweep.models:
            model, _ = model_variant(variant)
            for ratio in sweep.train_ratios:
                cell = {"task": task, "variant": variant, "train_ratio": ratio}
                metric = f"val_{sweep.primary_metric[task]}"
                name = trial_name({**cell, "lr": 0.0, "seed": "all"}).removesuffix("-sall")
                if not has_learning_rate(model):
                    space = {"cell": {**cell, "lr": 0.0}, "seed": tune.grid_search(sweep.seeds)}
                    groups.append(Experiment(name, storage.join(sweep_dir, GROUPS_DIR), space, 1, metric))
                elif sweep.search.algorithm == "optuna":
                    rates = sweep.learning_rates[task]
                    space = {"cell": cell, "lr": tune.loguniform(min(rates), max(rates))}
                    samples = sweep.search.samples * len(sweep.seeds)
                    groups.append(Experiment(name, storage.join(sweep_dir, GROUPS_DIR), space, samples, metric))
                else:
                    space = {
                        "cell": cell,
                        "lr": tune.grid_search(sweep.learning_rates[task]),
                        "seed": tune.grid_search(sweep.seeds),
                    }
                    groups.append(Experiment(name, storage.join(sweep_dir, GROUPS_DIR), space, 1, metric))
    return groups


def _cell_of(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's cell: the constant part and the searched keys (``lr``, ``seed``, Repeater's index) merged."""
    return {**config["cell"], **{k: v for k, v in config.items() if k != "cell"}}


def sweep_trial(config: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    """Tune's trainable: the trial's cell run by :func:`run_trial`."""
    return run_trial(_cell_of(config), **parameters)


def build_tuner(
    sweep: SweepConfig,
    sweep_dir: str,
    experiment: Experiment,
    features: dict,
    concurrency: int,
    slots: str,
    callbacks: list,
) -> Any:
    """A new or restored ``ray.tune.Tuner`` of one experiment; its torch trials train in the slots actor ``slots``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter, Repeater
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, sweep=sweep, sweep_dir=sweep_dir, features=features, slots=slots),
        resources=lambda config: trial_resources(sweep, _cell_of(config)),
    )
    if tune.Tuner.can_restore(experiment.path):
        return tune.Tuner.restore(experiment.path, trainable=trainable, resume_errored=True)
    searched = "lr" in experiment.param_space and not isinstance(experiment.param_space["lr"], dict)
    search_alg = scheduler = None
    if experiment.metric is not None and sweep.search.algorithm == "optuna" and searched:
        optuna = OptunaSearch(metric=experiment.metric, mode="max", seed=sweep.seeds[0])
        search_alg = ConcurrencyLimiter(Repeater(optuna, repeat=len(sweep.seeds)), max_concurrent=concurrency)
    if experiment.metric is not None and sweep.search.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            grace_period=sweep.search.grace_period,
            reduction_factor=sweep.search.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        param_space=experiment.param_space,
        tune_config=tune.TuneConfig(
            metric=experiment.metric,
            mode="max" if experiment.metric else None,
            num_samples=experiment.num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=None if search_alg is not None else concurrency,
            # A finished trial's process takes the next trial (no new Python, torch and transformers import), but not
            # under ASHA: a stopped trial's process must die, and its Ray Train run and slot with it.
            reuse_actors=scheduler is None,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=experiment.storage_path,
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            callbacks=callbacks,
            verbose=0,
        ),
    )


@dataclass
class SweepOutcome:
    """What a sweep's driver saw.

    Attributes:
        result_grids: Tune's ``ResultGrid`` of each experiment run (the sweep's first ones, when interrupted).
        trials: trials of the whole sweep (every experiment's :attr:`Experiment.expected_trials`).
        concurrency: trials run at once.
        seconds: wall time of this driver's run.
    """

    result_grids: list[Any]
    trials: int
    concurrency: int
    seconds: float

    @property
    def errors(self) -> int:
        return sum(grid.num_errors for grid in self.result_grids)

    @property
    def unfinished(self) -> int:
        """Trials neither finished nor errored, the ones never started included: the sweep was interrupted (Ctrl-C, a
        stopped job)."""
        return self.trials - sum(grid.num_terminated + grid.num_errors for grid in self.result_grids)


def is_complete(grid: Any, experiment: Experiment) -> bool:
    """Whether every trial of ``experiment`` finished or errored in its ``ResultGrid``."""
    return grid.num_terminated + grid.num_errors >= experiment.expected_trials


def run_sweep(sweep: SweepConfig, sweep_dir: str, on_trial_end: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run (or continue) every experiment of the sweep; Ray must be initialised.

    The sweep's config goes to ``<sweep_dir>/sweep_config.yaml`` first (a resumed sweep reads it back).
    """
    import ray

    start = time.perf_counter()
    config_location = storage.join(sweep_dir, CONFIG_FILE_NAME)
    if not storage.exists(config_location):
        storage.write_text(config_location, to_yaml(sweep))
    concurrency = max_concurrent_trials(sweep, ray.cluster_resources())
    slots = f"{SLOTS_ACTOR_PREFIX}-{hashlib.sha256(sweep_dir.encode()).hexdigest()[:12]}"
    slots_actor = start_slots(slots, concurrency)
    features = featurize_for_sweep(sweep)
    callbacks = [TrialLines(on_trial_end, sweep.primary_metric)] if on_trial_end is not None else []
    grids = []
    planned = experiments(sweep, sweep_dir)
    try:
        for experiment in planned:
            tuner = build_tuner(sweep, sweep_dir, experiment, features, concurrency, slots, callbacks)
            grids.append(tuner.fit())
            if not is_complete(grids[-1], experiment):
                break  # interrupted: the remaining experiments wait for --resume too
    finally:
        ray.kill(slots_actor)
    trials = sum(experiment.expected_trials for experiment in planned)
    return SweepOutcome(grids, trials, concurrency, time.perf_counter() - start)


def _trial_line(trial: Any, status: str, primary_metric: Mapping[str, str]) -> str:
    cell = _cell_of(trial.config)
    if REPEAT_INDEX in cell:
        cell["seed"] = f"#{cell.pop(REPEAT_INDEX)}"
    result = trial.last_result or {}
    shown = {f"val_{primary_metric[cell['task']]}"} if cell.get("task") in primary_metric else set()
    metrics = " ".join(
        f"{key} {int(value)}" if key.removeprefix("val_") in COUNT_METRICS else f"{key} {value:.4f}"
        for key, value in sorted(result.items())
        if key in shown or (key.startswith("val_") and "auc" in key)
    )
    return f"{status:9s} {trial_name(cell)}  {metrics}".rstrip()


class TrialLines(Callback):
    """One line per finished or failed trial (its cell, validation AUCs and the sweep's primary metric of its task),
    through ``emit``."""

    def __init__(self, emit: Callable[[str], None], primary_metric: Mapping[str, str]) -> None:
        self.emit = emit
        self.primary_metric = primary_metric

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.emit(_trial_line(trial, "done", self.primary_metric))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.emit(_trial_line(trial, "error", self.primary_metric))


def experiment_paths(sweep_dir: str) -> list[str]:
    """The Tune experiments of a local sweep directory: itself (a grid), or each of ``groups/``."""
    from pathlib import Path

    # Absolute: Tune reads a path without a scheme as a URI.
    root = Path(sweep_dir).resolve()
    groups = sorted(p for p in (root / GROUPS_DIR).iterdir() if p.is_dir()) if (root / GROUPS_DIR).is_dir() else []
    return (
        [str(root)] + [str(p) for p in groups] if any(root.glob("experiment_state*.json")) else [str(p) for p in groups]
    )


def trial_status(sweep_dir: str) -> dict[str, Any]:
    """What Tune recorded of a sweep's trials (its own ``ResultGrid``): ``trials``, ``by_status`` (count per Tune
    status), ``errors`` (``path`` of each errored trial's directory, where Tune keeps its error)."""
    from collections import Counter

    from ray.tune import ExperimentAnalysis, ResultGrid

    trials, errored = Counter(), []
    for path in experiment_paths(sweep_dir):
        analysis = ExperimentAnalysis(path)
        trials.update(trial.status for trial in analysis.trials)
        errored += [result.path for result in ResultGrid(analysis) if result.error is not None]
    return {"trials": sum(trials.values()), "by_status": dict(trials), "errors": errored}
