"""BiLSTM-CRF concept extraction (the NER auxiliary check), registered with ``AutoConfig`` and
``AutoModelForTokenClassification`` under ``model_type`` ``bilstm-crf``."""

from transformers import AutoConfig, AutoModelForTokenClassification

from medmplm.models.ner.configuration_bilstm_crf import POOLINGS, BiLstmCrfConfig
from medmplm.models.ner.modeling_bilstm_crf import (
    NO_TAG,
    PAD_WORD,
    UNK_WORD,
    BiLstmCrfForTokenClassification,
    BiLstmCrfOutput,
    pool_pieces,
)

AutoConfig.register(BiLstmCrfConfig.model_type, BiLstmCrfConfig)
AutoModelForTokenClassification.register(BiLstmCrfConfig, BiLstmCrfForTokenClassification)

__all__ = [
    "NO_TAG",
    "PAD_WORD",
    "POOLINGS",
    "UNK_WORD",
    "BiLstmCrfConfig",
    "BiLstmCrfForTokenClassification",
    "BiLstmCrfOutput",
    "pool_pieces",
]
