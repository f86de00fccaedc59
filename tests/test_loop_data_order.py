"""Which rows the training loop gives each worker, through the real Ray Train + Ray Data path (``slow``).

A linear model on numbered rows (``medmplm.train.testing_utils``) records the row ids of every batch, so the tests
read back the exact order: shuffled every epoch, the same for the same seed, and every validation row scored exactly
once whatever the number of workers.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from medmplm.config import DeepSpeedSection, LoggingSection, RunSection, ScalingSection, TrainSection
from medmplm.train.testing_utils import RowRecordingTask, TinyRegressor, recorded_batches, rows

pytestmark = pytest.mark.slow

TRAIN_ROWS, VAL_ROWS, MICRO_BATCH, EPOCHS = 48, 13, 4, 3


def fit_and_record(tmp_path: Path, name: str, seed: int, workers: int) -> Path:
    """Train 3 epochs; returns the directory holding each rank's recorded batches."""
    import ray
    import ray.data

    from medmplm.train.bundle import ModelBundle
    from medmplm.train.trainer import fit

    record_dir = tmp_path / name
    record_dir.mkdir()
    TinyRegressor().save_pretrained(tmp_path / f"{name}-model")
    all_rows = rows(TRAIN_ROWS + VAL_ROWS)
    datasets = {
        "train": ray.data.from_items(all_rows[:TRAIN_ROWS]).materialize(),
        "val": ray.data.from_items(all_rows[TRAIN_ROWS:]).materialize(),
    }
    fit(
        RowRecordingTask(str(record_dir)),
        datasets,
        ray.put(ModelBundle.from_directory(tmp_path / f"{name}-model")),
        train=TrainSection(
            epochs=EPOCHS,
            seed=seed,
            global_batch_size=MICRO_BATCH * workers,
            micro_batch_size=MICRO_BATCH,
            checkpoint_every_steps=None,
            early_stopping_patience=None,
            keep_checkpoints=1,
        ),
        deepspeed=DeepSpeedSection(zero_stage=0),
        scaling=ScalingSection(num_workers=workers),
        run=RunSection(storage_path=str(tmp_path / "runs"), max_failures=0),
        logging=LoggingSection(tensorboard=False),
        run_name=name,
        config_yaml="{}\n",
        config_file_name="config.yaml",
    )
    return record_dir


def epochs_of(record_dir: Path, rank: int, batches_per_epoch: int) -> list[list[int]]:
    batches = recorded_batches(record_dir, rank, training=True)
    assert len(batches) == EPOCHS * batches_per_epoch
    return [
        list(itertools.chain.from_iterable(batches[e * batches_per_epoch : (e + 1) * batches_per_epoch]))
        for e in range(EPOCHS)
    ]


def test_one_worker_shuffles_every_epoch_reproducibly_by_seed(ray_local, tmp_path):
    batches_per_epoch = TRAIN_ROWS // MICRO_BATCH
    first = epochs_of(fit_and_record(tmp_path, "seed0-a", seed=0, workers=1), 0, batches_per_epoch)
    again = epochs_of(fit_and_record(tmp_path, "seed0-b", seed=0, workers=1), 0, batches_per_epoch)
    other = epochs_of(fit_and_record(tmp_path, "seed1", seed=1, workers=1), 0, batches_per_epoch)

    for epoch in first:
        assert sorted(epoch) == list(range(TRAIN_ROWS)), "an epoch must see every training row once"
    assert first[0] != list(range(TRAIN_ROWS)), "the first epoch kept the stored (patient-sorted) order"
    assert len({tuple(epoch) for epoch in first}) == EPOCHS, "two epochs repeated the same order"
    assert first == again, "the same seed gave another row order"
    assert first != other, "another seed gave the same row order"


def test_two_workers_get_the_same_rows_every_run_and_validate_every_row_once(ray_local, tmp_path):
    batches_per_epoch = TRAIN_ROWS // 2 // MICRO_BATCH
    runs = [fit_and_record(tmp_path, f"two-{attempt}", seed=0, workers=2) for attempt in "ab"]
    per_run = [[epochs_of(run, rank, batches_per_epoch) for rank in (0, 1)] for run in runs]
    assert per_run[0] == per_run[1], "two runs with the same seed dealt rows to the workers differently"

    for epoch in range(EPOCHS):
        seen = per_run[0][0][epoch] + per_run[0][1][epoch]
        assert sorted(seen) == list(range(TRAIN_ROWS)), "the workers' shards must cover the training rows once"

    for run in runs:
        validated = [row for rank in (0, 1) for batch in recorded_batches(run, rank, training=False) for row in batch]
        # One validation per epoch, each scoring the 13 validation rows exactly once between the two workers.
        expected = sorted(list(range(TRAIN_ROWS, TRAIN_ROWS + VAL_ROWS)) * EPOCHS)
        assert sorted(validated) == expected
