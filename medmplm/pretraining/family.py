"""What a model family gives the one pretraining recipe (``python -m medmplm.pretrain model.family=NAME``).

The recipe (:mod:`medmplm.pretrain`) owns everything shared: Ray, the run directory and resume, the initial model
bundle, the training loop (DeepSpeed, checkpoints, validation, early stopping) and the export. A family owns what
differs: how its model is built (from the prepared directory, a preset and overrides, or a checkpoint), how the visit
records become its training rows (featuriser), and its objective (the model returns its loss in a typed output; the
family's :class:`~medmplm.train.task.TrainingTask` turns a batch into model inputs, e.g. by masking).

Every family's model is a ``transformers`` ``PreTrainedModel`` registered with the Auto classes, so the initial
model, every checkpoint and the export are ``save_pretrained`` directories. Files besides the model's own (a
tokenizer) are written into the same directory by :meth:`PretrainingFamily.build_model`'s caller and carried into
every checkpoint by the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from medmplm.config import ModelSection, PretrainConfig
    from medmplm.train.task import TrainingTask


@dataclass
class BuiltModel:
    """A freshly built (or checkpoint-initialised) model and the tokenizer saved beside it (``None``: codes only).

    Attributes:
        model: the pretraining model (``save_pretrained`` writes it).
        tokenizer: written into the same directory with ``save_pretrained``.
        description: one line for the run header, e.g. ``tiny preset, text encoder from /ckpt (MLM-pretrained)``.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None = None
    description: str = ""


class PretrainingFamily(Protocol):
    """One model family of the pretraining recipe.

    Attributes:
        name: the ``model.family`` value.
        summary: one line for ``--help`` and the run header.
        presets: preset name -> model configuration values (``model.preset``; ``model.overrides`` change them).
        default_preset: the preset used when ``model.preset`` is ``null``.
        options: ``model.options`` key -> default value (family-specific pretraining options, e.g. masking rates).
    """

    name: str
    summary: str
    presets: dict[str, dict[str, Any]]
    default_preset: str
    options: dict[str, Any]

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        """The model a new run starts from: a preset (``model.preset`` + ``model.overrides``) built for the prepared
        directory's vocabularies / notes, or continued from a checkpoint (``model.init_from``, or the family's own
        checkpoint key). Torch is already seeded.

        Raises:
            ConfigError: naming the ``model.*`` key that is wrong.
        """
        ...

    def load_model(self, directory: Path) -> nn.Module:
        """The pretraining model saved in ``directory`` (``save_pretrained``), in training mode, on the CPU."""
        ...

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """Featurised ``train`` and ``val`` Ray Datasets with exactly the columns the task reads, materialised when
        ``config.data.materialize``; the family logs its own counts (rows, truncations, unknown codes).

        ``model_dir`` is the initial model's directory (model + tokenizer files); Ray is initialised.
        """
        ...

    def task(self, model_dir: Path) -> TrainingTask:
        """The picklable training task (model loading, inputs with masking, statistics) for the model in ``model_dir``."""
        ...


def resolve_options(family: PretrainingFamily, options: dict[str, Any]) -> dict[str, Any]:
    """``model.options`` over the family's defaults.

    Raises:
        ConfigError: naming an unknown option key and the known ones.
    """
    from medmplm.config import ConfigError

    unknown = sorted(set(options) - set(family.options))
    if unknown:
        raise ConfigError(
            f"model.options.{unknown[0]}: unknown option of family {family.name!r}; known: {sorted(family.options)}"
        )
    return {**family.options, **options}


def preset_values(family: PretrainingFamily, model: ModelSection) -> dict[str, Any]:
    """The family's configuration values for ``model.preset`` (default preset when null) with ``model.overrides``.

    Raises:
        ConfigError: naming ``model.preset`` when the family has no such preset.
    """
    from medmplm.config import ConfigError

    name = model.preset or family.default_preset
    if name not in family.presets:
        raise ConfigError(
            f"model.preset: family {family.name!r} has no preset {name!r}; known: {sorted(family.presets)}"
        )
    return {**family.presets[name], **model.overrides}
