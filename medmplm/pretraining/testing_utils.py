"""What the family tests share: a short 2-worker DeepSpeed ZeRO-2 pretraining run through the recipe's command line,
joined to the test session's Ray, and the TensorBoard scalars it logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Two workers, ZeRO-2, 16 examples per step, every step logged, no early stop: a run short enough for a test.
TWO_WORKERS_ZERO2 = (
    "scaling.num_workers=2",
    "deepspeed.zero_stage=2",
    "train.global_batch_size=16",
    "train.micro_batch_size=8",
    "train.lr=3e-3",
    "train.log_every_steps=1",
    "train.early_stopping_patience=null",
    "logging.progress_bar=false",
)


def run_pretraining(*overrides: str, log: Path, timeout: float = 1500) -> str:
    """``python -m medmplm.pretrain *overrides`` in a subprocess attached to this process's Ray; its output is written
    to ``log`` and returned.

    Raises:
        AssertionError: with the output's tail when the run fails.
    """
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "medmplm.pretrain", *overrides]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    log.write_text(output)
    assert result.returncode == 0, output[-4000:]
    return output


def tensorboard_scalars(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard event files: tag -> [(step, value)] by step (a later file's value wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, dict[int, float]] = {}
    for path in sorted(tensorboard_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, {}).update({event.step: event.value for event in accumulator.Scalars(tag)})
    return {tag: sorted(by_step.items()) for tag, by_step in values.items()}
