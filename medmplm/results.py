"""Fine-tuning result records: one tidy Parquet file per run, gathered into one table.

Each run writes ``<results_dir>/<run_id>.parquet`` with one row per (evaluation split, metric): the run's identity
(task, model, init, train ratio, seed, learning rate, ...) is repeated on every row, so many runs (a Tune sweep, the
benchmark grid) can write into one directory concurrently without a shared file to lock, and
:func:`gather_results` concatenates them into one long table that pandas can pivot.

A run's *setting* is everything that defines what it computes except its seed: the resolved configuration less the
keys that only say where a run goes or how its work is spread (``medmplm.tasks.runner.run_setting`` lists them and
why). ``setting_json`` is that configuration as canonical JSON and ``setting`` a short hash of it, so runs of one
setting differ only in their seed: :func:`summary_table` averages over seeds within a setting, never across settings,
and the benchmark grid skips a (setting, seed) already recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from medmplm.metrics import COUNT_METRICS
from medmplm.train import storage

RESULT_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        # Pretrained checkpoint directory, or "scratch".
        pa.field("init", pa.string(), nullable=False),
        pa.field("pretrained", pa.bool_(), nullable=False),
        pa.field("train_ratio", pa.float64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        # Short hash of setting_json: runs with the same setting differ only in their seed.
        pa.field("setting", pa.string(), nullable=False),
        pa.field("setting_json", pa.string(), nullable=False),
        # The prepared directory was made from generated synthetic MIMIC, not patient records (its manifest says so).
        pa.field("synthetic_data", pa.bool_(), nullable=False),
        # Peak learning rate of the torch models; 0 for the scikit-learn logistic regression, which has none.
        pa.field("lr", pa.float64(), nullable=False),
        pa.field("epochs", pa.int64(), nullable=False),
        pa.field("num_train", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("num_examples", pa.int64(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        # Everything else that defined the run (thresholds, label counts, preset, ...), as JSON.
        pa.field("details", pa.string(), nullable=False),
    ]
)

SCRATCH = "scratch"
SETTING_HASH_LENGTH = 12


def setting_of(values: Mapping[str, Any]) -> tuple[str, str]:
    """``(setting, setting_json)`` of a run's defining values: canonical JSON (sorted keys, compact separators) and
    the first :data:`SETTING_HASH_LENGTH` hex digits of its SHA-256."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:SETTING_HASH_LENGTH], canonical


def new_run_id(task: str, model: str) -> str:
    """A unique run id that still says what ran, e.g. ``readmission-medmplm-3f2a9c1b``."""
    return f"{task}-{model.replace('+', '_')}-{uuid.uuid4().hex[:8]}"


@dataclass
class ResultRecord:
    """What one fine-tuning run produced.

    Attributes:
        setting: :func:`setting_of` hash of ``setting_json``.
        setting_json: canonical JSON of everything that defined the run but its seed.
        synthetic_data: the run read generated synthetic data.
        metrics: split name ("val", "test") -> metric name -> value (see ``medmplm.metrics``).
        num_examples: split name -> number of evaluated examples.
        details: any further JSON-serialisable settings worth keeping beside the numbers.
    """

    run_id: str
    task: str
    model: str
    init: str
    train_ratio: float
    seed: int
    setting: str
    setting_json: str
    synthetic_data: bool
    lr: float
    epochs: int
    num_train: int
    metrics: dict[str, dict[str, float]]
    num_examples: dict[str, int]
    details: dict = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.init != SCRATCH

    def to_table(self) -> pa.Table:
        """The record as tidy rows following :data:`RESULT_SCHEMA`."""
        rows: dict[str, list] = {name: [] for name in RESULT_SCHEMA.names}
        details = json.dumps(self.details, sort_keys=True, default=str)
        for split, values in sorted(self.metrics.items()):
            if split not in self.num_examples:
                raise ValueError(f"run {self.run_id}: metrics for split {split!r} but no example count for it")
            for metric, value in sorted(values.items()):
                row = {
                    "run_id": self.run_id,
                    "task": self.task,
                    "model": self.model,
                    "init": self.init,
                    "pretrained": self.pretrained,
                    "train_ratio": float(self.train_ratio),
                    "seed": int(self.seed),
                    "setting": self.setting,
                    "setting_json": self.setting_json,
                    "synthetic_data": bool(self.synthetic_data),
                    "lr": float(self.lr),
                    "epochs": int(self.epochs),
                    "num_train": int(self.num_train),
                    "split": split,
                    "num_examples": int(self.num_examples[split]),
                    "metric": metric,
                    "value": float(value),
                    "details": details,
                }
                for name, item in row.items():
                    rows[name].append(item)
        return pa.table(rows, schema=RESULT_SCHEMA)


