"""G-BERT (Shang et al. 2019, "Pre-training of Graph Augmented Transformers for Medication Recommendation").

Built bottom-up: the code encoder is MedM-PLM's :class:`~medmplm.models.modeling_medmplm.CodeEncoder` (ontology
embeddings from a two-stage graph attention, then a transformer over [CLS] + a visit's codes, one sequence per code
type); :class:`GBertModel` wraps it and returns the visit vector; :class:`GBertForPretraining` adds G-BERT's objectives
(paper, section "Pre-training"): self-prediction (a type's [CLS] state predicts the visit's codes of that type) and dual
prediction (it predicts the codes of the other type), each a multi-label binary cross-entropy over the target type's
codes. No training logic lives here.

Batch keys are the code columns of ``medmplm.data.features.VisitFeaturizer`` (and, for pretraining, the labels of
``medmplm.data.masking.CodeMasker``).

What G-BERT's released code gets wrong, and this implementation avoids:

* Masked codes replaced by a random code took it from the other type's vocabulary (a diagnosis replaced by a
  medication code and vice versa). Here :class:`~medmplm.data.masking.CodeMasker` draws replacements of the same type.
* Its medication-recommendation model reshapes the encoder outputs of the interleaved per-visit (diagnoses,
  medications) sequences as if they were grouped by type, so the vectors it reads as diagnoses include medication
  sequences, the target visit's own medications among them: the model sees the answer it is asked for. This module
  only encodes what it is given; the medication-recommendation task of this project (the fine-tuning side, which owns
  the inputs) never feeds the target visit's medications, and must keep it so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from medmplm.data.masking import IGNORE_INDEX
from medmplm.data.schema import ONTOLOGY_CODE_TYPES
from medmplm.data.vocab import NUM_SPECIAL_TOKENS
from medmplm.models.gbert.configuration_gbert import OBJECTIVE_CODE_TYPES, GBertConfig
from medmplm.models.modeling_medmplm import CodeEncoder
from medmplm.models.ontology_embedding import OntologyEmbedding, OntologyTree


@dataclass
class GBertModelOutput(ModelOutput):
    """Output of :class:`GBertModel`.

    Args:
        diagnosis_last_hidden_state: [B, 1 + C, H] code encoder output of the diagnosis sequence; position 0 is [CLS].
        medication_last_hidden_state: [B, 1 + C, H] the same for the medication sequence.
        visit_embedding: [B, 2 * H] the diagnosis and medication [CLS] states, concatenated (the visit vector a
            fine-tuning task reads).
    """

    diagnosis_last_hidden_state: torch.Tensor | None = None
    medication_last_hidden_state: torch.Tensor | None = None
    visit_embedding: torch.Tensor | None = None


@dataclass
class GBertPretrainingOutput(ModelOutput):
    """Output of :class:`GBertForPretraining`.

    Args:
        loss: scalar, the loss-weighted sum of the objectives.
        losses: objective (``dx2dx``, ``rx2rx``, ``dx2rx``, ``rx2dx``) -> scalar binary cross-entropy over the target
            type's codes, averaged over the eligible visits and the codes; 0 (still attached to the graph) when no
            visit of the batch is eligible.
        recalls: objective -> recall@k of the eligible visits' code sets, k = the visit's number of target codes
            (the share of its codes among its k highest logits; with k = the set size, precision@k is the same
            number), averaged over the eligible visits; NaN when none is eligible.
        visit_counts: objective -> number of eligible visits (those with codes of both the source and the target
            type); weight per-batch losses and recalls by it when averaging.
        target_counts: objective -> number of target codes of the eligible visits.
        logits: objective -> [B, V] logits over the target type's codes (column ``i`` is code id
            ``NUM_SPECIAL_TOKENS + i``), for every visit of the batch.
        model_output: the :class:`GBertModelOutput` the objectives were computed from.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    recalls: dict[str, torch.Tensor] | None = None
    visit_counts: dict[str, torch.Tensor] | None = None
    target_counts: dict[str, torch.Tensor] | None = None
    logits: dict[str, torch.Tensor] | None = None
    model_output: GBertModelOutput | None = None


class GBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing shared by the G-BERT models."""

    config_class = GBertConfig
    base_model_prefix = "gbert"
    main_input_name = "diag_ids"

    def _init_weights(self, module: nn.Module) -> None:
        # Linear and embedding weights N(0, initializer_range), LayerNorm 1 / 0, attention projections as torch's.
        # GATConv layers are torch-geometric's and keep the initialisation they give themselves.
        super()._init_weights(module)
        if isinstance(module, OntologyEmbedding):
            init.xavier_uniform_(module.node_embeddings)


class GBertModel(GBertPreTrainedModel):
    """G-BERT encoder: a visit's diagnoses and medications -> their [CLS] states, the visit vector."""

    # Loaded from a GBertForPretraining directory, the pretraining heads are left out by design.
    _keys_to_ignore_on_load_unexpected = [r"^heads\."]

    def __init__(self, config: GBertConfig) -> None:
        super().__init__(config)
        missing = [t for t in ONTOLOGY_CODE_TYPES if not config.vocabularies.get(t)]
        if missing:
            raise ValueError(f"vocabularies: no {' or '.join(missing)} codes; G-BERT needs both code types")
        trees = {
            t: OntologyTree.build(config.vocabularies[t], config.ontologies.get(t, {})) for t in ONTOLOGY_CODE_TYPES
        }
        self.code_encoder = CodeEncoder(config, trees)
        self.post_init()

    def forward(
        self, diag_ids: torch.Tensor, diag_mask: torch.Tensor, med_ids: torch.Tensor, med_mask: torch.Tensor
    ) -> GBertModelOutput:
        """Encode a batch of visits.

        Args:
            diag_ids: [B, 1 + C] diagnosis ids, [CLS] first. diag_mask: [B, 1 + C] 1 on [CLS] and codes.
            med_ids: [B, 1 + C] medication ids, [CLS] first. med_mask: [B, 1 + C].
        """
        diagnoses, medications = self.code_encoder(diag_ids, diag_mask, med_ids, med_mask)
        return GBertModelOutput(
            diagnosis_last_hidden_state=diagnoses,
            medication_last_hidden_state=medications,
            visit_embedding=torch.cat([diagnoses[:, 0], medications[:, 0]], dim=-1),
        )


