"""The ``contrastive`` family (Cai, Huang, Nakada, Zhang and Zhou): a visit's codes and its note, pulled together.

:class:`ContrastiveModel` is MedM-PLM's text encoder (:class:`~medmplm.models.text_encoder.TextEncoder`, notes read in
windows) and code encoder (:class:`~medmplm.models.modeling_medmplm.CodeEncoder`) side by side, without the
cross-modal module: a visit's note vector is its windows' [CLS] states, its code vector the diagnosis and medication
[CLS] states. :class:`ContrastiveForPretraining` adds :class:`~medmplm.models.alignment.ContrastiveAlignment`:
projections to a shared space, a learned temperature, and the symmetric InfoNCE whose negatives are the other visits of
the global batch (gathered from every worker in training). No training logic lives here.

The encoders sit under MedM-PLM's own names (``medmplm.text_encoder.*``, ``medmplm.code_encoder.*``, the alignment
under ``alignment.*`` as in a MedM-PLM with ``contrastive_weight``), so that ``MedMPLMModel.from_pretrained`` and
``MedMPLMForPretraining.from_pretrained`` load a ``contrastive`` export: its encoders, and the alignment when the
MedM-PLM has one; the cross-modal module and masked-code heads start fresh.

Batch keys are those of ``medmplm.data.features.VisitFeaturizer``, as for MedM-PLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from medmplm.models.alignment import ContrastiveAlignment, has_codes
from medmplm.models.contrastive.configuration_contrastive import ContrastiveConfig
from medmplm.models.modeling_medmplm import CodeEncoder, MedMPLMPreTrainedModel
from medmplm.models.text_encoder import TextEncoder, WindowPooling, window_starts


@dataclass
class ContrastiveModelOutput(ModelOutput):
    """Output of :class:`ContrastiveModel`. ``L_text = K * L``: the note's K windows of L tokens.

    Args:
        text_window_states: [B, K, H_text] the text encoder's state at each window's [CLS].
        text_window_mask: [B, K] True on the windows the note reaches.
        code_vector: [B, 2 * H_code] the diagnosis and medication [CLS] states of the code encoder, concatenated.
        visit_embedding: [B, H_text + 2 * H_code] the note's window [CLS] states averaged over the windows it reaches,
            and ``code_vector``: the visit vector ``python -m medmplm.embed`` writes.
        text_last_hidden_state: [B, L_text, H_text] text encoder output (zero over absent windows).
        diagnosis_last_hidden_state: [B, 1 + C, H_code] code encoder output for diagnoses.
        medication_last_hidden_state: [B, 1 + C, H_code] code encoder output for medications.
    """

    text_window_states: torch.Tensor | None = None
    text_window_mask: torch.Tensor | None = None
    code_vector: torch.Tensor | None = None
    visit_embedding: torch.Tensor | None = None
    text_last_hidden_state: torch.Tensor | None = None
    diagnosis_last_hidden_state: torch.Tensor | None = None
    medication_last_hidden_state: torch.Tensor | None = None


@dataclass
class ContrastivePretrainingOutput(ModelOutput):
    """Output of :class:`ContrastiveForPretraining`.

    Args:
        loss: scalar; its mean over the workers is the symmetric InfoNCE of the global batch (see
            :func:`~medmplm.models.alignment.symmetric_infonce`).
        pairs: scalar, the visits with a note and codes in the global batch (the candidates).
        local_pairs: scalar, those of this worker's batch (the anchors its loss and accuracies cover).
        code_to_text_accuracy: share of the anchors whose own note scores highest among the candidates.
        text_to_code_accuracy: share of the anchors' notes whose own codes score highest.
        code_embeds, text_embeds: [B, D] the visits' unit-length vectors in the shared space.
        logit_scale: scalar, 1 / temperature.
        model_output: the :class:`ContrastiveModelOutput` the vectors were computed from.
    """

    loss: torch.Tensor | None = None
    pairs: torch.Tensor | None = None
    local_pairs: torch.Tensor | None = None
    code_to_text_accuracy: torch.Tensor | None = None
    text_to_code_accuracy: torch.Tensor | None = None
    code_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    model_output: ContrastiveModelOutput | None = None


class ContrastivePreTrainedModel(MedMPLMPreTrainedModel):
    """MedM-PLM's plumbing (vocabularies and ontologies in the configuration, the tokenizer saved alongside, weight
    initialisation, local-only loading) for the ``contrastive`` models. ``base_model_prefix`` stays MedM-PLM's
    ``medmplm``: the encoders keep MedM-PLM's names (see the module docstring)."""

    config_class = ContrastiveConfig


