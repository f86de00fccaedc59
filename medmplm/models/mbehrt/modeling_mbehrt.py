"""M-BEHRT: a BEHRT over a patient's time-stamped codes and lab events (tabular BEHRT) and a BEHRT over the patient's
visit notes (text BEHRT), joined by early, late or shared-attention fusion (see :mod:`.configuration_mbehrt`).

Inputs are one patient history per row, as ``medmplm.pretraining.mbehrt.PatientSequenceBuilder`` lays it out
(``L = max_length`` tabular tokens, ``V = max_visits - 1`` visit slots, ``T`` note tokens per visit):

* tabular: ``[CLS]``, the gender token, then per kept visit (oldest first) its diagnoses, procedures, medications and
  lab events. A token's input vector is the sum of its token embedding, its lab value's embedding (none for codes)
  and where it sits in the history: age at admission, visit segment (A/B alternating), visit position and
  continuous time (hours since the first kept admission, and hours since the previous visit's discharge, each through
  fixed sinusoids and a learned projection), then LayerNorm and dropout.
* text: per visit slot the note's vector (a BERT text encoder's [CLS] state, pooled over the note's windows, projected
  to the BEHRT width) plus the same history embeddings of that visit. A text stream of its own starts with a learned
  [CLS] vector.

The Transformers are ``torch.nn``'s post-LayerNorm encoder layers with GELU (BERT's layer); shared attention pairs
``torch.nn.TransformerDecoderLayer``\\ s without a causal mask, whose second attention reads the other stream. In early
fusion the note tokens are appended after the tabular tokens: attention sees positions only through the embeddings, so
a note stands at its visit's place in the history wherever it lies in the tensor.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers import initialization as init
from transformers.utils import ModelOutput

from medmplm.data.vocab import PAD_ID
from medmplm.models.initialization import init_standard_module
from medmplm.models.mbehrt.configuration_mbehrt import MASKED_VALUE_ID, NO_VALUE_ID, PRESENT_VALUE_ID, MBehrtConfig
from medmplm.models.text_encoder import TextEncoder, WindowPooling, backbone_from_config_dict, window_starts
from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer

IGNORE_INDEX = -100
CONFIG_FILE = "config.json"
# Periods of the continuous-time sinusoids: from an hour (lab events within a stay) to ten years (a long history).
TIME_PERIOD_RANGE_HOURS = (1.0, 24.0 * 365.0 * 10.0)

ModelT = TypeVar("ModelT", bound="MBehrtPreTrainedModel")


@dataclass
class MBehrtModelOutput(ModelOutput):
    """Output of :class:`MBehrtModel`.

    Attributes:
        patient_embedding: ``[B, patient_embedding_size]`` the patient vector: the [CLS] state of the one sequence
            (tabular or text alone, early fusion), or both streams' [CLS] states concatenated (late fusion, shared
            attention; tabular first).
        tabular_hidden_state: ``[B, L, H]`` the tabular tokens' states ([CLS] first); ``None`` without that modality.
        note_hidden_state: ``[B, V, H]`` the visit slots' note-token states (meaningless where ``note_mask`` is 0);
            ``None`` without text.
        visit_alignment_loss: ``[]`` the symmetric contrastive loss between each visit's tabular vector (mean of its
            tokens' states) and its note-token state, over the batch's visits that have both; ``None`` unless both
            modalities are read and ``loss_weights["alignment"] > 0``.
        aligned_visits: ``[]`` the number of visits that entered the alignment loss.
    """

    patient_embedding: torch.Tensor | None = None
    tabular_hidden_state: torch.Tensor | None = None
    note_hidden_state: torch.Tensor | None = None
    visit_alignment_loss: torch.Tensor | None = None
    aligned_visits: torch.Tensor | None = None


@dataclass
class MBehrtPretrainingOutput(ModelOutput):
    """Output of :class:`MBehrtForPretraining`.

    Attributes:
        loss: ``[]`` the weighted sum of the objectives computed (``None`` without labels).
        losses: objective (``mtm``, ``mvp``, ``alignment``) -> ``[]`` its mean loss, for the objectives computed (0 for
            a batch without a target of that objective).
        masked_token_logits: ``[M, vocab_size]`` scores over the tabular token space at the M masked tokens
            (``labels != -100``, row-major order).
        masked_value_predictions: ``[M', lab_value_bins]`` bin scores (``binned``) or ``[M']`` standardised values
            (``projection``) at the M' hidden lab values (``value_ids == MASKED_VALUE_ID``).
        masked_token_accuracy: ``[]`` share of masked tokens predicted exactly (0 without targets).
        masked_value_accuracy: ``[]`` share of hidden values whose bin is predicted exactly (``binned``; 0 without
            targets); ``None`` under ``projection``, whose loss is the mean squared error.
        target_counts: objective -> ``[]`` its number of targets (masked tokens; hidden values; aligned visits).
        model_output: the :class:`MBehrtModelOutput` the objectives were computed from.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    masked_token_logits: torch.Tensor | None = None
    masked_value_predictions: torch.Tensor | None = None
    masked_token_accuracy: torch.Tensor | None = None
    masked_value_accuracy: torch.Tensor | None = None
    target_counts: dict[str, torch.Tensor] | None = None
    model_output: MBehrtModelOutput | None = None


