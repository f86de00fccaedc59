"""A minimal task and model for testing the training loop itself (row order, validation coverage), not a model.

:class:`RowRecordingTask` trains :class:`TinyRegressor` on rows ``{"row_id", "features", "target"}`` and appends the
``row_id`` of every batch each worker receives to ``<record_dir>/rows-<rank>.jsonl``, so a test can read back exactly
which rows each worker saw, in which order, in training and in validation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import ModelOutput

NUM_FEATURES = 4


@dataclass
class TinyOutput(ModelOutput):
    """Output of :class:`TinyRegressor`: the mean squared error."""

    loss: torch.Tensor | None = None


class TinyRegressor(nn.Module):
    """A linear regression with ``save_pretrained`` / ``from_pretrained`` (safetensors), as the loop expects."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(NUM_FEATURES, 1)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> TinyOutput:
        """``features [B, 4]``, ``target [B]`` -> the loss."""
        return TinyOutput(loss=nn.functional.mse_loss(self.linear(features).squeeze(-1), target))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps({"num_features": NUM_FEATURES}), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> TinyRegressor:
        model = cls()
        model.load_state_dict(load_file(Path(directory) / "model.safetensors"))
        return model


def rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` rows of a noisy linear problem, ``row_id`` 0..count-1 in order."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(count, NUM_FEATURES, generator=generator)
    target = features @ torch.arange(1.0, NUM_FEATURES + 1) + 0.1 * torch.randn(count, generator=generator)
    return [{"row_id": i, "features": features[i].tolist(), "target": float(target[i])} for i in range(count)]


@dataclass
class RowRecordingTask:
    """A :class:`~medmplm.train.task.TrainingTask` that records the rows each worker is given."""

    record_dir: str
    name: str = "rows"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> TinyRegressor:
        return TinyRegressor.from_pretrained(directory).train()

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        with open(Path(self.record_dir) / f"rows-{rank}.jsonl", "a", encoding="utf-8") as record:
            record.write(json.dumps({"training": training, "rows": batch["row_id"].tolist()}) + "\n")
        return {"features": batch["features"].float(), "target": batch["target"].float()}

    def batch_statistics(self, output: TinyOutput, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {}


def recorded_batches(record_dir: str | os.PathLike, rank: int, training: bool) -> list[list[int]]:
    """The row ids of each batch rank ``rank`` received, in order, for training or validation."""
    path = Path(record_dir) / f"rows-{rank}.jsonl"
    if not path.is_file():
        return []
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [entry["rows"] for entry in entries if entry["training"] == training]
