"""The synthetic generator's code vocabulary against the MIMIC-III demo's (issue #11's table).

    python benchmarks/synthetic_realism.py                       # 150 patients, seeds 0,1,2
    python benchmarks/synthetic_realism.py --seeds 0,1,2,3,4 --patients 150
    python benchmarks/synthetic_realism.py --mimic /data/mimic-iii-clinical-database-demo-1.4

For each seed it generates ``--patients`` patients into a temporary directory and measures the first
``--admissions`` admissions by HADM_ID (``medmplm.synthetic.realism.code_statistics``); with
``--mimic`` it measures that directory instead (the real demo, to check the reference column). Prints
one row per statistic: the real demo's figure, each seed's, their mean and the mean's gap to the demo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from medmplm.synthetic import generate_mimic3
from medmplm.synthetic.realism import REAL_DEMO, STATISTICS, code_statistics, format_statistic, relative_gap

TOLERANCE = 0.25


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--admissions", type=int, default=129)
    parser.add_argument("--mimic", default=None, help="measure this MIMIC-III directory instead of generating")
    args = parser.parse_args(argv)

    columns: dict[str, dict[str, float]] = {}
    if args.mimic:
        columns[Path(args.mimic).name] = code_statistics(args.mimic, args.admissions)
    else:
        with tempfile.TemporaryDirectory() as work:
            for seed in (int(seed) for seed in args.seeds.split(",")):
                out = Path(work) / f"seed{seed}"
                generate_mimic3(out, patients=args.patients, seed=seed)
                columns[f"seed {seed}"] = code_statistics(out, args.admissions)
    print(
        f"first {args.admissions} admissions by HADM_ID"
        + ("" if args.mimic else f" of {args.patients} synthetic patients per seed")
    )
    header = ["statistic", "real demo", *columns, "mean", "gap"]
    rows = []
    worst = 0.0
    for name, label in STATISTICS:
        values = [column[name] for column in columns.values()]
        mean = float(np.mean(values))
        gap = relative_gap(mean, REAL_DEMO[name])
        worst = max(worst, *(abs(relative_gap(value, REAL_DEMO[name])) for value in values))
        rows.append(
            [
                label,
                format_statistic(name, REAL_DEMO[name]),
                *(format_statistic(name, value) for value in values),
                format_statistic(name, mean),
                f"{100 * gap:+.0f}%",
            ]
        )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    print(f"largest gap of a single column: {100 * worst:.0f}% ({verdict} {100 * TOLERANCE:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
