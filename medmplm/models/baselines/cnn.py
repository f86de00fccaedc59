"""Text-only baseline: a 1-D CNN over note tokens (Kim 2014), as used for clinical notes by CAML-era work."""

from __future__ import annotations

import torch
from torch import nn

from medmplm.tasks.encoding import VisitEncoding


class TextCNNEncoder(nn.Module):
    """Token embeddings, parallel 1-D convolutions, max-pooling over time.

    Args:
        vocab_size: size of the text tokenizer's vocabulary.
        pad_token_id: the tokenizer's padding id (its embedding stays zero).
        embedding_size: token embedding width.
        num_filters: output channels per kernel size.
        kernel_sizes: convolution widths in tokens.
        dropout: dropout on the embeddings.
    """

    modalities = frozenset({"text"})
    code_size = 0

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int,
        embedding_size: int = 128,
        num_filters: int = 64,
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_token_id)
        self.dropout = nn.Dropout(dropout)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_size, num_filters, k) for k in kernel_sizes)
        self.max_kernel = max(kernel_sizes)
        self.text_size = num_filters * len(kernel_sizes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **code_inputs: torch.Tensor
    ) -> VisitEncoding:
        """Encode notes ``input_ids [N, L]``; code inputs are accepted and not read. Returns ``text [N, text_size]``."""
        # Cut the batch's common padding (notes are padded to the maximum length); keep room for the widest kernel.
        length = max(int(attention_mask.sum(dim=1).max()), self.max_kernel)
        ids = input_ids[:, :length]
        mask = attention_mask[:, :length].unsqueeze(1).to(torch.float32)
        if ids.shape[1] < self.max_kernel:
            ids = nn.functional.pad(ids, (0, self.max_kernel - ids.shape[1]), value=self.embedding.padding_idx)
            mask = nn.functional.pad(mask, (0, self.max_kernel - mask.shape[2]))
        x = self.dropout(self.embedding(ids)).transpose(1, 2) * mask
        pooled = [torch.relu(conv(x)).max(dim=2).values for conv in self.convs]
        return VisitEncoding(text=torch.cat(pooled, dim=1))