class ContinuousTimeEmbedding(nn.Module):
    """Hours -> sinusoids at fixed periods geometrically spaced over :data:`TIME_PERIOD_RANGE_HOURS`, then a learned
    linear map. Written here because torch has no continuous-time embedding layer; the sinusoids are computed in
    float32 from integer hours whatever the model's dtype, as bfloat16 could not tell apart hours a year from now."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.num_frequencies = max(1, hidden_size // 2)
        self.projection = nn.Linear(2 * self.num_frequencies, hidden_size)

    def forward(self, hours: torch.Tensor) -> torch.Tensor:
        """``[...]`` integer hours -> ``[..., H]``."""
        low, high = (math.log(period) for period in TIME_PERIOD_RANGE_HOURS)
        periods = torch.exp(torch.linspace(low, high, self.num_frequencies, device=hours.device))
        angles = hours.float().unsqueeze(-1) * (2 * math.pi / periods)
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        return self.projection(features.to(self.projection.weight.dtype))


class HistoryEmbeddings(nn.Module):
    """Where a token sits in the patient's history: age + segment + visit position + time + time since the previous
    visit. One module serves both streams, so a note and its visit's codes are placed alike."""

    def __init__(self, config: MBehrtConfig) -> None:
        super().__init__()
        # Age id 0 is an unknown age; ages 0..max_age are ids 1..max_age + 1.
        self.age_embeddings = nn.Embedding(config.max_age + 2, config.hidden_size, padding_idx=0)
        # Segment 0 is [CLS], gender and padding; visits alternate 1, 2 (BEHRT's A/B).
        self.segment_embeddings = nn.Embedding(3, config.hidden_size, padding_idx=0)
        self.visit_embeddings = nn.Embedding(config.max_visits, config.hidden_size)
        self.time_embedding = ContinuousTimeEmbedding(config.hidden_size)
        self.gap_embedding = ContinuousTimeEmbedding(config.hidden_size)

    def forward(
        self,
        age_ids: torch.Tensor,
        segment_ids: torch.Tensor,
        visit_ids: torch.Tensor,
        time_hours: torch.Tensor,
        gap_hours: torch.Tensor,
    ) -> torch.Tensor:
        """``[B, N]`` each -> ``[B, N, H]``."""
        return (
            self.age_embeddings(age_ids)
            + self.segment_embeddings(segment_ids)
            + self.visit_embeddings(visit_ids)
            + self.time_embedding(time_hours)
            + self.gap_embedding(gap_hours)
        )


