"""Med-BERT (Rasmy et al. 2021) on patient code sequences, registered with the ``transformers`` Auto classes.

Importing this package registers ``model_type="medbert"``: ``AutoConfig`` -> :class:`MedBertConfig`, ``AutoModel`` ->
:class:`MedBertModel`, ``AutoModelForPreTraining`` -> :class:`MedBertForPretraining`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medmplm.models.medbert.configuration_medbert import MedBertConfig
from medmplm.models.medbert.modeling_medbert import (
    MedBertForPretraining,
    MedBertModel,
    MedBertModelOutput,
    MedBertPreTrainedModel,
    MedBertPretrainingOutput,
)

AutoConfig.register(MedBertConfig.model_type, MedBertConfig)
AutoModel.register(MedBertConfig, MedBertModel)
AutoModelForPreTraining.register(MedBertConfig, MedBertForPretraining)

__all__ = [
    "MedBertConfig",
    "MedBertForPretraining",
    "MedBertModel",
    "MedBertModelOutput",
    "MedBertPreTrainedModel",
    "MedBertPretrainingOutput",
]
