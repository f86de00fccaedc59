"""The text encoder: a BERT-family transformers model split into a frozen prefix and a trained suffix.

The frozen prefix (embeddings and the first ``num_frozen_layers`` layers) always runs without
gradient and with dropout off, so its output for a note is a pure function of the note: the
pretraining engine can compute it once, cache it, and pass it back as ``text_hidden_states``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.masking_utils import create_bidirectional_mask

from medmplm.models.configuration_medmplm import MedMPLMConfig


def bert_text_config(config: MedMPLMConfig, vocab_size: int, pad_token_id: int) -> dict[str, Any]:
    """The ``transformers`` config (as a dict) of a fresh BERT text encoder sized by ``config``."""
    bert_config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=config.text_hidden_size,
        num_hidden_layers=config.text_num_layers,
        num_attention_heads=config.text_num_heads,
        intermediate_size=config.text_intermediate_size,
        hidden_dropout_prob=config.text_dropout,
        attention_probs_dropout_prob=config.text_dropout,
        max_position_embeddings=max(512, config.text_max_length),
        pad_token_id=pad_token_id,
        initializer_range=config.initializer_range,
    )
    return text_config_dict(bert_config)


def text_config_dict(config: PretrainedConfig) -> dict[str, Any]:
    """A text encoder's config as the plain JSON dict ``config.json`` stores (label ids as strings, as JSON has them),
    so that a saved and reloaded MedM-PLM configuration equals the one it was built with."""
    return json.loads(config.to_json_string(use_diff=False))


def load_backbone_checkpoint(path: str | os.PathLike) -> PreTrainedModel:
    """A BERT-family encoder from a local checkpoint directory (never from a hub). A BERT is loaded without its pooler,
    which the text encoder never uses (a ``bert-mlm`` export has none to load)."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if "BertForMaskedLM" in (config.architectures or []):
        # The encoder of a masked-LM checkpoint (a bert-mlm export), without loading its MLM head only to drop it.
        return BertForMaskedLM.from_pretrained(path, local_files_only=True).bert
    if config.model_type == "bert":
        return BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    return AutoModel.from_pretrained(path, local_files_only=True)


def backbone_from_config_dict(text_config: dict[str, Any]) -> PreTrainedModel:
    """A freshly initialised model of the architecture recorded in ``text_config``."""
    values = dict(text_config)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError("text_config has no 'model_type'; it must be a transformers config dictionary")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **values))


class TextEncoder(nn.Module):
    """A BERT-family encoder with its embeddings and first layers frozen.

    Args:
        backbone: a transformers model with ``.embeddings`` and ``.encoder.layer`` (BERT,
            RoBERTa, ClinicalBERT, PubMedBERT, ...). Its pooler, if any, is dropped.
        num_frozen_layers: how many of the first layers are frozen with the embeddings.
    """

    def __init__(self, backbone: PreTrainedModel, num_frozen_layers: int) -> None:
        super().__init__()
        layers = getattr(getattr(backbone, "encoder", None), "layer", None)
        if not hasattr(backbone, "embeddings") or not isinstance(layers, nn.ModuleList):
            raise TypeError(
                f"{type(backbone).__name__} is not a BERT-family encoder (needs .embeddings and .encoder.layer)"
            )
        if not 0 <= num_frozen_layers <= len(layers):
            raise ValueError(f"num_frozen_layers must be in [0, {len(layers)}], got {num_frozen_layers}")
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None
        self.backbone = backbone
        self.num_frozen_layers = num_frozen_layers
        self.freeze_prefix()
        self.train()

    def freeze_prefix(self) -> None:
        """Stop gradients to the embeddings and the frozen layers. Called again after ``from_pretrained``, whose
        weights arrive as new parameters that require gradients."""
        for module in self.frozen_modules():
            module.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's hidden states."""
        return self.backbone.config.hidden_size

    def frozen_modules(self) -> list[nn.Module]:
        """The embeddings and the frozen layers, in order."""
        return [self.backbone.embeddings, *self.backbone.encoder.layer[: self.num_frozen_layers]]

    def train(self, mode: bool = True) -> TextEncoder:
        """Set training mode; the frozen prefix stays in eval mode (no dropout) regardless."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def _layer_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return create_bidirectional_mask(
            config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def frozen_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Output of the embeddings and the frozen layers, without gradient.

        Args:
            input_ids: [B, L] token ids.
            attention_mask: [B, L] 1 on real tokens.

        Returns:
            [B, L, H] hidden states, to be passed back as ``text_hidden_states``.
        """
        with torch.no_grad():
            hidden = self.backbone.embeddings(input_ids=input_ids)
            mask = self._layer_mask(hidden, attention_mask)
            for layer in self.backbone.encoder.layer[: self.num_frozen_layers]:
                hidden = layer(hidden, mask)
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode notes from token ids, or finish encoding from a precomputed frozen prefix.

        Args:
            input_ids: [B, L] token ids (exclusive with ``text_hidden_states``).
            attention_mask: [B, L] 1 on real tokens.
            text_hidden_states: [B, L, H] output of :meth:`frozen_prefix` (any float dtype).

        Returns:
            [B, L, H] last hidden states.
        """
        if attention_mask is None:
            raise ValueError("attention_mask is required")
        if (input_ids is None) == (text_hidden_states is None):
            raise ValueError("pass exactly one of input_ids and text_hidden_states")
        if text_hidden_states is None:
            hidden = self.frozen_prefix(input_ids, attention_mask)
        else:
            # A prefix cache may store lower precision than the encoder computes in.
            hidden = text_hidden_states.to(self.backbone.embeddings.word_embeddings.weight.dtype)
        mask = self._layer_mask(hidden, attention_mask)
        for layer in self.backbone.encoder.layer[self.num_frozen_layers :]:
            hidden = layer(hidden, mask)
        return hidden
