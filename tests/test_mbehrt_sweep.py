"""M-BEHRT's closing experiment as a sweep (``tuning/configs/mbehrt_tiny.yaml``, no Ray): its grid, each model's
export, and ``next_dx`` in the report's tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medmplm.config import ConfigError, load_config
from medmplm.report.tables import select_learning_rates, table3, table3_markdown
from medmplm.results import RESULT_SCHEMA, setting_of
from tuning.config import SweepConfig
from tuning.trials import grid_cells, trial_config

CONFIG = Path(__file__).resolve().parents[1] / "tuning" / "configs" / "mbehrt_tiny.yaml"
EXPORT_KINDS = ("medmplm", "bert", "mbehrt-early", "mbehrt-late", "mbehrt-shared", "mbehrt-tabular")


def sweep(**overrides) -> SweepConfig:
    exports = {f"exports.{kind}": f"/runs/{kind}/export" for kind in EXPORT_KINDS}
    return load_config(SweepConfig, str(CONFIG), {"prepared_dir": "/data/prepared", **exports, **overrides}).validate()


def test_the_closing_experiment_reads_each_models_own_export():
    config = sweep()
    cells = grid_cells(config)
    assert len(cells) == 2 * 6 * 3 and {cell["task"] for cell in cells} == {"next_dx", "readmission"}
    keys = {}
    for variant in config.models:
        cell = {"task": "next_dx", "variant": variant, "train_ratio": 1.0, "lr": 1e-3, "seed": 0}
        trial = trial_config(config, "/sweeps/s", cell, "run")
        keys[variant] = (trial.model.init_from, trial.finetune.init_code, trial.finetune.init_text)
        assert trial.finetune.task_options == {"top_k": 50, "max_history": 4}
        assert (trial.finetune.score_metric, trial.finetune.score_mode) == ("val_auc_micro", "max")
    assert keys == {
        "medmplm": ("/runs/medmplm/export", None, None),
        "mbehrt-early": (None, "/runs/mbehrt-early/export", None),
        "mbehrt-late": (None, "/runs/mbehrt-late/export", None),
        "mbehrt-shared": (None, "/runs/mbehrt-shared/export", None),
        "mbehrt-tabular": (None, "/runs/mbehrt-tabular/export", None),
        "mbehrt-text": (None, None, "/runs/bert/export"),
    }
    with pytest.raises(ConfigError, match="^exports.mbehrt-late: model mbehrt-late starts its code side"):
        sweep(**{"exports.mbehrt-late": None})


def next_dx_rows(model: str, seed: int, val_auc: float, test: dict[str, float]) -> list[dict]:
    setting, setting_json = setting_of({"task": "next_dx", "model": model, "lr": 1e-3})
    common = {
        "run_id": f"next_dx-{model}-{seed}",
        "task": "next_dx",
        "model": model,
        "init": "export",
        "pretrained": True,
        "train_ratio": 1.0,
        "seed": seed,
        "setting": setting,
        "setting_json": setting_json,
        "synthetic_data": True,
        "lr": 1e-3,
        "epochs": 4,
        "num_train": 100,
        "num_examples": 20,
        "details": "{}",
    }
    rows = [{**common, "split": "val", "metric": "auc_micro", "value": val_auc}]
    return rows + [{**common, "split": "test", "metric": metric, "value": value} for metric, value in test.items()]


def test_next_dx_in_the_report_tables():
    test = {"ap_micro": 0.3, "prauc": 0.4, "f1_micro": 0.2, "auc_micro": 0.7, "p_at_5": 0.5}
    results = pd.DataFrame(
        next_dx_rows("mbehrt-shared", 0, 0.7, test)
        + next_dx_rows("mbehrt-shared", 1, 0.72, {**test, "ap_micro": 0.5})
        + next_dx_rows("medmplm", 0, 0.6, {**test, "ap_micro": 0.2}),
        columns=RESULT_SCHEMA.names,
    )
    table = table3(results, select_learning_rates(results))
    shared = table[table["model"] == "mbehrt-shared"].iloc[0]
    assert shared["AP mean"] == pytest.approx(0.4) and shared["seeds"] == 2 and shared["primary"] == "auc_micro"
    assert {"AP mean", "PR-AUC mean", "F1 mean", "AUC mean"} <= set(table.columns) and "p_at_5 mean" not in table
    markdown = table3_markdown(table)
    assert "## next_dx (primary: auc_micro; not in the paper: BEHRT's next-visit prediction" in markdown
    assert "| mbehrt-shared | 1 | 0.001 | 2 | **0.400 (0.141)** |" in markdown
