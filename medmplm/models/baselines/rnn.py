"""Code-only baseline: a GRU over visits (the RNN baseline of G-BERT / GAMENet).

Each visit is the sum of its diagnosis and medication code embeddings (a linear map of its multi-hot vector); a GRU
reads the earlier visits in time order and its last state summarises the history. For single-visit tasks there is no
history, and the model reduces to the visit's multi-hot embedding and the MLP head.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from medmplm.tasks.encoding import VisitEncoding


class VisitGRUEncoder(nn.Module):
    """Multi-hot visit embeddings (``nn.EmbeddingBag``) and a GRU ``summarize_history``.

    Args:
        num_diagnosis_tokens: size of the diagnosis vocabulary, special tokens included.
        num_medication_tokens: size of the medication vocabulary, special tokens included.
        hidden_size: embedding width per code type and GRU state size.
        pad_token_id: id of [PAD] in both vocabularies (ignored by the bags).
    """

    modalities = frozenset({"codes"})
    text_size = 0

    def __init__(
        self, num_diagnosis_tokens: int, num_medication_tokens: int, hidden_size: int = 64, pad_token_id: int = 0
    ) -> None:
        super().__init__()
        self.diagnosis_bag = nn.EmbeddingBag(num_diagnosis_tokens, hidden_size, mode="sum", padding_idx=pad_token_id)
        self.medication_bag = nn.EmbeddingBag(num_medication_tokens, hidden_size, mode="sum", padding_idx=pad_token_id)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.code_size = 2 * hidden_size
        self.history_size = hidden_size

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        **text_inputs: torch.Tensor,
    ) -> VisitEncoding:
        """Encode visits' codes ``[N, 1 + C]`` (position 0, [CLS], is skipped); returns ``codes [N, 2H]``."""
        # Masked-out positions are [PAD] already; multiplying keeps the bags right even if a caller pads otherwise.
        diagnoses = (diag_ids * diag_mask)[:, 1:]
        medications = (med_ids * med_mask)[:, 1:]
        return VisitEncoding(codes=torch.cat([self.diagnosis_bag(diagnoses), self.medication_bag(medications)], dim=1))

    def summarize_history(self, codes: torch.Tensor, text: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """Last GRU state over the real visits of ``codes [B, H, 2H']`` (right-aligned, ``mask [B, H]``)."""
        lengths = mask.sum(dim=1).long()
        num_slots = codes.shape[1]
        # Visits are right-aligned (the target visit follows them); shift each row left so the GRU reads from slot 0.
        index = (torch.arange(num_slots, device=codes.device) + (num_slots - lengths).unsqueeze(1)) % num_slots
        shifted = codes.gather(1, index.unsqueeze(-1).expand_as(codes))
        packed = pack_padded_sequence(shifted, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed)
        return last[0] * (lengths > 0).unsqueeze(1).to(last.dtype)
