"""Primary test metric against train ratio, one line per model variant, from :func:`medmplm.report.tables.table3`.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than pyplot: no global figure state and no
display backend, so this runs on a headless node and in a test process alike.
"""

from __future__ import annotations

import os

import pandas as pd
from matplotlib.figure import Figure

from medmplm.report.tables import column_label


def ratio_curve(table: pd.DataFrame, task: str, path: str | os.PathLike) -> None:
    """Draw ``task``'s primary test metric (mean over seeds at the chosen lr, error bars one std) against the train
    ratio, one line per model variant, and write it to ``path`` as a PNG.

    Raises:
        ValueError: when ``table`` has no row for ``task``.
    """
    rows = table[table["task"] == task].sort_values("train_ratio")
    if rows.empty:
        raise ValueError(f"no row for task {task!r} in the table")
    primary = rows["primary"].iloc[0]
    label = column_label(task, primary)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.subplots()
    for variant, curve in rows.groupby("variant", sort=True):
        axes.errorbar(
            curve["train_ratio"],
            curve[f"{label} mean"],
            # One seed has no std: a point without a bar.
            yerr=curve[f"{label} std"].fillna(0.0),
            marker="o",
            capsize=3,
            label=variant,
        )
    ratios = sorted(rows["train_ratio"].unique())
    # Ratios such as 0.01 ... 1 crowd into one corner on a linear axis.
    if ratios[-1] >= 10 * ratios[0]:
        axes.set_xscale("log")
        axes.minorticks_off()
    axes.set_xticks(ratios, [f"{ratio:g}" for ratio in ratios])
    axes.set_xlabel("train ratio (fraction of the training split)")
    axes.set_ylabel(f"test {label} ({primary}), mean ± std over seeds")
    axes.set_title(f"{task}: test {label} at the validation-chosen learning rate")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, format="png", dpi=120)
