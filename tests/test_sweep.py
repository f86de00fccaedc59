"""Ray Tune sweeps (``python -m tuning.sweep``): the grid, trial configs and resources without Ray; a small sweep end
to end, its report, and a sweep restored after its driver was killed, on 300 synthetic patients (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from medmplm.config import ConfigError, load_config
from medmplm.tasks.runner import featurized_rows
from tuning.config import SweepConfig
from tuning.sweep import read_sweep_config
from tuning.tuner import TrialLines
from tuning.trials import (
    DRIVER_RESOURCES,
    grid_cells,
    max_concurrent_trials,
    trial_config,
    trial_name,
    trial_resources,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "tuning" / "configs" / "small.yaml"
SWEEP_PATIENTS = 300


def _sweep(**overrides) -> SweepConfig:
    return load_config(SweepConfig, SMALL, {"prepared_dir": "/data/prepared", **overrides})


def test_small_preset_grid_has_every_cell_once_and_logreg_without_learning_rates():
    sweep = _sweep()
    cells = grid_cells(sweep)
    # 2 tasks x (rnn: 2 ratios x 2 lrs x 2 seeds + logreg: 2 ratios x 2 seeds)
    assert len(cells) == 2 * (8 + 4)
    assert len({trial_name(cell) for cell in cells}) == len(cells)
    assert {cell["lr"] for cell in cells if cell["variant"] == "logreg"} == {0.0}
    assert {cell["lr"] for cell in cells if cell["variant"] == "rnn" and cell["task"] == "medrec"} == {1e-3, 3e-3}
    assert trial_name({"task": "icd", "variant": "gbert+clinicalbert", "train_ratio": 0.25, "lr": 2e-5, "seed": 3}) == (
        "icd-gbert_clinicalbert-r0.25-lr2e-05-s3"
    )


def test_paper_preset_centres_learning_rates_on_the_papers_values():
    sweep = load_config(
        SweepConfig, REPO / "tuning" / "configs" / "table3.yaml", {"prepared_dir": "p", "exports.medmplm": "e"}
    )
    assert [rates[1] for rates in (sweep.learning_rates[t] for t in ("medrec", "readmission", "icd", "ner"))] == [
        5e-5,
        2e-5,
        1e-5,
        3e-5,
    ]
    assert sweep.train_ratios == [0.1, 0.2, 0.4, 0.6, 0.8, 1.0] and sweep.seeds == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": ["medmplm"]}, r"exports\.medmplm: model medmplm starts its code side"),
        ({"models": ["clinicalbert"]}, r"exports\.bert"),
        ({"models": ["nosuchmodel"]}, r"models: 'nosuchmodel' is not a model"),
        ({"tasks": ["nosuchtask"]}, r"tasks: 'nosuchtask' is not a task"),
        ({"tasks": ["ner"]}, r"ner_corpus: required by the ner task"),
        ({"tasks": ["ner"], "ner_corpus": "/nonexistent"}, r"ner_corpus: /nonexistent is not a local directory"),
        ({"train_ratios": [0.0, 1.0]}, r"train_ratios: each must be in \(0, 1\]"),
        ({"seeds": [1, 1]}, r"seeds: expected distinct"),
        ({"learning_rates.medrec": []}, r"learning_rates\.medrec: no learning rates"),
        ({"resources.max_concurrent_trials": 0}, r"resources\.max_concurrent_trials"),
    ],
)
def test_bad_sweep_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _sweep(**overrides)


def test_command_line_keys_keep_the_hyphens_of_export_kinds():
    # As python -m tuning.sweep reads them (mbehrt_tiny.yaml's documented command).
    sweep = read_sweep_config(
        "mbehrt_tiny",
        [
            "prepared_dir=/data/prepared",
            "models=[mbehrt-early]",
            "exports.mbehrt-early=/runs/early/export",
            "finetune.train.max-steps=7",
        ],
    )
    assert sweep.exports["mbehrt-early"] == "/runs/early/export"
    assert sweep.finetune["train"]["max_steps"] == 7


def test_a_trials_line_shows_its_cell_validation_aucs_and_the_sweeps_primary_metric_with_counts_as_integers():
    trial = SimpleNamespace(
        config={"cell": {"task": "next_dx", "variant": "mbehrt-early", "train_ratio": 1.0}, "lr": 1e-3, "seed": 2},
        last_result={"val_auc_micro": 0.73651, "val_auc_macro_codes": 50.0, "val_loss": 0.2, "test_auc_micro": 0.7},
    )
    readmission = SimpleNamespace(
        config={"cell": {"task": "readmission", "variant": "logreg", "train_ratio": 0.5}, "lr": None, "seed": 0},
        last_result={"val_auroc": 0.61234, "val_auprc": 0.2, "val_f1": 0.0},
    )
    lines = []
    # The sweep's own primary metric of a task (here not the default auroc) is the one shown.
    trial_lines = TrialLines(lines.append, {"next_dx": "auc_micro", "readmission": "auprc"})
    trial_lines.on_trial_complete(0, [], trial)
    trial_lines.on_trial_error(0, [], readmission)
    assert lines == [
        "done      next_dx-mbehrt-early-r1-lr0.001-s2  val_auc_macro_codes 50 val_auc_micro 0.7365",
        "error     readmission-logreg-r0.5-s0  val_auprc 0.2000",
    ]


def test_trial_config_is_the_cell_with_the_sweeps_keys():
    sweep = _sweep(**{"models": ["medmplm", "medmplm-scratch", "logreg"], "exports.medmplm": "/runs/export"})
    cell = {"task": "readmission", "variant": "medmplm", "train_ratio": 0.5, "lr": 3e-3, "seed": 1}
    config = trial_config(sweep, "/sweeps/s", cell, "run-a")
    assert (config.finetune.task, config.finetune.model, config.finetune.train_ratio) == ("readmission", "medmplm", 0.5)
    assert (config.train.lr, config.train.seed, config.train.epochs) == (3e-3, 1, 3)
    assert config.model.init_from == "/runs/export"
    assert config.finetune.results_dir == "/sweeps/s/results" and config.run.storage_path == "/sweeps/s/runs"
    assert config.finetune.task_options == {"require_note": False}
    # Checkpoints and early stopping follow the metric that selects learning rates.
    assert (config.finetune.score_metric, config.finetune.score_mode) == ("val_auroc", "max")
    scratch = trial_config(sweep, "/sweeps/s", {**cell, "variant": "medmplm-scratch"}, "run-b")
    assert scratch.finetune.model == "medmplm" and scratch.model.init_from is None
    gpu = _sweep(**{"resources.gpus_per_worker": 0.5, "resources.extra_resources": {"accelerator_type:A10G": 0.001}})
    scaling = trial_config(gpu, "/sweeps/s", {**cell, "variant": "rnn"}, "run-c").scaling
    assert (scaling.use_gpu, scaling.gpus_per_worker, scaling.extra_resources) == (
        True,
        0.5,
        {"accelerator_type:A10G": 0.001},
    )
    with pytest.raises(ConfigError, match="scaling.extra_resources"):
        trial_config(_sweep(**{"resources.extra_resources": {"GPU": 1}}), "/sweeps/s", {**cell, "variant": "rnn"}, "d")


def test_finetune_keys_nested_by_the_command_line_set_one_key_each():
    sweep = _sweep(**{"finetune.train.epochs": 7, "finetune.model.overrides": {"text_num_frozen_layers": 0}})
    config = trial_config(
        sweep, "/s", {"task": "medrec", "variant": "rnn", "train_ratio": 1.0, "lr": 1e-3, "seed": 0}, "r"
    )
    # The preset's other train keys stay (patience 2, batch 16), the fine-tuning defaults too (epoch-end checkpoints).
    assert (config.train.epochs, config.train.early_stopping_patience, config.train.global_batch_size) == (7, 2, 16)
    assert config.train.checkpoint_every_steps is None and config.train.keep_checkpoints == 1
    assert config.model.overrides == {"text_num_frozen_layers": 0} and config.model.preset == "tiny"
    by_loss = _sweep(**{"finetune.finetune.score_metric": "val_loss", "finetune.finetune.score_mode": "min"})
    cell = {"task": "readmission", "variant": "rnn", "train_ratio": 1.0, "lr": 1e-3, "seed": 0}
    assert trial_config(by_loss, "/s", cell, "r").finetune.score_metric == "val_loss"


def test_only_validated_reports_reach_tune():
    from tuning.trials import ValidatedReports

    forwarded = []
    callback = ValidatedReports.__new__(ValidatedReports)
    callback._training_actor_item_queue = type("Queue", (), {"put": lambda self, item: forwarded.append(item)})()
    callback.after_report(None, [{"val_auroc": -1e9, "validated": 0}], None)
    callback.after_report(None, [{"val_auroc": 0.7, "validated": 1, "epoch": 1}], None)
    assert forwarded == [{"val_auroc": 0.7, "validated": 1, "epoch": 1}]


def test_trial_resources_and_concurrency_never_oversubscribe():
    sweep = _sweep()
    rnn = {"task": "medrec", "variant": "rnn", "train_ratio": 1.0, "lr": 1e-3, "seed": 0}
    assert trial_resources(sweep, rnn) == DRIVER_RESOURCES and DRIVER_RESOURCES["CPU"] == 0
    assert trial_resources(sweep, {**rnn, "variant": "logreg"}) == {"CPU": 1.0}
    # One CPU stays free for Ray Data's tasks (DATA_TASKS_CPU); a local sweep starts Ray with one logical CPU more.
    assert max_concurrent_trials(sweep, {"CPU": 3.0}) == 2 and max_concurrent_trials(sweep, {"CPU": 2.0}) == 1
    two_core_workers = _sweep(**{"resources.cpus_per_worker": 2, "resources.workers_per_trial": 2})
    assert max_concurrent_trials(two_core_workers, {"CPU": 17.0}) == 4
    assert max_concurrent_trials(two_core_workers, {"CPU": 16.0}) == 3
    quarter_gpus = _sweep(**{"resources.gpus_per_worker": 0.25})
    assert max_concurrent_trials(quarter_gpus, {"CPU": 16.0, "GPU": 1.0}) == 4
    assert max_concurrent_trials(_sweep(**{"resources.max_concurrent_trials": 3}), {"CPU": 64.0}) == 3
    assert max_concurrent_trials(two_core_workers, {"CPU": 1.0}) == 1


def test_experiments_are_one_grid_or_one_group_per_task_model_and_ratio():
    from ray import tune

    from tuning.tuner import experiments

    grid = experiments(_sweep(), "/sweeps/s")
    assert len(grid) == 1 and grid[0].path == "/sweeps/s" and grid[0].metric is None
    optuna = experiments(_sweep(**{"search.algorithm": "optuna", "search.samples": 3}), "/sweeps/s")
    assert len(optuna) == 2 * 2 * 2
    rnn = next(e for e in optuna if e.name == "medrec-rnn-r0.5")
    assert rnn.metric == "val_auc_micro" and rnn.num_samples == 3 * 2
    assert (
        isinstance(rnn.param_space["lr"], tune.search.sample.Float) and rnn.path == "/sweeps/s/groups/medrec-rnn-r0.5"
    )
    logreg = next(e for e in optuna if e.name == "readmission-logreg-r1")
    assert logreg.param_space["seed"] == {"grid_search": [0, 1]} and logreg.param_space["cell"]["lr"] == 0.0
    asha = experiments(_sweep(**{"search.scheduler": "asha"}), "/sweeps/s")
    assert next(e for e in asha if e.name == "readmission-rnn-r1").param_space["lr"] == {"grid_search": [1e-3, 3e-3]}


def test_an_interrupted_sweep_counts_the_trials_tune_never_created_as_unfinished():
    from tuning.tuner import SweepOutcome, experiments, is_complete

    # small.yaml: 2 tasks x (rnn: 2 ratios x 2 lrs x 2 seeds + logreg: 2 ratios x 2 seeds) = 24 trials.
    (grid,) = experiments(_sweep(), "/sweeps/s")
    assert grid.expected_trials == 24
    groups = experiments(_sweep(**{"search.algorithm": "optuna", "search.samples": 3}), "/sweeps/s")
    assert sum(e.expected_trials for e in groups) == 2 * 2 * (3 * 2 + 2)
    # Tune creates a grid's trials as slots free up: interrupted after 10, its ResultGrid holds 11 (one running).
    interrupted = SimpleNamespace(num_terminated=10, num_errors=0)
    assert not is_complete(interrupted, grid)
    outcome = SweepOutcome([interrupted], grid.expected_trials, concurrency=2, seconds=1.0)
    assert (outcome.trials, outcome.errors, outcome.unfinished) == (24, 0, 14)
    finished = SimpleNamespace(num_terminated=23, num_errors=1)
    assert is_complete(finished, grid) and SweepOutcome([finished], 24, 2, 1.0).unfinished == 0


def test_featurized_rows_follow_the_examples_order_and_refuse_missing_ones():
    featurized = pa.table({"hadm_id": [10, 11, 12, 13], "input_ids": [[1, 1], [2, 2], [3, 3], [4, 4]]})
    examples = pa.table({"hadm_id": [13, 10, 12]})
    rows = featurized_rows(featurized, examples, "train")
    assert rows.column_names == ["input_ids"] and rows.column("input_ids").to_pylist() == [[4, 4], [1, 1], [3, 3]]
    with pytest.raises(ValueError, match="train: 1 examples are missing"):
        featurized_rows(featurized, pa.table({"hadm_id": [10, 99]}), "train")


# ------------------------------------------------------------------------------------------------ end to end (slow)


@pytest.fixture(scope="module")
def prepared_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared directory of 300 synthetic patients (generated and prepared in a subprocess: its own local Ray)."""
    root = tmp_path_factory.mktemp("sweep-data")
    for command in (
        ["-m", "medmplm.synthetic", "--out", str(root / "mimic"), "--patients", str(SWEEP_PATIENTS), "--seed", "0"],
        ["-m", "medmplm.prepare", "--mimic", str(root / "mimic"), "--out", str(root / "prepared")],
    ):
        subprocess.run([sys.executable, *command], check=True, capture_output=True, cwd=root)
    return root / "prepared"


