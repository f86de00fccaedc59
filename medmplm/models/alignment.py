"""Code-text alignment: a visit's code vector and its note vector pulled together by a symmetric InfoNCE (CLIP).

Shared by the ``contrastive`` family (:mod:`medmplm.models.contrastive`, its whole objective) and MedM-PLM
(``MedMPLMConfig.contrastive_weight``: the same loss on the encoders' outputs before the cross-modal module, ALBEF's
"align before fuse").

:class:`ContrastiveAlignment` pools a note's window [CLS] states, projects both vectors to a shared space, normalises
them and scores every code vector against every note vector with a learned temperature; :func:`symmetric_infonce` is
the loss. In training under ``torch.distributed`` with several workers the candidates are the whole global batch: every
worker's vectors are gathered with their gradients (torch's autograd all-gather), so each worker's visits are scored
against all workers' notes and codes, and the gradients that reach a worker's encoders are those of the loss over the
global batch (see :func:`symmetric_infonce`). Validation (``eval()``) scores each batch against itself, so its loss does
not depend on the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from medmplm.models.text_encoder import WindowPooling

# CLIP's bound on the learned logit scale (1 / temperature), which keeps the softmax from collapsing onto one column.
MAX_LOGIT_SCALE = 100.0


@dataclass
class InfoNCEOutput(ModelOutput):
    """What :func:`symmetric_infonce` gives for this worker's batch.

    Args:
        loss: scalar; over the workers, the mean of ``loss`` is the symmetric InfoNCE of the global batch's pairs
            (each pair's two cross-entropies averaged, then averaged over the pairs).
        pairs: scalar, the pairs (eligible visits) of the global batch, the candidates each visit is scored against.
        local_pairs: scalar, this worker's eligible visits.
        code_to_text_accuracy: share of this worker's eligible visits whose own note scores highest among all
            candidate notes (NaN without eligible visits).
        text_to_code_accuracy: the same from each note to the candidate code vectors.
    """

    loss: torch.Tensor | None = None
    pairs: torch.Tensor | None = None
    local_pairs: torch.Tensor | None = None
    code_to_text_accuracy: torch.Tensor | None = None
    text_to_code_accuracy: torch.Tensor | None = None


@dataclass
class AlignmentOutput(InfoNCEOutput):
    """Output of :class:`ContrastiveAlignment`: the loss's fields, and

    Args:
        code_embeds: [B, D] the visits' code vectors in the shared space, unit length.
        text_embeds: [B, D] their note vectors in the shared space, unit length.
        logit_scale: scalar, the scale the similarities were multiplied by (1 / temperature).
    """

    code_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


def gathering_world_size() -> int:
    """The number of workers whose batches form the global batch (1 outside ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_with_gradients(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Every worker's ``tensor`` padded to ``rows`` rows, concatenated in rank order; gradients flow back to each
    worker's own rows (torch's autograd all-gather, whose backward sums every worker's gradient into the rows that
    worker contributed)."""
    from torch.distributed._functional_collectives import all_gather_single_autograd

    padded = F.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, rows - tensor.shape[0]))
    return all_gather_single_autograd(padded.contiguous(), gather_dim=0, group=dist.group.WORLD)


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every worker's ``tensor`` (same shape everywhere), without gradients, in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def symmetric_infonce(
    code_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    eligible: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: bool,
) -> InfoNCEOutput:
    """CLIP's symmetric InfoNCE between the code vectors and the note vectors of a batch's eligible visits.

    Each eligible visit's code vector is scored against every eligible note of the global batch (and each note against
    every code vector); its own note is the positive, the others the negatives. Ineligible visits (no note, or no code)
    are neither anchors nor negatives.

    With ``gather`` and several workers the global batch is every worker's batch (sizes may differ), gathered with
    gradients. Each worker returns ``workers / pairs x`` the sum of its own anchors' losses, so that the mean over the
    workers is the global loss; the gathering sends every worker's gradient of its loss back to the worker whose
    vectors it concerns, and data-parallel training averages the parameters' gradients over the workers: together, the
    gradient of the global batch's loss, as one process holding the whole batch would compute it.

    Args:
        code_embeds, text_embeds: [B, D] unit-length vectors of this worker's visits.
        eligible: [B] bool, the visits that take part.
        logit_scale: scalar multiplier of the cosine similarities.
        gather: take the candidates from every worker (when ``torch.distributed`` runs several).
    """
    workers = gathering_world_size() if gather else 1
    eligible = eligible.bool()
    local_size = code_embeds.shape[0]
    if workers > 1:
        sizes = _gather(torch.tensor([local_size], device=code_embeds.device))
        rows = int(max(size.item() for size in sizes))
        offset = dist.get_rank() * rows
        all_codes = _gather_with_gradients(code_embeds, rows)
        all_texts = _gather_with_gradients(text_embeds, rows)
        # As bytes: not every backend (gloo) gathers bool tensors.
        all_eligible = torch.cat(_gather(F.pad(eligible.to(torch.uint8), (0, rows - local_size)))).bool()
    else:
        offset = 0
        all_codes, all_texts, all_eligible = code_embeds, text_embeds, eligible
    anchors = eligible.nonzero().squeeze(1)
    targets = offset + anchors
    # Candidates that are padding or ineligible get the lowest finite logit: exp() of it is 0 next to any real
    # candidate, and the anchor's own candidate is always real.
    floor = torch.finfo(code_embeds.dtype).min
    candidates = ~all_eligible[None, :]
    code_to_text = (logit_scale * code_embeds[anchors] @ all_texts.T).masked_fill(candidates, floor)
    text_to_code = (logit_scale * text_embeds[anchors] @ all_codes.T).masked_fill(candidates, floor)
    code_losses = F.cross_entropy(code_to_text, targets, reduction="none")
    text_losses = F.cross_entropy(text_to_code, targets, reduction="none")
    losses = (code_losses + text_losses) / 2
    pairs = all_eligible.sum()
    # An empty sum when this worker has no eligible visit: zero, still attached to the parameters.
    loss = losses.sum() * workers / pairs.clamp(min=1)
    local_pairs = eligible.sum()
    with torch.no_grad():
        code_to_text_accuracy = (code_to_text.argmax(dim=1) == targets).sum() / local_pairs
        text_to_code_accuracy = (text_to_code.argmax(dim=1) == targets).sum() / local_pairs
    return InfoNCEOutput(
        loss=loss,
        pairs=pairs,
        local_pairs=local_pairs,
        code_to_text_accuracy=code_to_text_accuracy,
        text_to_code_accuracy=text_to_code_accuracy,
    )


class ContrastiveAlignment(nn.Module):
    """Projections of a visit's code vector and note vector into one space, a learned temperature, and the loss.

    Args:
        text_size: width of the text encoder's states (the note's window [CLS] states).
        code_size: width of the code vector (the diagnosis and medication [CLS] states, concatenated).
        projection_size: width of the shared space.
        window_pooling: how a note's windows make one vector (``mean`` or ``attention``, :class:`WindowPooling`).
        initial_temperature: the temperature the training starts from (CLIP: 0.07).
    """

    def __init__(
        self, text_size: int, code_size: int, projection_size: int, window_pooling: str, initial_temperature: float
    ) -> None:
        super().__init__()
        self.text_pooling = WindowPooling(text_size, window_pooling)
        self.text_projection = nn.Linear(text_size, projection_size, bias=False)
        self.code_projection = nn.Linear(code_size, projection_size, bias=False)
        self.initial_temperature = initial_temperature
        # Shape [1], not a scalar: DeepSpeed broadcasts parameters as byte views, which a 0-d tensor cannot give.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1.0 / initial_temperature)))

    def embed_codes(self, code_vectors: torch.Tensor) -> torch.Tensor:
        """[B, code_size] -> [B, D] unit-length code vectors in the shared space."""
        return F.normalize(self.code_projection(code_vectors), dim=-1)

    def embed_text(self, window_states: torch.Tensor, window_mask: torch.Tensor) -> torch.Tensor:
        """[B, K, text_size] window [CLS] states and [B, K] window mask -> [B, D] unit-length note vectors."""
        return F.normalize(self.text_projection(self.text_pooling(window_states, window_mask)), dim=-1)

    def forward(
        self,
        text_window_states: torch.Tensor,
        text_window_mask: torch.Tensor,
        code_vectors: torch.Tensor,
        eligible: torch.Tensor,
    ) -> AlignmentOutput:
        """The symmetric InfoNCE of a batch; candidates gathered from every worker in training mode.

        Args:
            text_window_states: [B, K, text_size]. text_window_mask: [B, K] the windows each note reaches.
            code_vectors: [B, code_size]. eligible: [B] visits with both a note and a code.
        """
        code_embeds = self.embed_codes(code_vectors)
        text_embeds = self.embed_text(text_window_states, text_window_mask)
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()[0]
        result = symmetric_infonce(code_embeds, text_embeds, eligible, scale, gather=self.training)
        return AlignmentOutput(
            **{name: getattr(result, name) for name in result.keys()},
            code_embeds=code_embeds,
            text_embeds=text_embeds,
            logit_scale=scale.detach(),
        )


def has_codes(diag_mask: torch.Tensor, med_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: the visit has a diagnosis or medication code (a position after [CLS])."""
    return diag_mask[:, 1:].bool().any(dim=1) | med_mask[:, 1:].bool().any(dim=1)


__all__ = [
    "MAX_LOGIT_SCALE",
    "AlignmentOutput",
    "ContrastiveAlignment",
    "InfoNCEOutput",
    "gathering_world_size",
    "has_codes",
    "symmetric_infonce",
]
