"""Configuration of the ``contrastive`` family (Cai, Huang, Nakada, Zhang and Zhou: contrastive learning on multimodal
EHRs): MedM-PLM's configuration under its own model type.

The model is MedM-PLM's text and code encoders without the cross-modal module, trained by the symmetric InfoNCE of
:mod:`medmplm.models.alignment`. Its configuration is therefore MedM-PLM's, field for field: the encoders' shapes, how
notes are read, the vocabularies and ontologies, and the alignment's ``contrastive_projection_size`` and
``contrastive_temperature``. A ``MedMPLMConfig`` reads a ``contrastive`` export's ``config.json`` as its own
(``ENCODER_EXPORT_TYPES``), which is how an export initialises MedM-PLM and the fine-tuning models. The fields of
MedM-PLM's masked-code objectives (``mask_*``, ``loss_weights``) and ``contrastive_weight`` play no part in this
family's training; they are kept so that a MedM-PLM initialised from the export has them.
"""

from __future__ import annotations

from typing import Any

from medmplm.models.configuration_medmplm import PRESETS, MedMPLMConfig


class ContrastiveConfig(MedMPLMConfig):
    """MedM-PLM's configuration (see :class:`~medmplm.models.configuration_medmplm.MedMPLMConfig`) for the
    ``contrastive`` family's model."""

    model_type = "contrastive"

    def __init__(self, **kwargs: Any) -> None:
        # Written out: transformers makes a configuration subclass without an __init__ of its own a dataclass, whose
        # generated __init__ would replace MedM-PLM's.
        super().__init__(**kwargs)


__all__ = ["PRESETS", "ContrastiveConfig"]
