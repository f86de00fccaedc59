"""Same config + same seed => same numbers, through the whole pretraining stack (``slow``).

Two fresh runs of one config on the synthetic prepared data, and a run stopped mid-epoch then resumed by name, are
compared step by step on the losses they logged: bit-identical with one worker, equal to float tolerance with two.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medmplm.config import PretrainConfig, load_config

pytestmark = pytest.mark.slow

STOP_AT = 5


def pretrain(prepared: Path, storage: Path, name: str, workers: int, *extra: str) -> dict[str, dict[int, float]]:
    """Run a short pretraining; returns tag -> {step: value} of the last attempt's TensorBoard scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medmplm.pretrain import run

    config = load_config(
        PretrainConfig,
        None,
        [
            f"data.prepared_dir={prepared}",
            f"run.storage_path={storage}",
            f"run.name={name}",
            f"scaling.num_workers={workers}",
            "train.epochs=2",
            f"train.global_batch_size={8 * workers}",
            "train.micro_batch_size=8",
            "train.lr=3e-3",
            "train.checkpoint_every_steps=null",
            "train.log_every_steps=1",
            "train.early_stopping_patience=null",
            "logging.progress_bar=false",
            # MedM-PLM on its random text encoder, without the embedded default's bert-mlm stage before it (a second
            # Ray Train run per call): what is tested is the loop's determinism, not the text side.
            "model.pretrain_text_first=false",
            "model.allow_random_frozen=true",
            *extra,
        ],
    )
    run(config, progress_bar=False)
    events = sorted(
        (storage / name / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3])
    )
    accumulator = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: {event.step: event.value for event in accumulator.Scalars(tag)}
        for tag in ("train/loss", "val/loss")
        if tag in accumulator.Tags()["scalars"]
    }


def test_one_worker_runs_are_bit_identical_and_a_resumed_run_continues_them(ray_local, synthetic_prepared, tmp_path):
    first = pretrain(synthetic_prepared, tmp_path, "first", 1)
    second = pretrain(synthetic_prepared, tmp_path, "second", 1)
    assert len(first["train/loss"]) > 2 * STOP_AT
    assert first == second, "two runs of the same config and seed logged different losses"

    pretrain(synthetic_prepared, tmp_path, "stopped", 1, f"train.max_steps={STOP_AT}")
    resumed = pretrain(synthetic_prepared, tmp_path, "stopped", 1)
    after_stop = {step: loss for step, loss in first["train/loss"].items() if step > STOP_AT}
    assert resumed["train/loss"] == after_stop, "the resumed run did not continue the uninterrupted run's losses"


def test_two_worker_runs_agree_to_float_tolerance(ray_local, synthetic_prepared, tmp_path):
    first = pretrain(synthetic_prepared, tmp_path, "first", 2)
    second = pretrain(synthetic_prepared, tmp_path, "second", 2)
    assert first["train/loss"].keys() == second["train/loss"].keys() and len(first["train/loss"]) > 4
    for tag in ("train/loss", "val/loss"):
        for step, value in first[tag].items():
            assert second[tag][step] == pytest.approx(value, rel=1e-5, abs=1e-6), f"{tag} differs at step {step}"
