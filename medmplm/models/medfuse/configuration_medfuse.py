"""MEDFuse configuration (Phan et al. 2024, "MEDFuse: Multimodal EHR Data Fusion with Masked Lab-Test Modeling and
Large Language Models", arXiv 2407.12309).

Two configurations:

* :class:`MedFuseLabConfig` (``model_type="medfuse-lab"``): the masked tabular transformer over one admission's lab
  tokens. The lab items, the statistics aggregated per item and the training split's means and standard deviations
  live in the configuration, so a saved lab model featurises admissions exactly as it was trained
  (:class:`~medmplm.pretraining.medfuse_lab.LabFeaturizer` reads them from here).
* :class:`MedFuseConfig` (``model_type="medfuse"``): the multi-label classifier: the lab encoder (its configuration
  nested as a dict), the note side (precomputed note embeddings, or a language model inside the model when it is
  fine-tuned), and the disentangled fusion with its losses.

Token ``t`` of an admission is (item ``t // S``, statistic ``t % S``) with ``S = len(lab_statistics)``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

# Per-admission aggregates of an item's numeric values (``valuenum``), in token order within an item.
LAB_STATISTICS = ("last", "min", "max", "mean", "count")
# Modalities MEDFuse fuses; an ablation keeps one.
MODALITIES = ("labs", "notes")
FUSIONS = ("disentangled", "concat")
INDEPENDENCE_LOSSES = ("orthogonal", "club")
NOTE_POOLINGS = ("mean", "last")
NOTE_FINETUNING = ("frozen", "last_layers", "lora")
# Terms of the classifier's loss, each with a weight in ``loss_weights``.
OBJECTIVES = ("task", "infonce", "independence")


@strict
class MedFuseLabConfig(PretrainedConfig):
    r"""The masked lab-test model: a transformer over an admission's (item, statistic) value tokens.

    Args:
        lab_items: the lab ITEMIDs read, most frequent first (the ``num_lab_items`` items in the most training
            admissions, chosen when the model is built).
        lab_statistics: aggregates per item and admission, a subset of ``last``, ``min``, ``max``, ``mean``,
            ``count``, in token order.
        lab_mean, lab_std: per token (``len(lab_items) * len(lab_statistics)``), the mean and standard deviation of
            the aggregate over the training admissions where the item was measured (``count`` as ``log1p(count)``);
            values are standardised with them. A standard deviation of 0 is stored as 1.
        num_lab_items: how many items a fresh model reads (the top of the training split's frequency list).
        hidden_size, num_layers, num_heads, intermediate_size, dropout: the transformer (post-LayerNorm, GELU).
        initializer_range, layer_norm_eps: as BERT's.
        mask_prob: share of an admission's observed value tokens masked in pretraining (never a missing one).
    """

    model_type = "medfuse-lab"
    attribute_map = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}

    lab_items: list[str] = field(default_factory=list)
    lab_statistics: list[str] = field(default_factory=lambda: list(LAB_STATISTICS))
    lab_mean: list[float | int] = field(default_factory=list)
    lab_std: list[float | int] = field(default_factory=list)
    num_lab_items: int = 50
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    dropout: float | int = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    mask_prob: float | int = 0.15

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        unknown = [s for s in self.lab_statistics if s not in LAB_STATISTICS]
        if unknown or not self.lab_statistics or len(set(self.lab_statistics)) != len(self.lab_statistics):
            raise ValueError(
                f"lab_statistics must be distinct names among {list(LAB_STATISTICS)}, got {self.lab_statistics}"
            )
        if len(set(self.lab_items)) != len(self.lab_items):
            raise ValueError("lab_items has repeated items")
        for name in ("lab_mean", "lab_std"):
            if getattr(self, name) and len(getattr(self, name)) != self.num_tokens:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values, expected one per token "
                    f"({len(self.lab_items)} items x {len(self.lab_statistics)} statistics = {self.num_tokens})"
                )
        if any(std <= 0 for std in self.lab_std):
            raise ValueError("lab_std must be positive")
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for name in ("num_lab_items", "num_layers", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")

    @property
    def num_tokens(self) -> int:
        """Value tokens per admission: items x statistics (the encoder adds a [CLS] token)."""
        return len(self.lab_items) * len(self.lab_statistics)


@strict
class MedFuseConfig(PretrainedConfig):
    r"""MEDFuse's classifier: lab encoder, note side, disentangled fusion, losses.

    Args:
        lab_encoder: the :class:`MedFuseLabConfig` of the lab encoder, as a dict (``to_dict()``).
        note_embedding_size: width of a note vector (the language model's hidden size).
        note_encoder: the language model's own configuration (``to_dict()`` of its ``AutoConfig``) when the model
            holds it to fine-tune it; ``None``: note vectors arrive precomputed (``note_embedding``).
        note_pooling: ``mean`` (over the note's tokens) or ``last`` (the last token's state, for decoders).
        note_max_length: tokens of a note the language model reads (the head of the note).
        note_finetuning: ``frozen`` (precomputed vectors), ``last_layers`` (the last ``note_trainable_layers`` layers
            and the final norm train) or ``lora`` (LoRA adapters through ``peft``; ``lora_*`` fields).
        note_trainable_layers: layers trained under ``last_layers``.
        lora_rank, lora_alpha, lora_dropout: LoRA's rank, scaling numerator and dropout.
        lora_target_modules: module names LoRA adapts (``None``: peft's default for the model type).
        modalities: ``labs`` and/or ``notes`` (an ablation reads one).
        fusion: ``disentangled`` (shared and specific projections per modality, a transformer over them, the
            mutual-information losses) or ``concat`` (the two modality vectors concatenated into the classifier).
        fusion_size, fusion_layers, fusion_heads, fusion_intermediate_size: the projections' width and the fusion
            transformer.
        classifier_hidden_size: the hidden layer of the classification MLP.
        dropout: dropout of the fusion transformer and the classifier.
        independence: ``orthogonal`` (cross-correlation penalty) or ``club`` (CLUB's variational upper bound on the
            mutual information), between each modality's shared and specific parts.
        club_hidden_size: hidden width of CLUB's variational network q(specific | shared).
        infonce_temperature: temperature of the InfoNCE loss between the modalities' shared parts.
        loss_weights: ``task``, ``infonce``, ``independence`` -> weight (missing: task 1.0, the others 0.1).
        num_labels: outputs (label groups).
        label_names: the label groups, in output order.
        initializer_range: standard deviation of the initial linear weights.
    """

    model_type = "medfuse"

    lab_encoder: dict[str, Any] = field(default_factory=dict)
    note_embedding_size: int = 768
    note_encoder: dict[str, Any] | None = None
    note_pooling: str = "mean"
    note_max_length: int = 512
    note_finetuning: str = "frozen"
    note_trainable_layers: int = 1
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float | int = 0.05
    lora_target_modules: list[str] | None = None
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    fusion: str = "disentangled"
    fusion_size: int = 128
    fusion_layers: int = 2
    fusion_heads: int = 4
    fusion_intermediate_size: int = 256
    classifier_hidden_size: int = 128
    dropout: float | int = 0.1
    independence: str = "orthogonal"
    club_hidden_size: int = 64
    infonce_temperature: float | int = 0.1
    loss_weights: dict[str, float | int] = field(default_factory=dict)
    num_labels: int = 10
    label_names: list[str] = field(default_factory=list)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs) -> None:
        self.loss_weights = {"task": 1.0, "infonce": 0.1, "independence": 0.1, **self.loss_weights}
        super().__post_init__(**kwargs)
        choices = {
            "note_pooling": NOTE_POOLINGS,
            "note_finetuning": NOTE_FINETUNING,
            "fusion": FUSIONS,
            "independence": INDEPENDENCE_LOSSES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not self.modalities or any(m not in MODALITIES for m in self.modalities):
            raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {self.modalities}")
        if self.fusion == "concat" and len(self.modalities) != 2:
            raise ValueError("fusion 'concat' joins both modalities; a one-modality model uses 'disentangled'")
        if (self.note_finetuning == "frozen") != (self.note_encoder is None):
            raise ValueError(
                "note_encoder holds the language model exactly when it is fine-tuned (note_finetuning "
                f"'last_layers' or 'lora'), got note_finetuning {self.note_finetuning!r} with "
                f"{'a' if self.note_encoder else 'no'} note_encoder"
            )
        unknown = sorted(set(self.loss_weights) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"loss_weights has unknown term(s) {unknown}; known: {list(OBJECTIVES)}")
        if any(weight < 0 for weight in self.loss_weights.values()):
            raise ValueError(f"loss_weights must be >= 0, got {self.loss_weights}")
        if self.fusion_heads < 1 or self.fusion_size % self.fusion_heads:
            raise ValueError(f"fusion_size {self.fusion_size} is not divisible by fusion_heads {self.fusion_heads}")
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ValueError(f"label_names has {len(self.label_names)} names for num_labels {self.num_labels}")
        for name in ("note_embedding_size", "note_max_length", "note_trainable_layers", "num_labels", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.infonce_temperature <= 0:
            raise ValueError(f"infonce_temperature must be > 0, got {self.infonce_temperature}")
        MedFuseLabConfig.from_dict(self.lab_encoder)

    @property
    def lab_config(self) -> MedFuseLabConfig:
        """The lab encoder's configuration."""
        return MedFuseLabConfig.from_dict(self.lab_encoder)


__all__ = [
    "FUSIONS",
    "INDEPENDENCE_LOSSES",
    "LAB_STATISTICS",
    "MODALITIES",
    "NOTE_FINETUNING",
    "NOTE_POOLINGS",
    "OBJECTIVES",
    "MedFuseConfig",
    "MedFuseLabConfig",
]
