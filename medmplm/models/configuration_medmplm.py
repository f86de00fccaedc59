"""MedM-PLM configuration: a ``transformers`` ``PretrainedConfig`` with named presets.

The configuration is the whole description of a model: sizes, the text encoder's own ``transformers`` config, and the
code vocabularies and ontologies of the prepared data it was built for. A ``save_pretrained`` directory therefore
rebuilds the model from ``config.json`` and ``model.safetensors`` alone (plus the tokenizer files beside them).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from medmplm.data.features import LONG_NOTE_MODES

OBJECTIVES = ("t2c_diagnosis", "t2c_medication", "c2c_diagnosis", "c2c_medication")
# The code types MedM-PLM encodes, each with an ontology tree.
CODE_TYPES = ("diagnosis", "medication")
# How the windows of a long note make one vector.
WINDOW_POOLING = ("mean", "attention")
# The fields that say how a note is read, none of which shapes a weight.
NOTE_READING_FIELDS = (
    "text_long_note",
    "text_max_length",
    "text_window_stride",
    "text_max_windows",
    "text_window_pooling",
)
# Model types whose configuration is MedM-PLM's (the same fields) and whose weights hold MedM-PLM's text and code
# encoders under MedM-PLM's names (``medmplm.text_encoder.*``, ``medmplm.code_encoder.*``): an export of one loads as a
# MedM-PLM, its cross-modal module and masked-code heads freshly initialised.
ENCODER_EXPORT_TYPES = ("contrastive",)


class MedMPLMConfig(PretrainedConfig):
    """Hyper-parameters of MedM-PLM.

    Text encoder fields describe a fresh ``BertModel``; when a checkpoint is loaded instead they are overwritten with
    the checkpoint's values. ``text_config`` holds the ``transformers`` config of the text encoder actually built
    (filled in at build time).

    Args:
        text_hidden_size, text_num_layers, text_num_heads, text_intermediate_size, text_dropout: a fresh BERT's shape.
        text_vocab_size: WordPiece vocabulary size when a tokenizer is trained on the training notes.
        text_num_frozen_layers: the embeddings and the first k layers are frozen (paper: 10 of 12).
        text_max_length: tokens per window L, special tokens included (the whole note read under ``head``).
        text_long_note: how a note longer than L tokens is read: ``head`` (its first tokens), ``head_tail`` (its
            first and last tokens in one window) or ``windows`` (up to ``text_max_windows`` overlapping windows, each
            encoded on its own, all attended by the cross-modal module); see ``medmplm.data.features``.
        text_max_windows: K, the windows read per note under ``windows`` (1 otherwise).
        text_window_stride: note tokens between consecutive window starts; ``None``: three quarters of a window.
        text_window_pooling: how the windows' [CLS] states make the note's one vector: ``mean`` over the windows
            the note fills, or ``attention`` (a learned score per window, softmax over the filled windows).
        text_config: the text encoder's ``transformers`` config as a dict (``model_type`` included).
        text_pretrained: where the text encoder's weights came from (a checkpoint path), ``None`` when it started
            from random initialisation; recorded so that results can say what was pretrained how.
        code_hidden_size, code_num_layers, code_num_heads, code_intermediate_size, code_dropout: the code encoder.
        max_codes: codes per type per visit (the sequence adds [CLS]).
        code_min_count: codes seen fewer times in the training split encode as [UNK].
        ontology_head_size, ontology_num_heads, ontology_dropout: the graph attention (heads x size = code hidden).
        mask_prob, mask_token_prob, random_token_prob: code masking in pretraining.
        loss_weights: objective -> weight (objectives: ``OBJECTIVES``).
        contrastive_weight: weight of a symmetric InfoNCE between each visit's code vector (diagnosis and medication
            [CLS] states of the code encoder) and its note vector (the text encoder's window [CLS] states, pooled), both
            before the cross-modal module (ALBEF's "align before fuse"), added to the masked-code objectives; 0 (the
            default): no such loss and no parameters for it. See :mod:`medmplm.models.alignment`.
        contrastive_projection_size: width of the space the code and note vectors are projected to for that loss.
        contrastive_temperature: the loss's initial temperature (learned from there; CLIP's 0.07).
        initializer_range: standard deviation of fresh embeddings and linear weights (BERT's 0.02).
        vocabularies: code type -> the vocabulary's codes in id order (special tokens excluded).
        ontologies: code type -> code -> ancestors, root first.
    """

    model_type = "medmplm"

    def __init__(
        self,
        text_hidden_size: int = 768,
        text_num_layers: int = 12,
        text_num_heads: int = 12,
        text_intermediate_size: int = 3072,
        text_dropout: float = 0.1,
        text_vocab_size: int = 30522,
        text_num_frozen_layers: int = 10,
        text_max_length: int = 512,
        text_long_note: str = "head",
        text_max_windows: int = 1,
        text_window_stride: int | None = None,
        text_window_pooling: str = "mean",
        text_config: dict[str, Any] | None = None,
        text_pretrained: str | None = None,
        code_hidden_size: int = 300,
        code_num_layers: int = 2,
        code_num_heads: int = 2,
        code_intermediate_size: int = 300,
        code_dropout: float = 0.1,
        max_codes: int = 61,
        code_min_count: int = 1,
        ontology_head_size: int = 75,
        ontology_num_heads: int = 4,
        ontology_dropout: float = 0.0,
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        contrastive_weight: float = 0.0,
        contrastive_projection_size: int = 256,
        contrastive_temperature: float = 0.07,
        initializer_range: float = 0.02,
        vocabularies: dict[str, list[str]] | None = None,
        ontologies: dict[str, dict[str, list[str]]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.text_hidden_size = text_hidden_size
        self.text_num_layers = text_num_layers
        self.text_num_heads = text_num_heads
        self.text_intermediate_size = text_intermediate_size
        self.text_dropout = text_dropout
        self.text_vocab_size = text_vocab_size
        self.text_num_frozen_layers = text_num_frozen_layers
        self.text_max_length = text_max_length
        self.text_long_note = text_long_note
        self.text_max_windows = text_max_windows
        self.text_window_stride = text_window_stride
        self.text_window_pooling = text_window_pooling
        self.text_config = text_config
        self.text_pretrained = text_pretrained
        self.code_hidden_size = code_hidden_size
        self.code_num_layers = code_num_layers
        self.code_num_heads = code_num_heads
        self.code_intermediate_size = code_intermediate_size
        self.code_dropout = code_dropout
        self.max_codes = max_codes
        self.code_min_count = code_min_count
        self.ontology_head_size = ontology_head_size
        self.ontology_num_heads = ontology_num_heads
        self.ontology_dropout = ontology_dropout
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.loss_weights = {name: 1.0 for name in OBJECTIVES} if loss_weights is None else dict(loss_weights)
        self.contrastive_weight = contrastive_weight
        self.contrastive_projection_size = contrastive_projection_size
        self.contrastive_temperature = contrastive_temperature
        self.initializer_range = initializer_range
        self.vocabularies = {t: list(codes) for t, codes in (vocabularies or {}).items()}
        self.ontologies = {t: {c: list(a) for c, a in tree.items()} for t, tree in (ontologies or {}).items()}
        super().__init__(**kwargs)
        self.validate_sizes()

    def validate_sizes(self) -> None:
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
        if self.text_long_note not in LONG_NOTE_MODES:
            raise ValueError(f"text_long_note must be one of {list(LONG_NOTE_MODES)}, got {self.text_long_note!r}")
        if self.text_max_windows < 1 or (self.text_long_note != "windows" and self.text_max_windows != 1):
            raise ValueError(
                f"text_max_windows must be >= 1, and 1 unless text_long_note is 'windows'; got {self.text_max_windows}"
            )
        if self.text_window_stride is not None and not 1 <= self.text_window_stride <= self.text_max_length - 2:
            raise ValueError(
                f"text_window_stride must be in [1, text_max_length - 2 = {self.text_max_length - 2}], "
                f"got {self.text_window_stride}"
            )
        if self.text_window_pooling not in WINDOW_POOLING:
            raise ValueError(
                f"text_window_pooling must be one of {list(WINDOW_POOLING)}, got {self.text_window_pooling!r}"
            )
        unknown = set(self.loss_weights) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"loss_weights has unknown objective(s) {sorted(unknown)}; known: {list(OBJECTIVES)}")
        self.loss_weights = {name: float(self.loss_weights.get(name, 0.0)) for name in OBJECTIVES}
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if self.contrastive_projection_size < 1:
            raise ValueError(f"contrastive_projection_size must be >= 1, got {self.contrastive_projection_size}")
        if not 0 < self.contrastive_temperature <= 1:
            raise ValueError(f"contrastive_temperature must be in (0, 1], got {self.contrastive_temperature}")
        missing = [t for t in CODE_TYPES if self.vocabularies and t not in self.vocabularies]
        if missing:
            raise ValueError(f"vocabularies lacks code type(s) {missing}; MedM-PLM encodes {list(CODE_TYPES)}")

    def set_note_reading(self, **fields: Any) -> None:
        """Change how notes are read, on a built or loaded configuration: any of ``text_long_note``,
        ``text_max_length``, ``text_window_stride``, ``text_max_windows``, ``text_window_pooling``. None of them
        changes a weight's shape, so an export can be fine-tuned reading notes otherwise than it was pretrained.

        Raises:
            ValueError: naming a field that is not one of those, or a value out of range.
        """
        unknown = sorted(set(fields) - set(NOTE_READING_FIELDS))
        if unknown:
            raise ValueError(f"{unknown} are not note-reading fields; expected some of {list(NOTE_READING_FIELDS)}")
        for name, value in fields.items():
            setattr(self, name, value)
        self.validate_sizes()
        max_positions = (self.text_config or {}).get("max_position_embeddings")
        if max_positions is not None and self.text_max_length > max_positions:
            raise ValueError(f"text_max_length {self.text_max_length} exceeds the text encoder's {max_positions} positions")

    @classmethod
    def get_config_dict(
        cls, pretrained_model_name_or_path: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``transformers``' reading of ``config.json``; a MedM-PLM configuration reads the configuration of an
        ``ENCODER_EXPORT_TYPES`` export as its own (without a warning that the model types differ)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if cls is MedMPLMConfig and config_dict.get("model_type") in ENCODER_EXPORT_TYPES:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MedMPLMConfig:
        """A named preset (``paper`` or ``tiny``) with fields overridden by keyword.

        Raises:
            ValueError: naming an unknown preset or field.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        values = {**PRESETS[name], **overrides}
        known = set(cls.__init__.__code__.co_varnames[1 : cls.__init__.__code__.co_argcount])
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MedMPLMConfig field(s) {unknown}")
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    # Liu et al. 2022 (MedM-PLM): BERT-base text encoder training its last 2 layers, G-BERT code encoder. The paper
    # reads 512 tokens and names that truncation as a limitation; four windows read the first ~1,500 of a note.
    "paper": {"text_long_note": "windows", "text_max_windows": 4},
    # Small enough that forward + backward of a batch of 8 runs well under a second on a CPU.
    "tiny": {
        "text_hidden_size": 64,
        "text_num_layers": 2,
        "text_num_heads": 2,
        "text_intermediate_size": 128,
        "text_vocab_size": 2000,
        "text_num_frozen_layers": 1,
        "text_max_length": 128,
        "text_long_note": "windows",
        "text_max_windows": 4,
        "code_hidden_size": 32,
        "code_num_layers": 2,
        "code_num_heads": 2,
        "code_intermediate_size": 64,
        "max_codes": 32,
        "ontology_head_size": 8,
        "ontology_num_heads": 4,
        "contrastive_projection_size": 32,
    },
}
