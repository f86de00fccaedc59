"""MedM-PLM configuration: one flat, JSON-serialisable dataclass with named presets."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OBJECTIVES = ("t2c_diagnosis", "t2c_medication", "c2c_diagnosis", "c2c_medication")


def _default_loss_weights() -> dict[str, float]:
    return {name: 1.0 for name in OBJECTIVES}


@dataclass
class MedMPLMConfig:
    """Hyper-parameters of MedM-PLM.

    Text encoder fields describe a fresh ``BertModel``; when a checkpoint is loaded instead they
    are overwritten with the checkpoint's values. ``text_config`` holds the transformers config
    of the text encoder actually built (filled in at build time, saved with the model).
    """

    # Text encoder (BERT family).
    text_hidden_size: int = 768
    text_num_layers: int = 12
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    text_dropout: float = 0.1
    # WordPiece vocabulary size when a tokenizer is trained on the training notes.
    text_vocab_size: int = 30522
    # Embeddings and the first k layers are frozen (paper: 10 of 12, only the last 2 train).
    text_num_frozen_layers: int = 10
    text_max_length: int = 512
    text_config: dict[str, Any] | None = None

    # Code encoder.
    code_hidden_size: int = 300
    code_num_layers: int = 2
    code_num_heads: int = 2
    code_intermediate_size: int = 300
    code_dropout: float = 0.1
    # Codes per type per visit (the sequence adds [CLS]).
    max_codes: int = 61
    # Codes seen fewer times in the training split encode as [UNK].
    code_min_count: int = 1

    # Ontology embedding: heads x per-head size must equal code_hidden_size.
    ontology_head_size: int = 75
    ontology_num_heads: int = 4
    ontology_dropout: float = 0.0

    # Pretraining.
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    loss_weights: dict[str, float] = field(default_factory=_default_loss_weights)

    # Standard deviation of the initial embedding vectors (text and code side), as BERT's.
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when the configuration is inconsistent."""
        if self.ontology_head_size * self.ontology_num_heads != self.code_hidden_size:
            raise ValueError(
                f"ontology_head_size x ontology_num_heads ({self.ontology_head_size} x {self.ontology_num_heads}) "
                f"must equal code_hidden_size ({self.code_hidden_size})"
            )
        if self.code_hidden_size % self.code_num_heads:
            raise ValueError(
                f"code_hidden_size {self.code_hidden_size} is not divisible by code_num_heads {self.code_num_heads}"
            )
        if not 0 <= self.text_num_frozen_layers <= self.text_num_layers:
            raise ValueError(
                f"text_num_frozen_layers must be in [0, text_num_layers={self.text_num_layers}], "
                f"got {self.text_num_frozen_layers}"
            )
        if self.text_max_length < 2 or self.max_codes < 1:
            raise ValueError(
                f"text_max_length must be >= 2 and max_codes >= 1, got {self.text_max_length}, {self.max_codes}"
            )
        unknown = set(self.loss_weights) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"loss_weights has unknown objective(s) {sorted(unknown)}; known: {list(OBJECTIVES)}")
        self.loss_weights = {name: float(self.loss_weights.get(name, 0.0)) for name in OBJECTIVES}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MedMPLMConfig:
        """A named preset (``paper`` or ``tiny``) with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MedMPLMConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MedMPLMConfig field(s) {unknown}")
        return cls(**values)

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write as JSON (via a temporary file and a rename)."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> MedMPLMConfig:
        """Read a file written by :meth:`to_json_file`."""
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


PRESETS: dict[str, dict[str, Any]] = {
    # Liu et al. 2022 (MedM-PLM): BERT-base text encoder training its last 2 layers, G-BERT code encoder.
    "paper": {},
    # Small enough that forward + backward of a batch of 8 runs well under a second on a CPU.
    "tiny": {
        "text_hidden_size": 64,
        "text_num_layers": 2,
        "text_num_heads": 2,
        "text_intermediate_size": 128,
        "text_vocab_size": 2000,
        "text_num_frozen_layers": 1,
        "text_max_length": 128,
        "code_hidden_size": 32,
        "code_num_layers": 2,
        "code_num_heads": 2,
        "code_intermediate_size": 64,
        "max_codes": 32,
        "ontology_head_size": 8,
        "ontology_num_heads": 4,
    },
}
