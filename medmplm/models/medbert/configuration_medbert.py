"""Med-BERT configuration (Rasmy et al. 2021, "Med-BERT: pretrained contextualized embeddings on large-scale structured
electronic health records for disease prediction").

Med-BERT reads a patient's whole history as one sequence of codes. The codes of every code type share one token
space, so that one embedding table and one prediction layer cover them all::

    ids 0..3                      [PAD] [CLS] [MASK] [UNK]   (medmplm.data.vocab's special tokens, same ids)
    ids 4 .. 4+D-1                the D diagnosis codes of ``vocabularies["diagnosis"]``, in order
    ids 4+D .. 4+D+M-1            the M medication codes of ``vocabularies["medication"]``, in order

A code's type is its id range, so no code-type embedding is needed, and masked-code replacements can still be drawn
from the masked code's own type.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from medmplm.data.vocab import NUM_SPECIAL_TOKENS, CodeVocab

# Code types of the token space, in id order.
CODE_TYPES = ("diagnosis", "medication")

# Pretraining objectives: masked code modelling per position, prolonged length of stay from [CLS].
OBJECTIVES = ("mlm", "prolonged_los")


@strict
class MedBertConfig(PreTrainedConfig):
    r"""Configuration of :class:`~medmplm.models.medbert.MedBertModel` and its pretraining model.

    The defaults are Med-BERT's published model (its released ``config.json``: hidden size 192, 6 layers of 6 heads,
    intermediate size 64, 512 positions, 1000 segment (visit) embeddings); the ``tiny`` preset of
    ``medmplm.pretraining.medbert`` is a laptop-sized one.

    Args:
        vocabularies: code type (``diagnosis``, ``medication``) -> its codes without special tokens, in id order.
        hidden_size: width of the embeddings and of the Transformer.
        num_layers: Transformer encoder layers.
        num_heads: attention heads per layer.
        intermediate_size: width of the feed-forward layer.
        dropout: dropout of the embeddings, attention and feed-forward layers.
        max_length: tokens per patient sequence, [CLS] included (the featuriser keeps the most recent visits).
        max_visits: size of the visit (segment) embedding. Visit id 0 is [CLS] and padding; a patient's kept visits
            are 1, 2, ... from the oldest kept one, so at most ``max_visits - 1`` visits are kept.
        max_codes_per_visit: size of the serialization embedding (a code's order within its visit). Serialization
            id 0 is [CLS] and padding; a visit's codes are 1, 2, ...; codes beyond ``max_codes_per_visit - 1`` share
            the last id (they are kept, not dropped).
        initializer_range: standard deviation of the initial weights, as BERT's.
        layer_norm_eps: epsilon of the layer norms, as BERT's.
        mask_prob: probability that a code is a masked-code target.
        mask_token_prob: of the targets, the share replaced by [MASK].
        random_token_prob: of the targets, the share replaced by a random code of the same type; the rest is kept.
        los_days: a stay is prolonged when ``dischtime - admittime`` exceeds this many days.
        loss_weights: objective (``mlm``, ``prolonged_los``) -> weight in the total loss (missing: 1.0).
    """

    model_type = "medbert"
    attribute_map = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}

    vocabularies: dict[str, list[str]] | None = None
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 64
    dropout: float | int = 0.1
    max_length: int = 512
    max_visits: int = 1000
    max_codes_per_visit: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    los_days: float | int = 7.0
    loss_weights: dict[str, float | int] | None = None

    def __post_init__(self, **kwargs):
        # Every code type and objective present, so that a saved configuration states them all.
        self.vocabularies = {**{code_type: [] for code_type in CODE_TYPES}, **(self.vocabularies or {})}
        self.loss_weights = {**{name: 1.0 for name in OBJECTIVES}, **(self.loss_weights or {})}
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of ``@strict`` validation: raise ValueError naming the field when the configuration is inconsistent."""
        unknown_types = sorted(set(self.vocabularies) - set(CODE_TYPES))
        if unknown_types:
            raise ValueError(f"vocabularies has unknown code type(s) {unknown_types}; known: {list(CODE_TYPES)}")
        unknown_objectives = sorted(set(self.loss_weights) - set(OBJECTIVES))
        if unknown_objectives:
            raise ValueError(f"loss_weights has unknown objective(s) {unknown_objectives}; known: {list(OBJECTIVES)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.max_length < 2 or self.max_visits < 2 or self.max_codes_per_visit < 2:
            raise ValueError(
                "max_length, max_visits and max_codes_per_visit must be >= 2 (id 0 is [CLS]/padding), got "
                f"{self.max_length}, {self.max_visits}, {self.max_codes_per_visit}"
            )
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.mask_token_prob < 0 or self.random_token_prob < 0 or self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError(
                "mask_token_prob and random_token_prob must be >= 0 and sum to <= 1, "
                f"got {self.mask_token_prob} and {self.random_token_prob}"
            )

    @property
    def vocab_size(self) -> int:
        """Tokens of the shared token space: the special tokens, then every code type's codes."""
        return NUM_SPECIAL_TOKENS + sum(len(self.vocabularies[code_type]) for code_type in CODE_TYPES)

    def token_range(self, code_type: str) -> tuple[int, int]:
        """``[start, end)`` of ``code_type``'s codes in the shared token space."""
        start = NUM_SPECIAL_TOKENS
        for name in CODE_TYPES:
            end = start + len(self.vocabularies[name])
            if name == code_type:
                return start, end
            start = end
        raise ValueError(f"unknown code type {code_type!r}; known: {list(CODE_TYPES)}")

    def code_vocab(self, code_type: str) -> CodeVocab:
        """``code_type``'s own vocabulary (ids 0..3 special, its codes from 4): what a per-type featuriser such as
        :class:`~medmplm.data.features.VisitFeaturizer` encodes with, for :meth:`MedBertModel.encode_visits`."""
        if code_type not in CODE_TYPES:
            raise ValueError(f"unknown code type {code_type!r}; known: {list(CODE_TYPES)}")
        return CodeVocab(code_type, self.vocabularies[code_type])


__all__ = ["CODE_TYPES", "OBJECTIVES", "MedBertConfig"]