class GBertPredictionHead(nn.Module):
    """G-BERT's classification head: dense + ReLU, then logits over a code vocabulary."""

    def __init__(self, hidden_size: int, num_codes: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.decoder = nn.Linear(hidden_size, num_codes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., V] logits."""
        return self.decoder(F.relu(self.dense(hidden)))


class GBertForPretraining(GBertPreTrainedModel):
    """G-BERT with its self-prediction (dx2dx, rx2rx) and dual-prediction (dx2rx, rx2dx) objectives.

    The inputs are a visit whose codes were masked (:class:`~medmplm.data.masking.CodeMasker`); each objective
    predicts, from the source type's [CLS] state, the visit's FULL set of target-type codes (the paper's L_se and
    L_du), not only the masked ones: the labels serve to restore the original codes. Special tokens and [UNK] are
    never targets. A visit counts for an objective only when it has codes of both its source and its target type, so a
    visit without medications counts for dx2dx alone.
    """

    def __init__(self, config: GBertConfig) -> None:
        super().__init__(config)
        self.gbert = GBertModel(config)
        self.heads = nn.ModuleDict(
            {
                name: GBertPredictionHead(config.code_hidden_size, len(config.vocabularies[target]))
                for name, (_, target) in OBJECTIVE_CODE_TYPES.items()
            }
        )
        self.post_init()

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        diag_labels: torch.Tensor | None = None,
        med_labels: torch.Tensor | None = None,
    ) -> GBertPretrainingOutput:
        """Pretraining losses of a (masked) batch.

        Args:
            diag_ids, diag_mask, med_ids, med_mask: as :meth:`GBertModel.forward`, after masking.
            diag_labels, med_labels: [B, 1 + C] original ids at masked positions, -100 elsewhere (``CodeMasker``);
                ``None`` when nothing was masked.
        """
        encoded = self.gbert(diag_ids=diag_ids, diag_mask=diag_mask, med_ids=med_ids, med_mask=med_mask)
        visit_vectors = {
            "diagnosis": encoded.diagnosis_last_hidden_state[:, 0],
            "medication": encoded.medication_last_hidden_state[:, 0],
        }
        code_sets = {
            "diagnosis": _code_sets(diag_ids, diag_mask, diag_labels, len(self.config.vocabularies["diagnosis"])),
            "medication": _code_sets(med_ids, med_mask, med_labels, len(self.config.vocabularies["medication"])),
        }
        has_codes = {t: sets.any(dim=1) for t, sets in code_sets.items()}
        losses, recalls, visit_counts, target_counts, all_logits = {}, {}, {}, {}, {}
        for name, (source, target) in OBJECTIVE_CODE_TYPES.items():
            logits = self.heads[name](visit_vectors[source])
            targets = code_sets[target].to(logits.dtype)
            eligible = (has_codes[source] & has_codes[target]).to(logits.dtype)
            per_visit = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)
            # Zero (with zero gradients) when no visit is eligible: every head stays in the graph, as data-parallel
            # training needs.
            losses[name] = (per_visit * eligible).sum() / eligible.sum().clamp(min=1)
            recalls[name] = (_recall_at_set_size(logits.detach(), targets) * eligible).sum() / eligible.sum()
            visit_counts[name] = eligible.sum().long()
            target_counts[name] = (targets * eligible[:, None]).sum().long()
            all_logits[name] = logits
        weights = self.config.loss_weights
        loss = torch.stack([weights[name] * value for name, value in losses.items()]).sum()
        return GBertPretrainingOutput(
            loss=loss,
            losses=losses,
            recalls=recalls,
            visit_counts=visit_counts,
            target_counts=target_counts,
            logits=all_logits,
            model_output=encoded,
        )


def _code_sets(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None, num_codes: int) -> torch.Tensor:
    """[B, V] multi-hot of each visit's original codes (column ``i``: code id ``NUM_SPECIAL_TOKENS + i``).

    Masked positions hold their original id in ``labels``; [PAD], [CLS], [MASK] and [UNK] are not codes.
    """
    original = ids if labels is None else torch.where(labels != IGNORE_INDEX, labels, ids)
    is_code = mask.bool() & (original >= NUM_SPECIAL_TOKENS)
    sets = torch.zeros(ids.shape[0], num_codes, device=ids.device)
    sets.scatter_add_(1, (original - NUM_SPECIAL_TOKENS).clamp(min=0), is_code.float())
    return sets > 0


def _recall_at_set_size(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B] share of each visit's target codes among its k highest logits, k = its number of targets (0 without)."""
    set_sizes = targets.sum(dim=1)
    top = logits.topk(int(set_sizes.max()), dim=1).indices
    within_k = torch.arange(top.shape[1], device=top.device)[None, :] < set_sizes[:, None]
    return (targets.gather(1, top) * within_k).sum(dim=1) / set_sizes.clamp(min=1)


__all__ = [
    "GBertForPretraining",
    "GBertModel",
    "GBertModelOutput",
    "GBertPreTrainedModel",
    "GBertPredictionHead",
    "GBertPretrainingOutput",
]