class LabValueEmbedding(nn.Module):
    """A lab event's value: ``binned``, one learned vector per quantile bin; ``projection``, a learned vector for a
    present value plus a linear map of its standardised value. Both have a learned vector for a hidden (masked) value
    and none (zero) for no value."""

    def __init__(self, config: MBehrtConfig) -> None:
        super().__init__()
        self.value_embeddings = nn.Embedding(config.num_value_ids, config.hidden_size, padding_idx=NO_VALUE_ID)
        self.projection = nn.Linear(1, config.hidden_size) if config.lab_value_embedding == "projection" else None

    def forward(self, value_ids: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """``[B, L]`` value ids (and ``[B, L]`` standardised values under ``projection``) -> ``[B, L, H]``."""
        embedded = self.value_embeddings(value_ids)
        if self.projection is None:
            return embedded
        if values is None:
            raise ValueError("values is required: lab_value_embedding is 'projection'")
        present = (value_ids >= PRESENT_VALUE_ID).unsqueeze(-1)
        projected = self.projection(values.unsqueeze(-1).to(self.projection.weight.dtype))
        return embedded + projected * present.to(projected.dtype)


class TabularEmbeddings(nn.Module):
    """Token + lab value + history embeddings of the tabular tokens, LayerNorm and dropout."""

    def __init__(self, config: MBehrtConfig) -> None:
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=PAD_ID)
        self.value_embedding = LabValueEmbedding(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, input_ids: torch.Tensor, value_ids: torch.Tensor, values: torch.Tensor | None, history: torch.Tensor
    ) -> torch.Tensor:
        """``[B, L]`` ids, ``[B, L]`` value ids (and values), ``[B, L, H]`` history embeddings -> ``[B, L, H]``."""
        embedded = self.token_embeddings(input_ids) + self.value_embedding(value_ids, values) + history
        return self.dropout(self.LayerNorm(embedded))


class NoteEmbeddings(nn.Module):
    """Visit note vectors projected to the BEHRT width plus their visits' history embeddings, LayerNorm and dropout."""

    def __init__(self, config: MBehrtConfig, text_hidden_size: int) -> None:
        super().__init__()
        self.projection = nn.Linear(text_hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, note_vectors: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """``[B, V, H_text]`` and ``[B, V, H]`` -> ``[B, V, H]``."""
        return self.dropout(self.LayerNorm(self.projection(note_vectors) + history))


def transformer_encoder(config: MBehrtConfig) -> nn.TransformerEncoder:
    """BERT's post-LayerNorm GELU encoder, ``num_layers`` deep."""
    layer = nn.TransformerEncoderLayer(
        config.hidden_size,
        config.num_heads,
        config.intermediate_size,
        config.dropout,
        activation="gelu",
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
    )
    return nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)


class SharedAttention(nn.Module):
    """Two streams, ``num_layers`` deep: in every layer each stream attends to itself, then to the other stream's
    states of the layer before (``nn.TransformerDecoderLayer`` without a causal mask), then its feed-forward layer."""

    def __init__(self, config: MBehrtConfig) -> None:
        super().__init__()

        def layer() -> nn.TransformerDecoderLayer:
            return nn.TransformerDecoderLayer(
                config.hidden_size,
                config.num_heads,
                config.intermediate_size,
                config.dropout,
                activation="gelu",
                layer_norm_eps=config.layer_norm_eps,
                batch_first=True,
            )

        self.tabular_layers = nn.ModuleList(layer() for _ in range(config.num_layers))
        self.text_layers = nn.ModuleList(layer() for _ in range(config.num_layers))

    def forward(
        self, tabular: torch.Tensor, tabular_padding: torch.Tensor, text: torch.Tensor, text_padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, H]`` and ``[B, 1 + V, H]`` with their padding masks (True: padding) -> both streams' states."""
        for tabular_layer, text_layer in zip(self.tabular_layers, self.text_layers):
            tabular, text = (
                tabular_layer(
                    tabular, text, tgt_key_padding_mask=tabular_padding, memory_key_padding_mask=text_padding
                ),
                text_layer(text, tabular, tgt_key_padding_mask=text_padding, memory_key_padding_mask=tabular_padding),
            )
        return tabular, text


