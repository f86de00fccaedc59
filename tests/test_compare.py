"""``python -m tuning.compare``: two sets of runs paired by seed."""

import math

import pandas as pd
import pytest

from tuning.compare import compare, comparison_markdown, one_model


def runs(values_by_seed: dict[int, float], setting: str, model: str = "medmplm", lr: float = 1e-3) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"task": "readmission", "model": model, "pretrained": True, "train_ratio": 1.0, "lr": lr,
             "setting": setting, "split": "test", "metric": "auroc", "seed": seed, "value": value}
            for seed, value in values_by_seed.items()
        ]
    )  # fmt: skip


def test_differences_are_paired_by_seed_with_a_t_interval():
    left = runs({0: 0.70, 1: 0.60, 2: 0.80}, "head")
    right = runs({0: 0.72, 1: 0.63, 2: 0.81, 3: 0.99}, "windows")  # seed 3 has no pair
    table = compare(left, right)
    row = table.iloc[0]
    assert len(table) == 1 and row.pairs == 3 and row.metric == "auroc"
    assert row.difference == pytest.approx(0.02)
    # Paired differences 0.02, 0.03, 0.01: std 0.01, t(0.975, 2) = 4.303.
    assert (row.low, row.high) == pytest.approx((0.02 - 4.303 * 0.01 / math.sqrt(3), 0.02 + 4.303 * 0.01 / math.sqrt(3)), abs=1e-4)
    assert row.left_mean == pytest.approx(0.70) and row.right_mean == pytest.approx(0.7875)
    assert "+0.020 [" in comparison_markdown(table, "head", "windows")


def test_groups_only_one_side_holds_are_left_out():
    assert compare(runs({0: 0.7}, "a"), runs({0: 0.7}, "b", lr=3e-4)).empty
    assert compare(runs({0: 0.7}, "a"), runs({0: 0.7}, "b", model="logreg")).empty


def test_two_models_of_one_sweep_pair_by_seed():
    rows = pd.concat(
        [runs({0: 0.60, 1: 0.62}, "s", model="mbehrt-tabular"), runs({0: 0.65, 1: 0.70}, "s", model="mbehrt-early")]
    )
    label = "tabular / early"
    table = compare(one_model(rows, "mbehrt-tabular", label), one_model(rows, "mbehrt-early", label))
    assert len(table) == 1 and table.iloc[0].pairs == 2
    assert table.iloc[0].difference == pytest.approx(0.065)
    assert "| tabular / early |" in comparison_markdown(table, "tabular", "early")
    with pytest.raises(ValueError, match="no runs of model medmplm"):
        one_model(rows, "medmplm", label)
