"""M-BEHRT configuration: a multimodal BEHRT over a patient's whole history (time-stamped labs and codes, and notes).

M-BEHRT joins two BEHRT models over the same visits:

* tabular BEHRT: one token per code or lab event. Codes of every type share one token space, so that one embedding
  table and one prediction layer cover them all (a token's type is its id range, as in Med-BERT)::

      ids 0..3                      [PAD] [CLS] [MASK] [UNK]   (medmplm.data.vocab's special tokens, same ids)
      then, in TOKEN_TYPES order    the gender values, diagnoses, procedures, medications and lab items of
                                    ``vocabularies``, each type's codes in id order

  A lab event's numeric value is embedded beside its item (``lab_value_embedding``): its bin among the item's
  training-split quantiles (``binned``), or a learned projection of its standardised value (``projection``).
* text BEHRT: one token per visit with a note, the note's vector from a BERT text encoder.

Both take the same embeddings of where a token sits in the patient's history: age at admission, visit segment (A/B
alternating, as BEHRT), visit position and continuous time. ``fusion`` says how the two meet (``early``: one sequence;
``late``: two encoders, patient vectors concatenated; ``shared_attention``: two streams with cross-attention in every
layer); ``modalities`` may keep one of them alone.
"""

from __future__ import annotations

from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from medmplm.data.features import LONG_NOTE_MODES
from medmplm.data.vocab import NUM_SPECIAL_TOKENS, CodeVocab

# Token types of the tabular token space, in id order.
TOKEN_TYPES = ("gender", "diagnosis", "procedure", "medication", "lab")
# The gender column's values in MIMIC; any other value is [UNK].
GENDERS = ("F", "M")
MODALITIES = ("tabular", "text")
FUSIONS = ("early", "late", "shared_attention")
LAB_VALUE_EMBEDDINGS = ("binned", "projection")
WINDOW_POOLING = ("mean", "attention")
# Pretraining objectives: masked token modelling, masked lab-value prediction, visit alignment of the modalities.
OBJECTIVES = ("mtm", "mvp", "alignment")

# Lab value ids: no numeric value (codes, text-only lab results), a value hidden for masked value prediction, then a
# present value: its bin (bins from PRESENT_VALUE_ID on) or, under ``projection``, PRESENT_VALUE_ID itself.
NO_VALUE_ID = 0
MASKED_VALUE_ID = 1
PRESENT_VALUE_ID = 2


