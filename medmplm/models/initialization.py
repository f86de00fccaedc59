"""BERT's weight initialisation of the torch modules the model families build on, shared by their ``_init_weights``.

transformers' own ``_init_weights`` does not know ``nn.MultiheadAttention`` (inside ``nn.TransformerEncoderLayer``),
whose query/key/value projections are one parameter rather than ``Linear`` modules; and its init functions
(``transformers.initialization``) skip weights loaded from a checkpoint, which a plain ``torch.nn.init`` would
overwrite when a family is built around an already loaded text backbone.
"""

from __future__ import annotations

from torch import nn
from transformers import initialization as init


def init_standard_module(module: nn.Module, std: float) -> bool:
    """Initialise ``module`` as BERT does when it is a ``Linear``, ``MultiheadAttention``, ``Embedding`` or
    ``LayerNorm`` (normal(0, ``std``) weights, zero biases, zero padding row, unit LayerNorm scale); returns whether it
    was one of them, so that a family's ``_init_weights`` goes on to its own modules otherwise."""
    if isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        init.normal_(module.in_proj_weight, mean=0.0, std=std)
        init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, mean=0.0, std=std)
        # Checked here: the zeros_ call below slices the weight, and a slice loses the loaded-weight flag.
        if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
            init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    else:
        return False
    return True
