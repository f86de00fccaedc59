"""The paper's Table III from gathered result records, with the learning rate chosen on validation.

A sweep runs every (task, model, pretrained, train ratio) at several learning rates and seeds. For each of them
:func:`select_learning_rates` keeps the learning rate with the best mean *validation* primary metric over seeds, and
:func:`table3` and :func:`paired_differences` report *test* metrics at that learning rate only, so no test number
takes part in a choice.

A run's ``setting`` hash covers its learning rate, so it cannot group runs across learning rates: the grouping keys
here are (task, model, pretrained, train ratio) plus ``lr``, and one such group must hold one setting (runs that
also differ in epochs or task options are different experiments, which the caller has to filter apart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from medmplm.results import _mean_with_t_interval

# The paper reports AUC first (NER: strict F1); every metric here is higher-is-better.
PRIMARY_METRIC = {
    "medrec": "auc_micro",
    "readmission": "auroc",
    "icd": "auc_micro",
    "disease10": "auc_micro",
    "next_dx": "auc_micro",
    "ner": "f1",
}

# Table III column -> metric name (medmplm.metrics), per task.
TABLE3_COLUMNS = {
    "medrec": {"Jaccard": "jaccard", "PR-AUC": "prauc", "F1": "f1", "Accuracy": "hamming_accuracy", "AUC": "auc_micro"},
    "readmission": {"F1": "f1", "Accuracy": "accuracy", "AUC": "auroc"},
    "icd": {"F1": "f1_micro", "Accuracy": "hamming_accuracy", "AUC": "auc_micro"},
    # MEDFuse's 10-disease task: its headline F1, micro and macro, and the AUC.
    "disease10": {"Micro-F1": "f1_micro", "Macro-F1": "f1_macro", "AUC": "auc_micro"},
    # Next-visit diagnosis categories: BEHRT reports the pooled average precision and the AUC.
    "next_dx": {"AP": "ap_micro", "PR-AUC": "prauc", "F1": "f1_micro", "AUC": "auc_micro"},
    # The NER auxiliary check in the layout of the paper's Table V (strict seqeval metrics, micro averages).
    "ner": {"Precision": "precision", "Recall": "recall", "F1": "f1"},
}
# Tasks outside the paper's Table III; their section says where they come from.
PAPER_TABLE = {
    "ner": "the paper's Table V: strict micro precision, recall and F1 of concepts",
    "next_dx": "not in the paper: BEHRT's next-visit prediction of diagnosis categories (M-BEHRT, issue #18)",
    "disease10": "not in the paper: MEDFuse's 10-disease multi-label classification (arXiv 2407.12309, issue #19)",
}

# Exact-set-match accuracy over hundreds of codes is near 0, so the paper's 89-93% can only be per-label accuracy.
ACCURACY_NOTE = (
    "Accuracy is per-label accuracy (1 - Hamming loss over all (visit, code) pairs) for medication recommendation "
    "and ICD coding, as the paper's 89-93% must be, and plain accuracy at the decision threshold for readmission."
)

VARIANT_KEYS = ["task", "model", "pretrained", "train_ratio"]
DIFFERENCE_COLUMNS = [
    "task",
    "model",
    "train_ratio",
    "metric",
    "column",
    "pretrained_lr",
    "scratch_lr",
    "pretrained",
    "scratch",
    "difference",
    "low",
    "high",
    "confidence",
    "pairs",
]


def variant_label(model: str, pretrained: bool) -> str:
    """``medmplm`` for a pretrained model, ``medmplm (scratch)`` for the same model from a random init."""
    return model if pretrained else f"{model} (scratch)"


def column_label(task: str, metric: str) -> str:
    """The Table III column showing ``metric`` for ``task`` (the metric's own name when Table III has none)."""
    return {name: label for label, name in TABLE3_COLUMNS.get(task, {}).items()}.get(metric, metric)


def runs_note(results: pd.DataFrame) -> str:
    """What the tables were computed from: number of runs, seeds, and whether the data was synthetic."""
    runs = results.drop_duplicates("run_id")
    seeds = ", ".join(str(seed) for seed in sorted(runs["seed"].unique()))
    note = f"Computed from {len(runs)} runs (seeds {seeds})."
    synthetic = int(runs["synthetic_data"].sum())
    if synthetic == len(runs):
        note += " Synthetic data: every run read generated synthetic MIMIC, not patient records."
    elif synthetic:
        note += f" Mixed data: {synthetic} of the {len(runs)} runs read generated synthetic MIMIC."
    return note


def select_learning_rates(results: pd.DataFrame, primary: Mapping[str, str] = PRIMARY_METRIC) -> pd.DataFrame:
    """For each (task, model, pretrained, train ratio), the learning rate with the best mean validation primary
    metric over seeds; ties go to the smaller learning rate, NaN values (undefined metrics) are skipped.

    Returns:
        One row per variant and train ratio: ``task``, ``model``, ``pretrained``, ``train_ratio``, ``lr``,
        ``primary`` (the metric compared), ``val_mean``, ``seeds`` (seeds at that lr) and ``candidates`` (lrs
        compared). A variant with no validation value at any lr has no row.

    Raises:
        ValueError: when one (task, model, pretrained, train ratio, lr) holds several settings, when a task has no
            primary metric, or when no run of a task has its primary metric on validation.
    """
    settings = results.groupby(VARIANT_KEYS + ["lr"])["setting"].unique()
    mixed = settings[settings.map(len) > 1]
    if not mixed.empty:
        names = VARIANT_KEYS + ["lr"]
        groups = "; ".join(
            f"{', '.join(f'{n}={v}' for n, v in zip(names, key))}: settings {', '.join(sorted(values))}"
            for key, values in mixed.items()
        )
        raise ValueError(f"several settings at one learning rate (filter the results, e.g. by epochs): {groups}")
    missing = sorted(set(results["task"]) - set(primary))
    if missing:
        raise ValueError(f"no primary metric for task(s) {', '.join(missing)}")
    val = results[results["split"] == "val"]
    val = val[val["metric"] == val["task"].map(dict(primary))].dropna(subset=["value"])
    for task in sorted(set(results["task"]) - set(val["task"])):
        recorded = sorted(results.loc[(results["task"] == task) & (results["split"] == "val"), "metric"].unique())
        raise ValueError(f"no validation {primary[task]} for task {task} (its validation metrics: {recorded})")
    per_lr = val.groupby(VARIANT_KEYS + ["lr"]).agg(val_mean=("value", "mean"), seeds=("seed", "nunique"))
    per_lr = per_lr.reset_index()
    per_lr["candidates"] = per_lr.groupby(VARIANT_KEYS)["lr"].transform("size")
    best = per_lr.sort_values(VARIANT_KEYS + ["val_mean", "lr"], ascending=[True] * len(VARIANT_KEYS) + [False, True])
    best = best.drop_duplicates(VARIANT_KEYS).reset_index(drop=True)
    best.insert(best.columns.get_loc("lr") + 1, "primary", best["task"].map(dict(primary)))
    return best


def _table3_columns(selection: pd.DataFrame) -> pd.DataFrame:
    """``task``, ``column``, ``metric``: the Table III columns of each selected task in Table III's order, and the
    primary metric under its own name when Table III does not show it."""
    wanted = []
    for task, primary in selection[["task", "primary"]].drop_duplicates().itertuples(index=False):
        columns = TABLE3_COLUMNS.get(task, {})
        wanted += [(task, label, metric) for label, metric in columns.items()]
        if primary not in columns.values():
            wanted.append((task, primary, primary))
    return pd.DataFrame(wanted, columns=["task", "column", "metric"])


def _test_rows_at_chosen_lr(results: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Test rows of the :func:`_table3_columns` metrics at each variant's chosen lr, with ``primary`` and ``column``."""
    test = results[results["split"] == "test"]
    chosen = test.merge(selection[VARIANT_KEYS + ["lr", "primary"]], on=VARIANT_KEYS + ["lr"])
    return chosen.merge(_table3_columns(selection), on=["task", "metric"])


def table3(results: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Test mean and std over seeds of every Table III column at the learning rate ``selection`` chose.

    Returns:
        One row per (task, model, pretrained, train ratio): ``variant`` (its label), ``lr``, ``primary``, ``seeds``
        (runs with test metrics), then ``<column> mean`` and ``<column> std`` for each Table III column (NaN where the
        task has no such column; std NaN with one seed). Ready for ``to_csv``.
    """
    rows = _test_rows_at_chosen_lr(results, selection)
    keys = VARIANT_KEYS + ["lr", "primary"]
    stats = rows.groupby(keys + ["column"])["value"].agg(["mean", "std"]).unstack("column")
    columns = [c for c in _table3_columns(selection)["column"].unique() if c in set(rows["column"])]
    stats = stats[[(stat, column) for column in columns for stat in ("mean", "std")]]
    stats.columns = [f"{column} {stat}" for stat, column in stats.columns]
    seeds = rows.groupby(keys)["seed"].nunique().rename("seeds")
    table = pd.concat([seeds, stats], axis=1).reset_index()
    table.insert(2, "variant", [variant_label(m, p) for m, p in zip(table["model"], table["pretrained"])])
    order = ["task", "train_ratio", "model", "pretrained"]
    return table.sort_values(order, ascending=[True, True, True, False]).reset_index(drop=True)


def _format_lr(lr: float) -> str:
    # The logistic regression records lr 0: it has no learning rate.
    return "none" if lr == 0 else f"{lr:g}"


def _mean_std_cell(mean: float, std: float, best: bool) -> str:
    if math.isnan(mean):
        return "n/a"
    cell = f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ({std:.3f})"
    return f"**{cell}**" if best else cell


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _selection_rule(primaries: pd.DataFrame) -> str:
    listed = ", ".join(f"{task}: {metric}" for task, metric in primaries.itertuples(index=False))
    return (
        "Learning rate chosen per (task, model, train ratio) by the mean validation primary metric over seeds "
        f"({listed}); test metrics never choose."
    )


def table3_markdown(table: pd.DataFrame, notes: str = "") -> str:
    """:func:`table3` as Markdown, one table per task: cells ``mean (std)`` over seeds, the best mean per (task, train
    ratio, column) in bold; a header paragraph gives the selection rule, the accuracy note and ``notes``."""
    primaries = table[["task", "primary"]].drop_duplicates()
    parts = [
        "# Table III: test metrics at the validation-chosen learning rate",
        " ".join(
            [
                _selection_rule(primaries),
                "Cells: test mean (std over seeds); **bold**: the best mean per task, train ratio and column.",
                ACCURACY_NOTE,
            ]
        ),
    ] + ([notes] if notes else [])
    for task, rows in table.groupby("task", sort=True):
        # The union of all tasks' columns: keep this task's (std is all NaN with one seed, so look at the means).
        columns = [
            name.removesuffix(" mean") for name in rows.columns if name.endswith(" mean") and rows[name].notna().any()
        ]
        cells = []
        for column in columns:
            mean = rows[f"{column} mean"]
            best = mean == mean.groupby(rows["train_ratio"]).transform("max")
            cells.append([_mean_std_cell(m, s, b) for m, s, b in zip(mean, rows[f"{column} std"], best)])
        firsts = rows[["variant", "train_ratio", "lr", "seeds"]].itertuples(index=False)
        body = [
            [variant, f"{ratio:g}", _format_lr(lr), str(seeds), *row_cells]
            for (variant, ratio, lr, seeds), *row_cells in zip(firsts, *cells)
        ]
        primary = rows["primary"].iloc[0]
        layout = f"; {PAPER_TABLE[task]}" if task in PAPER_TABLE else ""
        parts += [
            f"## {task} (primary: {primary}{layout})",
            _markdown_table(["model", "train ratio", "lr", "seeds"] + columns, body),
        ]
    return "\n\n".join(parts) + "\n"


def paired_differences(
    results: pd.DataFrame, selection: pd.DataFrame, confidence: float = 0.95, all_metrics: bool = False
) -> pd.DataFrame:
    """Pretrained minus scratch of the same model, per task and train ratio, paired by seed (one seed fixes the
    training subset), each side at its own chosen learning rate, on the primary test metric (every Table III
    metric too with ``all_metrics``).

    Returns:
        One row per (task, model, train ratio, metric): ``column`` (its Table III label), ``pretrained_lr``,
        ``scratch_lr``, ``pretrained`` and ``scratch`` (means over the pairs), ``difference`` (mean paired
        difference), ``low`` and ``high`` (Student-t interval at ``confidence``; NaN with one pair) and ``pairs``.
    """
    rows = _test_rows_at_chosen_lr(results, selection)
    if not all_metrics:
        rows = rows[rows["metric"] == rows["primary"]]
    out = []
    for (task, model, ratio, metric, column), group in rows.groupby(
        ["task", "model", "train_ratio", "metric", "column"], sort=True
    ):
        by_seed = group.pivot_table(index="seed", columns="pretrained", values="value")
        paired = by_seed.reindex(columns=[True, False]).dropna()
        if paired.empty:
            continue
        difference, low, high = _mean_with_t_interval(paired[True] - paired[False], confidence)
        lrs = group.groupby("pretrained")["lr"].first()
        out.append(
            [task, model, ratio, metric, column, lrs[True], lrs[False], paired[True].mean(), paired[False].mean()]
            + [difference, low, high, confidence, len(paired)]
        )
    return pd.DataFrame(out, columns=DIFFERENCE_COLUMNS)


def paired_differences_markdown(differences: pd.DataFrame, notes: str = "") -> str:
    """:func:`paired_differences` as one Markdown table, after a paragraph on how the pairs were made and ``notes``."""
    header = (
        "Pretrained minus scratch of the same model, paired by seed (a seed fixes the training subset), each side at "
        "its own learning rate, chosen per (task, model, train ratio) by the mean validation primary metric over "
        "seeds; test metrics never choose. Difference: mean over the pairs [Student-t interval], no interval with "
        "one pair."
    )
    parts = ["# Pretrained vs scratch (test)", header] + ([notes] if notes else [])
    if differences.empty:
        parts.append("No model ran both pretrained and from scratch at one task and train ratio: nothing to pair.")
        return "\n\n".join(parts) + "\n"

    def interval(row) -> str:
        if math.isnan(row.low):
            return f"{row.difference:+.3f}"
        return f"{row.difference:+.3f} [{row.low:+.3f}, {row.high:+.3f}] ({row.confidence:.0%})"

    body = [
        [row.task, row.model, f"{row.train_ratio:g}", f"{row.column} ({row.metric})"]
        + [
            f"{row.pretrained:.3f} (lr {_format_lr(row.pretrained_lr)})",
            f"{row.scratch:.3f} (lr {_format_lr(row.scratch_lr)})",
        ]
        + [interval(row), str(row.pairs)]
        for row in differences.itertuples(index=False)
    ]
    header_row = ["task", "model", "train ratio", "metric", "pretrained", "scratch", "difference", "pairs"]
    parts.append(_markdown_table(header_row, body))
    return "\n\n".join(parts) + "\n"