def write_result(results_dir: str | os.PathLike, record: ResultRecord) -> str:
    """Write ``record`` to ``<results_dir>/<run_id>.parquet`` (a local directory or a URI such as ``s3://``; temp
    name, then move); returns its location.

    Raises:
        FileExistsError: when a result with the same run id is already there.
    """
    location = result_location(results_dir, record.run_id)
    if storage.exists(location):
        raise FileExistsError(f"{location}: a result for run {record.run_id!r} already exists")
    storage.write_parquet(record.to_table(), location)
    return location


def result_location(results_dir: str | os.PathLike, run_id: str) -> str:
    """Where the record of run ``run_id`` goes under ``results_dir``."""
    return storage.join(str(results_dir), f"{run_id}.parquet")


def gather_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All results under ``results_dir`` (a local directory or a URI) as one long DataFrame (columns of
    :data:`RESULT_SCHEMA`).

    Raises:
        FileNotFoundError: when the directory holds no result file.
        ValueError: naming the file whose columns are not the result schema.
    """
    files = storage.list_files(str(results_dir), ".parquet")
    if not files:
        raise FileNotFoundError(f"{results_dir}: no result files (*.parquet)")
    tables = []
    for location in files:
        table = storage.read_parquet(location)
        if table.schema.names != RESULT_SCHEMA.names:
            raise ValueError(f"{location}: columns {table.schema.names} are not the result schema {RESULT_SCHEMA.names}")
        tables.append(table.cast(RESULT_SCHEMA))
    return pa.concat_tables(tables).to_pandas()


def recorded_settings(results_dir: str | os.PathLike) -> set[tuple[str, int]]:
    """The ``(setting, seed)`` pairs with a result under ``results_dir`` (none when it holds no result yet)."""
    try:
        results = gather_results(results_dir)
    except FileNotFoundError:
        return set()
    return set(zip(results["setting"], results["seed"].astype(int)))


def summary_table(
    results: pd.DataFrame, split: str = "test", metrics: Sequence[str] | None = None, digits: int = 3
) -> pd.DataFrame:
    """Pivot gathered results: one row per (task, model, init, train ratio, setting), one column per metric.

    Cells read ``mean ± std (n)`` over the seeds of one setting (``mean (1)`` for a single seed); runs that differ in
    anything but their seed (learning rate, epochs, task options, ...) are separate rows.
    """
    rows = results[results["split"] == split]
    if metrics is not None:
        rows = rows[rows["metric"].isin(list(metrics))]
    if rows.empty:
        raise ValueError(f"no results for split {split!r}" + (f" and metrics {list(metrics)}" if metrics else ""))
    keys = ["task", "model", "init", "train_ratio", "setting"]
    stats = rows.groupby(keys + ["metric"])["value"].agg(["mean", "std", "count"]).reset_index()

    def cell(row: Mapping) -> str:
        places = 1 if row["metric"] in COUNT_METRICS else digits
        if row["count"] < 2 or math.isnan(row["std"]):
            return f"{row['mean']:.{places}f} ({row['count']})"
        return f"{row['mean']:.{places}f} ± {row['std']:.{places}f} ({row['count']})"

    stats["cell"] = stats.apply(cell, axis=1)
    table = stats.pivot(index=keys, columns="metric", values="cell")
    if metrics is not None:
        table = table[[m for m in metrics if m in table.columns]]
    table.columns.name = None
    return table


def pretraining_differences(
    results: pd.DataFrame, split: str = "test", metrics: Sequence[str] | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Pretrained minus from-scratch, paired by seed, for every (task, model, train ratio, metric) run both ways.

    A seed fixes the training subset and the initialisation of everything but the pretrained weights, so the
    per-seed difference isolates pretraining; its mean carries a Student-t confidence interval over the seeds (NaN
    bounds with one seed).

    Returns:
        One row per (task, model, train_ratio, metric): ``pretrained``, ``scratch`` (means), ``difference`` (mean
        paired difference), ``low``, ``high`` (interval bounds) and ``seeds`` (number of pairs).

    Raises:
        ValueError: when one (task, model, train ratio) holds several pretrained or several scratch settings (e.g. two
            learning rates): pairing them by seed would mix settings; pass the results of one setting per side.
    """

    rows = results[results["split"] == split]
    if metrics is not None:
        rows = rows[rows["metric"].isin(list(metrics))]
    keys = ["task", "model", "train_ratio"]
    settings = rows.groupby(keys + ["pretrained"])["setting"].nunique()
    if (settings > 1).any():
        mixed = settings[settings > 1].index.tolist()
        raise ValueError(
            f"several settings for (task, model, train_ratio, pretrained) {mixed}: filter the results first"
        )
    out = []
    for (task, model, ratio, metric), group in rows.groupby(keys + ["metric"]):
        by_seed = group.pivot_table(index="seed", columns="pretrained", values="value")
        if True not in by_seed or False not in by_seed:
            continue
        differences = (by_seed[True] - by_seed[False]).dropna()
        if differences.empty:
            continue
        mean, low, high = _mean_with_t_interval(differences, confidence)
        out.append(
            {
                "task": task,
                "model": model,
                "train_ratio": ratio,
                "metric": metric,
                "pretrained": float(by_seed[True].mean()),
                "scratch": float(by_seed[False].mean()),
                "difference": mean,
                "low": low,
                "high": high,
                "seeds": len(differences),
            }
        )
    return pd.DataFrame(out)


