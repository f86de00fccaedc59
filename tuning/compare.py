"""``python -m tuning.compare``: two sets of runs that differ in one setting, paired by seed, on the test metrics.

    python -m tuning.compare LEFT RIGHT [--left-label head] [--right-label windows] [--metrics auroc auc_micro]
                             [--out comparison.md]
    python -m tuning.compare SWEEP SWEEP --left-model mbehrt-tabular --right-model mbehrt-early   # two models, one sweep

LEFT and RIGHT are sweep directories or results directories (``medmplm.results``), e.g. the same models fine-tuned
reading the notes' head and reading them in windows, or (``--left-model``, ``--right-model``) two models of one sweep,
each side keeping only its model's runs. For every (task, model, pretrained, train ratio, learning rate)
both hold, it writes each side's test metric as mean (std) over seeds and their difference paired by seed (a seed
fixes the training subset, so a pair trained on the same patients) with a Student-t interval. Only the learning
rates both sides ran are compared: this tool chooses nothing, so run it on sweeps whose learning rates were already
chosen on validation (or fixed). Each side must hold one setting per group; mixing two is an error naming the group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medmplm.report.tables import PRIMARY_METRIC, VARIANT_KEYS
from medmplm.results import _mean_with_t_interval, gather_results

GROUP_KEYS = [*VARIANT_KEYS, "lr"]


def test_rows(location: str) -> pd.DataFrame:
    """The test-split rows of a sweep directory (its ``results/``) or a results directory.

    Raises:
        ValueError: naming the group that holds several settings.
    """
    path = Path(location)
    results = gather_results(path / "results" if (path / "results").is_dir() else path)
    settings = results.groupby(GROUP_KEYS)["setting"].nunique()
    mixed = settings[settings > 1]
    if not mixed.empty:
        raise ValueError(f"{location}: several settings in one group {list(mixed.index[0])}: filter the results first")
    return results[results["split"] == "test"]


def one_model(rows: pd.DataFrame, variant: str, label: str) -> pd.DataFrame:
    """The rows of model variant ``variant`` (``mbehrt-early``, ``medmplm-scratch``, ...) as model ``label``
    (pretrained), so that two variants' rows, given the same label, pair by task, train ratio, learning rate and seed.

    Raises:
        ValueError: naming the variant when no row is of it.
    """
    from tuning.config import model_variant

    model, pretrained = model_variant(variant)
    kept = rows[(rows["model"] == model) & (rows["pretrained"] == pretrained)]
    if kept.empty:
        raise ValueError(f"no runs of model {variant}; the runs hold {sorted(set(rows['model']))}")
    return kept.assign(model=label, pretrained=True)


def compare(
    left: pd.DataFrame, right: pd.DataFrame, metrics: Sequence[str] | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Right minus left per group and metric (each task's primary metric when ``metrics`` is ``None``).

    Returns:
        One row per (task, model, pretrained, train ratio, lr, metric): ``left_mean``, ``left_std``, ``right_mean``,
        ``right_std`` (over each side's seeds), ``difference``, ``low``, ``high`` (over the paired seeds) and ``pairs``.
    """
    out = []
    for key, left_group in left.groupby(GROUP_KEYS):
        task = key[0]
        wanted = list(metrics) if metrics is not None else [PRIMARY_METRIC[task]]
        right_group = right.set_index(GROUP_KEYS).sort_index()
        if key not in right_group.index:
            continue
        right_group = right_group.loc[[key]].reset_index()
        for metric in wanted:
            sides = [g[g["metric"] == metric].set_index("seed")["value"] for g in (left_group, right_group)]
            if sides[0].empty or sides[1].empty:
                continue
            paired = pd.concat(sides, axis=1, keys=["left", "right"]).dropna()
            difference, low, high = _mean_with_t_interval(paired["right"] - paired["left"], confidence)
            out.append(
                dict(zip(GROUP_KEYS, key, strict=True))
                | {
                    "metric": metric,
                    "left_mean": sides[0].mean(),
                    "left_std": sides[0].std(),
                    "right_mean": sides[1].mean(),
                    "right_std": sides[1].std(),
                    "difference": difference,
                    "low": low,
                    "high": high,
                    "pairs": len(paired),
                }
            )
    return pd.DataFrame(out)


def comparison_markdown(table: pd.DataFrame, left_label: str, right_label: str) -> str:
    """The comparison as one Markdown table."""
    header = ["task", "model", "train ratio", "lr", "metric", left_label, right_label, f"{right_label} - {left_label}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.itertuples(index=False):
        interval = f"{row.difference:+.3f}" + ("" if pd.isna(row.low) else f" [{row.low:+.3f}, {row.high:+.3f}]")
        model = row.model if row.pretrained else f"{row.model} (scratch)"
        cells = [
            row.task,
            model,
            f"{row.train_ratio:g}",
            f"{row.lr:g}",
            row.metric,
            f"{row.left_mean:.3f} ({row.left_std:.3f})",
            f"{row.right_mean:.3f} ({row.right_std:.3f})",
            f"{interval} (n={row.pairs})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"Test metric, mean (std) over seeds; {right_label} minus {left_label} paired by seed with a 95% Student-t "
        "interval. No learning rate is chosen here."
    )
    return "\n".join([note, "", *lines]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("left")
    parser.add_argument("right")
    parser.add_argument("--left-label", default="left")
    parser.add_argument("--right-label", default="right")
    parser.add_argument("--metrics", nargs="+", help="test metrics (default: each task's primary metric)")
    parser.add_argument("--left-model", help="keep only this model's runs on the left (with --right-model)")
    parser.add_argument("--right-model", help="keep only this model's runs on the right (with --left-model)")
    parser.add_argument("--out", help="write the Markdown table here (default: print it)")
    args = parser.parse_args(argv)
    if (args.left_model is None) != (args.right_model is None):
        parser.error("--left-model and --right-model go together")
    try:
        left, right = test_rows(args.left), test_rows(args.right)
        if args.left_model is not None:
            label = f"{args.left_model} / {args.right_model}"
            left, right = one_model(left, args.left_model, label), one_model(right, args.right_model, label)
        table = compare(left, right, args.metrics)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if table.empty:
        print("error: the two sides share no (task, model, train ratio, learning rate) with the metric", file=sys.stderr)
        return 1
    markdown = comparison_markdown(table, args.left_label, args.right_label)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown, encoding="utf-8")
        print(f"comparison of {len(table)} groups written to {args.out}")
    else:
        print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
