"""Med-BERT (Rasmy et al. 2021): a BERT over a patient's code sequence, pretrained by masked code modelling and
prolonged length-of-stay prediction.

A patient is ``[CLS]`` followed by the codes of their visits, oldest first; each visit's diagnoses (in SEQ_NUM order)
then its medications (the token space is described in :mod:`.configuration_medbert`). A token's input vector is the sum
of three embeddings, as in Med-BERT:

* the code embedding (one table for every code type and the special tokens);
* the serialization embedding: the code's order within its visit (1, 2, ...; 0 for [CLS] and padding);
* the visit (segment) embedding: the visit's index among the patient's kept visits (1, 2, ...; 0 for [CLS] and
  padding),

then LayerNorm and dropout, and a post-LayerNorm Transformer encoder with GELU (BERT's layer; ``torch.nn``'s
implementation).

Fine-tuning in this project encodes one visit at a time and its task head pools the visits of a history, so
:meth:`MedBertModel.encode_visits` turns each visit into a one-visit patient sequence and returns its [CLS] vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from medmplm.data.vocab import CLS_ID, NUM_SPECIAL_TOKENS, PAD_ID
from medmplm.models.initialization import init_standard_module
from medmplm.models.medbert.configuration_medbert import MedBertConfig

IGNORE_INDEX = -100


@dataclass
class MedBertModelOutput(ModelOutput):
    """Output of :class:`MedBertModel`.

    Attributes:
        last_hidden_state: ``[B, L, H]`` the encoder's output for every token.
        pooler_output: ``[B, H]`` the [CLS] output through a dense layer and tanh (BERT's pooler), which the
            prolonged length-of-stay head reads.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class MedBertPretrainingOutput(ModelOutput):
    """Output of :class:`MedBertForPretraining`.

    Attributes:
        loss: ``[]`` the weighted sum of the objectives computed (``None`` without labels).
        losses: objective (``mlm``, ``prolonged_los``) -> ``[]`` its mean loss, for the objectives whose labels were
            given (``mlm`` is 0 for a batch without a masked code).
        masked_code_logits: ``[M, V]`` scores over the token space at the M masked positions (``labels != -100``,
            row-major order); only computed at those positions, a full ``[B, L, V]`` would be large.
        prolonged_los_logits: ``[B]`` logit of a prolonged stay.
        masked_code_accuracy: ``[]`` share of masked codes predicted exactly (0 without targets).
        prolonged_los_accuracy: ``[]`` share of patients whose prolonged stay is predicted right (logit > 0 is yes).
        target_counts: objective -> ``[]`` its number of targets (masked codes; patients).
        model_output: the :class:`MedBertModelOutput` the objectives were computed from.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    masked_code_logits: torch.Tensor | None = None
    prolonged_los_logits: torch.Tensor | None = None
    masked_code_accuracy: torch.Tensor | None = None
    prolonged_los_accuracy: torch.Tensor | None = None
    target_counts: dict[str, torch.Tensor] | None = None
    model_output: MedBertModelOutput | None = None


class MedBertEmbeddings(nn.Module):
    """Code + serialization + visit embeddings, LayerNorm and dropout."""

    def __init__(self, config: MedBertConfig) -> None:
        super().__init__()
        self.code_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=PAD_ID)
        self.serialization_embeddings = nn.Embedding(config.max_codes_per_visit, config.hidden_size)
        self.visit_embeddings = nn.Embedding(config.max_visits, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, input_ids: torch.Tensor, visit_ids: torch.Tensor, serialization_ids: torch.Tensor
    ) -> torch.Tensor:
        """``[B, L]`` ids -> ``[B, L, H]``; serialization ids beyond the table share its last entry."""
        serialization_ids = serialization_ids.clamp(max=self.serialization_embeddings.num_embeddings - 1)
        embeddings = (
            self.code_embeddings(input_ids)
            + self.serialization_embeddings(serialization_ids)
            + self.visit_embeddings(visit_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class MedBertPooler(nn.Module):
    """BERT's pooler: the [CLS] output through a dense layer and tanh."""

    def __init__(self, config: MedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` -> ``[B, H]``."""
        return torch.tanh(self.dense(hidden_states[:, 0]))


class MedBertCodePredictionHead(nn.Module):
    """BERT's masked-token head: dense + GELU + LayerNorm, then scores against the code embedding table (tied, as
    BERT's and Med-BERT's decoder) plus a per-token bias."""

    def __init__(self, config: MedBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, code_embeddings: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` hidden states and the ``[V, H]`` code embedding table -> ``[..., V]`` scores."""
        transformed = self.LayerNorm(F.gelu(self.dense(hidden_states)))
        return transformed @ code_embeddings.T + self.bias


class MedBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation (BERT's: normal with ``initializer_range``) and loading for the Med-BERT models."""

    config_class = MedBertConfig
    base_model_prefix = "medbert"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if init_standard_module(module, std):
            return
        if isinstance(module, MedBertCodePredictionHead):
            init.zeros_(module.bias)


class MedBertModel(MedBertPreTrainedModel):
    """Med-BERT's encoder: embeddings, Transformer, pooler.

    Attributes:
        visit_embedding_size: width of :meth:`encode_visits`' vectors (``hidden_size``).
    """

    # Loaded from a MedBertForPretraining directory (an export), the pretraining heads are left out by design.
    _keys_to_ignore_on_load_unexpected = [r"^(code_prediction_head|prolonged_los_head)\."]

    def __init__(self, config: MedBertConfig) -> None:
        super().__init__(config)
        self.embeddings = MedBertEmbeddings(config)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_heads,
            config.intermediate_size,
            config.dropout,
            activation="gelu",
            layer_norm_eps=config.layer_norm_eps,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.pooler = MedBertPooler(config)
        self.visit_embedding_size = config.hidden_size
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.code_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.code_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visit_ids: torch.Tensor,
        serialization_ids: torch.Tensor,
    ) -> MedBertModelOutput:
        """Encode patient sequences.

        Args:
            input_ids: ``[B, L]`` ids in the shared token space, [CLS] first.
            attention_mask: ``[B, L]`` 1 on [CLS] and codes, 0 on padding.
            visit_ids: ``[B, L]`` visit index (1, 2, ... oldest kept visit first; 0 on [CLS] and padding).
            serialization_ids: ``[B, L]`` order within the visit (1, 2, ...; 0 on [CLS] and padding).
        """
        hidden_states = self.embeddings(input_ids, visit_ids, serialization_ids)
        hidden_states = self.encoder(hidden_states, src_key_padding_mask=~attention_mask.bool())
        return MedBertModelOutput(last_hidden_state=hidden_states, pooler_output=self.pooler(hidden_states))

    def encode_visits(
        self, diag_ids: torch.Tensor, diag_mask: torch.Tensor, med_ids: torch.Tensor, med_mask: torch.Tensor
    ) -> torch.Tensor:
        """Encode single visits as fine-tuning featurises them (:class:`~medmplm.data.features.VisitFeaturizer`).

        Each visit becomes a one-visit patient sequence, ``[CLS]`` + its diagnoses + its medications (visit id 1,
        serialization 1, 2, ... over the real codes), and its vector is that sequence's [CLS] output.

        Args:
            diag_ids: ``[N, 1 + C]`` ids of the diagnosis vocabulary (``config.code_vocab("diagnosis")``), [CLS] first.
            diag_mask: ``[N, 1 + C]`` 1 on [CLS] and codes; padded positions are never read.
            med_ids: ``[N, 1 + C']`` ids of the medication vocabulary, [CLS] first.
            med_mask: ``[N, 1 + C']``.

        Returns:
            ``[N, visit_embedding_size]``.
        """
        codes = torch.cat(
            [self._to_token_space(diag_ids[:, 1:], "diagnosis"), self._to_token_space(med_ids[:, 1:], "medication")],
            dim=1,
        )
        mask = torch.cat([diag_mask[:, 1:], med_mask[:, 1:]], dim=1).long()
        codes = codes.masked_fill(mask == 0, PAD_ID)
        first = torch.zeros_like(mask[:, :1])
        output = self(
            input_ids=torch.cat([first + CLS_ID, codes], dim=1),
            attention_mask=torch.cat([first + 1, mask], dim=1),
            visit_ids=torch.cat([first, mask], dim=1),
            serialization_ids=torch.cat([first, mask.cumsum(dim=1) * mask], dim=1),
        )
        return output.last_hidden_state[:, 0]

    def _to_token_space(self, ids: torch.Tensor, code_type: str) -> torch.Tensor:
        """Ids of ``code_type``'s own vocabulary (codes from 4) -> ids of the shared token space."""
        start, _ = self.config.token_range(code_type)
        return torch.where(ids >= NUM_SPECIAL_TOKENS, ids - NUM_SPECIAL_TOKENS + start, ids)


class MedBertForPretraining(MedBertPreTrainedModel):
    """Med-BERT with its two pretraining objectives.

    * Masked code modelling (``mlm``): cross-entropy over the token space at every masked position.
    * Prolonged length of stay (``prolonged_los``): binary cross-entropy from the pooled [CLS]. The label is
      patient-level, as in Med-BERT: 1 when any admission in the patient's sequence lasted longer than
      ``config.los_days`` days.
    """

    def __init__(self, config: MedBertConfig) -> None:
        super().__init__(config)
        self.medbert = MedBertModel(config)
        self.code_prediction_head = MedBertCodePredictionHead(config)
        self.prolonged_los_head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visit_ids: torch.Tensor,
        serialization_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        los_label: torch.Tensor | None = None,
    ) -> MedBertPretrainingOutput:
        """Encode (masked) patient sequences and compute the objectives whose labels are given.

        Args:
            input_ids, attention_mask, visit_ids, serialization_ids: ``[B, L]``, as :meth:`MedBertModel.forward`.
            labels: ``[B, L]`` the original id at masked positions, -100 elsewhere.
            los_label: ``[B]`` 1 when the patient has a prolonged stay.
        """
        model_output = self.medbert(input_ids, attention_mask, visit_ids, serialization_ids)
        los_logits = self.prolonged_los_head(model_output.pooler_output).squeeze(-1)
        weights = self.config.loss_weights
        losses: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        masked_code_logits = masked_code_accuracy = los_accuracy = None
        if labels is not None:
            targets = labels != IGNORE_INDEX
            target_ids = labels[targets]
            masked_code_logits = self.code_prediction_head(
                model_output.last_hidden_state[targets], self.medbert.embeddings.code_embeddings.weight
            )
            counts["mlm"] = targets.sum()
            if target_ids.numel():
                losses["mlm"] = F.cross_entropy(masked_code_logits, target_ids)
                masked_code_accuracy = (masked_code_logits.argmax(dim=-1) == target_ids).float().mean()
            else:
                # No target in this batch: a zero that still reaches every parameter of the head.
                losses["mlm"] = masked_code_logits.sum() * 0.0
                masked_code_accuracy = losses["mlm"].detach()
        if los_label is not None:
            losses["prolonged_los"] = F.binary_cross_entropy_with_logits(los_logits, los_label.to(los_logits.dtype))
            los_accuracy = ((los_logits > 0) == los_label.bool()).float().mean()
            counts["prolonged_los"] = torch.tensor(los_label.shape[0], device=los_logits.device)
        loss = sum(weights[name] * value for name, value in losses.items()) if losses else None
        return MedBertPretrainingOutput(
            loss=loss,
            losses=losses or None,
            masked_code_logits=masked_code_logits,
            prolonged_los_logits=los_logits,
            masked_code_accuracy=masked_code_accuracy,
            prolonged_los_accuracy=los_accuracy,
            target_counts=counts or None,
            model_output=model_output,
        )


__all__ = [
    "MedBertForPretraining",
    "MedBertModel",
    "MedBertModelOutput",
    "MedBertPreTrainedModel",
    "MedBertPretrainingOutput",
]
