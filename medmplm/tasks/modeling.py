"""Fine-tuning heads: any visit encoder + pooling over visits + an MLP, returning a typed output with ``.loss``.

A *visit encoder* (MedM-PLM, its unimodal parts, or a baseline) maps a batch of single visits to a text vector and/or
a code vector and declares which modalities it reads (``modalities``). :class:`FineTuningModel` does the rest the same
way for every encoder:

1. encode the real visits of each example (padding slots are never encoded);
2. zero a modality's vector on visits that do not show it (no note; no code), so a missing modality is exactly 0;
3. pool: the mean over the earlier visits of each vector (MedM-PLM eq. 11; an encoder may replace this with its own
   ``summarize_history``, e.g. the GRU baseline), concatenated with the target visit's vectors of the modalities the
   task shows for it;
4. an MLP gives one logit per label; the loss is binary cross-entropy on the sigmoid (eqs. 12-16).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
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


@dataclass
class FineTuningOutput(ModelOutput):
    """Output of :class:`FineTuningModel`.

    Attributes:
        loss: scalar binary cross-entropy, when labels are given.
        logits: ``[B, K]`` for a multi-label task, ``[B]`` for a binary one.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class HeadConfig:
    """Shape of the task head.

    Attributes:
        num_labels: K outputs (1 for a binary task, whose logits are then ``[B]``).
        has_history: the examples carry earlier visits before the target (medication recommendation).
        target_modalities: modalities the task shows for the target visit (medrec: codes only).
        hidden_size: width of the MLP's hidden layer.
        dropout: dropout before each MLP layer.
    """

    num_labels: int
    has_history: bool
    target_modalities: frozenset[str]
    hidden_size: int = 128
    dropout: float = 0.1


class FineTuningModel(nn.Module):
    """A visit encoder with a task head (see the module docstring).

    Args:
        encoder: the visit encoder (an ``nn.Module`` following :class:`VisitEncoder`).
        head: the task head's shape.
    """

    def __init__(self, encoder: nn.Module, head: HeadConfig) -> None:
        super().__init__()
        unknown = set(encoder.modalities) - set(MODALITIES)
        if not encoder.modalities or unknown:
            raise ValueError(f"encoder modalities must be a non-empty subset of {MODALITIES}, got {encoder.modalities}")
        self.encoder = encoder
        self.head_config = head
        self._summarize: Callable | None = getattr(encoder, "summarize_history", None)
        self._target_modalities = [m for m in MODALITIES if m in encoder.modalities and m in head.target_modalities]
        width = sum(self._size(m) for m in self._target_modalities)
        if head.has_history:
            if self._summarize is not None:
                width += int(encoder.history_size)
            else:
                width += sum(self._size(m) for m in MODALITIES if m in encoder.modalities)
        if width == 0:
            raise ValueError(
                f"the encoder reads {sorted(encoder.modalities)} but the task shows none of them: nothing to predict from"
            )
        self.classifier = nn.Sequential(
            nn.Dropout(head.dropout),
            nn.Linear(width, head.hidden_size),
            nn.ReLU(),
            nn.Dropout(head.dropout),
            nn.Linear(head.hidden_size, head.num_labels),
        )

    def _size(self, modality: str) -> int:
        return int(self.encoder.text_size if modality == "text" else self.encoder.code_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        has_note: torch.Tensor,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        visit_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> FineTuningOutput:
        """Logits (and the loss, given labels) for a batch of examples; shapes as ``ExampleFeaturizer`` gives them."""
        batch_size, num_visits = visit_mask.shape
        real = visit_mask.reshape(-1).bool()

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch_size * num_visits, *x.shape[2:])[real]

        encoding = self.encoder(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            has_note=flat(has_note),
            diag_ids=flat(diag_ids),
            diag_mask=flat(diag_mask),
            med_ids=flat(med_ids),
            med_mask=flat(med_mask),
        )
        # [CLS] is position 0 of each code sequence; a visit shows codes when any position after it is set.
        shows = {
            "text": flat(has_note).bool(),
            "codes": flat(diag_mask)[:, 1:].any(dim=1) | flat(med_mask)[:, 1:].any(dim=1),
        }
        per_visit: dict[str, torch.Tensor] = {}
        for modality in MODALITIES:
            vectors = encoding.text if modality == "text" else encoding.codes
            if modality not in self.encoder.modalities:
                continue
            if vectors is None:
                raise ValueError(f"{type(self.encoder).__name__} declares modality {modality!r} but returned no vector")
            vectors = vectors * shows[modality].unsqueeze(-1).to(vectors.dtype)
            grid = vectors.new_zeros(batch_size * num_visits, vectors.shape[-1])
            grid[real] = vectors
            per_visit[modality] = grid.reshape(batch_size, num_visits, -1)

        features = []
        if self.head_config.has_history:
            history_mask = visit_mask[:, :-1].to(next(iter(per_visit.values())).dtype)
            if self._summarize is not None:
                features.append(
                    self._summarize(
                        per_visit["codes"][:, :-1] if "codes" in per_visit else None,
                        per_visit["text"][:, :-1] if "text" in per_visit else None,
                        history_mask,
                    )
                )
            else:
                count = history_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
                for modality in MODALITIES:
                    if modality in per_visit:
                        history = per_visit[modality][:, :-1] * history_mask.unsqueeze(-1)
                        features.append(history.sum(dim=1) / count)
        features.extend(per_visit[m][:, -1] for m in self._target_modalities)
        logits = self.classifier(torch.cat(features, dim=-1))
        if self.head_config.num_labels == 1:
            logits = logits.squeeze(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return FineTuningOutput(loss=loss, logits=logits)


def head_config_for(task, num_labels: int, hidden_size: int = 128, dropout: float = 0.1) -> HeadConfig:
    """The head shape a task needs: history pooling when its examples have more than one visit slot."""
    return HeadConfig(
        num_labels=num_labels,
        has_history=task.max_visits > 1,
        target_modalities=frozenset(task.target_modalities),
        hidden_size=hidden_size,
        dropout=dropout,
    )


def check_modalities(modalities: Collection[str]) -> frozenset[str]:
    """Validate a modality set (used by encoders' class attributes)."""
    modalities = frozenset(modalities)
    if not modalities or not modalities <= set(MODALITIES):
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {sorted(modalities)}")
    return modalities