class TokenPredictionHead(nn.Module):
    """BERT's masked-token head: dense + GELU + LayerNorm, then scores against the token embedding table (tied, as
    BERT's decoder) plus a per-token bias."""

    def __init__(self, config: MBehrtConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor, token_embeddings: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` hidden states and the ``[V, H]`` token embedding table -> ``[..., V]`` scores."""
        return self.LayerNorm(F.gelu(self.dense(hidden_states))) @ token_embeddings.T + self.bias


class MBehrtPreTrainedModel(PreTrainedModel):
    """Weight initialisation (BERT's: normal with ``initializer_range``), and saving and loading with the tokenizer of
    the text encoder (when the model reads text): :meth:`save_pretrained` writes an attached ``model.tokenizer``
    beside the weights and :meth:`from_pretrained` attaches the directory's.

    Args:
        config: the configuration; ``text_config`` must be filled in when the model reads text
            (``medmplm.pretraining.mbehrt`` builds one from a prepared directory).
        text_backbone: an already loaded text encoder (a local checkpoint) to use instead of building one from
            ``config.text_config``; ``None`` when loading or building from scratch.
    """

    config_class = MBehrtConfig
    base_model_prefix = "mbehrt"

    def __init__(self, config: MBehrtConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if "text" in config.modalities and config.text_config is None:
            # Needed even beside a loaded text backbone: a saved model is rebuilt from its configuration alone.
            raise ValueError("config.text_config is missing: the text encoder's transformers config is needed")
        self.tokenizer: PreTrainedTokenizerBase | None = None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers' init functions skip weights loaded from a checkpoint (a text backbone passed in).
        std = self.config.initializer_range
        if init_standard_module(module, std):
            return
        if isinstance(module, TokenPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, MBehrtModel) and module.text_cls is not None:
            init.normal_(module.text_cls, mean=0.0, std=std)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """``transformers``' save, plus the attached tokenizer's files in the same directory."""
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls: type[ModelT], pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> ModelT:
        """``transformers``' load from a local directory (never a hub), the text encoder's frozen prefix frozen again
        and the directory's tokenizer attached. An :class:`MBehrtModel` loads from an :class:`MBehrtForPretraining`
        directory too (the heads are left out).

        Raises:
            FileNotFoundError: ``config.json`` is missing (not a model directory, or an interrupted save).
        """
        directory = Path(pretrained_model_name_or_path)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{directory / CONFIG_FILE}: missing; not a saved M-BEHRT model (or its save was interrupted)"
            )
        kwargs.setdefault("local_files_only", True)
        model = super().from_pretrained(directory, *args, **kwargs)
        encoder = model.base_model
        if encoder.text_encoder is not None:
            # Loaded weights arrive as new parameters, which require gradients.
            encoder.text_encoder.freeze_prefix()
        if (directory / TOKENIZER_MARKER).is_file():
            model.tokenizer = load_tokenizer(directory)
        return model


class MBehrtModel(MBehrtPreTrainedModel):
    """M-BEHRT's encoder: the modalities' embeddings, the note encoder and the fused Transformer(s).

    Attributes:
        patient_embedding_size: width of ``patient_embedding``: ``hidden_size``, twice that for late fusion and
            shared attention.
    """

    # Loaded from an MBehrtForPretraining directory (an export), the pretraining heads are left out by design.
    _keys_to_ignore_on_load_unexpected = [r"^(token_prediction_head|value_prediction_head)\."]

    def __init__(self, config: MBehrtConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config, text_backbone)
        reads_tabular, reads_text = "tabular" in config.modalities, "text" in config.modalities
        one_sequence = not config.fused or config.fusion == "early"
        self.history_embeddings = HistoryEmbeddings(config)
        self.tabular_embeddings = TabularEmbeddings(config) if reads_tabular else None
        self.text_encoder = self.note_pooling = self.note_embeddings = self.text_cls = None
        if reads_text:
            backbone = text_backbone if text_backbone is not None else backbone_from_config_dict(config.text_config)
            max_positions = getattr(backbone.config, "max_position_embeddings", None)
            if max_positions is not None and config.text_max_length > max_positions:
                raise ValueError(
                    f"text_max_length {config.text_max_length} exceeds the text encoder's {max_positions} positions"
                )
            self.text_encoder = TextEncoder(backbone, config.text_num_frozen_layers)
            self.note_pooling = WindowPooling(self.text_encoder.hidden_size, config.text_window_pooling)
            self.note_embeddings = NoteEmbeddings(config, self.text_encoder.hidden_size)
            if not (reads_tabular and one_sequence):
                # The text stream's own [CLS]; in early fusion the tabular [CLS] starts the one sequence.
                self.text_cls = nn.Parameter(torch.empty(config.hidden_size))
        self.transformer = self.tabular_transformer = self.text_transformer = self.shared_attention = None
        if one_sequence:
            self.transformer = transformer_encoder(config)
        elif config.fusion == "late":
            self.tabular_transformer = transformer_encoder(config)
            self.text_transformer = transformer_encoder(config)
        else:
            self.shared_attention = SharedAttention(config)
        self.patient_embedding_size = config.hidden_size * (1 if one_sequence else 2)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding | None:
        return None if self.tabular_embeddings is None else self.tabular_embeddings.token_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tabular_embeddings.token_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        age_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        visit_ids: torch.Tensor | None = None,
        time_hours: torch.Tensor | None = None,
        gap_hours: torch.Tensor | None = None,
        value_ids: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        note_input_ids: torch.Tensor | None = None,
        note_attention_mask: torch.Tensor | None = None,
        note_mask: torch.Tensor | None = None,
        note_age_ids: torch.Tensor | None = None,
        note_segment_ids: torch.Tensor | None = None,
        note_visit_ids: torch.Tensor | None = None,
        note_time_hours: torch.Tensor | None = None,
        note_gap_hours: torch.Tensor | None = None,
    ) -> MBehrtModelOutput:
        """Encode patient histories; the inputs of a modality the model does not read are not needed.

        Args:
            input_ids: ``[B, L]`` tabular token ids, [CLS] first.
            attention_mask: ``[B, L]`` 1 on [CLS] and tokens, 0 on padding.
            age_ids, segment_ids, visit_ids: ``[B, L]`` each token's age id, segment (1/2; 0 on [CLS], gender and
                padding) and visit position (1, 2, ... oldest kept visit first; 0 likewise).
            time_hours, gap_hours: ``[B, L]`` integer hours since the first kept admission, and since the previous
                visit's discharge.
            value_ids: ``[B, L]`` lab value ids (``NO_VALUE_ID``, ``MASKED_VALUE_ID``, then present values).
            values: ``[B, L]`` standardised lab values (``projection`` only).
            note_input_ids, note_attention_mask: ``[B, V, K * T]`` each visit slot's note token ids and mask (K windows
                of T tokens).
            note_mask: ``[B, V]`` 1 on the slots whose visit has a note.
            note_age_ids, note_segment_ids, note_visit_ids, note_time_hours, note_gap_hours: ``[B, V]`` the history
                embeddings' inputs of each slot's visit.
        """
        config = self.config
        tabular = tabular_padding = notes = note_padding = None
        if self.tabular_embeddings is not None:
            history = self.history_embeddings(age_ids, segment_ids, visit_ids, time_hours, gap_hours)
            tabular = self.tabular_embeddings(input_ids, value_ids, values, history)
            tabular_padding = ~attention_mask.bool()
        if self.text_encoder is not None:
            history = self.history_embeddings(
                note_age_ids, note_segment_ids, note_visit_ids, note_time_hours, note_gap_hours
            )
            notes = self.note_embeddings(self._note_vectors(note_input_ids, note_attention_mask, note_mask), history)
            note_padding = ~note_mask.bool()

        tabular_states = note_states = None
        if self.transformer is None:
            # Two streams: late fusion or shared attention.
            text, text_padding = self._text_stream(notes, note_padding)
            if self.shared_attention is not None:
                tabular_states, text_states = self.shared_attention(tabular, tabular_padding, text, text_padding)
            else:
                tabular_states = self.tabular_transformer(tabular, src_key_padding_mask=tabular_padding)
                text_states = self.text_transformer(text, src_key_padding_mask=text_padding)
            patient = torch.cat([tabular_states[:, 0], text_states[:, 0]], dim=-1)
            note_states = text_states[:, 1:]
        elif tabular is None:
            text, text_padding = self._text_stream(notes, note_padding)
            text_states = self.transformer(text, src_key_padding_mask=text_padding)
            patient, note_states = text_states[:, 0], text_states[:, 1:]
        elif notes is None:
            tabular_states = self.transformer(tabular, src_key_padding_mask=tabular_padding)
            patient = tabular_states[:, 0]
        else:
            # Early fusion: one sequence, the note tokens after the tabular ones.
            joint = self.transformer(
                torch.cat([tabular, notes], dim=1),
                src_key_padding_mask=torch.cat([tabular_padding, note_padding], dim=1),
            )
            tabular_states, note_states = joint[:, : tabular.shape[1]], joint[:, tabular.shape[1] :]
            patient = tabular_states[:, 0]

        alignment = aligned = None
        if config.fused and config.loss_weights["alignment"] > 0:
            alignment, aligned = self._visit_alignment(
                tabular_states, attention_mask, visit_ids, note_states, note_mask
            )
        return MBehrtModelOutput(
            patient_embedding=patient,
            tabular_hidden_state=tabular_states,
            note_hidden_state=note_states,
            visit_alignment_loss=alignment,
            aligned_visits=aligned,
        )

    def _note_vectors(
        self, note_input_ids: torch.Tensor, note_attention_mask: torch.Tensor, note_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[B, V, K * T]`` note tokens -> ``[B, V, H_text]`` note vectors (zero where a slot has no note); only the
        notes present are encoded."""
        batch_size, num_slots, length = note_input_ids.shape
        present = note_mask.reshape(-1).bool()
        dtype = self.text_encoder.backbone.embeddings.word_embeddings.weight.dtype
        vectors = torch.zeros(
            batch_size * num_slots, self.text_encoder.hidden_size, dtype=dtype, device=note_mask.device
        )
        if bool(present.any()):
            ids = note_input_ids.reshape(-1, length)[present]
            mask = note_attention_mask.reshape(-1, length)[present]
            states = self.text_encoder(ids, mask, window_length=self.config.text_max_length)
            pooled = self.note_pooling(*window_starts(states, mask, self.config.text_max_length))
            vectors = vectors.to(pooled.dtype).index_copy(0, present.nonzero().squeeze(1), pooled)
        return vectors.reshape(batch_size, num_slots, -1)

    def _text_stream(self, notes: torch.Tensor, note_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text stream of its own: the learned [CLS] vector, then the visit slots' note tokens."""
        cls = self.text_cls.to(notes.dtype).expand(notes.shape[0], 1, -1)
        start = torch.zeros_like(note_padding[:, :1])
        return torch.cat([cls, notes], dim=1), torch.cat([start, note_padding], dim=1)

    def _visit_alignment(
        self,
        tabular_states: torch.Tensor,
        attention_mask: torch.Tensor,
        visit_ids: torch.Tensor,
        note_states: torch.Tensor,
        note_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE (CLIP's) between each visit's tabular vector and its note-token state, over the visits
        with both: a visit's two vectors are the positive pair, the batch's other visits the negatives."""
        num_slots = note_states.shape[1]
        slots = torch.arange(1, num_slots + 1, device=visit_ids.device)
        # [B, V, L]: which tabular tokens belong to which visit slot ([CLS], gender and padding to none).
        membership = (visit_ids.unsqueeze(1) == slots[None, :, None]) & attention_mask.bool().unsqueeze(1)
        counts = membership.sum(dim=-1)
        tabular_visits = membership.float() @ tabular_states.float() / counts.clamp(min=1).unsqueeze(-1)
        pairs = (counts > 0) & note_mask.bool()
        tabular_vectors = F.normalize(tabular_visits[pairs], dim=-1)
        note_vectors = F.normalize(note_states[pairs].float(), dim=-1)
        aligned = pairs.sum()
        if not bool(aligned):
            # No visit with both modalities: a zero that still reaches both streams' parameters.
            return (tabular_states.sum() + note_states.sum()).float() * 0.0, aligned
        logits = tabular_vectors @ note_vectors.T / self.config.alignment_temperature
        targets = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        return loss, aligned


class MBehrtForPretraining(MBehrtPreTrainedModel):
    """M-BEHRT with its pretraining objectives (the model reads the tabular modality; text alone has no objective).

    * Masked token modelling (``mtm``): cross-entropy over the tabular token space at every masked token.
    * Masked lab-value prediction (``mvp``): at every hidden lab value, cross-entropy over its item's quantile bins
      (``binned``) or the squared error of its standardised value (``projection``).
    * Visit alignment (``alignment``, both modalities): :attr:`MBehrtModelOutput.visit_alignment_loss`.
    """

    def __init__(self, config: MBehrtConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config, text_backbone)
        if "tabular" not in config.modalities:
            raise ValueError(
                "modalities: a text-only M-BEHRT has no pretraining objective (masked tokens and lab values are "
                "tabular); pretrain its text encoder with the bert-mlm family and fine-tune it directly"
            )
        self.mbehrt = MBehrtModel(config, text_backbone)
        self.token_prediction_head = TokenPredictionHead(config)
        binned = config.lab_value_embedding == "binned"
        self.value_prediction_head = nn.Linear(config.hidden_size, config.lab_value_bins if binned else 1)
        self.post_init()

    def forward(
        self,
        labels: torch.Tensor | None = None,
        value_labels: torch.Tensor | None = None,
        **inputs: torch.Tensor,
    ) -> MBehrtPretrainingOutput:
        """Encode (masked) patient histories and compute the objectives whose labels are given.

        Args:
            labels: ``[B, L]`` the original token id at masked tokens, -100 elsewhere.
            value_labels: ``[B, L]`` at hidden values (``value_ids == MASKED_VALUE_ID``): the original bin index
                (``binned``, int) or standardised value (``projection``, float); read nowhere else.
            inputs: the inputs of :meth:`MBehrtModel.forward`.
        """
        model_output = self.mbehrt(**inputs)
        states = model_output.tabular_hidden_state
        weights = self.config.loss_weights
        losses: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        token_logits = value_predictions = token_accuracy = value_accuracy = None
        if labels is not None:
            targets = labels != IGNORE_INDEX
            target_ids = labels[targets]
            token_logits = self.token_prediction_head(
                states[targets], self.mbehrt.tabular_embeddings.token_embeddings.weight
            )
            counts["mtm"] = targets.sum()
            if target_ids.numel():
                losses["mtm"] = F.cross_entropy(token_logits.float(), target_ids)
                token_accuracy = (token_logits.argmax(dim=-1) == target_ids).float().mean()
            else:
                # No target in this batch: a zero that still reaches every parameter of the head.
                losses["mtm"] = token_logits.sum().float() * 0.0
                token_accuracy = losses["mtm"].detach()
        if value_labels is not None:
            hidden = inputs["value_ids"] == MASKED_VALUE_ID
            scores = self.value_prediction_head(states[hidden])
            counts["mvp"] = hidden.sum()
            if self.config.lab_value_embedding == "binned":
                value_predictions = scores
                if bool(hidden.any()):
                    bins = value_labels[hidden].long()
                    losses["mvp"] = F.cross_entropy(scores.float(), bins)
                    value_accuracy = (scores.argmax(dim=-1) == bins).float().mean()
            else:
                value_predictions = scores.squeeze(-1)
                if bool(hidden.any()):
                    losses["mvp"] = F.mse_loss(value_predictions.float(), value_labels[hidden].float())
            if "mvp" not in losses:
                losses["mvp"] = scores.sum().float() * 0.0
                if self.config.lab_value_embedding == "binned":
                    value_accuracy = losses["mvp"].detach()
        if model_output.visit_alignment_loss is not None:
            losses["alignment"] = model_output.visit_alignment_loss
            counts["alignment"] = model_output.aligned_visits
        loss = sum(weights[name] * value for name, value in losses.items()) if losses else None
        return MBehrtPretrainingOutput(
            loss=loss,
            losses=losses or None,
            masked_token_logits=token_logits,
            masked_value_predictions=value_predictions,
            masked_token_accuracy=token_accuracy,
            masked_value_accuracy=value_accuracy,
            target_counts=counts or None,
            model_output=model_output,
        )


__all__ = [
    "MBehrtForPretraining",
    "MBehrtModel",
    "MBehrtModelOutput",
    "MBehrtPreTrainedModel",
    "MBehrtPretrainingOutput",
]
