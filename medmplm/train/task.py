"""What the training loop needs from a task: pretraining here, the fine-tuning tasks elsewhere.

The loop (:mod:`medmplm.train.loop`) owns everything generic: DeepSpeed, data shards, checkpoints, validation, early
stopping, metrics. A task object (picklable: it travels to every worker) owns what differs between tasks: how to build
the model from a saved directory, how to turn a featurised batch into model inputs, and which statistics describe a
batch. Featurisation itself happens upstream in Ray Data; the driver hands the loop ready-made datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class TrainingTask(Protocol):
    """A task the loop can train.

    Attributes:
        name: short name, used in run names and logs.
        score_metric: the validation metric that ranks checkpoints and drives early stopping (``val_loss``, or a
            metric returned by ``evaluate`` prefixed with ``val_``).
        score_mode: ``min`` or ``max`` for ``score_metric``.

    Optional methods, for metrics that need every prediction of the validation set (AUROC, F1 at a threshold):
    ``collect(output, inputs) -> dict[str, np.ndarray]`` returns per-example arrays for one batch, and
    ``evaluate(collected: dict[str, np.ndarray]) -> dict[str, float]`` turns the concatenation over all batches and
    workers into metrics (called on rank 0).
    """

    name: str
    score_metric: str
    score_mode: Literal["min", "max"]

    def load_model(self, directory: Path) -> nn.Module:
        """The model to train, loaded from a ``save_pretrained`` directory, in training mode, on the CPU."""
        ...

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments of the model's forward for one featurised batch.

        ``generator`` is the only randomness source (e.g. code masking), seeded by the loop from the run seed, the
        rank and the step, so that a resumed run draws what the uninterrupted run would have drawn.
        """
        ...

    def batch_statistics(self, output: Any, inputs: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``name -> (weighted sum, weight)`` for one batch; the loop reports ``sum / weight`` over steps and workers.

        The loop adds ``loss`` (weighted by batch size) itself.
        """
        ...


def has_evaluation(task: TrainingTask) -> bool:
    """Whether the task gathers per-example predictions for validation metrics."""
    return callable(getattr(task, "collect", None)) and callable(getattr(task, "evaluate", None))


def concatenate_collected(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch ``collect`` outputs (from every worker) key by key."""
    keys = sorted({key for part in parts for key in part})
    return {key: np.concatenate([part[key] for part in parts if key in part]) for key in keys}
