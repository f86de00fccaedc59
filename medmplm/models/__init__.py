"""MedM-PLM model library: configuration, encoders, cross-modal module, pretraining objectives."""

from medmplm.models.configuration_medmplm import PRESETS, MedMPLMConfig
from medmplm.models.modeling_medmplm import (
    CodeEncoder,
    CrossModalAttention,
    MedMPLMForPretraining,
    MedMPLMModel,
    MedMPLMModelOutput,
    MedMPLMPretrainingOutput,
)
from medmplm.models.ontology_embedding import OntologyEmbedding, OntologyTree
from medmplm.models.text_encoder import TextEncoder

__all__ = [
    "PRESETS",
    "CodeEncoder",
    "CrossModalAttention",
    "MedMPLMConfig",
    "MedMPLMForPretraining",
    "MedMPLMModel",
    "MedMPLMModelOutput",
    "MedMPLMPretrainingOutput",
    "OntologyEmbedding",
    "OntologyTree",
    "TextEncoder",
]