def _sweep_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "tuning.sweep", *arguments]


def _records(sweep_dir: Path) -> dict[str, float]:
    """Result record file name -> modification time."""
    return {p.name: p.stat().st_mtime for p in (sweep_dir / "results").glob("*.parquet")}


def _trial_results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Tune trial directory name -> the results Tune recorded for it."""
    return {
        path.parent.name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in sweep_dir.glob("sweep_trial_*/result.json")
    }


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_small_sweep_end_to_end_reports_every_epoch_and_writes_records_and_report(prepared_300, tmp_path):
    out = subprocess.run(
        _sweep_command(
            "--config", str(SMALL), f"prepared_dir={prepared_300}", f"storage_path={tmp_path}", "name=small",
            "finetune.train.epochs=2",
            # One learning rate per task (16 trials, not 24): choosing among several is tested in test_report; this
            # test is about every trial running, reporting and landing in the records and the report.
            "learning_rates.readmission=[3.0e-3]", "learning_rates.medrec=[3.0e-3]",
        ),
        capture_output=True, text=True, cwd=tmp_path, timeout=1500,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = tmp_path / "small"
    assert "16 trials (0 errored, 0 unfinished)" in out.stdout and "up to 2 at once" in out.stdout
    # Tune's own experiment table and result paths are --verbose output; the sweep prints a line per trial.
    assert "Configuration for experiment" not in out.stdout and "View detailed results" not in out.stdout
    # The raylet's "N PYTHON worker processes have been started" warnings too (medmplm.console).
    assert "worker processes have been started" not in out.stdout + out.stderr
    records = _records(sweep_dir)
    assert len(records) == 16
    cells = Counter(name.rsplit("-", 1)[0] for name in records)
    assert set(cells.values()) == {1} and len(cells) == 16
    trials = _trial_results(sweep_dir)
    assert len(trials) == 16
    for name, results in trials.items():
        final = results[-1]
        primary = "val_auroc" if "readmission" in name else "val_auc_micro"
        assert primary in final and f"test_{primary[4:]}" in final
        if "variant_rnn" in name:
            # One result per validated epoch (Ray Train's TuneReportCallback), then the record's metrics.
            epochs = [r for r in results[:-1] if "epoch" in r]
            assert len(epochs) >= 1 and all(primary in r for r in epochs), name
        else:
            assert len(results) == 1, name

    report = subprocess.run(
        # A relative sweep directory, as a user types it.
        [sys.executable, "-m", "tuning.report", "small", "--out", str(tmp_path / "report")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "Ray Tune: 16 trials (16 terminated)" in report.stdout
    table = (tmp_path / "report" / "table3.md").read_text()
    assert "## readmission" in table and "## medrec" in table and "rnn" in table and "logreg" in table
    for task in ("readmission", "medrec"):
        import matplotlib.image

        pixels = matplotlib.image.imread(tmp_path / "report" / f"ratio_curves_{task}.png")
        assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 2


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sweep_restored_after_its_driver_is_killed_runs_every_trial_once(prepared_300, tmp_path):
    arguments = (
        "--config", str(SMALL), f"prepared_dir={prepared_300}", f"storage_path={tmp_path}", "name=killed",
        "tasks=[readmission]", "train_ratios=[1.0]", "finetune.train.epochs=2",
    )  # fmt: skip
    sweep_dir = tmp_path / "killed"
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(_sweep_command(*arguments), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while len(_records(sweep_dir)) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        # The driver and the local Ray it started (same process group) die at once, as on a lost head node.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    before_records = _records(sweep_dir)
    finished_before = {name: results for name, results in _trial_results(sweep_dir).items() if results}
    assert 2 <= len(before_records) < 6

    out = subprocess.run(_sweep_command("--resume", str(sweep_dir)), capture_output=True, text=True, cwd=tmp_path,
                         timeout=1500)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "(resumed)" in out.stdout
    records = _records(sweep_dir)
    # 1 task x 1 ratio x (rnn: 2 lrs x 2 seeds + logreg: 2 seeds)
    assert len(records) == 6
    assert set(Counter(name.rsplit("-", 1)[0] for name in records).values()) == {1}
    # Records written before the kill are untouched, and Tune did not run their trials again.
    assert {name: records[name] for name in before_records} == before_records
    after = _trial_results(sweep_dir)
    for name, results in finished_before.items():
        if "test_auroc" in results[-1]:
            assert after[name] == results, name
    assert len(after) == 6


@pytest.mark.slow
def test_shared_featurised_examples_give_the_run_it_would_have_without_them(synthetic_prepared, ray_local, tmp_path):
    from medmplm.results import gather_results
    from medmplm.tasks import build_task
    from medmplm.tasks.config import FinetuneConfig
    from medmplm.tasks.runner import build_backbones, featurize_all_examples, run_finetune

    def config(name: str) -> FinetuneConfig:
        return load_config(
            FinetuneConfig,
            None,
            {
                "data.prepared_dir": str(synthetic_prepared),
                "finetune.task": "readmission",
                "finetune.model": "rnn",
                "finetune.train_ratio": 0.5,
                "finetune.results_dir": str(tmp_path / "results"),
                "train.epochs": 1,
                "train.global_batch_size": 8,
                "train.micro_batch_size": 8,
                "run.storage_path": str(tmp_path / "runs"),
                "run.name": name,
            },
        )

    shared = config("shared")
    key, blocks = featurize_all_examples(
        build_task("readmission"), str(synthetic_prepared), build_backbones(shared, str(synthetic_prepared)), 64
    )
    run_finetune(shared, str(synthetic_prepared), "shared", features={key: blocks})
    run_finetune(config("own"), str(synthetic_prepared), "own")
    results = gather_results(tmp_path / "results").pivot_table(
        index=["split", "metric"], columns="run_id", values="value"
    )
    assert len(results) > 5
    np.testing.assert_array_equal(results["shared"].to_numpy(), results["own"].to_numpy())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_optuna_learning_rates_with_asha_run_every_seed_of_each_proposal(prepared_300, ray_local, tmp_path):
    # ray_local: another Ray runs on this machine, as on CI. A trial ASHA stops must still give back its Ray Train
    # run's placement group, or the next trial waits forever for its CPU (medmplm.console's
    # start_ray_for_train_runs_in_actors).
    out = subprocess.run(
        _sweep_command(
            "--config", str(SMALL), f"prepared_dir={prepared_300}", f"storage_path={tmp_path}", "name=optuna",
            "tasks=[readmission]", "models=[rnn]", "train_ratios=[1.0]", "finetune.train.epochs=3",
            "search.algorithm=optuna", "search.samples=2", "search.scheduler=asha", "search.grace_period=1",
        ),
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    group = tmp_path / "optuna" / "groups" / "readmission-rnn-r1"
    trials = _trial_results(group)
    assert len(trials) == 2 * 2
    configs = [json.loads((group / name / "params.json").read_text()) for name in trials]
    # Two proposed learning rates, each run with both seeds (Repeater's index), inside the task's grid range.
    by_lr = Counter(config["lr"] for config in configs)
    assert len(by_lr) == 2 and set(by_lr.values()) == {2}
    assert all(1e-3 <= lr <= 3e-3 for lr in by_lr)
    assert sorted(config["__trial_index__"] for config in configs) == [0, 0, 1, 1]
    # A trial ASHA stopped early has no record; every other one has exactly one.
    assert 2 <= len(_records(tmp_path / "optuna")) <= 4


def test_trial_slots_admit_one_holder_at_a_time_and_reclaim_a_dead_holders_slot(ray_local):
    import ray

    from tuning.slots import start_slots, trial_slot

    slots = start_slots("test-sweep-slots", 1)

    @ray.remote(num_cpus=0)
    class Trial:
        def __init__(self) -> None:
            self.log = []

        def train(self, hold: bool) -> None:
            with trial_slot("test-sweep-slots"):
                self.log.append("in")
                while hold:
                    time.sleep(0.1)
            self.log.append("out")

        def events(self) -> list[str]:
            return self.log

    try:
        holder, waiter = Trial.options(max_concurrency=2).remote(), Trial.remote()
        holder.train.remote(hold=True)
        while ray.get(slots.held.remote()) == 0:
            time.sleep(0.1)
        waiting = waiter.train.remote(hold=False)
        ready, _ = ray.wait([waiting], timeout=3)
        assert not ready, "a second trial got the only slot while the first held it"
        ray.kill(holder)  # a trial stopped by ASHA or killed by an error: its slot comes back
        ray.get(waiting, timeout=60)
        assert ray.get(waiter.events.remote()) == ["in", "out"]
        assert ray.get(slots.held.remote()) == 0
    finally:
        ray.kill(slots)
