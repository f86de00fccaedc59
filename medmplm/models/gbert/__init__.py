"""G-BERT on its own (codes only), registered with the transformers Auto classes as model type ``gbert``.

Importing this package registers :class:`GBertConfig` with ``AutoConfig``, :class:`GBertModel` with ``AutoModel`` and
:class:`GBertForPretraining` with ``AutoModelForPreTraining``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medmplm.models.gbert.configuration_gbert import OBJECTIVE_CODE_TYPES, OBJECTIVES, GBertConfig
from medmplm.models.gbert.modeling_gbert import (
    GBertForPretraining,
    GBertModel,
    GBertModelOutput,
    GBertPreTrainedModel,
    GBertPretrainingOutput,
)

AutoConfig.register(GBertConfig.model_type, GBertConfig)
AutoModel.register(GBertConfig, GBertModel)
AutoModelForPreTraining.register(GBertConfig, GBertForPretraining)

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_CODE_TYPES",
    "GBertConfig",
    "GBertForPretraining",
    "GBertModel",
    "GBertModelOutput",
    "GBertPreTrainedModel",
    "GBertPretrainingOutput",
]
