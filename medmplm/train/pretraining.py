"""The MedM-PLM pretraining task for the shared loop: T2C and C2C on masked diagnosis and medication codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from medmplm.data.masking import CodeMasker


@dataclass
class PretrainingTask:
    """Masked-code pretraining (:class:`medmplm.models.MedMPLMForPretraining`).

    Args:
        masker: the model's :class:`~medmplm.data.masking.CodeMasker` (vocabulary sizes and masking rates), built on the
            driver with ``CodeMasker.from_model(model)``.
    """

    masker: CodeMasker
    name: str = "pretrain"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> torch.nn.Module:
        """The pretraining model saved in ``directory``, in training mode."""
        from medmplm.models import MedMPLMForPretraining

        model = MedMPLMForPretraining.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask codes (15%: 80% [MASK], 10% random same-type code, 10% kept) and add their labels."""
        return self.masker(batch, generator)

    def batch_statistics(self, output: Any, inputs: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-objective loss and accuracy (T2C/C2C x diagnosis/medication), weighted by their masked-code counts."""
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, loss in output.losses.items():
            count = output.target_counts[name].detach().float()
            stats[f"loss_{name}"] = (loss.detach().float() * count, count)
            accuracy = torch.nan_to_num(output.accuracies[name].detach().float())
            stats[f"accuracy_{name}"] = (accuracy * count, count)
        return stats
