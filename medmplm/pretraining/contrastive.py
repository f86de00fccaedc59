"""``model.family=contrastive``: a visit's codes and its note pulled together by a symmetric InfoNCE (Cai, Huang,
Nakada, Zhang and Zhou, contrastive learning on multimodal EHRs).

Model: :class:`medmplm.models.contrastive.ContrastiveForPretraining`: MedM-PLM's text encoder (notes read in windows,
``model.text.*``) and code encoder, no cross-modal module, projections to a shared space and a learned temperature.
Built like MedM-PLM (the presets are MedM-PLM's, ``model.text_checkpoint`` / ``model.tokenizer_dir`` for the text side,
frozen random text layers refused unless ``model.allow_random_frozen=true``), or continued from a ``contrastive``
export (``model.init_from``). Unlike MedM-PLM, no ``bert-mlm`` stage runs first: pass ``model.text_checkpoint``.

Featuriser: MedM-PLM's (:class:`~medmplm.data.features.VisitFeaturizer`), the frozen-prefix cache included
(``data.text_cache``). Objective: the model's loss, no masking. Each visit with a note and at least one code is an
anchor; its own note (codes) is the positive, every other such visit of the global batch a negative: the micro-batches
of all workers at one step, gathered with gradients (a step with gradient accumulation has several such batches).
Validation scores each validation micro-batch against itself, whatever the number of workers.

The export initialises MedM-PLM (``python -m medmplm.pretrain model.init_from=EXPORT``: encoders from the export,
cross-modal module and heads fresh) and the fine-tuning models that read MedM-PLM's parts
(``python -m medmplm.finetune --model medmplm-code --init EXPORT``, ``medmplm``, ``medmplm-text``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from medmplm.config import ConfigError
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options
from medmplm.pretraining.medmplm import (
    MedMPLMFamily,
    build_medmplm,
    export_model_type,
    refuse_random_frozen,
    refuse_unknown_overrides,
)

if TYPE_CHECKING:
    from medmplm.config import ModelSection
    from medmplm.models.contrastive import ContrastiveForPretraining


@dataclass
class ContrastivePretrainingTask:
    """Contrastive pretraining of :class:`~medmplm.models.contrastive.ContrastiveForPretraining` for the shared loop."""

    name: str = "pretrain-contrastive"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> ContrastiveForPretraining:
        """The pretraining model saved in ``directory``, in training mode."""
        from medmplm.models.contrastive import ContrastiveForPretraining

        model = ContrastiveForPretraining.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """The featurised batch as it is: the objective draws nothing at random."""
        return dict(batch)

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Retrieval accuracies of the anchors (weighted by their number), the candidates each anchor was scored
        against, and the temperature."""
        anchors = output.local_pairs.detach().float()
        one = torch.ones((), device=anchors.device)
        code_to_text = torch.nan_to_num(output.code_to_text_accuracy.detach().float())
        text_to_code = torch.nan_to_num(output.text_to_code_accuracy.detach().float())
        return {
            "accuracy_code_to_text": (code_to_text * anchors, anchors),
            "accuracy_text_to_code": (text_to_code * anchors, anchors),
            "candidates": (output.pairs.detach().float(), one),
            "temperature": (1.0 / output.logit_scale.detach().float(), one),
        }


class ContrastiveFamily(MedMPLMFamily):
    """The contrastive family in the pretraining recipe (see the module docstring); MedM-PLM's presets and datasets."""

    name = "contrastive"
    summary = (
        "contrastive (Cai et al.): MedM-PLM's text and code encoders, symmetric InfoNCE between a visit's codes and "
        "its note, negatives from the global batch"
    )
    default_preset = "tiny"
    options: dict[str, Any] = {}

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        from medmplm.models.contrastive import ContrastiveConfig, ContrastiveForPretraining

        resolve_options(self, model.options)
        note_reading = model.text.model_fields()
        if model.init_from is not None:
            source = export_model_type(model.init_from)
            if source != ContrastiveConfig.model_type:
                raise ConfigError(
                    f"model.init_from: {model.init_from} is a {source!r} model, expected a contrastive export"
                )
            if model.overrides:
                raise ConfigError(
                    "model.overrides: the model continued from model.init_from keeps its own configuration"
                )
            try:
                config = ContrastiveConfig.from_pretrained(model.init_from)
                config.set_note_reading(**note_reading)
            except ValueError as error:
                raise ConfigError(f"model.text: {error}") from error
            built = ContrastiveForPretraining.from_pretrained(model.init_from, config=config)
            return BuiltModel(built, description=f"continued from {model.init_from}")
        refuse_unknown_overrides(model.overrides)
        try:
            config = ContrastiveConfig(**{**preset_values(self, model), **note_reading})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.overrides or model.text: {error}") from error
        refuse_random_frozen(model, config.text_num_frozen_layers)
        built = build_medmplm(
            ContrastiveForPretraining, prepared_dir, config, model.tokenizer_dir, model.text_checkpoint
        )
        text = f"text encoder from {model.text_checkpoint}" if model.text_checkpoint else "text encoder random"
        return BuiltModel(
            built,
            description=f"{model.preset or self.default_preset} preset, {text}, "
            f"{config.text_num_frozen_layers} frozen layer(s), {config.contrastive_projection_size}-d shared space",
        )

    def load_model(self, directory: Path) -> ContrastiveForPretraining:
        return ContrastivePretrainingTask().load_model(directory)

    def task(self, model_dir: Path) -> ContrastivePretrainingTask:
        return ContrastivePretrainingTask()


FAMILY = ContrastiveFamily()
