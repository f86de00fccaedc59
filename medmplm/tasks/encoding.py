"""What a visit encoder is: its per-visit output and the interface :class:`~medmplm.tasks.modeling.FineTuningModel`
relies on. Kept apart from the head so that encoders (``medmplm.tasks.encoders``, ``medmplm.models.baselines``) and
the head can both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers.utils import ModelOutput

MODALITIES = ("text", "codes")


@dataclass
class VisitEncoding(ModelOutput):
    """Per-visit representations.

    Attributes:
        text: ``[N, text_size]`` note representation, or ``None`` for encoders that do not read text.
        codes: ``[N, code_size]`` code representation, or ``None`` for encoders that do not read codes.
    """

    text: torch.Tensor | None = None
    codes: torch.Tensor | None = None


@dataclass
class PatientEncoding(ModelOutput):
    """What a patient-level encoder gives for a batch of examples (``medmplm.tasks.patient``).

    Attributes:
        patient: ``[B, patient_size]`` one vector per example: the whole history before (and as much of) the target
            visit as the task shows.
        auxiliary_loss: ``[]`` a loss of the encoder's own, weighted, that training adds to the task's (M-BEHRT's
            visit alignment), or ``None``.
    """

    patient: torch.Tensor | None = None
    auxiliary_loss: torch.Tensor | None = None


class VisitEncoder(Protocol):
    """What :class:`FineTuningModel` needs of an encoder (an ``nn.Module``).

    Attributes:
        modalities: the subset of ``{"text", "codes"}`` it reads.
        text_size: width of :attr:`VisitEncoding.text` (0 without text).
        code_size: width of :attr:`VisitEncoding.codes` (0 without codes).

    It may also define ``summarize_history(codes [B, H, D], text [B, H, D'] | None, mask [B, H]) -> [B, history_size]``
    with an int ``history_size``, to replace the mean over earlier visits.
    """

    modalities: frozenset[str]
    text_size: int
    code_size: int

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_note: torch.Tensor,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
    ) -> VisitEncoding: ...
