"""BiLSTM-CRF for concept extraction (NER), built bottom-up: word vectors, BiLSTM, emissions, CRF.

Word vectors come from embeddings trained from scratch (``bilstm-crf``) or from a BERT-family text encoder's token
states (a ``bert-mlm`` export, a MedM-PLM's text component), pooled over each word's word pieces by the first piece or
their mean. The CRF is ``pytorch-crf``'s. Saving and loading are ``transformers``' own (``config.json`` +
``model.safetensors``; nothing is unpickled); an attached tokenizer is saved beside the weights and attached again on
load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchcrf import CRF
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from medmplm.models.ner.configuration_bilstm_crf import BiLstmCrfConfig
from medmplm.models.text_encoder import TextEncoder, backbone_from_config_dict
from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer

PAD_WORD, UNK_WORD = 0, 1
# Padding of predicted tags past a sentence's end.
NO_TAG = -1


@dataclass
class BiLstmCrfOutput(ModelOutput):
    """Output of :class:`BiLstmCrfForTokenClassification`.

    Attributes:
        loss: scalar, the CRF's negative log-likelihood of ``labels`` averaged over sentences (when labels are given).
        emissions: [B, W, T] per-word tag scores.
        predictions: [B, W] the Viterbi tag ids, :data:`NO_TAG` past each sentence's end (in eval mode only).
    """

    loss: torch.Tensor | None = None
    emissions: torch.Tensor | None = None
    predictions: torch.Tensor | None = None


class WordEmbeddings(nn.Module):
    """Word vectors from a vocabulary trained from scratch: ``word_ids [B, W] -> [B, W, E]``."""

    def __init__(self, vocab_size: int, embedding_size: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD_WORD)
        self.output_size = embedding_size

    def forward(self, word_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(word_ids)


def pool_pieces(states: torch.Tensor, piece_to_word: torch.Tensor, num_words: int, pooling: str) -> torch.Tensor:
    """Word vectors from word-piece states.

    Args:
        states: [B, P, H] piece states.
        piece_to_word: [B, P] the word each piece belongs to, -1 for special tokens and padding.
        num_words: W, words per window.
        pooling: ``first`` (the word's first piece) or ``mean`` (the mean of its pieces).

    Returns:
        [B, W, H]; zeros for a word without pieces.
    """
    assignment = (piece_to_word.unsqueeze(-1) == torch.arange(num_words, device=states.device)).to(states.dtype)
    if pooling == "first":
        weights = assignment * (assignment.cumsum(dim=1) == 1)
    else:
        weights = assignment / assignment.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.einsum("bpw,bph->bwh", weights, states)


class EncoderWordStates(nn.Module):
    """Word vectors from a text encoder's last states, pooled over each word's pieces."""

    def __init__(self, backbone: PreTrainedModel, trainable_layers: int, pooling: str) -> None:
        super().__init__()
        num_layers = len(backbone.encoder.layer)
        if not 0 <= trainable_layers <= num_layers:
            raise ValueError(f"encoder_trainable_layers must be in [0, {num_layers}], got {trainable_layers}")
        self.text_encoder = TextEncoder(backbone, num_layers - trainable_layers)
        self.pooling = pooling
        self.output_size = self.text_encoder.hidden_size

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, piece_to_word: torch.Tensor, num_words: int
    ) -> torch.Tensor:
        """``input_ids``, ``attention_mask``, ``piece_to_word`` [B, P] -> [B, num_words, H]."""
        states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool_pieces(states, piece_to_word, num_words, self.pooling)


class BiLstmCrfPreTrainedModel(PreTrainedModel):
    """Configuration class, weight initialisation, and the tokenizer that travels in the ``save_pretrained``
    directory of encoder-based taggers."""

    config_class = BiLstmCrfConfig
    base_model_prefix = "bilstm_crf"

    def __init__(self, config: BiLstmCrfConfig) -> None:
        super().__init__(config)
        self.tokenizer: PreTrainedTokenizerBase | None = None

    def _init_weights(self, module: nn.Module) -> None:
        # The LSTM and the CRF keep torch's and pytorch-crf's own initialisation; the library knows neither.
        if isinstance(module, nn.LSTM | CRF):
            return
        super()._init_weights(module)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """``transformers``' save, plus the attached tokenizer's files in the same directory."""
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """``transformers``' load from a local directory (never a hub), with the directory's tokenizer attached."""
        kwargs.setdefault("local_files_only", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if model.config.uses_encoder:
            model.word_vectors.text_encoder.freeze_prefix()
        directory = Path(pretrained_model_name_or_path)
        if (directory / TOKENIZER_MARKER).is_file():
            model.tokenizer = load_tokenizer(directory)
        return model


class BiLstmCrfForTokenClassification(BiLstmCrfPreTrainedModel):
    """Word vectors -> dropout -> BiLSTM -> dropout -> linear emissions -> CRF.

    Args:
        config: the configuration; ``words`` (from scratch) or ``encoder_config`` (a text encoder) must be set.
        encoder_backbone: an already loaded text encoder to use instead of a fresh one of ``config.encoder_config``.
    """

    def __init__(self, config: BiLstmCrfConfig, encoder_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if (config.words is None) == (config.encoder_config is None):
            raise ValueError("the config needs exactly one of words (from scratch) and encoder_config (a text encoder)")
        if config.uses_encoder:
            backbone = encoder_backbone or backbone_from_config_dict(config.encoder_config)
            self.word_vectors = EncoderWordStates(backbone, config.encoder_trainable_layers, config.pooling)
        else:
            self.word_vectors = WordEmbeddings(len(config.words) + 2, config.word_embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            self.word_vectors.output_size,
            config.lstm_hidden_size,
            num_layers=config.lstm_num_layers,
            dropout=config.dropout if config.lstm_num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )
        self.emissions = nn.Linear(2 * config.lstm_hidden_size, config.num_labels)
        self.crf = CRF(config.num_labels, batch_first=True)
        self.post_init()

    def forward(
        self,
        word_mask: torch.Tensor,
        word_ids: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        piece_to_word: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> BiLstmCrfOutput:
        """Tag scores, the CRF loss of ``labels`` and, in eval mode, the Viterbi tags.

        Args:
            word_mask: [B, W] 1 on a window's words (each window has at least one, at the start).
            word_ids: [B, W] word ids (from-scratch embeddings).
            input_ids, attention_mask, piece_to_word: [B, P] the window's word pieces with ``[CLS]`` / ``[SEP]``, and
                the word each piece belongs to (-1 for special tokens and padding) (encoder-based word vectors).
            labels: [B, W] tag ids (any value past a window's end).
        """
        num_words = word_mask.shape[1]
        if self.config.uses_encoder:
            vectors = self.word_vectors(input_ids, attention_mask, piece_to_word, num_words)
        else:
            vectors = self.word_vectors(word_ids)
        lengths = word_mask.sum(dim=1).long().cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.dropout(vectors), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = self.lstm(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=num_words)
        emissions = self.emissions(self.dropout(states))
        mask = word_mask.bool()
        loss = None
        if labels is not None:
            loss = -self.crf(emissions.float(), labels.long().masked_fill(~mask, 0), mask=mask, reduction="mean")
        predictions = None
        if not self.training:
            predictions = torch.full(mask.shape, NO_TAG, dtype=torch.long, device=emissions.device)
            for row, path in enumerate(self.crf.decode(emissions.float(), mask=mask)):
                predictions[row, : len(path)] = torch.tensor(path, device=emissions.device)
        return BiLstmCrfOutput(loss=loss, emissions=emissions, predictions=predictions)