@strict
class MBehrtConfig(PretrainedConfig):
    r"""Configuration of :class:`~medmplm.models.mbehrt.MBehrtModel` and its pretraining model.

    The defaults are BEHRT-sized (Li et al. 2020: hidden size 288, 6 layers of 12 heads, intermediate size 512) with a
    BERT-base text encoder of which the first 10 layers are frozen, as MedM-PLM's paper preset; the ``tiny`` preset of
    ``medmplm.pretraining.mbehrt`` is a laptop-sized one.

    Args:
        vocabularies: token type (``TOKEN_TYPES``) -> its codes without special tokens, in id order; lab items are
            ITEMIDs as strings. Missing types are empty.
        modalities: ``tabular`` and/or ``text``.
        fusion: how the two modalities meet (ignored with one modality): ``early`` (one Transformer over the tabular
            tokens and the visits' note tokens), ``late`` (one Transformer each; patient vectors concatenated) or
            ``shared_attention`` (two streams; in every layer each attends to itself, then to the other).
        hidden_size, num_layers, num_heads, intermediate_size, dropout: the BEHRT Transformer(s), each stream alike.
        max_length: tabular tokens per patient, [CLS] and the gender token included (the oldest visits are dropped).
        max_visits: size of the visit-position embedding: visit id 0 is [CLS], gender and padding, the kept visits
            are 1, 2, ... oldest first, so at most ``max_visits - 1`` visits are kept (also the note slots).
        max_age: ages are embedded in whole years 0..``max_age`` (older ages share the last row); age id 0 is an
            unknown age.
        max_lab_events_per_visit: a visit's first lab events by time that become tokens (the rest are counted).
        lab_value_embedding: ``binned`` or ``projection`` (see the module docstring).
        lab_value_bins: quantile bins per lab item (``binned``).
        lab_value_edges: lab item -> its ``lab_value_bins - 1`` inner bin edges, training-split quantiles
            (``binned``); an item without numeric training values has none, and its values are not embedded.
        lab_value_means, lab_value_stds: lab item -> mean and standard deviation of its training values
            (``projection``).
        lab_value_clip: standardised values beyond +-this are clipped (``projection``).
        text_hidden_size, text_num_layers, text_num_heads, text_intermediate_size, text_dropout: a fresh BERT's shape
            (replaced by a checkpoint's when one is loaded).
        text_vocab_size: WordPiece vocabulary size when a tokenizer is trained on the training notes.
        text_num_frozen_layers: the text encoder's embeddings and first k layers are frozen.
        text_long_note, text_max_length, text_max_windows, text_window_stride, text_window_pooling: how each visit's
            note is read, as MedM-PLM's fields of the same names (``medmplm.data.features``).
        text_config: the text encoder's ``transformers`` config as a dict (filled in at build time).
        text_pretrained: where the text encoder's weights came from (a checkpoint path), ``None`` when random.
        code_min_count: codes seen fewer times in the training split are left out of the vocabularies ([UNK]).
        initializer_range, layer_norm_eps: as BERT's.
        mask_prob: probability that a token (code or lab item) is a masked-token target.
        mask_token_prob: of the targets, the share replaced by [MASK].
        random_token_prob: of the targets, the share replaced by a random token of the same type; the rest is kept.
        value_mask_prob: probability that a present lab value is hidden and predicted.
        alignment_temperature: temperature of the visit alignment's contrastive loss.
        loss_weights: objective (``mtm``, ``mvp``, ``alignment``) -> weight in the total loss (missing: 1.0 for
            ``mtm`` and ``mvp``; for ``alignment`` 0.1 with both modalities, else 0). Alignment needs both
            modalities; weight 0 turns it off.
    """

    model_type = "mbehrt"
    attribute_map = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}

    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    fusion: str = "shared_attention"
    hidden_size: int = 288
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 512
    dropout: float | int = 0.1
    max_length: int = 256
    max_visits: int = 64
    max_age: int = 120
    max_lab_events_per_visit: int = 32
    lab_value_embedding: str = "binned"
    lab_value_bins: int = 10
    lab_value_edges: dict[str, list[float | int]] = field(default_factory=dict)
    lab_value_means: dict[str, float | int] = field(default_factory=dict)
    lab_value_stds: dict[str, float | int] = field(default_factory=dict)
    lab_value_clip: float | int = 5.0
    text_hidden_size: int = 768
    text_num_layers: int = 12
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    text_dropout: float | int = 0.1
    text_vocab_size: int = 30522
    text_num_frozen_layers: int = 10
    text_max_length: int = 512
    text_long_note: str = "head"
    text_max_windows: int = 1
    text_window_stride: int | None = None
    text_window_pooling: str = "mean"
    text_config: dict | None = None
    text_pretrained: str | None = None
    code_min_count: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    mask_prob: float | int = 0.15
    mask_token_prob: float | int = 0.8
    random_token_prob: float | int = 0.1
    value_mask_prob: float | int = 0.15
    alignment_temperature: float | int = 0.1
    loss_weights: dict[str, float | int] = field(default_factory=dict)

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        # Every token type and objective present, so that a saved configuration states them all.
        self.vocabularies = {**{token_type: [] for token_type in TOKEN_TYPES}, **self.vocabularies}
        # Alignment is on by default where it can be: with both modalities.
        defaults = {"mtm": 1.0, "mvp": 1.0, "alignment": 0.1 if len(set(self.modalities)) == 2 else 0.0}
        self.loss_weights = {**defaults, **self.loss_weights}
        self.validate_fields()

    def validate_fields(self) -> None:
        """Raise a ValueError naming the field when the configuration is inconsistent (plain ValueErrors: strict's
        class validators would wrap them in another exception type). Builders call it again after filling in the
        fields that come from the data (vocabularies, lab value statistics, the text encoder's)."""
        unknown = sorted(set(self.vocabularies) - set(TOKEN_TYPES))
        if unknown:
            raise ValueError(f"vocabularies has unknown token type(s) {unknown}; known: {list(TOKEN_TYPES)}")
        for token_type, codes in self.vocabularies.items():
            try:
                # CodeVocab rejects empty, duplicate and special-token codes.
                CodeVocab(token_type, codes)
            except ValueError as error:
                raise ValueError(f"vocabularies[{token_type!r}]: {error}") from None
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct entries of {list(MODALITIES)}, got {self.modalities}")
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown:
            raise ValueError(f"modalities has unknown entries {unknown}; known: {list(MODALITIES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {list(FUSIONS)}, got {self.fusion!r}")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("num_layers", "intermediate_size", "max_age", "lab_value_bins", "code_min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 2 or self.max_visits < 2:
            raise ValueError(
                f"max_length and max_visits must be >= 2 (id 0 is [CLS]/padding), got {self.max_length}, "
                f"{self.max_visits}"
            )
        if self.max_lab_events_per_visit < 0:
            raise ValueError(f"max_lab_events_per_visit must be >= 0, got {self.max_lab_events_per_visit}")
        self._validate_lab_values()
        self._validate_objectives()
        if "text" in self.modalities:
            self._validate_text()

    def _validate_lab_values(self) -> None:
        if self.lab_value_embedding not in LAB_VALUE_EMBEDDINGS:
            raise ValueError(
                f"lab_value_embedding must be one of {list(LAB_VALUE_EMBEDDINGS)}, got {self.lab_value_embedding!r}"
            )
        if self.lab_value_bins < 2:
            raise ValueError(f"lab_value_bins must be >= 2, got {self.lab_value_bins}")
        labs = set(self.vocabularies["lab"])
        for name in ("lab_value_edges", "lab_value_means", "lab_value_stds"):
            unknown = sorted(set(getattr(self, name)) - labs)
            if unknown:
                raise ValueError(f"{name} has items {unknown[:5]} that are not in vocabularies['lab']")
        for item, edges in self.lab_value_edges.items():
            if len(edges) != self.lab_value_bins - 1 or any(b < a for a, b in zip(edges, edges[1:])):
                raise ValueError(
                    f"lab_value_edges[{item!r}]: expected {self.lab_value_bins - 1} non-decreasing edges, got {edges}"
                )
        if set(self.lab_value_means) != set(self.lab_value_stds):
            raise ValueError("lab_value_means and lab_value_stds must name the same lab items")
        negative = sorted(item for item, std in self.lab_value_stds.items() if std < 0)
        if negative:
            raise ValueError(f"lab_value_stds must be >= 0, not for {negative[:5]}")
        if self.lab_value_clip <= 0:
            raise ValueError(f"lab_value_clip must be > 0, got {self.lab_value_clip}")

    def _validate_objectives(self) -> None:
        unknown = sorted(set(self.loss_weights) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"loss_weights has unknown objective(s) {unknown}; known: {list(OBJECTIVES)}")
        negative = sorted(name for name, weight in self.loss_weights.items() if weight < 0)
        if negative:
            raise ValueError(f"loss_weights of {negative} must be >= 0")
        if self.loss_weights["alignment"] > 0 and len(self.modalities) < 2:
            raise ValueError(
                f"loss_weights['alignment'] is {self.loss_weights['alignment']}, but alignment needs both modalities "
                f"(modalities: {self.modalities}); set it to 0"
            )
        for name in ("mask_prob", "value_mask_prob"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.mask_token_prob < 0 or self.random_token_prob < 0 or self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError(
                "mask_token_prob and random_token_prob must be >= 0 and sum to <= 1, "
                f"got {self.mask_token_prob} and {self.random_token_prob}"
            )
        if self.alignment_temperature <= 0:
            raise ValueError(f"alignment_temperature must be > 0, got {self.alignment_temperature}")

    def _validate_text(self) -> None:
        if not 0 <= self.text_num_frozen_layers <= self.text_num_layers:
            raise ValueError(
                f"text_num_frozen_layers must be in [0, text_num_layers={self.text_num_layers}], "
                f"got {self.text_num_frozen_layers}"
            )
        if self.text_max_length < 2:
            raise ValueError(f"text_max_length must be >= 2, got {self.text_max_length}")
        if self.text_long_note not in LONG_NOTE_MODES:
            raise ValueError(f"text_long_note must be one of {list(LONG_NOTE_MODES)}, got {self.text_long_note!r}")
        if self.text_max_windows < 1 or (self.text_long_note != "windows" and self.text_max_windows != 1):
            raise ValueError(
                f"text_max_windows must be >= 1, and 1 unless text_long_note is 'windows'; got {self.text_max_windows}"
            )
        if self.text_window_pooling not in WINDOW_POOLING:
            raise ValueError(
                f"text_window_pooling must be one of {list(WINDOW_POOLING)}, got {self.text_window_pooling!r}"
            )

    @property
    def vocab_size(self) -> int:
        """Tokens of the tabular token space: the special tokens, then every token type's codes."""
        return NUM_SPECIAL_TOKENS + sum(len(self.vocabularies[token_type]) for token_type in TOKEN_TYPES)

    def token_range(self, token_type: str) -> tuple[int, int]:
        """``[start, end)`` of ``token_type``'s codes in the tabular token space."""
        start = NUM_SPECIAL_TOKENS
        for name in TOKEN_TYPES:
            end = start + len(self.vocabularies[name])
            if name == token_type:
                return start, end
            start = end
        raise ValueError(f"unknown token type {token_type!r}; known: {list(TOKEN_TYPES)}")

    @property
    def num_value_ids(self) -> int:
        """Rows of the lab-value embedding: no value, masked value, then one per bin (``binned``) or one for a
        present value (``projection``)."""
        return PRESENT_VALUE_ID + (self.lab_value_bins if self.lab_value_embedding == "binned" else 1)

    @property
    def fused(self) -> bool:
        """Both modalities, joined by ``fusion``."""
        return len(self.modalities) == 2


__all__ = [
    "FUSIONS",
    "GENDERS",
    "LAB_VALUE_EMBEDDINGS",
    "MASKED_VALUE_ID",
    "MODALITIES",
    "NO_VALUE_ID",
    "OBJECTIVES",
    "PRESENT_VALUE_ID",
    "TOKEN_TYPES",
    "MBehrtConfig",
]
