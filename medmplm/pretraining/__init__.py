"""The one pretraining recipe's model families: ``model.family`` -> :class:`~medmplm.pretraining.family.PretrainingFamily`.

Families are imported by name on demand, so that ``--help`` and config errors answer without importing torch.
"""

from __future__ import annotations

import importlib

from medmplm.pretraining.family import BuiltModel, PretrainingFamily

# model.family -> module defining FAMILY.
FAMILY_MODULES = {
    "medmplm": "medmplm.pretraining.medmplm",
    "bert-mlm": "medmplm.pretraining.bert_mlm",
    "gbert": "medmplm.pretraining.gbert",
    "medbert": "medmplm.pretraining.medbert",
    "medfuse-lab": "medmplm.pretraining.medfuse_lab",
    "mbehrt": "medmplm.pretraining.mbehrt",
    "contrastive": "medmplm.pretraining.contrastive",
}

FAMILIES = tuple(FAMILY_MODULES)


def get_family(name: str) -> PretrainingFamily:
    """The family registered as ``name``.

    Raises:
        ValueError: naming the known families.
    """
    if name not in FAMILY_MODULES:
        raise ValueError(f"unknown model family {name!r}; known: {list(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY


__all__ = ["FAMILIES", "FAMILY_MODULES", "BuiltModel", "PretrainingFamily", "get_family"]
