"""MedM-PLM: a BERT text encoder, a G-BERT ontology code encoder, and a cross-modal module.

Built bottom-up: :class:`CodeEmbeddings` -> :class:`CodeEncoder`; :class:`CrossModalAttention`;
:class:`MedMPLMModel` joins them with a :class:`~medmplm.models.text_encoder.TextEncoder`;
:class:`MedMPLMForPretraining` adds the Text-to-Code and Code-to-Code objectives (Liu et al.
2022, "Multimodal data matters", eqs. 6-8). No training logic lives here.

Batch keys are those of ``medmplm.data.features.VisitFeaturizer`` (and, for pretraining,
``medmplm.data.masking.CodeMasker``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from medmplm.data.masking import IGNORE_INDEX
from medmplm.data.schema import ONTOLOGY_CODE_TYPES, ONTOLOGY_DIR, VOCAB_DIR
from medmplm.data.vocab import NUM_SPECIAL_TOKENS, PAD_ID, CodeVocab, VocabMismatchError
from medmplm.models.configuration_medmplm import MedMPLMConfig
from medmplm.models.ontology_embedding import OntologyEmbedding, OntologyTree
from medmplm.models.text_encoder import (
    TextEncoder,
    backbone_from_config_dict,
    build_bert_backbone,
    load_backbone_checkpoint,
)
from medmplm.models.tokenization import load_tokenizer, prepared_wordpiece_tokenizer
from medmplm.ontology import read_ontology, write_ontology

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_INFO_FILE = "medmplm.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
# The code types with an ontology are the ones the model encodes.
CODE_TYPES = ONTOLOGY_CODE_TYPES
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

    Args:
        text_fused: [B, L_text, H_code] ``R_text``; position 0 is the note's visit-level vector.
        diagnosis_fused: [B, 1 + C, H_code] ``R_code`` of the diagnosis sequence; position 0 is [CLS].
        medication_fused: [B, 1 + C, H_code] ``R_code`` of the medication sequence.
        visit_embedding: [B, 3 * H_code] the three [CLS] vectors above, concatenated.
        text_last_hidden_state: [B, L_text, H_text] text encoder output.
        diagnosis_last_hidden_state: [B, 1 + C, H_code] code encoder output for diagnoses.
        medication_last_hidden_state: [B, 1 + C, H_code] code encoder output for medications.
        text_to_code_attentions: [B, L_text, 2 * (1 + C)] (diagnoses then medications), on request.
        code_to_text_attentions: [B, 2 * (1 + C), L_text], on request.
    """

    text_fused: torch.Tensor | None = None
    diagnosis_fused: torch.Tensor | None = None
    medication_fused: torch.Tensor | None = None
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
            ``c2c_medication``) -> scalar loss; 0 (still attached to the graph) when the batch
            has no target for it.
        accuracies: objective -> scalar accuracy; NaN when the batch has no target for it.
            Share of a visit's masked codes found among its k highest-scoring codes, k = its
            number of masked codes (micro-averaged over the batch's target codes).
        target_counts: objective -> number of targets (masked codes) the loss and accuracy
            cover; weight per-batch accuracies by it when averaging.
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
        self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked dot-product attention with a residual: ([B, Lq, d] output, [B, Lq, Lk] weights)."""
        key_mask = key_mask.bool()[:, None, :]
        scores = torch.matmul(queries, keys.transpose(1, 2)) * self.scale
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * key_mask
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
        code_fused, code_to_text = self.attend(code_states, text, text_key_mask)
        text_fused, text_to_code = self.attend(text, code_states, code_key_mask)
        return CrossModalOutput(
            text_fused=text_fused,
            code_fused=code_fused,
            text_to_code_attentions=text_to_code if output_attentions else None,
            code_to_text_attentions=code_to_text if output_attentions else None,
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


class MedMPLMPreTrainedModel(nn.Module):
    """Construction from a prepared directory, and save/load, shared by the MedM-PLM models.

    Args:
        config: model configuration (``text_config`` is filled in from ``text_backbone``).
        vocabs: code type (``diagnosis``, ``medication``) -> vocabulary.
        ontologies: code type -> {code: ancestors, root first}.
        text_backbone: the BERT-family transformers model of the text encoder.
        tokenizer: its tokenizer; needed to save the model and to featurise visits.
    """

    def __init__(
        self,
        config: MedMPLMConfig,
        vocabs: Mapping[str, CodeVocab],
        ontologies: Mapping[str, Mapping[str, list[str]]],
        text_backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        for code_type in CODE_TYPES:
            if code_type not in vocabs or code_type not in ontologies:
                raise ValueError(f"a {code_type} vocabulary and ontology are required")
            if vocabs[code_type].code_type != code_type:
                raise VocabMismatchError(f"vocabs[{code_type!r}] holds {vocabs[code_type].code_type!r} codes")
        if tokenizer is not None and len(tokenizer) > text_backbone.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the text encoder's embedding has "
                f"{text_backbone.config.vocab_size} rows"
            )
        max_positions = getattr(text_backbone.config, "max_position_embeddings", None)
        if max_positions is not None and config.text_max_length > max_positions:
            raise ValueError(
                f"text_max_length {config.text_max_length} exceeds the text encoder's {max_positions} positions"
            )
        self.config = dataclasses.replace(
            config, text_config=json.loads(text_backbone.config.to_json_string(use_diff=False))
        )
        self.vocabs = dict(vocabs)
        self.ontologies = {
            t: {c: list(ontologies[t][c]) for c in vocabs[t].codes if c in ontologies[t]} for t in CODE_TYPES
        }
        self.tokenizer = tokenizer

    @property
    def diagnosis_vocab(self) -> CodeVocab:
        """Vocabulary of diagnosis codes."""
        return self.vocabs["diagnosis"]

    @property
    def medication_vocab(self) -> CodeVocab:
        """Vocabulary of medication codes."""
        return self.vocabs["medication"]

    def trees(self) -> dict[str, OntologyTree]:
        """Indexed ontology tree of each code type's vocabulary."""
        return {t: OntologyTree.build(self.vocabs[t].codes, self.ontologies[t]) for t in CODE_TYPES}

    @classmethod
    def from_prepared(
        cls: type[ModelT],
        prepared_dir: str | os.PathLike,
        config: MedMPLMConfig,
        tokenizer_dir: str | os.PathLike | None = None,
        text_checkpoint: str | os.PathLike | None = None,
    ) -> ModelT:
        """A freshly initialised model for a prepared directory (``medmplm.data.schema`` layout).

        Code vocabularies and ontologies come from ``vocab/`` and ``ontology/``. The text side is,
        in order of preference: the checkpoint ``text_checkpoint`` (with its own tokenizer, or the
        one in ``tokenizer_dir``); a fresh BERT with the tokenizer in ``tokenizer_dir``; or a fresh
        BERT with a WordPiece tokenizer trained on the training split's notes (once per prepared directory, see
        :func:`~medmplm.models.tokenization.prepared_wordpiece_tokenizer`). With a checkpoint,
        the ``text_*`` size fields of ``config`` are replaced by the checkpoint's.
        """
        prepared = Path(prepared_dir)
        vocabs = {
            t: CodeVocab.from_tsv(prepared / VOCAB_DIR / f"{t}.tsv", t, min_count=config.code_min_count)
            for t in CODE_TYPES
        }
        ontologies = {t: read_ontology(prepared / ONTOLOGY_DIR / f"{t}.tsv") for t in CODE_TYPES}
        if text_checkpoint is not None:
            backbone = load_backbone_checkpoint(text_checkpoint)
            tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir is not None else text_checkpoint)
            bc = backbone.config
            config = dataclasses.replace(
                config,
                text_hidden_size=bc.hidden_size,
                text_num_layers=bc.num_hidden_layers,
                text_num_heads=bc.num_attention_heads,
                text_intermediate_size=bc.intermediate_size,
                text_vocab_size=bc.vocab_size,
            )
        else:
            if tokenizer_dir is not None:
                tokenizer = load_tokenizer(tokenizer_dir)
            else:
                tokenizer = prepared_wordpiece_tokenizer(prepared, config.text_vocab_size, config.text_max_length)
            backbone = build_bert_backbone(config, len(tokenizer), tokenizer.pad_token_id)
        return cls(config, vocabs, ontologies, backbone, tokenizer)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``config.json``, ``model.safetensors``, ``medmplm.json``, ``vocab/``, ``ontology/`` and ``tokenizer/``.

        Files are staged in a temporary directory and moved in, ``config.json`` last (it is
        removed first), so an interrupted save never looks complete. Other files in the
        directory (e.g. the trainer's resolved config) are left alone.
        """
        if self.tokenizer is None:
            raise ValueError("cannot save a model without a tokenizer; attach one (model.tokenizer = ...)")
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target))
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, staging / WEIGHTS_FILE, metadata={"format": "pt"})
            (staging / VOCAB_DIR).mkdir()
            (staging / ONTOLOGY_DIR).mkdir()
            for t in CODE_TYPES:
                self.vocabs[t].save(staging / VOCAB_DIR / f"{t}.json")
                write_ontology(staging / ONTOLOGY_DIR / f"{t}.tsv", self.ontologies[t])
            self.tokenizer.save_pretrained(staging / TOKENIZER_DIR)
            info = {
                "format_version": FORMAT_VERSION,
                "architecture": type(self).__name__,
                "vocabularies": {
                    t: {"size": len(self.vocabs[t]), "sha256": self.vocabs[t].fingerprint()} for t in CODE_TYPES
                },
            }
            (staging / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            self.config.to_json_file(staging / CONFIG_FILE)

            (target / CONFIG_FILE).unlink(missing_ok=True)
            for name in (WEIGHTS_FILE, VOCAB_DIR, ONTOLOGY_DIR, TOKENIZER_DIR, MODEL_INFO_FILE):
                destination = target / name
                if destination.is_dir():
                    shutil.rmtree(destination)
                os.replace(staging / name, destination)
            os.replace(staging / CONFIG_FILE, target / CONFIG_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def from_pretrained(cls: type[ModelT], directory: str | os.PathLike) -> ModelT:
        """Load a model written by :meth:`save_pretrained` (weights via safetensors: nothing is unpickled).

        A :class:`MedMPLMModel` can be loaded from a :class:`MedMPLMForPretraining` directory (the
        pretraining heads are left out). Extra files in the directory are ignored.

        Raises:
            FileNotFoundError: ``config.json`` is missing (not a model directory, or an interrupted save).
            VocabMismatchError: the vocabulary files do not match those the weights were saved with.
            ValueError: the weights do not fit the model described by ``config.json``.
        """
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{directory / CONFIG_FILE}: missing; not a saved MedM-PLM model (or its save was interrupted)"
            )
        config = MedMPLMConfig.from_json_file(directory / CONFIG_FILE)
        with open(directory / MODEL_INFO_FILE, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / MODEL_INFO_FILE}: format_version {info.get('format_version')}, expected {FORMAT_VERSION}"
            )
        vocabs = {}
        for t in CODE_TYPES:
            path = directory / VOCAB_DIR / f"{t}.json"
            vocabs[t] = CodeVocab.load(path, code_type=t)
            expected = info["vocabularies"][t]
            if len(vocabs[t]) != expected["size"] or vocabs[t].fingerprint() != expected["sha256"]:
                raise VocabMismatchError(
                    f"{path}: {len(vocabs[t])} tokens (sha256 {vocabs[t].fingerprint()[:12]}) but the weights were "
                    f"saved with {expected['size']} tokens (sha256 {expected['sha256'][:12]}); "
                    "the vocabulary file does not belong to these weights"
                )
        ontologies = {t: read_ontology(directory / ONTOLOGY_DIR / f"{t}.tsv") for t in CODE_TYPES}
        if config.text_config is None:
            raise ValueError(f"{directory / CONFIG_FILE}: text_config is missing")
        backbone = backbone_from_config_dict(config.text_config)
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        model = cls(config, vocabs, ontologies, backbone, tokenizer)
        state = load_file(directory / WEIGHTS_FILE, device="cpu")
        if cls is MedMPLMModel and info["architecture"] != MedMPLMModel.__name__:
            prefix = "medmplm."
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"{directory / WEIGHTS_FILE} ({info['architecture']}) does not fit {cls.__name__} as built from "
                f"{CONFIG_FILE} and the vocabularies: {err}"
            ) from None
        model.eval()
        return model


class MedMPLMModel(MedMPLMPreTrainedModel):
    """MedM-PLM encoder: text and code encoders joined by the cross-modal module."""

    def __init__(
        self,
        config: MedMPLMConfig,
        vocabs: Mapping[str, CodeVocab],
        ontologies: Mapping[str, Mapping[str, list[str]]],
        text_backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(config, vocabs, ontologies, text_backbone, tokenizer)
        self.text_encoder = TextEncoder(text_backbone, self.config.text_num_frozen_layers)
        self.code_encoder = CodeEncoder(self.config, self.trees())
        self.cross_modal = CrossModalAttention(self.text_encoder.hidden_size, self.config.code_hidden_size)

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
            attention_mask: [B, L_text] 1 on real text tokens.
            input_ids: [B, L_text] token ids (or pass ``text_hidden_states``).
            has_note: [B] 0 for visits without a note: their text is masked out of the cross-modal
                module. All visits have notes when omitted.
            text_hidden_states: [B, L_text, H_text] precomputed ``text_encoder.frozen_prefix`` output.
            output_attentions: also return the cross-modal attention weights.
        """
        text = self.text_encoder(input_ids, attention_mask, text_hidden_states)
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
        return MedMPLMModelOutput(
            text_fused=cross.text_fused,
            diagnosis_fused=diagnosis_fused,
            medication_fused=medication_fused,
            visit_embedding=torch.cat([cross.text_fused[:, 0], diagnosis_fused[:, 0], medication_fused[:, 0]], dim=-1),
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

    * T2C (eq. 8): from ``R_text`` at [CLS], the note's summary after attending over the codes.
      Only visits with a note count.
    * C2C: from ``R_code`` at the code sequence's [CLS], which sees the surrounding (unmasked)
      codes through the code encoder and the note through cross-attention.

    Visit-level rather than per-position prediction, because codes carry no position: two
    [MASK] tokens of one visit are indistinguishable, so per-position targets would be
    ambiguous.
    """

    def __init__(
        self,
        config: MedMPLMConfig,
        vocabs: Mapping[str, CodeVocab],
        ontologies: Mapping[str, Mapping[str, list[str]]],
        text_backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(config, vocabs, ontologies, text_backbone, tokenizer)
        self.medmplm = MedMPLMModel(self.config, self.vocabs, self.ontologies, text_backbone, tokenizer)
        hidden = self.config.code_hidden_size
        self.t2c_heads = nn.ModuleDict({t: CodePredictionHead(hidden, len(self.vocabs[t])) for t in CODE_TYPES})
        self.c2c_heads = nn.ModuleDict({t: CodePredictionHead(hidden, len(self.vocabs[t])) for t in CODE_TYPES})

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
                self.t2c_heads[code_type], encoded.text_fused[:, 0], labels, note_present
            )
        weights = self.config.loss_weights
        loss = torch.stack([weights[name] * value for name, value in losses.items()]).sum()
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
