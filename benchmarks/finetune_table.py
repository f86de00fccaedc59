"""Rebuild the paper's comparison (Table III style): every (task, model variant, train ratio, seed) fine-tuned and
evaluated through ``medmplm.tasks.runner.run_finetune``, then one table of test metrics (mean ± std over seeds).

Runs share one local Ray instance and one results directory; a rerun skips the (setting, seed) pairs already recorded
there (``medmplm.results``: a setting is everything that defines a run but its seed), so an interrupted grid continues
where it stopped, and a grid with another learning rate, epoch count or task option runs anew beside the first. Prints
figures, asserts nothing: the table, pretrained minus scratch and, when ``logreg`` ran, every model minus ``logreg``,
each paired by seed with a 95% t interval.

As the paper did, readmission and ICD coding keep only visits with a note (``require_note=true``), so that every
model, text or code, is compared on the same visits; ``--task-option readmission.require_note=false`` keeps them all.

Example (a few thousand synthetic patients; see the README for the data and pretraining commands)::

    python benchmarks/finetune_table.py --prepared runs/grid/prepared --init runs/grid/pretrain/export \\
        --results runs/grid/results --ratios 0.1,1.0 --seeds 0 --task-option medrec.max_history=4 train.epochs=10

Model variants: ``medmplm`` (pretrained from ``--init``), ``medmplm-scratch`` (same architecture, random init),
``medmplm-nocross``, ``medmplm-code``, ``medmplm-text`` (MedM-PLM's parts, pretrained), ``logreg``; any other name of
``medmplm.tasks.encoders.MODELS`` may be given too, with the export of each pretrained side (``clinicalbert``:
``--init-text``, a ``bert-mlm`` export; ``gbert``: ``--init-gbert``; ``medbert``: ``--init-medbert``), and any of them
with ``-scratch`` appended to train it from a random init. Example, Table III's independently pretrained baselines::

    python benchmarks/finetune_table.py --prepared P --results R --tasks readmission,icd --seeds 0,1,2 \
        --variants clinicalbert,clinicalbert-scratch,gbert,gbert-scratch,medbert,medbert-scratch \
        --init-text runs/bert-mlm/export --init-gbert runs/gbert/export --init-medbert runs/medbert/export
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from medmplm.config import load_config, parse_overrides
from medmplm.console import configure_output, start_ray
from medmplm.results import (
    gather_results,
    model_differences,
    pretraining_differences,
    recorded_settings,
    summary_table,
)
from medmplm.tasks.config import FinetuneConfig, expand_short_flags
from medmplm.tasks.encoders import MODELS, model_spec

DEFAULT_VARIANTS = ("medmplm", "medmplm-scratch", "medmplm-nocross", "medmplm-code", "medmplm-text", "logreg")
KEY_METRICS = {
    "medrec": ("jaccard", "prauc", "f1", "auc_micro"),
    "readmission": ("auroc", "auprc", "rp80", "f1"),
    "icd": ("f1_micro", "f1_macro", "auc_micro", "auc_macro", "p_at_5"),
}
SCRATCH_SUFFIX = "-scratch"
# Kind of pretrained backbone -> the flag naming its export.
EXPORT_FLAGS = {"medmplm": "init", "bert": "init-text", "gbert": "init-gbert", "medbert": "init-medbert"}
# The model every other is compared with, paired by seed, when the grid ran it: the linear model on multi-hot codes.
BASELINE = "logreg"
# Task options of the comparison unless --task-option says otherwise: every model sees the visits with both modalities.
GRID_TASK_OPTIONS = {"readmission": {"require_note": True}, "icd": {"require_note": True}}


def variant_model(variant: str) -> tuple[str, bool]:
    """``(model name, pretrained)`` of a grid variant."""
    if variant not in MODELS and variant.endswith(SCRATCH_SUFFIX):
        return variant[: -len(SCRATCH_SUFFIX)], False
    spec = model_spec(variant)
    return variant, spec.code_backbone is not None or spec.text_backbone is not None


def init_overrides(model: str, pretrained: bool, exports: dict[str, str | None]) -> dict[str, str | None]:
    """The ``--init`` keys of one variant: each side that reads pretrained weights gets the export of its kind
    (``medmplm``, ``gbert``, ``medbert``: the code side; ``medmplm``, ``bert``: the text side).

    Raises:
        SystemExit: naming the flag when a pretrained variant needs an export that was not given.
    """
    spec = model_spec(model)
    overrides: dict[str, str | None] = {"model.init_from": None, "finetune.init_code": None, "finetune.init_text": None}
    if not pretrained:
        return overrides
    for side, kind in (("code", spec.code_backbone), ("text", spec.text_backbone)):
        if kind is None:
            continue
        if exports.get(kind) is None:
            raise SystemExit(f"variant {model}: its {side} side needs --{EXPORT_FLAGS[kind]} (or run {model}-scratch)")
        key = "model.init_from" if kind == "medmplm" else f"finetune.init_{side}"
        overrides[key] = exports[kind]
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", required=True, help="prepared directory (python -m medmplm.prepare)")
    parser.add_argument("--init", help="pretrained MedM-PLM export (python -m medmplm.pretrain)")
    parser.add_argument("--init-text", help="bert-mlm export for clinicalbert models (model.family=bert-mlm)")
    parser.add_argument("--init-gbert", help="G-BERT export for gbert models (model.family=gbert)")
    parser.add_argument("--init-medbert", help="Med-BERT export for medbert models (model.family=medbert)")
    parser.add_argument("--results", required=True, help="results directory (one Parquet file per run)")
    parser.add_argument("--storage", default=None, help="run storage (checkpoints); default <results>/../runs")
    parser.add_argument("--tasks", default="medrec,readmission,icd")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--ratios", default="0.1,1.0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--config", default=None, help="YAML fine-tuning config applied to every run")
    parser.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="TASK.KEY=VALUE",
        help="an option of one task, e.g. medrec.max_history=4 or readmission.subsample_negatives=true (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray's and DeepSpeed's output")
    args, tokens = parser.parse_known_args(argv)
    configure_output(args.verbose)
    common = expand_short_flags(parse_overrides(tokens))
    task_options = {task: dict(options) for task, options in GRID_TASK_OPTIONS.items()}
    for dotted, value in parse_overrides(args.task_option).items():
        task, _, key = dotted.partition(".")
        task_options.setdefault(task, {})[key] = value
    tasks = args.tasks.split(",")
    variants = args.variants.split(",")
    ratios = [float(r) for r in args.ratios.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    storage = args.storage or os.path.join(os.path.dirname(os.path.abspath(args.results)), "runs")
    exports = {"medmplm": args.init, "bert": args.init_text, "gbert": args.init_gbert, "medbert": args.init_medbert}

    import ray

    from medmplm.tasks.runner import run_finetune, run_setting
    from medmplm.train.storage import new_run_name

    start_ray(args.verbose, address="local", include_dashboard=False)
    timings = []
    try:
        for task in tasks:
            for variant in variants:
                model, pretrained = variant_model(variant)
                for ratio in ratios:
                    for seed in seeds:
                        overrides = {
                            **common,
                            "data.prepared_dir": args.prepared,
                            "finetune.task": task,
                            "finetune.model": model,
                            "finetune.train_ratio": ratio,
                            "finetune.results_dir": args.results,
                            "train.seed": seed,
                            "run.storage_path": storage,
                            **init_overrides(model, pretrained, exports),
                            **{f"finetune.task_options.{k}": v for k, v in task_options.get(task, {}).items()},
                        }
                        config = load_config(FinetuneConfig, args.config, overrides)
                        if (run_setting(config, args.prepared)[0], seed) in recorded_settings(args.results):
                            continue
                        run_name = new_run_name(f"{task}-{variant.replace('+', '_')}-r{ratio:g}-s{seed}")
                        config.run.name = run_name
                        start = time.perf_counter()
                        run_finetune(config, args.prepared, run_name)
                        timings.append((task, variant, ratio, seed, time.perf_counter() - start))
    finally:
        ray.shutdown()

    for task, variant, ratio, seed, seconds in timings:
        print(f"run {task:12s} {variant:18s} ratio {ratio:<4g} seed {seed}: {seconds:7.1f} s")
    results = gather_results(args.results)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 20)
    for task in tasks:
        rows = results[results.task == task]
        if rows.empty:
            continue
        print(f"\n== {task}: test metrics, mean ± std (number of seeds)")
        print(summary_table(rows, split="test", metrics=KEY_METRICS[task]).to_string())
        try:
            differences = pretraining_differences(rows, split="test", metrics=KEY_METRICS[task])
        except ValueError as error:
            # e.g. one model fine-tuned from two exports: pairing either with scratch needs the results split first.
            print(f"-- pretrained minus scratch, {task}: not computed ({error})")
            differences = pd.DataFrame()
        if not differences.empty:
            print(f"-- pretrained minus scratch, paired by seed (same training subset), mean [95% t interval], {task}")
            print(differences.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
        if BASELINE in set(rows.model):
            against = model_differences(rows, BASELINE, split="test", metrics=KEY_METRICS[task])
            if not against.empty:
                print(
                    f"-- each model minus {BASELINE}, paired by seed (same training subset), mean [95% t interval], {task}"
                )
                print(
                    against.drop(columns="reference").to_string(index=False, float_format=lambda value: f"{value:.3f}")
                )
        print(f"-- reference: the label prior (training label frequencies for every example), {task}, test")
        for ratio in ratios:
            prior = label_prior_metrics(task, task_options.get(task, {}), args.prepared, ratio, seeds[0])
            print(f"   ratio {ratio:g}: " + "  ".join(f"{m} {prior[m]:.3f}" for m in KEY_METRICS[task]))
    return 0


def label_prior_metrics(task_name: str, options: dict, prepared_dir: str, ratio: float, seed: int) -> dict[str, float]:
    """Test metrics of predicting each label's training frequency for every example: what a model that ignores its
    inputs scores (an AUC of 0.5 for the binary task)."""
    import numpy as np

    from medmplm.tasks import build_task
    from medmplm.tasks.runner import build_example_sets

    task = build_task(task_name, **options)
    label_space, sets = build_example_sets(task, prepared_dir, ratio, seed)

    def labels(split: str) -> np.ndarray:
        table = sets[split].examples
        if not task.multilabel:
            return table.column("label").to_numpy().astype(np.int64)
        index = {code: i for i, code in enumerate(label_space)}
        y = np.zeros((table.num_rows, len(label_space)), dtype=np.int64)
        for row, codes in enumerate(table.column("label_codes").to_pylist()):
            y[row, [index[c] for c in codes]] = 1
        return y

    train, test = labels("train"), labels("test")
    prior = np.broadcast_to(train.mean(axis=0), test.shape).astype(np.float64)
    return task.metrics(test, prior, label_space)


if __name__ == "__main__":
    sys.exit(main())
