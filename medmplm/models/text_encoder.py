"""The text encoder: a BERT-family transformers model split into a frozen prefix and a trained suffix.

The frozen prefix (embeddings and the first ``num_frozen_layers`` layers) always runs without
gradient and with dropout off, so its output for a note is a pure function of the note: the
pretraining engine can compute it once, cache it, and pass it back as ``text_hidden_states``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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

# The text encoder's attention: torch's scaled_dot_product_attention, which runs flash or memory-efficient kernels on
# GPU (and is exact on CPU).
ATTENTION = "sdpa"


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
    options = {"local_files_only": True, "attn_implementation": ATTENTION}
    if "BertForMaskedLM" in (config.architectures or []):
        # The encoder of a masked-LM checkpoint (a bert-mlm export), without loading its MLM head only to drop it.
        return BertForMaskedLM.from_pretrained(path, **options).bert
    if config.model_type == "bert":
        return BertModel.from_pretrained(path, add_pooling_layer=False, **options)
    return AutoModel.from_pretrained(path, **options)


def backbone_from_config_dict(text_config: dict[str, Any]) -> PreTrainedModel:
    """A freshly initialised model of the architecture recorded in ``text_config``."""
    values = dict(text_config)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError("text_config has no 'model_type'; it must be a transformers config dictionary")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **values), attn_implementation=ATTENTION)


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

    def frozen_prefix(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, window_length: int | None = None
    ) -> torch.Tensor:
        """Output of the embeddings and the frozen layers, without gradient.

        Args:
            input_ids: [B, K * L] token ids: K windows of L tokens (one window when ``window_length`` is ``None``).
            attention_mask: [B, K * L] 1 on real tokens; all 0 over a window the note does not reach.
            window_length: L.

        Returns:
            [B, K * L, H] hidden states, zero over absent windows, to be passed back as ``text_hidden_states``.
        """
        with torch.no_grad():
            return self._over_windows(attention_mask, window_length, lambda rows, mask: self._prefix(input_ids, rows, mask))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        window_length: int | None = None,
    ) -> torch.Tensor:
        """Encode notes from token ids, or finish encoding from a precomputed frozen prefix. Each window of
        ``window_length`` tokens is encoded on its own (positions restart at each window); windows the note does not
        reach are not encoded at all.

        Args:
            input_ids: [B, K * L] token ids (exclusive with ``text_hidden_states``).
            attention_mask: [B, K * L] 1 on real tokens; all 0 over an absent window.
            text_hidden_states: [B, K * L, H] output of :meth:`frozen_prefix`: any float dtype, or int16 holding
                bfloat16 bit patterns (how the prefix cache stores bfloat16, which numpy and Arrow lack).
            window_length: L; ``None``: the whole sequence is one window.

        Returns:
            [B, K * L, H] last hidden states, zero over absent windows.
        """
        if attention_mask is None:
            raise ValueError("attention_mask is required")
        if (input_ids is None) == (text_hidden_states is None):
            raise ValueError("pass exactly one of input_ids and text_hidden_states")

        def encode(rows: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
            if text_hidden_states is None:
                hidden = self._prefix(input_ids, rows, mask)
            else:
                hidden = as_float_states(text_hidden_states, self.backbone.embeddings.word_embeddings.weight.dtype)
                hidden = hidden.reshape(-1, mask.shape[1], hidden.shape[-1])
                hidden = hidden if rows is None else hidden[rows]
            layer_mask = self._layer_mask(hidden, mask)
            for layer in self.backbone.encoder.layer[self.num_frozen_layers :]:
                hidden = layer(hidden, layer_mask)
            return hidden

        return self._over_windows(attention_mask, window_length, encode)

    def _prefix(self, input_ids: torch.Tensor, rows: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """The embeddings and frozen layers over the windows ``rows`` of ``input_ids`` (all when ``None``)."""
        ids = input_ids.reshape(-1, mask.shape[1])
        hidden = self.backbone.embeddings(input_ids=ids if rows is None else ids[rows])
        layer_mask = self._layer_mask(hidden, mask)
        for layer in self.backbone.encoder.layer[: self.num_frozen_layers]:
            hidden = layer(hidden, layer_mask)
        return hidden

    def _over_windows(
        self,
        attention_mask: torch.Tensor,
        window_length: int | None,
        encode: Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Run ``encode(rows, window_mask)`` on the windows a note reaches, as a batch of [windows, L], and lay the
        result back out as [B, K * L, H] with zeros over the absent windows."""
        batch_size, length = attention_mask.shape
        # A sequence no longer than one window is one window (a model's text_max_length is the most it takes).
        window_length = length if window_length is None or length <= window_length else window_length
        if length % window_length:
            raise ValueError(f"text length {length} is not a whole number of {window_length}-token windows")
        windows = attention_mask.reshape(-1, window_length)
        present = windows.bool().any(dim=1)
        if bool(present.all()):
            return encode(None, windows).reshape(batch_size, length, -1)
        rows = present.nonzero().squeeze(1)
        hidden = encode(rows, windows[rows])
        laid_out = hidden.new_zeros(windows.shape[0], window_length, hidden.shape[-1]).index_copy(0, rows, hidden)
        return laid_out.reshape(batch_size, length, -1)


def as_float_states(states: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cached hidden states in ``dtype``: int16 holds bfloat16 bit patterns (see :meth:`TextEncoder.forward`)."""
    if states.dtype == torch.int16:
        states = states.view(torch.bfloat16)
    return states.to(dtype)


def window_starts(states: torch.Tensor, attention_mask: torch.Tensor, window_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first-token ([CLS]) states of each window and which windows the note reaches.

    Args:
        states: [B, K * L, H]. attention_mask: [B, K * L]. window_length: L.

    Returns:
        ([B, K, H] states, [B, K] bool mask of the windows present).
    """
    batch_size = states.shape[0]
    present = attention_mask.reshape(batch_size, -1, window_length).bool().any(dim=-1)
    return states[:, ::window_length], present


class WindowPooling(nn.Module):
    """A note's windows' [CLS] states -> one vector: their mean over the windows present, or an attention-weighted
    sum (a learned score per window, softmax over the windows present). A note of one window gets its [CLS] state
    either way.

    Args:
        hidden_size: H. mode: ``mean`` (no parameters) or ``attention``.
    """

    def __init__(self, hidden_size: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "attention"):
            raise ValueError(f"window pooling must be 'mean' or 'attention', got {mode!r}")
        self.mode = mode
        self.score = nn.Linear(hidden_size, 1) if mode == "attention" else None

    def forward(self, window_states: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        """[B, K, H] window states and [B, K] mask (at least one window per row) -> [B, H]."""
        mask = window_mask.bool()
        if self.score is None:
            weights = mask.to(window_states.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1)
        else:
            scores = self.score(window_states).squeeze(-1).masked_fill(~mask, torch.finfo(window_states.dtype).min)
            weights = torch.softmax(scores, dim=1) * mask
        return torch.einsum("bk,bkh->bh", weights, window_states)
