"""The fine-tuning side of the shared training loop (``medmplm.train``): a ``TrainingTask`` for any task and model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medmplm.tasks.base import Task
from medmplm.tasks.modeling import FineTuningModel, FineTuningOutput


@dataclass
class FinetuningTask:
    """Fine-tuning ``task`` (``medmplm.tasks``) in the shared loop (``medmplm.train.task.TrainingTask``).

    Batches arrive featurised by :class:`~medmplm.tasks.featurize.ExampleFeaturizer`, whose keys are exactly the
    model's inputs. At every validation the loop gathers each example's label and predicted probability and this task
    turns them into the task's metrics (``val_auroc``, ``val_jaccard``, ...), which can also rank checkpoints.

    Attributes:
        task: the task definition (metrics, thresholds).
        label_space: codes of the outputs of a multi-label task (empty for a binary task).
        score_metric: ``val_loss`` or ``val_<metric>`` of the task.
        score_mode: ``min`` or ``max``.
    """

    task: Task
    label_space: list[str] = field(default_factory=list)
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    @property
    def name(self) -> str:
        """The task's name (run names, logs)."""
        return self.task.name

    def load_model(self, directory: Path) -> FineTuningModel:
        """The fine-tuning model saved in ``directory``, in training mode."""
        model = FineTuningModel.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """The featurised batch as it is (no randomness: fine-tuning masks nothing)."""
        return dict(batch)

    def batch_statistics(
        self, output: FineTuningOutput, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """None beyond the loss: the task's metrics need the whole split (see :meth:`evaluate`)."""
        return {}

    def collect(self, output: FineTuningOutput, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Labels and predicted probabilities of one validation batch."""
        return {
            "labels": inputs["labels"].detach().float().cpu().numpy(),
            "scores": torch.sigmoid(output.logits.detach().float()).cpu().numpy(),
        }

    def evaluate(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        """The task's metrics over a whole validation pass."""
        return self.task.metrics(collected["labels"].astype(np.int64), collected["scores"], self.label_space)
