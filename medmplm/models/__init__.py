"""The model families, transformers style: ``configuration_<family>.py`` + ``modeling_<family>.py``.

MedM-PLM lives here at the top (configuration, encoders, cross-modal module, pretraining objectives); G-BERT,
Med-BERT and M-BEHRT in ``gbert/``, ``medbert/`` and ``mbehrt/``; the contrastive family (MedM-PLM's encoders and the
code-note alignment of ``alignment.py``) in ``contrastive/``; MEDFuse (its masked lab model and its classifier) in
``medfuse/``; ``bert-mlm`` is transformers' own BERT
(``bert_mlm/``). Importing this package registers every family with ``AutoConfig``, ``AutoModel`` and
``AutoModelForPreTraining``, so an export of any family loads with ``AutoModel.from_pretrained(directory)``. The NER
check's BiLSTM-CRF (``ner/``) registers with ``AutoConfig`` and ``AutoModelForTokenClassification``.
"""

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

# Imported for their Auto class registration (after MedM-PLM, whose code encoder G-BERT reuses).
from medmplm.models import contrastive, gbert, mbehrt, medbert, medfuse, ner  # noqa: E402, F401  isort: skip

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
