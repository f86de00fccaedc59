"""MedM-PLM: a BERT text encoder, a G-BERT ontology code encoder, and a cross-modal module.

Built bottom-up: :class:`CodeEmbeddings` -> :class:`CodeEncoder`; :class:`CrossModalAttention`;
:class:`MedMPLMModel` joins them with a :class:`~medmplm.models.text_encoder.TextEncoder`;
:class:`MedMPLMForPretraining` adds the Text-to-Code and Code-to-Code objectives (Liu et al.
2022, "Multimodal data matters", eqs. 6-8). No training logic lives here.

Batch keys are those of ``medmplm.data.features.VisitFeaturizer`` (and, for pretraining,
``medmplm.data.masking.CodeMasker``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from medmplm.data.masking import IGNORE_INDEX
from medmplm.data.vocab import NUM_SPECIAL_TOKENS, PAD_ID, CodeVocab
from medmplm.models.alignment import ContrastiveAlignment, has_codes
from medmplm.models.configuration_medmplm import CODE_TYPES, MedMPLMConfig
from medmplm.models.ontology_embedding import OntologyEmbedding, OntologyTree
from medmplm.models.text_encoder import TextEncoder, WindowPooling, backbone_from_config_dict, window_starts
from medmplm.models.tokenization import TOKENIZER_MARKER, load_tokenizer

CONFIG_FILE = "config.json"
# Index of each code type in the code type embedding.
CODE_TYPE_INDEX = {"diagnosis": 0, "medication": 1}

ModelT = TypeVar("ModelT", bound="MedMPLMPreTrainedModel")


@dataclass
class CrossModalOutput(ModelOutput):
    """Output of :class:`CrossModalAttention`.

    Args:
        text_fused: [B, L_text, H_code] ``R_text``: each text token attended over the codes, plus itself.
        code_fused: [B, L_code, H_code] ``R_code``: each code token attended over the text, plus itself.
        text_to_code_attentions: [B, L_text, L_code] weights (only with ``output_attentions``).
        code_to_text_attentions: [B, L_code, L_text] weights (only with ``output_attentions``).
    """

    text_fused: torch.Tensor | None = None
    code_fused: torch.Tensor | None = None
    text_to_code_attentions: torch.Tensor | None = None
    code_to_text_attentions: torch.Tensor | None = None


@dataclass
class MedMPLMModelOutput(ModelOutput):
    """Output of :class:`MedMPLMModel`.

    ``L_text = K * L``: the note's K windows of L tokens (K = 1 unless ``config.text_long_note == "windows"``).

    Args:
        text_fused: [B, L_text, H_code] ``R_text``; position 0 of each window is that window's [CLS].
        diagnosis_fused: [B, 1 + C, H_code] ``R_code`` of the diagnosis sequence; position 0 is [CLS].
        medication_fused: [B, 1 + C, H_code] ``R_code`` of the medication sequence.
        text_window_states: [B, K, H_code] ``R_text`` at each window's [CLS].
        text_window_mask: [B, K] True on the windows the note reaches (the first window always).
        text_pooled: [B, H_code] the note's visit-level vector: the mean of ``text_window_states`` over the windows
            present (the [CLS] state for a note of one window).
        visit_embedding: [B, 3 * H_code] ``text_pooled`` and the two code [CLS] vectors, concatenated.
        text_last_hidden_state: [B, L_text, H_text] text encoder output (zero over absent windows).
        diagnosis_last_hidden_state: [B, 1 + C, H_code] code encoder output for diagnoses.
        medication_last_hidden_state: [B, 1 + C, H_code] code encoder output for medications.
        text_to_code_attentions: [B, L_text, 2 * (1 + C)] (diagnoses then medications), on request.
        code_to_text_attentions: [B, 2 * (1 + C), L_text], on request.
    """

    text_fused: torch.Tensor | None = None
    diagnosis_fused: torch.Tensor | None = None
    medication_fused: torch.Tensor | None = None
    text_window_states: torch.Tensor | None = None
    text_window_mask: torch.Tensor | None = None
    text_pooled: torch.Tensor | None = None
    visit_embedding: torch.Tensor | None = None
    text_last_hidden_state: torch.Tensor | None = None
    diagnosis_last_hidden_state: torch.Tensor | None = None
    medication_last_hidden_state: torch.Tensor | None = None
    text_to_code_attentions: torch.Tensor | None = None
    code_to_text_attentions: torch.Tensor | None = None


@dataclass
class MedMPLMPretrainingOutput(ModelOutput):
    """Output of :class:`MedMPLMForPretraining`.

    Args:
        loss: scalar, the loss-weighted sum of the objectives.
        losses: objective name (``t2c_diagnosis``, ``t2c_medication``, ``c2c_diagnosis``,
            ``c2c_medication``, and ``contrastive`` when ``config.contrastive_weight > 0``) -> scalar loss; 0 (still
            attached to the graph) when the batch has no target for it.
        accuracies: objective -> scalar accuracy; NaN when the batch has no target for it.
            Share of a visit's masked codes found among its k highest-scoring codes, k = its
            number of masked codes (micro-averaged over the batch's target codes). For ``contrastive``: the share
            of the batch's visits with a note and codes whose own note scores highest among the candidates, and
            vice versa (the mean of the two).
        target_counts: objective -> number of targets (masked codes; for ``contrastive``, this worker's visits with
            a note and codes) the loss and accuracy cover; weight per-batch accuracies by it when averaging.
        model_output: the :class:`MedMPLMModelOutput` the objectives were computed from.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    accuracies: dict[str, torch.Tensor] | None = None
    target_counts: dict[str, torch.Tensor] | None = None
    model_output: MedMPLMModelOutput | None = None


class CodeEmbeddings(nn.Module):
    """Code ids -> vectors: special-token vectors, ontology code embeddings, and a code type embedding.

    Args:
        config: model configuration.
        trees: code type -> indexed ontology of that type's vocabulary codes.
    """

    def __init__(self, config: MedMPLMConfig, trees: Mapping[str, OntologyTree]) -> None:
        super().__init__()
        hidden = config.code_hidden_size
        self.ontology = nn.ModuleDict(
            {
                t: OntologyEmbedding(
                    trees[t], config.ontology_head_size, config.ontology_num_heads, config.ontology_dropout
                )
                for t in CODE_TYPES
            }
        )
        self.special_tokens = nn.ModuleDict(
            {t: nn.Embedding(NUM_SPECIAL_TOKENS, hidden, padding_idx=PAD_ID) for t in CODE_TYPES}
        )
        self.code_type = nn.Embedding(len(CODE_TYPES), hidden)
        # BERT's scale, not nn.Embedding's N(0, 1): the ontology embeddings start with norms of ~0.1, and a code type
        # vector of norm ~sqrt(H) added to every code would leave codes nearly indistinguishable after the LayerNorm.
        for embedding in (*self.special_tokens.values(), self.code_type):
            nn.init.normal_(embedding.weight, std=config.initializer_range)
            if embedding.padding_idx is not None:
                nn.init.zeros_(embedding.weight[embedding.padding_idx])
        self.layer_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(config.code_dropout)

    def table(self, code_type: str) -> torch.Tensor:
        """[V, H] embedding table of one code type's vocabulary (special tokens first)."""
        return torch.cat([self.special_tokens[code_type].weight, self.ontology[code_type]()], dim=0)

    def forward(self, ids: torch.Tensor, code_type: str) -> torch.Tensor:
        """[B, L] ids of one code type -> [B, L, H] embeddings."""
        vectors = F.embedding(ids, self.table(code_type), padding_idx=PAD_ID)
        vectors = vectors + self.code_type.weight[CODE_TYPE_INDEX[code_type]]
        return self.dropout(self.layer_norm(vectors))


class CodeEncoder(nn.Module):
    """Transformer encoder over [CLS] + a visit's codes, one sequence per code type.

    Codes of a visit are a set, so there is no position embedding (as in G-BERT). Diagnosis and
    medication sequences share the encoder and are distinguished by the code type embedding.
    """

    def __init__(self, config: MedMPLMConfig, trees: Mapping[str, OntologyTree]) -> None:
        super().__init__()
        self.embeddings = CodeEmbeddings(config, trees)
        layer = nn.TransformerEncoderLayer(
            d_model=config.code_hidden_size,
            nhead=config.code_num_heads,
            dim_feedforward=config.code_intermediate_size,
            dropout=config.code_dropout,
            activation="gelu",
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.code_num_layers, enable_nested_tensor=False)

    def forward(
        self, diag_ids: torch.Tensor, diag_mask: torch.Tensor, med_ids: torch.Tensor, med_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode both code sequences of each visit.

        Args:
            diag_ids: [B, L_d] diagnosis ids, [CLS] first. diag_mask: [B, L_d] 1 on [CLS] and codes.
            med_ids: [B, L_m] medication ids, [CLS] first. med_mask: [B, L_m].

        Returns:
            ([B, L_d, H] diagnosis states, [B, L_m, H] medication states).
        """
        batch_size, diag_len, med_len = diag_ids.shape[0], diag_ids.shape[1], med_ids.shape[1]
        length = max(diag_len, med_len)
        # The two sequences of a visit run as separate rows of one batch: rows [0, B) are the
        # visits' diagnoses and rows [B, 2B) their medications, in the same visit order.
        vectors = torch.cat(
            [
                F.pad(self.embeddings(diag_ids, "diagnosis"), (0, 0, 0, length - diag_len)),
                F.pad(self.embeddings(med_ids, "medication"), (0, 0, 0, length - med_len)),
            ]
        )
        keep = torch.cat([F.pad(diag_mask, (0, length - diag_len)), F.pad(med_mask, (0, length - med_len))]).bool()
        hidden = self.encoder(vectors, src_key_padding_mask=~keep)
        return hidden[:batch_size, :diag_len], hidden[batch_size:, :med_len]


class CrossModalAttention(nn.Module):
    """Cross-modal module (paper eqs. 6-7), in both directions.

    ``R_code = softmax(z_C Z_W^T / sqrt(d)) Z_W + z_C`` and ``R_text = softmax(z_W Z_C^T / sqrt(d)) Z_C + z_W``,
    with text states projected to the code width ``d`` when the widths differ. Keys outside
    their mask get exactly zero weight; a query with no valid key (a visit without a note, or
    without codes) gets all-zero weights, so its output is its own residual.
    """

    def __init__(self, text_hidden_size: int, code_hidden_size: int) -> None:
        super().__init__()
        self.text_projection = (
            nn.Linear(text_hidden_size, code_hidden_size) if text_hidden_size != code_hidden_size else nn.Identity()
        )
        self.scale = 1.0 / math.sqrt(code_hidden_size)

    def attend(
        self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Masked dot-product attention with a residual: ([B, Lq, d] output, [B, Lq, Lk] weights or ``None``).

        Without ``output_attentions`` the weights are never materialised: ``scaled_dot_product_attention`` picks a
        fused kernel (flash or memory-efficient attention on GPU), which matters for a note's K x L tokens.
        """
        key_mask = key_mask.bool()
        if not output_attentions:
            has_key = key_mask.any(dim=1)
            # SDPA returns NaN for a query with no key to attend: give such rows one key, then zero their output.
            keyed = key_mask.clone()
            keyed[:, 0] |= ~has_key
            attended = F.scaled_dot_product_attention(queries, keys, keys, attn_mask=keyed[:, None, :], scale=self.scale)
            return attended * has_key[:, None, None].to(attended.dtype) + queries, None
        mask = key_mask[:, None, :]
        scores = torch.matmul(queries, keys.transpose(1, 2)) * self.scale
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask
        return torch.matmul(weights, keys) + queries, weights

    def forward(
        self,
        text_states: torch.Tensor,
        text_key_mask: torch.Tensor,
        code_states: torch.Tensor,
        code_key_mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> CrossModalOutput:
        """Fuse the two modalities.

        Args:
            text_states: [B, L_text, H_text]. text_key_mask: [B, L_text] 1 where a text token may be attended.
            code_states: [B, L_code, H_code]. code_key_mask: [B, L_code] 1 where a code may be attended.
            output_attentions: also return both attention weight tensors.
        """
        text = self.text_projection(text_states)
        code_fused, code_to_text = self.attend(code_states, text, text_key_mask, output_attentions)
        text_fused, text_to_code = self.attend(text, code_states, code_key_mask, output_attentions)
        return CrossModalOutput(
            text_fused=text_fused,
            code_fused=code_fused,
            text_to_code_attentions=text_to_code,
            code_to_text_attentions=code_to_text,
        )


class CodePredictionHead(nn.Module):
    """BERT-style prediction head: dense + GELU + LayerNorm, then logits over a code vocabulary."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size))
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., V] logits."""
        return self.decoder(self.transform(hidden))


class MedMPLMPreTrainedModel(PreTrainedModel):
    """What the MedM-PLM models share: the configuration (with its vocabularies and ontologies), weight
    initialisation, and the tokenizer that travels in the same ``save_pretrained`` directory.

    Saving and loading are ``transformers``' own (``config.json`` + ``model.safetensors``; nothing is unpickled).
    The tokenizer is not part of the weights: :meth:`save_pretrained` writes it beside them when one is attached
    (``model.tokenizer``), and :meth:`from_pretrained` attaches it when the directory has one.

    Args:
        config: the configuration; ``text_config``, ``vocabularies`` and ``ontologies`` must be filled in
            (``medmplm.pretraining.medmplm.build_medmplm`` builds one from a prepared directory).
        text_backbone: an already loaded text encoder (a local checkpoint) to use instead of building one from
            ``config.text_config``; ``None`` when loading or building from scratch.
    """

    config_class = MedMPLMConfig
    base_model_prefix = "medmplm"
    main_input_name = "diag_ids"

    def __init__(self, config: MedMPLMConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        missing = [t for t in CODE_TYPES if t not in config.vocabularies or t not in config.ontologies]
        if missing:
            raise ValueError(
                f"config lacks the vocabulary or ontology of {missing}; build the model from prepared data"
            )
        if config.text_config is None:
            raise ValueError("config.text_config is missing: the text encoder's transformers config is needed")
        self.vocabs = {t: CodeVocab(t, config.vocabularies[t]) for t in CODE_TYPES}
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self._text_backbone = text_backbone

    def build_text_backbone(self) -> PreTrainedModel:
        """The text encoder's transformers model: the one passed in, or a fresh one of ``config.text_config``."""
        backbone = (
            self._text_backbone
            if self._text_backbone is not None
            else backbone_from_config_dict(self.config.text_config)
        )
        self._text_backbone = None
        max_positions = getattr(backbone.config, "max_position_embeddings", None)
        if max_positions is not None and self.config.text_max_length > max_positions:
            raise ValueError(
                f"text_max_length {self.config.text_max_length} exceeds the text encoder's {max_positions} positions"
            )
        return backbone

    @property
    def diagnosis_vocab(self) -> CodeVocab:
        """Vocabulary of diagnosis codes."""
        return self.vocabs["diagnosis"]

    @property
    def medication_vocab(self) -> CodeVocab:
        """Vocabulary of medication codes."""
        return self.vocabs["medication"]

    @property
    def ontologies(self) -> dict[str, dict[str, list[str]]]:
        """Code type -> code -> ancestors (root first), as recorded in the configuration."""
        return self.config.ontologies

    def trees(self) -> dict[str, OntologyTree]:
        """Indexed ontology tree of each code type's vocabulary."""
        return {t: OntologyTree.build(self.vocabs[t].codes, self.config.ontologies[t]) for t in CODE_TYPES}

    def _init_weights(self, module: nn.Module) -> None:
        # Ontology node vectors and the alignment's temperature are bare parameters the library's initialisation does
        # not know; GATConv's weights are torch_geometric layers it does not know either and keep their own
        # initialisation.
        if isinstance(module, OntologyEmbedding):
            nn.init.xavier_uniform_(module.node_embeddings)
        elif isinstance(module, ContrastiveAlignment):
            nn.init.constant_(module.logit_scale, math.log(1.0 / module.initial_temperature))
        else:
            super()._init_weights(module)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """``transformers``' save, plus the attached tokenizer's files in the same directory."""
        super().save_pretrained(save_directory, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls: type[ModelT], pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> ModelT:
        """``transformers``' load from a local directory (never a hub), with the directory's tokenizer attached.

        A :class:`MedMPLMModel` loads from a :class:`MedMPLMForPretraining` directory too (the heads are left out).

        Raises:
            FileNotFoundError: ``config.json`` is missing (not a model directory, or an interrupted save).
            ValueError: the weights do not fit the model ``config.json`` describes.
        """
        directory = Path(pretrained_model_name_or_path)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{directory / CONFIG_FILE}: missing; not a saved MedM-PLM model (or its save was interrupted)"
            )
        kwargs.setdefault("local_files_only", True)
        try:
            model = super().from_pretrained(directory, *args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(
                f"{directory}: the weights in model.safetensors do not fit the model config.json describes (its "
                "vocabularies or sizes differ from those the weights were saved with); the load report above names "
                "the mismatched tensors"
            ) from None
        model.text_encoder.freeze_prefix()
        if (directory / TOKENIZER_MARKER).is_file():
            model.tokenizer = load_tokenizer(directory)
        return model


class MedMPLMModel(MedMPLMPreTrainedModel):
    """MedM-PLM encoder: text and code encoders joined by the cross-modal module."""

    # Loaded from a MedMPLMForPretraining directory (or a contrastive export), the pretraining heads are expected
    # leftovers.
    _keys_to_ignore_on_load_unexpected = [r"^(t2c|c2c)_heads\.", r"^text_pooling\.", r"^alignment\."]

    def __init__(self, config: MedMPLMConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config, text_backbone)
        self.text_encoder = TextEncoder(self.build_text_backbone(), config.text_num_frozen_layers)
        self.code_encoder = CodeEncoder(config, self.trees())
        self.cross_modal = CrossModalAttention(self.text_encoder.hidden_size, config.code_hidden_size)
        self.mean_pooling = WindowPooling(config.code_hidden_size, "mean")
        self.post_init()

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        has_note: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> MedMPLMModelOutput:
        """Encode a batch of visits.

        Args:
            diag_ids, diag_mask, med_ids, med_mask: [B, 1 + C] code sequences ([CLS] first) and masks.
            attention_mask: [B, L_text] 1 on real text tokens (``L_text``: K windows of ``config.text_max_length``).
            input_ids: [B, L_text] token ids (or pass ``text_hidden_states``).
            has_note: [B] 0 for visits without a note: their text is masked out of the cross-modal
                module. All visits have notes when omitted.
            text_hidden_states: [B, L_text, H_text] precomputed ``text_encoder.frozen_prefix`` output.
            output_attentions: also return the cross-modal attention weights.
        """
        window_length = self.config.text_max_length
        text = self.text_encoder(input_ids, attention_mask, text_hidden_states, window_length=window_length)
        diagnoses, medications = self.code_encoder(diag_ids, diag_mask, med_ids, med_mask)
        text_key_mask = attention_mask.bool()
        if has_note is not None:
            text_key_mask = text_key_mask & has_note.bool()[:, None]
        # [CLS] summarises the codes; only real codes are attended, so a visit without codes has no keys.
        code_key_mask = torch.cat([diag_mask, med_mask], dim=1).bool()
        code_key_mask[:, 0] = False
        code_key_mask[:, diag_mask.shape[1]] = False
        cross = self.cross_modal(
            text, text_key_mask, torch.cat([diagnoses, medications], dim=1), code_key_mask, output_attentions
        )
        diagnosis_fused, medication_fused = cross.code_fused.split([diag_mask.shape[1], med_mask.shape[1]], dim=1)
        window_states, window_mask = window_starts(cross.text_fused, attention_mask, window_length)
        text_pooled = self.mean_pooling(window_states, window_mask)
        return MedMPLMModelOutput(
            text_fused=cross.text_fused,
            diagnosis_fused=diagnosis_fused,
            medication_fused=medication_fused,
            text_window_states=window_states,
            text_window_mask=window_mask,
            text_pooled=text_pooled,
            visit_embedding=torch.cat([text_pooled, diagnosis_fused[:, 0], medication_fused[:, 0]], dim=-1),
            text_last_hidden_state=text,
            diagnosis_last_hidden_state=diagnoses,
            medication_last_hidden_state=medications,
            text_to_code_attentions=cross.text_to_code_attentions,
            code_to_text_attentions=cross.code_to_text_attentions,
        )


class MedMPLMForPretraining(MedMPLMPreTrainedModel):
    """MedM-PLM with the Text-to-Code (T2C) and Code-to-Code (C2C) pretraining objectives.

    Both predict the set of a visit's masked codes of one type from a visit-level vector
    (cross-entropy against the uniform distribution over the masked codes):

    * T2C (eq. 8): from ``R_text`` at [CLS], the note's summary after attending over the codes (a note read in
      several windows: their [CLS] states pooled by ``config.text_window_pooling``). Only visits with a note count.
    * C2C: from ``R_code`` at the code sequence's [CLS], which sees the surrounding (unmasked)
      codes through the code encoder and the note through cross-attention.

    Visit-level rather than per-position prediction, because codes carry no position: two
    [MASK] tokens of one visit are indistinguishable, so per-position targets would be
    ambiguous.

    With ``config.contrastive_weight > 0``, a :class:`~medmplm.models.alignment.ContrastiveAlignment` adds the
    ``contrastive`` family's loss on the encoders' own outputs, before fusion (ALBEF's "align before fuse"): the
    visit's code vector (the diagnosis and medication [CLS] states of the code encoder) against its note vector (the
    text encoder's window [CLS] states, pooled), over visits with both, negatives from the whole global batch.
    """

    # A contrastive export's alignment weights, loaded into a model without the contrastive loss.
    _keys_to_ignore_on_load_unexpected = [r"^alignment\."]

    def __init__(self, config: MedMPLMConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.medmplm = MedMPLMModel(config, text_backbone)
        hidden = config.code_hidden_size
        self.t2c_heads = nn.ModuleDict({t: CodePredictionHead(hidden, len(self.vocabs[t])) for t in CODE_TYPES})
        self.c2c_heads = nn.ModuleDict({t: CodePredictionHead(hidden, len(self.vocabs[t])) for t in CODE_TYPES})
        self.text_pooling = WindowPooling(hidden, config.text_window_pooling)
        self.alignment = (
            ContrastiveAlignment(
                self.medmplm.text_encoder.hidden_size,
                2 * hidden,
                config.contrastive_projection_size,
                config.text_window_pooling,
                config.contrastive_temperature,
            )
            if config.contrastive_weight > 0
            else None
        )
        self.post_init()

    @property
    def text_encoder(self) -> TextEncoder:
        """The text encoder (for ``frozen_prefix``)."""
        return self.medmplm.text_encoder

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        attention_mask: torch.Tensor,
        diag_labels: torch.Tensor,
        med_labels: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        has_note: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> MedMPLMPretrainingOutput:
        """Pretraining losses of a masked batch (``CodeMasker`` output).

        Args:
            diag_labels, med_labels: [B, 1 + C] original ids at masked positions, -100 elsewhere.
            others: as :meth:`MedMPLMModel.forward`.
        """
        encoded = self.medmplm(
            diag_ids=diag_ids,
            diag_mask=diag_mask,
            med_ids=med_ids,
            med_mask=med_mask,
            attention_mask=attention_mask,
            input_ids=input_ids,
            has_note=has_note,
            text_hidden_states=text_hidden_states,
            output_attentions=output_attentions,
        )
        note_present = has_note.bool() if has_note is not None else torch.ones_like(diag_ids[:, 0], dtype=torch.bool)
        text_vectors = self.text_pooling(encoded.text_window_states, encoded.text_window_mask)
        losses: dict[str, torch.Tensor] = {}
        accuracies: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        for code_type, fused, labels in (
            ("diagnosis", encoded.diagnosis_fused, diag_labels),
            ("medication", encoded.medication_fused, med_labels),
        ):
            name = f"c2c_{code_type}"
            losses[name], accuracies[name], counts[name] = self._masked_code_set_loss(
                self.c2c_heads[code_type], fused[:, 0], labels, torch.ones_like(note_present)
            )
            name = f"t2c_{code_type}"
            losses[name], accuracies[name], counts[name] = self._masked_code_set_loss(
                self.t2c_heads[code_type], text_vectors, labels, note_present
            )
        weights = self.config.loss_weights
        loss = torch.stack([weights[name] * value for name, value in losses.items()]).sum()
        if self.alignment is not None:
            aligned = self.alignment(
                *window_starts(encoded.text_last_hidden_state, attention_mask, self.config.text_max_length),
                torch.cat([encoded.diagnosis_last_hidden_state[:, 0], encoded.medication_last_hidden_state[:, 0]], dim=-1),
                note_present & has_codes(diag_mask, med_mask),
            )
            losses["contrastive"] = aligned.loss
            accuracies["contrastive"] = (aligned.code_to_text_accuracy + aligned.text_to_code_accuracy) / 2
            counts["contrastive"] = aligned.local_pairs
            loss = loss + self.config.contrastive_weight * aligned.loss
        return MedMPLMPretrainingOutput(
            loss=loss, losses=losses, accuracies=accuracies, target_counts=counts, model_output=encoded
        )

    @staticmethod
    def _masked_code_set_loss(
        head: CodePredictionHead, visit_vectors: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict each eligible visit's set of masked codes from one visit-level vector.

        Args:
            head: prediction head over the code type's vocabulary.
            visit_vectors: [B, H] fused visit-level states.
            labels: [B, L] original ids at masked positions, -100 elsewhere.
            eligible: [B] visits that may count (e.g. those with a note).

        Returns:
            (loss, accuracy, number of target codes). The loss is the cross-entropy against the
            uniform distribution over the visit's distinct masked codes, averaged over visits;
            accuracy is the share of target codes among each visit's top-k logits, k = its number
            of targets.
        """
        selected = labels != IGNORE_INDEX
        targets = torch.zeros(labels.shape[0], head.decoder.out_features, device=labels.device)
        targets.scatter_add_(1, labels.clamp(min=0), selected.float())
        targets = (targets > 0).float()
        eligible = eligible & (targets.sum(dim=1) > 0)
        logits = head(visit_vectors[eligible])
        targets = targets[eligible]
        per_visit = targets.sum(dim=1)
        count = per_visit.sum().long()
        if logits.shape[0] == 0:
            # Keeps every head parameter in the graph (with zero gradient) for data-parallel training.
            return logits.sum() * 0.0, torch.tensor(float("nan"), device=logits.device), count
        loss = F.cross_entropy(logits, (targets / per_visit[:, None]).to(logits.dtype))
        top = logits.topk(int(per_visit.max()), dim=-1).indices
        within_k = torch.arange(top.shape[1], device=top.device)[None, :] < per_visit[:, None]
        hits = (targets.gather(1, top) * within_k).sum()
        return loss, (hits / per_visit.sum()).detach(), count


AutoConfig.register(MedMPLMConfig.model_type, MedMPLMConfig)
AutoModel.register(MedMPLMConfig, MedMPLMModel)
AutoModelForPreTraining.register(MedMPLMConfig, MedMPLMForPretraining)
