"""MEDFuse (arXiv 2407.12309): masked lab-test modelling, language-model note vectors, disentangled fusion; registered
with the transformers Auto classes.

Importing this package registers ``model_type="medfuse-lab"`` (``AutoConfig`` -> :class:`MedFuseLabConfig`,
``AutoModel`` -> :class:`MedFuseLabModel`, ``AutoModelForPreTraining`` -> :class:`MedFuseLabForMaskedModeling`) and
``model_type="medfuse"`` (``AutoConfig`` -> :class:`MedFuseConfig`, ``AutoModel`` -> :class:`MedFuseModel`,
``AutoModelForSequenceClassification`` -> :class:`MedFuseForMultiLabelClassification`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from medmplm.models.medfuse.configuration_medfuse import MedFuseConfig, MedFuseLabConfig
from medmplm.models.medfuse.modeling_medfuse import (
    MedFuseForMultiLabelClassification,
    MedFuseLabForMaskedModeling,
    MedFuseLabModel,
    MedFuseLabModelOutput,
    MedFuseLabPretrainingOutput,
    MedFuseModel,
    MedFuseModelOutput,
    MedFuseOutput,
)

AutoConfig.register(MedFuseLabConfig.model_type, MedFuseLabConfig)
AutoModel.register(MedFuseLabConfig, MedFuseLabModel)
AutoModelForPreTraining.register(MedFuseLabConfig, MedFuseLabForMaskedModeling)
AutoConfig.register(MedFuseConfig.model_type, MedFuseConfig)
AutoModel.register(MedFuseConfig, MedFuseModel)
AutoModelForSequenceClassification.register(MedFuseConfig, MedFuseForMultiLabelClassification)

__all__ = [
    "MedFuseConfig",
    "MedFuseForMultiLabelClassification",
    "MedFuseLabConfig",
    "MedFuseLabForMaskedModeling",
    "MedFuseLabModel",
    "MedFuseLabModelOutput",
    "MedFuseLabPretrainingOutput",
    "MedFuseModel",
    "MedFuseModelOutput",
    "MedFuseOutput",
]
