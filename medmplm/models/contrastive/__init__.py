"""The ``contrastive`` family: MedM-PLM's text and code encoders trained by a symmetric code-note InfoNCE (Cai, Huang,
Nakada, Zhang and Zhou), registered with the transformers Auto classes as model type ``contrastive``.

Importing this package registers :class:`ContrastiveConfig` with ``AutoConfig``, :class:`ContrastiveModel` with
``AutoModel`` and :class:`ContrastiveForPretraining` with ``AutoModelForPreTraining``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medmplm.models.contrastive.configuration_contrastive import ContrastiveConfig
from medmplm.models.contrastive.modeling_contrastive import (
    ContrastiveForPretraining,
    ContrastiveModel,
    ContrastiveModelOutput,
    ContrastivePreTrainedModel,
    ContrastivePretrainingOutput,
)

AutoConfig.register(ContrastiveConfig.model_type, ContrastiveConfig)
AutoModel.register(ContrastiveConfig, ContrastiveModel)
AutoModelForPreTraining.register(ContrastiveConfig, ContrastiveForPretraining)

__all__ = [
    "ContrastiveConfig",
    "ContrastiveForPretraining",
    "ContrastiveModel",
    "ContrastiveModelOutput",
    "ContrastivePreTrainedModel",
    "ContrastivePretrainingOutput",
]
