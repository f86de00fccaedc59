"""The report of a sweep: Table III, pretrained vs scratch and train-ratio curves from its result records.

    python -m tuning.report DIR --out OUTDIR [--primary task=metric ...]

DIR is a results directory (``*.parquet`` records, see ``medmplm.results``) or a sweep directory holding one in
``DIR/results``. Per (task, model, pretrained, train ratio) the learning rate is chosen by the mean validation primary
metric over seeds (``medmplm.report.tables``); every number written is a test metric at that learning rate. Writes
``table3.md``, ``table3.csv``, ``pretrained_vs_scratch.md``, ``selected_learning_rates.csv`` and one
``ratio_curves_<task>.png`` per task into OUTDIR.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from medmplm.report.curves import ratio_curve
from medmplm.report.tables import (
    PRIMARY_METRIC,
    paired_differences,
    paired_differences_markdown,
    runs_note,
    select_learning_rates,
    table3,
    table3_markdown,
)
from medmplm.results import gather_results
from tuning.config import CONFIG_FILE_NAME as SWEEP_CONFIG


def results_dir_of(path: Path) -> Path:
    """``path`` when it holds result records, else the ``results`` folder of a sweep directory."""
    if not any(path.glob("*.parquet")) and (path / "results").is_dir():
        return path / "results"
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary path)``, then rename onto ``path``: a crash leaves a stray temp file, never a partial table."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def tune_note(sweep_dir: Path) -> str:
    """What Ray Tune recorded of the sweep's trials: counts by status, and where errored trials keep their error."""
    from tuning.tuner import trial_status

    status = trial_status(str(sweep_dir))
    counts = ", ".join(f"{count} {name.lower()}" for name, count in sorted(status["by_status"].items()))
    note = f"Ray Tune: {status['trials']} trials ({counts})."
    if status["errors"]:
        note += f" Errors are kept in {len(status['errors'])} trial directories, e.g. {status['errors'][0]}."
    return note


def parse_primary(item: str) -> tuple[str, str]:
    task, sep, metric = item.partition("=")
    if not sep or not task or not metric:
        raise argparse.ArgumentTypeError(f"expected task=metric, got {item!r}")
    if task not in PRIMARY_METRIC:
        raise argparse.ArgumentTypeError(f"unknown task {task!r} (tasks: {', '.join(PRIMARY_METRIC)})")
    return task, metric


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuning.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="results directory, or a sweep directory with DIR/results")
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and figures")
    parser.add_argument(
        "--primary",
        type=parse_primary,
        nargs="+",
        action="extend",
        default=[],
        metavar="TASK=METRIC",
        help=f"metric that chooses the learning rate (default: {', '.join(f'{t}={m}' for t, m in PRIMARY_METRIC.items())})",
    )
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"error: {args.dir}: no such directory", file=sys.stderr)
        return 2
    results_dir = results_dir_of(args.dir)
    try:
        results = gather_results(results_dir)
        selection = select_learning_rates(results, {**PRIMARY_METRIC, **dict(args.primary)})
        table = table3(results, selection)
        differences = paired_differences(results, selection)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    notes = f"{runs_note(results)} Records: {results_dir}."
    if (args.dir / SWEEP_CONFIG).is_file():
        notes += " " + tune_note(args.dir)
    outputs: dict[str, Callable[[Path], object]] = {
        "table3.md": lambda tmp: tmp.write_text(table3_markdown(table, notes), encoding="utf-8"),
        "table3.csv": lambda tmp: table.to_csv(tmp, index=False),
        "pretrained_vs_scratch.md": lambda tmp: tmp.write_text(
            paired_differences_markdown(differences, notes), encoding="utf-8"
        ),
        "selected_learning_rates.csv": lambda tmp: selection.to_csv(tmp, index=False),
    }
    for task in sorted(table["task"].unique()):
        outputs[f"ratio_curves_{task}.png"] = lambda tmp, task=task: ratio_curve(table, task, tmp)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, write in outputs.items():
        write_atomically(args.out / name, write)

    print(notes)
    print(f"Wrote to {args.out}: {', '.join(outputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