class ContrastiveModel(ContrastivePreTrainedModel):
    """MedM-PLM's text and code encoders, unfused: a visit's note vector and code vector."""

    # Loaded from a ContrastiveForPretraining directory, the alignment is an expected leftover.
    _keys_to_ignore_on_load_unexpected = [r"^alignment\."]

    def __init__(self, config: ContrastiveConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config, text_backbone)
        self.text_encoder = TextEncoder(self.build_text_backbone(), config.text_num_frozen_layers)
        self.code_encoder = CodeEncoder(config, self.trees())
        self.mean_pooling = WindowPooling(self.text_encoder.hidden_size, "mean")
        self.post_init()

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
    ) -> ContrastiveModelOutput:
        """Encode a batch of visits.

        Args:
            diag_ids, diag_mask, med_ids, med_mask: [B, 1 + C] code sequences ([CLS] first) and masks.
            attention_mask: [B, L_text] 1 on real text tokens (K windows of ``config.text_max_length``).
            input_ids: [B, L_text] token ids (or pass ``text_hidden_states``).
            text_hidden_states: [B, L_text, H_text] precomputed ``text_encoder.frozen_prefix`` output.
        """
        window_length = self.config.text_max_length
        text = self.text_encoder(input_ids, attention_mask, text_hidden_states, window_length=window_length)
        diagnoses, medications = self.code_encoder(diag_ids, diag_mask, med_ids, med_mask)
        window_states, window_mask = window_starts(text, attention_mask, window_length)
        code_vector = torch.cat([diagnoses[:, 0], medications[:, 0]], dim=-1)
        return ContrastiveModelOutput(
            text_window_states=window_states,
            text_window_mask=window_mask,
            code_vector=code_vector,
            visit_embedding=torch.cat([self.mean_pooling(window_states, window_mask), code_vector], dim=-1),
            text_last_hidden_state=text,
            diagnosis_last_hidden_state=diagnoses,
            medication_last_hidden_state=medications,
        )


class ContrastiveForPretraining(ContrastivePreTrainedModel):
    """:class:`ContrastiveModel` with the symmetric code-note InfoNCE (:mod:`medmplm.models.alignment`).

    A visit takes part when it has a note and at least one code; the others are neither anchors nor negatives.
    """

    def __init__(self, config: ContrastiveConfig, text_backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.medmplm = ContrastiveModel(config, text_backbone)
        self.alignment = ContrastiveAlignment(
            self.medmplm.text_encoder.hidden_size,
            2 * config.code_hidden_size,
            config.contrastive_projection_size,
            config.text_window_pooling,
            config.contrastive_temperature,
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
        input_ids: torch.Tensor | None = None,
        has_note: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
    ) -> ContrastivePretrainingOutput:
        """The loss of a batch of visits.

        Args:
            has_note: [B] 0 for visits without a note (they take no part); all have notes when omitted.
            others: as :meth:`ContrastiveModel.forward`.
        """
        encoded = self.medmplm(
            diag_ids=diag_ids,
            diag_mask=diag_mask,
            med_ids=med_ids,
            med_mask=med_mask,
            attention_mask=attention_mask,
            input_ids=input_ids,
            text_hidden_states=text_hidden_states,
        )
        eligible = has_codes(diag_mask, med_mask)
        if has_note is not None:
            eligible = eligible & has_note.bool()
        aligned = self.alignment(encoded.text_window_states, encoded.text_window_mask, encoded.code_vector, eligible)
        return ContrastivePretrainingOutput(
            loss=aligned.loss,
            pairs=aligned.pairs,
            local_pairs=aligned.local_pairs,
            code_to_text_accuracy=aligned.code_to_text_accuracy,
            text_to_code_accuracy=aligned.text_to_code_accuracy,
            code_embeds=aligned.code_embeds,
            text_embeds=aligned.text_embeds,
            logit_scale=aligned.logit_scale,
            model_output=encoded,
        )


__all__ = [
    "ContrastiveForPretraining",
    "ContrastiveModel",
    "ContrastiveModelOutput",
    "ContrastivePreTrainedModel",
    "ContrastivePretrainingOutput",
]
