"""The ``bert-mlm`` family's model: transformers' own :class:`~transformers.BertConfig` and
:class:`~transformers.BertForMaskedLM`, nothing re-implemented.

A ClinicalBERT-style text encoder pretrained by masked language modelling on the prepared notes. BERT is one of the
library's built-in architectures (``model_type`` ``bert``), so ``save_pretrained`` / ``from_pretrained`` and the Auto
classes work as they are: an export loads with ``AutoModelForMaskedLM`` (encoder + MLM head) or ``AutoModel`` (the
encoder alone, a :class:`~transformers.BertModel`), which is how MedM-PLM reads it as ``model.text_checkpoint``.
Building it from a prepared directory (tokenizer training, presets) lives in :mod:`medmplm.pretraining.bert_mlm`.
"""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, BertForMaskedLM, BertModel

# Preset keys that are BertConfig fields under the same name (the others, vocab_size and max_length, size the
# tokenizer and the windows).
BERT_CONFIG_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def bert_config_for(values: dict[str, Any], vocab_size: int, pad_token_id: int) -> BertConfig:
    """The ``BertConfig`` of a preset's ``values`` for a tokenizer of ``vocab_size`` tokens padded with ``pad_token_id``.

    Position embeddings cover ``max(512, values["max_length"])`` positions, as MedM-PLM's freshly built text encoder
    does (:func:`medmplm.models.text_encoder.build_bert_backbone`), so that a ``tiny`` export has exactly the shape of
    MedM-PLM ``tiny``'s text side.
    """
    return BertConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        max_position_embeddings=max(512, int(values["max_length"])),
        **{key: values[key] for key in BERT_CONFIG_KEYS},
    )


__all__ = ["BERT_CONFIG_KEYS", "BertConfig", "BertForMaskedLM", "BertModel", "bert_config_for"]
