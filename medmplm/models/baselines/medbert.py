"""Code-only baseline in the style of Med-BERT (Rasmy et al. 2021): a Transformer over a visit's codes with
serialization (order) and type embeddings, and no ontology.

Med-BERT serialises a whole patient history; here, as for every encoder in the fine-tuning grid, one visit is encoded
at a time (its diagnoses, then its medications) and the task head pools visits, so the comparison with G-BERT isolates
the ontology embedding rather than the history handling.
"""

from __future__ import annotations

import torch
from torch import nn

from medmplm.tasks.encoding import VisitEncoding


class MedBertEncoder(nn.Module):
    """``[CLS] diagnoses... [CLS] medications...`` -> Transformer; the visit vector joins the two [CLS] outputs.

    Args:
        num_diagnosis_tokens: size of the diagnosis vocabulary, special tokens included.
        num_medication_tokens: size of the medication vocabulary, special tokens included.
        max_positions: longest code sequence of one type, [CLS] included.
        hidden_size, num_layers, num_heads, intermediate_size, dropout: Transformer shape.
        pad_token_id: id of [PAD] in both vocabularies.
    """

    modalities = frozenset({"codes"})
    text_size = 0

    def __init__(
        self,
        num_diagnosis_tokens: int,
        num_medication_tokens: int,
        max_positions: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 128,
        dropout: float = 0.1,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.diagnosis_embedding = nn.Embedding(num_diagnosis_tokens, hidden_size, padding_idx=pad_token_id)
        self.medication_embedding = nn.Embedding(num_medication_tokens, hidden_size, padding_idx=pad_token_id)
        self.type_embedding = nn.Embedding(2, hidden_size)
        self.serialization_embedding = nn.Embedding(max_positions, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, intermediate_size, dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.code_size = 2 * hidden_size

    def _embed(self, ids: torch.Tensor, table: nn.Embedding, code_type: int) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return table(ids) + self.serialization_embedding(positions) + self.type_embedding.weight[code_type]

    def forward(
        self,
        diag_ids: torch.Tensor,
        diag_mask: torch.Tensor,
        med_ids: torch.Tensor,
        med_mask: torch.Tensor,
        **text_inputs: torch.Tensor,
    ) -> VisitEncoding:
        """Encode code sequences ``[N, 1 + C]``; text inputs are accepted and not read. Returns ``codes [N, 2H]``."""
        x = torch.cat(
            [self._embed(diag_ids, self.diagnosis_embedding, 0), self._embed(med_ids, self.medication_embedding, 1)],
            dim=1,
        )
        padding = ~torch.cat([diag_mask, med_mask], dim=1).bool()
        hidden = self.encoder(self.dropout(self.norm(x)), src_key_padding_mask=padding)
        return VisitEncoding(codes=torch.cat([hidden[:, 0], hidden[:, diag_ids.shape[1]]], dim=1))
