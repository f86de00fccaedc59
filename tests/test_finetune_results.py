"""Result records: one file per run, gathered into one tidy table."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmplm.results import (
    SCRATCH,
    ResultRecord,
    gather_results,
    new_run_id,
    model_differences,
    pretraining_differences,
    recorded_settings,
    setting_of,
    summary_table,
    write_result,
)
from medmplm.config import load_config
from medmplm.data.schema import MANIFEST_FILE
from medmplm.tasks.data_source import is_synthetic
from medmplm.tasks.config import FinetuneConfig
from medmplm.tasks.runner import run_setting
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


def _record(model: str, init: str, seed: int, auroc: float, ratio: float = 0.1, lr: float = 5e-4) -> ResultRecord:
    setting, setting_json = setting_of({"finetune.model": model, "model.init_from": init, "train.lr": lr})
    return ResultRecord(
        run_id=new_run_id("readmission", model),
        task="readmission",
        model=model,
        init=init,
        train_ratio=ratio,
        seed=seed,
        setting=setting,
        setting_json=setting_json,
        synthetic_data=True,
        lr=lr,
        epochs=3,
        num_train=120,
        metrics={"val": {"auroc": auroc + 0.01, "f1": 0.2}, "test": {"auroc": auroc, "f1": 0.1}},
        num_examples={"val": 40, "test": 41},
        details={"threshold": 0.5},
    )


def test_write_and_gather(tmp_path):
    records = [
        _record("medmplm", "/ckpt", 0, 0.70),
        _record("medmplm", "/ckpt", 1, 0.74),
        _record("logreg", SCRATCH, 0, 0.6),
    ]
    for record in records:
        write_result(tmp_path, record)
    assert not list(tmp_path.glob(".*")), "no temporary file may be left behind"
    df = gather_results(tmp_path)
    assert len(df) == 3 * 2 * 2
    row = df[(df.run_id == records[1].run_id) & (df.split == "test") & (df.metric == "auroc")].iloc[0]
    assert row.value == pytest.approx(0.74) and row.pretrained and row.num_examples == 41 and row.seed == 1
    assert row.setting == records[1].setting and row.setting_json == records[1].setting_json and row.synthetic_data
    assert not df[df.model == "logreg"].pretrained.any()

    table = summary_table(df, split="test", metrics=["auroc"])
    assert table.loc[("readmission", "medmplm", "/ckpt", 0.1, records[0].setting), "auroc"] == "0.720 ± 0.028 (2)"
    assert table.loc[("readmission", "logreg", SCRATCH, 0.1, records[2].setting), "auroc"] == "0.600 (1)"
    assert recorded_settings(tmp_path) == {(records[0].setting, 0), (records[0].setting, 1), (records[2].setting, 0)}


def test_summary_averages_seeds_of_one_setting_only(tmp_path):
    assert recorded_settings(tmp_path) == set()
    same_setting = [_record("medmplm", "/ckpt", seed, auroc) for seed, auroc in ((0, 0.70), (1, 0.74))]
    other_lr = _record("medmplm", "/ckpt", 0, 0.50, lr=1e-3)
    assert same_setting[0].setting == same_setting[1].setting != other_lr.setting
    for record in (*same_setting, other_lr):
        write_result(tmp_path, record)
    table = summary_table(gather_results(tmp_path), split="test", metrics=["auroc"])
    assert len(table) == 2
    assert table.loc[("readmission", "medmplm", "/ckpt", 0.1, same_setting[0].setting), "auroc"] == "0.720 ± 0.028 (2)"
    assert table.loc[("readmission", "medmplm", "/ckpt", 0.1, other_lr.setting), "auroc"] == "0.500 (1)"


def test_run_ids_are_unique_and_never_overwritten(tmp_path):
    record = _record("medmplm-code+medmplm-text", SCRATCH, 0, 0.5)
    assert "medmplm-code_medmplm-text" in record.run_id
    assert new_run_id("icd", "logreg") != new_run_id("icd", "logreg")
    write_result(tmp_path, record)
    with pytest.raises(FileExistsError, match=record.run_id):
        write_result(tmp_path, record)


def test_gather_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result files"):
        gather_results(tmp_path)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "stray.parquet")
    with pytest.raises(ValueError, match="stray.parquet"):
        gather_results(tmp_path)


def test_metrics_without_example_count_is_an_error():
    record = _record("logreg", SCRATCH, 0, 0.5)
    record.num_examples = {"val": 3}
    with pytest.raises(ValueError, match="split 'test'"):
        record.to_table()


def _grid_config(**overrides):
    """A config as the benchmark grid builds one (short flags, dotted overrides)."""
    base = {
        "data.prepared_dir": "runs/grid/prepared",
        "finetune.task": "readmission",
        "finetune.model": "medmplm",
        "finetune.train_ratio": 0.1,
        "finetune.results_dir": "runs/grid/results",
        "train.seed": 0,
        "run.storage_path": "runs/grid/runs",
        "model.init_from": "runs/grid/export",
    }
    return load_config(FinetuneConfig, None, {**base, **overrides})


def _setting(config) -> str:
    return run_setting(config, config.data.prepared_dir)[0]


def test_run_setting_is_everything_but_the_seed_and_bookkeeping():
    reference = _setting(_grid_config())
    named = _grid_config()
    named.run.name = "readmission-medmplm-r0.1-s0-other"
    # Neither the seed nor where the run goes or how its work is spread changes the setting.
    for config in (
        named,
        _grid_config(**{"train.seed": 3}),
        _grid_config(**{"run.storage_path": "elsewhere", "finetune.results_dir": "other/results"}),
        _grid_config(**{"scaling.num_workers": 2, "train.micro_batch_size": 16, "logging.tensorboard": False}),
        _grid_config(**{"data.prepared_dir": "runs/grid/prepared/"}),
        # An option given at its default value is the same setting.
        _grid_config(**{"finetune.task_options.require_note": False}),
    ):
        assert _setting(config) == reference
    # What the run computes does.
    for changed in (
        {"train.lr": 1e-3},
        {"train.epochs": 5},
        {"model.init_from": "runs/other/export"},
        {"data.prepared_dir": "runs/other/prepared"},
        {"finetune.task_options.require_note": True},
        {"finetune.head_dropout": 0.2},
    ):
        assert _setting(_grid_config(**changed)) != reference, changed
    setting, setting_json = run_setting(_grid_config(), "runs/grid/prepared")
    assert json.loads(setting_json)["train.lr"] == 5e-4 and "train.seed" not in json.loads(setting_json)
    assert setting == setting_of(json.loads(setting_json))[0]


def test_logistic_regression_setting_ignores_the_training_loop():
    logreg = {"finetune.model": "logreg", "model.init_from": None}
    reference = _setting(_grid_config(**logreg))
    assert _setting(_grid_config(**logreg, **{"train.lr": 1e-3, "train.epochs": 3})) == reference
    assert _setting(_grid_config(**logreg, **{"finetune.logreg_c": 0.1})) != reference
    assert _setting(_grid_config(**{"finetune.logreg_c": 0.1})) == _setting(_grid_config())


def test_synthetic_data_is_read_from_the_manifest(tmp_path):
    prepared = write_finetune_prepared_dir(tmp_path, patients=(2, 1, 1))
    assert not is_synthetic(str(prepared))
    manifest = json.loads((prepared / MANIFEST_FILE).read_text())
    (prepared / MANIFEST_FILE).write_text(json.dumps({**manifest, "synthetic": True}))
    assert is_synthetic(str(prepared))


def test_pretraining_differences_pair_seeds_and_carry_a_t_interval(tmp_path):
    scratch = {0: 0.60, 1: 0.50, 2: 0.70}
    for seed, value in scratch.items():
        write_result(tmp_path, _record("medmplm", SCRATCH, seed, value))
        # Pretraining adds 0.05, 0.07, 0.03 on the same seeds: a mean of 0.05 with a sample std of 0.02.
        write_result(tmp_path, _record("medmplm", "runs/p/export", seed, value + (0.05, 0.07, 0.03)[seed]))
    write_result(tmp_path, _record("logreg", SCRATCH, 0, 0.7))
    (row,) = pretraining_differences(gather_results(tmp_path), metrics=["auroc"]).to_dict("records")
    assert (row["model"], row["seeds"]) == ("medmplm", 3)
    assert row["difference"] == pytest.approx(0.05)
    half = 4.302653 * 0.02 / 3**0.5  # t(0.975, 2 degrees of freedom) x std / sqrt(n)
    assert (row["low"], row["high"]) == pytest.approx((0.05 - half, 0.05 + half), rel=1e-5)
    assert row["scratch"] == pytest.approx(0.6)

    write_result(tmp_path, _record("medmplm", SCRATCH, 0, 0.9, lr=1e-3))
    with pytest.raises(ValueError, match="several settings"):
        pretraining_differences(gather_results(tmp_path))


def test_model_differences_pair_each_model_with_the_reference_by_seed(tmp_path):
    reference = {0: 0.60, 1: 0.50, 2: 0.70}
    for seed, value in reference.items():
        write_result(tmp_path, _record("logreg", SCRATCH, seed, value))
        write_result(tmp_path, _record("medmplm", "runs/p/export", seed, value + (0.05, 0.07, 0.03)[seed]))
        write_result(tmp_path, _record("medmplm", SCRATCH, seed, value - 0.1))
    # Seed 3 has no logreg run: it is not paired.
    write_result(tmp_path, _record("medmplm", "runs/p/export", 3, 0.99))
    rows = {
        row["model"]: row
        for row in model_differences(gather_results(tmp_path), "logreg", metrics=["auroc"]).to_dict("records")
    }
    assert set(rows) == {"medmplm", "medmplm (scratch)"}
    pretrained = rows["medmplm"]
    assert (pretrained["seeds"], pretrained["reference"]) == (3, "logreg")
    assert pretrained["difference"] == pytest.approx(0.05)
    assert pretrained["value"] == pytest.approx(0.65) and pretrained["reference_value"] == pytest.approx(0.6)
    half = 4.302653 * 0.02 / 3**0.5
    assert (pretrained["low"], pretrained["high"]) == pytest.approx((0.05 - half, 0.05 + half), rel=1e-5)
    assert rows["medmplm (scratch)"]["difference"] == pytest.approx(-0.1)
