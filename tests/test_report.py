"""The sweep report (no Ray): lr chosen on validation, Table III means and stds, paired differences, curves, CLI."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import stats

from medmplm.report.curves import ratio_curve
from medmplm.report.tables import (
    paired_differences,
    paired_differences_markdown,
    select_learning_rates,
    table3,
    table3_markdown,
)
from medmplm.results import RESULT_SCHEMA, ResultRecord, setting_of, write_result

REPO = Path(__file__).resolve().parents[1]

MEDREC_METRICS = ("jaccard", "prauc", "f1", "hamming_accuracy", "auc_micro", "accuracy")


def run_rows(task, model, pretrained, ratio, lr, seed, val, test, epochs=5, synthetic=True) -> list[dict]:
    """The result rows of one run: ``val`` and ``test`` map metric -> value."""
    setting, setting_json = setting_of({"task": task, "model": model, "pretrained": pretrained, "ratio": ratio})
    setting, setting_json = setting_of({"base": setting_json, "lr": lr, "epochs": epochs})
    common = {
        "run_id": f"{task}-{model}-{pretrained}-{ratio}-{lr}-{seed}-{epochs}",
        "task": task,
        "model": model,
        "init": "export" if pretrained else "scratch",
        "pretrained": pretrained,
        "train_ratio": ratio,
        "seed": seed,
        "setting": setting,
        "setting_json": setting_json,
        "synthetic_data": synthetic,
        "lr": lr,
        "epochs": epochs,
        "num_train": 100,
        "num_examples": 20,
        "details": "{}",
    }
    return [
        {**common, "split": split, "metric": metric, "value": value}
        for split, values in (("val", val), ("test", test))
        for metric, value in values.items()
    ]


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RESULT_SCHEMA.names)


def medrec_run(model, pretrained, ratio, lr, seed, val_auc, test_values: dict) -> list[dict]:
    return run_rows("medrec", model, pretrained, ratio, lr, seed, {"auc_micro": val_auc}, test_values)


def test_table3_means_and_stds_over_seeds() -> None:
    tests = [{metric: 0.1 * seed + 0.01 * i for i, metric in enumerate(MEDREC_METRICS)} for seed in (1, 2, 4)]
    rows = [
        r for seed, values in zip((1, 2, 4), tests) for r in medrec_run("medmplm", True, 0.1, 1e-4, seed, 0.8, values)
    ]
    results = frame(rows)
    table = table3(results, select_learning_rates(results))
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["variant"], row["lr"], row["seeds"], row["primary"]) == ("medmplm", 1e-4, 3, "auc_micro")
    for column, metric in [("Jaccard", "jaccard"), ("PR-AUC", "prauc"), ("F1", "f1"), ("Accuracy", "hamming_accuracy")]:
        values = [t[metric] for t in tests]
        assert row[f"{column} mean"] == pytest.approx(statistics.mean(values))
        assert row[f"{column} std"] == pytest.approx(statistics.stdev(values))
    # Table III's medrec accuracy is per-label accuracy, and subset accuracy appears in no column.
    assert row["Accuracy mean"] == pytest.approx(statistics.mean(t["hamming_accuracy"] for t in tests))
    assert not any(name.startswith("accuracy") for name in table.columns)


def test_learning_rate_is_chosen_on_validation_never_on_test() -> None:
    rows = []
    for seed in (0, 1):
        # lr 1e-3 is best on validation and worst on test.
        rows += run_rows("readmission", "medmplm", True, 0.5, 1e-3, seed, {"auroc": 0.80 + seed / 100}, {"auroc": 0.55})
        rows += run_rows("readmission", "medmplm", True, 0.5, 1e-4, seed, {"auroc": 0.70}, {"auroc": 0.95})
        rows += run_rows("readmission", "medmplm", True, 0.5, 1e-5, seed, {"auroc": float("nan")}, {"auroc": 0.99})
    results = frame(rows)
    selection = select_learning_rates(results)
    assert len(selection) == 1
    chosen = selection.iloc[0]
    assert chosen["lr"] == 1e-3
    assert chosen["val_mean"] == pytest.approx(0.805)
    # The NaN-only lr was skipped, not compared.
    assert (chosen["seeds"], chosen["candidates"]) == (2, 2)
    row = table3(results, selection).iloc[0]
    assert row["lr"] == 1e-3
    assert row["AUC mean"] == pytest.approx(0.55)


def test_a_tie_goes_to_the_smaller_learning_rate() -> None:
    rows = [r for lr in (1e-3, 3e-4) for r in medrec_run("medmplm", True, 1.0, lr, 0, 0.7, {"auc_micro": lr})]
    assert select_learning_rates(frame(rows))["lr"].tolist() == [3e-4]


def test_several_settings_at_one_learning_rate_are_an_error() -> None:
    rows = []
    for epochs in (5, 10):
        rows += run_rows("icd", "medmplm", True, 0.1, 1e-4, 0, {"auc_micro": 0.9}, {"auc_micro": 0.9}, epochs=epochs)
    settings = sorted(set(r["setting"] for r in rows))
    with pytest.raises(ValueError, match=rf"lr=0.0001: settings {settings[0]}, {settings[1]}"):
        select_learning_rates(frame(rows))


def test_primary_metric_override_and_a_missing_one() -> None:
    rows = []
    for lr, val in ((1e-4, {"auroc": 0.9, "auprc": 0.2}), (1e-3, {"auroc": 0.6, "auprc": 0.5})):
        rows += run_rows("readmission", "medmplm", True, 1.0, lr, 0, val, {"auroc": 0.7, "auprc": 0.4})
    results = frame(rows)
    assert select_learning_rates(results)["lr"].tolist() == [1e-4]
    selection = select_learning_rates(results, {"readmission": "auprc"})
    assert selection["lr"].tolist() == [1e-3]
    # A primary metric that is not a Table III column gets a column of its own.
    assert table3(results, selection).iloc[0]["auprc mean"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"no validation rp80 for task readmission .*'auprc', 'auroc'"):
        select_learning_rates(results, {"readmission": "rp80"})


def paired_results() -> tuple[pd.DataFrame, list[float]]:
    """medmplm pretrained (best lr 1e-4) and from scratch (best lr 1e-3) at ratio 0.1, seeds 0-2; the differences."""
    pretrained = {0: 0.80, 1: 0.84, 2: 0.79}
    scratch = {0: 0.70, 1: 0.77, 2: 0.74}
    rows = []
    for seed in pretrained:
        rows += medrec_run("medmplm", True, 0.1, 1e-4, seed, 0.9, {"auc_micro": pretrained[seed]})
        rows += medrec_run("medmplm", True, 0.1, 1e-3, seed, 0.5, {"auc_micro": 0.99})
        rows += medrec_run("medmplm", False, 0.1, 1e-3, seed, 0.8, {"auc_micro": scratch[seed]})
        rows += medrec_run("medmplm", False, 0.1, 1e-4, seed, 0.6, {"auc_micro": 0.99})
    return frame(rows), [pretrained[s] - scratch[s] for s in pretrained]


def test_paired_differences_mean_and_t_interval() -> None:
    results, differences = paired_results()
    out = paired_differences(results, select_learning_rates(results))
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["metric"], row["column"], row["pairs"]) == ("auc_micro", "AUC", 3)
    assert (row["pretrained_lr"], row["scratch_lr"]) == (1e-4, 1e-3)
    mean = statistics.mean(differences)
    half = stats.t.ppf(0.975, df=2) * statistics.stdev(differences) / math.sqrt(3)
    assert row["difference"] == pytest.approx(mean)
    assert row["pretrained"] - row["scratch"] == pytest.approx(mean)
    assert row["low"] < mean < row["high"]
    assert (row["low"], row["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    text = paired_differences_markdown(out)
    assert f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] (95%)" in text
    assert "test metrics never choose" in text


def test_one_pair_has_no_interval_and_an_unpaired_model_none() -> None:
    rows = medrec_run("medmplm", True, 0.1, 1e-4, 0, 0.9, {"auc_micro": 0.8})
    rows += medrec_run("medmplm", False, 0.1, 1e-4, 0, 0.9, {"auc_micro": 0.7})
    rows += medrec_run("gbert", True, 0.1, 1e-4, 0, 0.9, {"auc_micro": 0.7})
    results = frame(rows)
    out = paired_differences(results, select_learning_rates(results))
    assert out["model"].tolist() == ["medmplm"]
    assert out.iloc[0]["difference"] == pytest.approx(0.1)
    assert math.isnan(out.iloc[0]["low"]) and math.isnan(out.iloc[0]["high"])
    assert "nothing to pair" in paired_differences_markdown(out.iloc[0:0])


def test_markdown_bolds_the_best_mean_per_ratio_and_column() -> None:
    rows = []
    for seed in (0, 1):
        rows += medrec_run("medmplm", True, 0.1, 1e-4, seed, 0.9, {"jaccard": 0.40 + seed / 100, "auc_micro": 0.80})
        rows += medrec_run("medmplm", False, 0.1, 1e-4, seed, 0.9, {"jaccard": 0.50, "auc_micro": 0.70 + seed / 100})
        rows += medrec_run("medmplm", True, 1.0, 1e-4, seed, 0.9, {"jaccard": 0.30, "auc_micro": 0.60})
    results = frame(rows)
    text = table3_markdown(table3(results, select_learning_rates(results)))
    lines = {line.split(" | ")[0] + " " + line.split(" | ")[1]: line for line in text.splitlines() if " | " in line}
    assert "| model train ratio" in lines
    assert "**0.500 (0.000)**" in lines["| medmplm (scratch) 0.1"]
    assert "0.405 (0.007)" in lines["| medmplm 0.1"] and "**0.405" not in lines["| medmplm 0.1"]
    assert "**0.800 (0.000)**" in lines["| medmplm 0.1"]
    # Alone at its ratio, a variant is the best of it.
    assert "**0.300 (0.000)**" in lines["| medmplm 1"]
    assert "by the mean validation primary metric over seeds (medrec: auc_micro); test metrics never choose" in text
    assert "per-label accuracy" in text


def test_one_seed_has_no_std(tmp_path) -> None:
    rows = run_rows("readmission", "medmplm", True, 1.0, 1e-4, 0, {"auroc": 0.7}, {"auroc": 0.6, "f1": 0.5})
    results = frame(rows)
    table = table3(results, select_learning_rates(results))
    assert math.isnan(table.iloc[0]["AUC std"])
    text = table3_markdown(table)
    assert "| medmplm | 1 | 0.0001 | 1 | **0.500** | **0.600** |" in text
    ratio_curve(table, "readmission", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_ratio_curve_is_a_drawn_png(tmp_path) -> None:
    rows = []
    for ratio, seed in [(r, s) for r in (0.01, 0.1, 1.0) for s in (0, 1)]:
        rows += medrec_run("medmplm", True, ratio, 1e-4, seed, 0.9, {"auc_micro": 0.6 + ratio / 4 + seed / 50})
        rows += medrec_run("medmplm", False, ratio, 1e-4, seed, 0.9, {"auc_micro": 0.5 + ratio / 4})
    results = frame(rows)
    path = tmp_path / "curve.png"
    ratio_curve(table3(results, select_learning_rates(results)), "medrec", path)
    image = imread(path)
    assert image.ndim == 3 and image.std() > 0
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 2


def write_sweep_records(results_dir: Path) -> None:
    """Real result files: medmplm pretrained and from scratch, two lrs, two seeds, two ratios, medrec and readmission."""
    metrics = {
        "medrec": {m: 0.5 for m in MEDREC_METRICS},
        "readmission": {"auroc": 0.6, "auprc": 0.3, "f1": 0.4, "accuracy": 0.7, "rp80": 0.1},
    }
    for task, values in metrics.items():
        for init, ratio, lr, seed in [
            (i, r, lr, s) for i in ("runs/export", "scratch") for r in (0.1, 1.0) for lr in (1e-4, 1e-3) for s in (0, 1)
        ]:
            setting, setting_json = setting_of({"task": task, "init": init, "ratio": ratio, "lr": lr})
            shifted = {m: v + seed / 100 + lr * 10 for m, v in values.items()}
            record = ResultRecord(
                run_id=f"{task}-{init.replace('/', '_')}-{ratio}-{lr}-{seed}",
                task=task,
                model="medmplm",
                init=init,
                train_ratio=ratio,
                seed=seed,
                setting=setting,
                setting_json=setting_json,
                synthetic_data=True,
                lr=lr,
                epochs=3,
                num_train=50,
                metrics={"val": shifted, "test": shifted},
                num_examples={"val": 10, "test": 10},
            )
            write_result(results_dir, record)


OUTPUTS = (
    "table3.md",
    "table3.csv",
    "pretrained_vs_scratch.md",
    "selected_learning_rates.csv",
    "ratio_curves_medrec.png",
    "ratio_curves_readmission.png",
)


@pytest.mark.parametrize("layout", ["results dir", "sweep dir"])
def test_entry_point_writes_every_file(tmp_path, monkeypatch, capsys, layout) -> None:
    # `tuning` lives at the repository root, beside the installed `medmplm`.
    monkeypatch.syspath_prepend(str(REPO))
    from tuning.report import main

    records = tmp_path / "sweep" / "results"
    write_sweep_records(records)
    given = records if layout == "results dir" else records.parent
    out = tmp_path / "report"
    assert main([str(given), "--out", str(out), "--primary", "readmission=auprc"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    table_md = (out / "table3.md").read_text()
    for text in (table_md, (out / "pretrained_vs_scratch.md").read_text()):
        assert "Computed from 32 runs (seeds 0, 1)" in text
        assert "Synthetic data" in text
    assert "readmission: auprc" in table_md
    table = pd.read_csv(out / "table3.csv")
    assert len(table) == 8 and {"AUC mean", "AUC std", "auprc mean"} <= set(table.columns)
    selection = pd.read_csv(out / "selected_learning_rates.csv")
    # The larger lr scores higher in these records, on validation as on test.
    assert (selection["lr"] == 1e-3).all() and (selection["candidates"] == 2).all()
    assert str(out) in capsys.readouterr().out


def test_entry_point_empty_dir_is_a_one_line_error(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tuning.report", str(tmp_path), "--out", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no result files" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
