"""G-BERT configuration (Shang et al. 2019, "Pre-training of Graph Augmented Transformers for Medication
Recommendation").

The code encoder fields carry exactly the names of MedM-PLM's code side (``code_*``, ``max_codes``, ``ontology_*``), so
:class:`~medmplm.models.modeling_medmplm.CodeEncoder` takes this configuration as it is. The vocabularies and the
ontologies live in the configuration, so a saved model directory is self-contained.
"""

from __future__ import annotations

from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from medmplm.data.schema import ONTOLOGY_CODE_TYPES
from medmplm.data.vocab import CodeVocab

# The pretraining objectives, named source2target -> (source code type, target code type): the visit's [CLS] state of
# the source type predicts the set of the visit's codes of the target type (self-prediction dx2dx, rx2rx; dual
# prediction dx2rx, rx2dx).
OBJECTIVE_CODE_TYPES = {
    "dx2dx": ("diagnosis", "diagnosis"),
    "rx2rx": ("medication", "medication"),
    "dx2rx": ("diagnosis", "medication"),
    "rx2dx": ("medication", "diagnosis"),
}
OBJECTIVES = tuple(OBJECTIVE_CODE_TYPES)


@strict
class GBertConfig(PretrainedConfig):
    r"""Hyper-parameters, vocabularies and ontologies of a G-BERT model.

    Args:
        vocabularies: code type (``diagnosis``, ``medication``) -> codes in id order, without the special tokens (code
            ``i`` has id ``NUM_SPECIAL_TOKENS + i``, see :class:`~medmplm.data.vocab.CodeVocab`).
        ontologies: code type -> {code: ancestors, root first}; a code missing here gets no ancestors.
        code_hidden_size: width of the code transformer; must equal ``ontology_head_size x ontology_num_heads``.
        code_num_layers, code_num_heads, code_intermediate_size, code_dropout: shape of the code transformer.
        max_codes: distinct codes per type and visit the featuriser keeps (the sequence adds [CLS]).
        code_min_count: codes seen fewer times in the training split are left out of the vocabulary ([UNK]).
        ontology_head_size, ontology_num_heads, ontology_dropout: the graph attention of the ontology embedding.
        initializer_range: standard deviation of the initial linear and embedding weights (BERT's).
        mask_prob, mask_token_prob, random_token_prob: code masking of the pretraining inputs
            (:class:`~medmplm.data.masking.CodeMasker`).
        loss_weights: objective (``dx2dx``, ``rx2rx``, ``dx2rx``, ``rx2dx``) -> weight in the pretraining loss;
            objectives not given weigh 1 (G-BERT sums the four).
    """

    model_type = "gbert"

    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    ontologies: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    code_hidden_size: int = 300
    code_num_layers: int = 2
    code_num_heads: int = 2
    code_intermediate_size: int = 300
    code_dropout: float | int = 0.1
    max_codes: int = 61
    code_min_count: int = 1

    ontology_head_size: int = 75
    ontology_num_heads: int = 4
    ontology_dropout: float | int = 0.0

    initializer_range: float = 0.02

    mask_prob: float | int = 0.15
    mask_token_prob: float | int = 0.8
    random_token_prob: float | int = 0.1
    loss_weights: dict[str, float | int] = field(default_factory=dict)

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        # Plain ValueErrors naming the field (strict's class validators would wrap them in another exception type).
        if self.ontology_head_size * self.ontology_num_heads != self.code_hidden_size:
            raise ValueError(
                f"ontology_head_size x ontology_num_heads ({self.ontology_head_size} x {self.ontology_num_heads}) "
                f"must equal code_hidden_size ({self.code_hidden_size})"
            )
        if self.code_num_heads < 1 or self.code_hidden_size % self.code_num_heads:
            raise ValueError(
                f"code_hidden_size {self.code_hidden_size} is not divisible by code_num_heads {self.code_num_heads}"
            )
        for name in ("code_num_layers", "code_intermediate_size", "max_codes", "code_min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.mask_token_prob < 0 or self.random_token_prob < 0 or self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError(
                "mask_token_prob and random_token_prob must be >= 0 and sum to <= 1, "
                f"got {self.mask_token_prob} and {self.random_token_prob}"
            )
        unknown = sorted(set(self.loss_weights) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"loss_weights has unknown objective(s) {unknown}; known: {list(OBJECTIVES)}")
        weights = {name: float(self.loss_weights.get(name, 1.0)) for name in OBJECTIVES}
        negative = [name for name, weight in weights.items() if weight < 0]
        if negative:
            raise ValueError(f"loss_weights of {negative} must be >= 0")
        self.loss_weights = weights
        for name in ("vocabularies", "ontologies"):
            unknown = sorted(set(getattr(self, name)) - set(ONTOLOGY_CODE_TYPES))
            if unknown:
                raise ValueError(f"{name} has unknown code type(s) {unknown}; known: {list(ONTOLOGY_CODE_TYPES)}")
        for code_type, codes in self.vocabularies.items():
            try:
                # CodeVocab rejects empty, duplicate and special-token codes.
                CodeVocab(code_type, codes)
            except ValueError as error:
                raise ValueError(f"vocabularies[{code_type!r}]: {error}") from None


__all__ = ["OBJECTIVES", "OBJECTIVE_CODE_TYPES", "GBertConfig"]