def _mean_with_t_interval(values: pd.Series, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t interval bounds of ``values`` (NaN bounds for a single value)."""
    from scipy import stats

    count, mean = len(values), float(values.mean())
    if count < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, count - 1) * values.std() / math.sqrt(count))
    return mean, mean - half, mean + half


def model_differences(
    results: pd.DataFrame,
    reference: str,
    split: str = "test",
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every other model minus ``reference``, paired by seed, per (task, train ratio, metric).

    A seed fixes the training subset, so both sides of a pair trained on the same patients. Models are told
    apart by name and whether they started from pretrained weights (``medmplm`` and ``medmplm (scratch)``).

    Returns:
        One row per (task, train_ratio, metric, model): ``model``, ``reference`` (the reference's name), ``value``
        and ``reference_value`` (means over the paired seeds), ``difference`` (mean paired difference), ``low``,
        ``high`` (Student-t interval) and ``seeds``.

    Raises:
        ValueError: when one (task, model, pretrained, train ratio) holds several settings.
    """
    rows = results[results["split"] == split]
    if metrics is not None:
        rows = rows[rows["metric"].isin(list(metrics))]
    rows = rows.assign(
        variant=rows["model"].where(rows["pretrained"] | (rows["model"] == reference), rows["model"] + " (scratch)")
    )
    settings = rows.groupby(["task", "variant", "train_ratio"])["setting"].nunique()
    if (settings > 1).any():
        mixed = settings[settings > 1].index.tolist()
        raise ValueError(f"several settings for (task, model, train_ratio) {mixed}: filter the results first")
    out = []
    for (task, ratio, metric), group in rows.groupby(["task", "train_ratio", "metric"]):
        by_seed = group.pivot_table(index="seed", columns="variant", values="value")
        if reference not in by_seed:
            continue
        for variant in sorted(set(by_seed.columns) - {reference}):
            paired = by_seed[[variant, reference]].dropna()
            if paired.empty:
                continue
            mean, low, high = _mean_with_t_interval(paired[variant] - paired[reference], confidence)
            out.append(
                {
                    "task": task,
                    "train_ratio": ratio,
                    "metric": metric,
                    "model": variant,
                    "reference": reference,
                    "value": float(paired[variant].mean()),
                    "reference_value": float(paired[reference].mean()),
                    "difference": mean,
                    "low": low,
                    "high": high,
                    "seeds": len(paired),
                }
            )
    return pd.DataFrame(out)
