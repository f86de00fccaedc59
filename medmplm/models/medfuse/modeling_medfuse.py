"""MEDFuse (arXiv 2407.12309): a masked tabular transformer over lab tests, note vectors from a language model, and a
disentangled transformer that fuses them.

* :class:`MedFuseLabModel` encodes one admission's lab tokens. Token ``t`` is (item, statistic) with a standardised
  value; its input vector is FT-Transformer's numeric embedding (Gorishniy et al. 2021): ``value * w_t + b_t``, one
  ``w_t`` and ``b_t`` per token (``b_t`` says which item and statistic it is). A token whose value is not shown (the
  item was not measured in the admission, or pretraining masked it) gets a learned ``hidden_value`` vector in place
  of ``value * w_t``: a masked value looks exactly like a missing one, so pretraining teaches the model to fill in
  what fine-tuning will find missing. [CLS] first; a post-LayerNorm GELU transformer (``torch.nn``'s); the [CLS]
  state is the admission's lab vector.
* :class:`MedFuseLabForMaskedModeling` adds a regression head (dense, GELU, LayerNorm, one output per token) and the
  masked lab-test modelling loss: the mean squared error over the masked tokens' standardised values.
* :class:`NoteEncoder` is a Hugging Face language model (encoder or decoder) pooled into one vector per note, for
  fine-tuning it inside MEDFuse; frozen, the same pooling runs once per note upstream
  (:func:`pool_hidden_states`) and the model reads the vectors.
* :class:`MedFuseModel` projects each modality's vector into a *shared* and a *specific* part, runs a transformer over
  those (up to four) vectors, and concatenates its outputs; :class:`MedFuseForMultiLabelClassification` adds the
  classifier and the losses: the task's binary cross-entropy, InfoNCE between the modalities' shared parts, and an
  independence loss between each modality's shared and specific parts (:func:`cross_correlation_penalty`, or
  :class:`ClubEstimator`).

No training logic lives here: masking is the pretraining task's (``medmplm.pretraining.medfuse_lab``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from medmplm.models.initialization import init_standard_module
from medmplm.models.medfuse.configuration_medfuse import MedFuseConfig, MedFuseLabConfig


@dataclass
class MedFuseLabModelOutput(ModelOutput):
    """Output of :class:`MedFuseLabModel`.

    Attributes:
        last_hidden_state: ``[B, 1 + T, H]`` the encoder's output; position 0 is [CLS], position ``1 + t`` token t.
        pooler_output: ``[B, H]`` the [CLS] state: the admission's lab vector.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class MedFuseLabPretrainingOutput(ModelOutput):
    """Output of :class:`MedFuseLabForMaskedModeling`.

    Attributes:
        loss: ``[]`` mean squared error over the masked tokens' standardised values; 0 (still attached to the graph)
            when nothing is masked.
        predictions: ``[B, T]`` the reconstructed standardised value of every token.
        masked_count: ``[]`` masked tokens in the batch (weight per-batch losses by it).
        model_output: the :class:`MedFuseLabModelOutput` the predictions came from.
    """

    loss: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    masked_count: torch.Tensor | None = None
    model_output: MedFuseLabModelOutput | None = None


class MedFuseLabEmbeddings(nn.Module):
    """[CLS] + one vector per (item, statistic) token: ``value * w_t + b_t``, or ``hidden_value + b_t`` when the value
    is not shown; LayerNorm and dropout."""

    def __init__(self, config: MedFuseLabConfig) -> None:
        super().__init__()
        tokens, hidden = config.num_tokens, config.hidden_size
        self.value_weight = nn.Parameter(torch.empty(tokens, hidden))
        self.token_bias = nn.Parameter(torch.empty(tokens, hidden))
        self.hidden_value = nn.Parameter(torch.empty(hidden))
        self.cls = nn.Parameter(torch.empty(hidden))
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, values: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` standardised values and ``[B, T]`` shown flags -> ``[B, 1 + T, H]``."""
        value_part = values.unsqueeze(-1).to(self.value_weight.dtype) * self.value_weight
        value_part = torch.where(shown.bool().unsqueeze(-1), value_part, self.hidden_value)
        tokens = value_part + self.token_bias
        cls = self.cls.expand(values.shape[0], 1, -1)
        return self.dropout(self.LayerNorm(torch.cat([cls, tokens], dim=1)))


class MedFuseLabPreTrainedModel(PreTrainedModel):
    """Weight initialisation (BERT's normal with ``initializer_range``) and loading for the lab models."""

    config_class = MedFuseLabConfig
    base_model_prefix = "medfuse_lab"
    main_input_name = "lab_values"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if init_standard_module(module, std):
            return
        if isinstance(module, MedFuseLabEmbeddings):
            for parameter in (module.value_weight, module.token_bias, module.hidden_value, module.cls):
                init.normal_(parameter, mean=0.0, std=std)


def _transformer(width: int, heads: int, intermediate: int, dropout: float, eps: float, layers: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        width, heads, intermediate, dropout, activation="gelu", layer_norm_eps=eps, batch_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class MedFuseLabModel(MedFuseLabPreTrainedModel):
    """The masked tabular transformer: an admission's lab tokens -> its lab vector ([CLS] state)."""

    # Loaded from a MedFuseLabForMaskedModeling directory (an export), the regression head is left out by design.
    _keys_to_ignore_on_load_unexpected = [r"^head\."]

    def __init__(self, config: MedFuseLabConfig) -> None:
        super().__init__(config)
        if config.num_tokens == 0:
            raise ValueError("lab_items is empty: a lab model needs at least one lab item")
        self.embeddings = MedFuseLabEmbeddings(config)
        self.encoder = _transformer(
            config.hidden_size,
            config.num_heads,
            config.intermediate_size,
            config.dropout,
            config.layer_norm_eps,
            config.num_layers,
        )
        self.post_init()

    def forward(
        self, lab_values: torch.Tensor, lab_observed: torch.Tensor, lab_masked: torch.Tensor | None = None
    ) -> MedFuseLabModelOutput:
        """Encode admissions.

        Args:
            lab_values: ``[B, T]`` standardised values (0 where not observed).
            lab_observed: ``[B, T]`` 1 where the item was measured in the admission.
            lab_masked: ``[B, T]`` 1 where an observed value is hidden from the model (pretraining); ``None``: none.

        Every token, shown or not, is attended to: whether a test was ordered is information.
        """
        shown = lab_observed.bool() if lab_masked is None else lab_observed.bool() & ~lab_masked.bool()
        hidden = self.encoder(self.embeddings(lab_values, shown))
        return MedFuseLabModelOutput(last_hidden_state=hidden, pooler_output=hidden[:, 0])


class MedFuseLabForMaskedModeling(MedFuseLabPreTrainedModel):
    """Masked lab-test modelling: reconstruct the standardised values of the masked (observed) tokens."""

    def __init__(self, config: MedFuseLabConfig) -> None:
        super().__init__(config)
        self.medfuse_lab = MedFuseLabModel(config)
        self.head = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.GELU(),
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
            nn.Linear(config.hidden_size, 1),
        )
        self.post_init()

    def forward(
        self, lab_values: torch.Tensor, lab_observed: torch.Tensor, lab_masked: torch.Tensor | None = None
    ) -> MedFuseLabPretrainingOutput:
        """Reconstruct every token and score the masked ones.

        Args:
            lab_values, lab_observed: ``[B, T]``, as :meth:`MedFuseLabModel.forward`.
            lab_masked: ``[B, T]`` the masked tokens (a subset of the observed ones); ``None``: nothing masked, no
                loss.

        Raises:
            ValueError: when a masked token was not observed (its value is unknown, so it cannot be a target).
        """
        encoded = self.medfuse_lab(lab_values, lab_observed, lab_masked)
        predictions = self.head(encoded.last_hidden_state[:, 1:]).squeeze(-1)
        loss = masked_count = None
        if lab_masked is not None:
            targets = lab_masked.bool()
            if (targets & ~lab_observed.bool()).any():
                raise ValueError("lab_masked selects tokens that were not observed; only observed values are targets")
            masked_count = targets.sum()
            # A zero that still reaches the head when nothing is masked, as data-parallel training needs.
            squared = (predictions - lab_values.to(predictions.dtype)) ** 2
            loss = (squared * targets).sum() / masked_count.clamp(min=1)
        return MedFuseLabPretrainingOutput(
            loss=loss, predictions=predictions, masked_count=masked_count, model_output=encoded
        )


# --------------------------------------------------------------------------------------------------------------------
# Notes
# --------------------------------------------------------------------------------------------------------------------


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[B, L, D]`` token states -> ``[B, D]``: ``mean`` over the attended tokens, or the ``last`` attended token's
    state (padding on either side: the last position whose mask is 1)."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    if pooling == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.bool() * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")


def language_model_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a Hugging Face base model (BERT's ``encoder.layer``, GPT-2's ``h``, Llama's
    ``layers``, ...): the longest ``ModuleList`` in it.

    Raises:
        ValueError: when the model has no ``ModuleList``.
    """
    lists = [module for module in model.modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of layers to fine-tune the last of")
    return max(lists, key=len)


class NoteEncoder(nn.Module):
    """A language model fine-tuned inside MEDFuse: note tokens -> one vector per note.

    Fine-tuning (``config.note_finetuning``): ``last_layers`` trains the last ``note_trainable_layers`` layers and any
    final normalisation after them (everything else frozen); ``lora`` adds LoRA adapters with ``peft``
    (``pip install medmplm[lora]``) and trains only those.

    Args:
        config: the MEDFuse configuration (its ``note_encoder`` is the language model's configuration).
        language_model: the pretrained language model to start from; ``None``: built from the configuration (its
            weights then come from a saved MEDFuse model).
    """

    def __init__(self, config: MedFuseConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__()
        if language_model is None:
            lm_config = dict(config.note_encoder)
            language_model = AutoModel.from_config(AutoConfig.for_model(lm_config.pop("model_type"), **lm_config))
        self.pooling = config.note_pooling
        self.finetuning = config.note_finetuning
        self.trainable_layers = config.note_trainable_layers
        if config.note_finetuning == "last_layers":
            layers = language_model_layers(language_model)
            if config.note_trainable_layers > len(layers):
                raise ValueError(
                    f"note_trainable_layers {config.note_trainable_layers} exceeds the language model's {len(layers)} "
                    "layers"
                )
        elif config.note_finetuning == "lora":
            try:
                from peft import LoraConfig, inject_adapter_in_model
            except ImportError:
                raise ImportError(
                    "note_finetuning 'lora' needs peft: pip install 'medmplm[lora]' (or note_finetuning=last_layers)"
                ) from None
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.lora_target_modules,
            )
            # In place, so that the model's own module paths (and state-dict keys) stay those of the language model.
            language_model = inject_adapter_in_model(lora, language_model)
        self.language_model = language_model
        self.freeze()

    def freeze(self) -> None:
        """Stop gradients to every parameter but the fine-tuned ones. Called again after ``from_pretrained``, whose
        weights arrive as new parameters that require gradients."""
        model = self.language_model
        model.requires_grad_(False)
        if self.finetuning == "last_layers":
            layers = language_model_layers(model)
            for layer in layers[len(layers) - self.trainable_layers :]:
                layer.requires_grad_(True)
            _after_layers(model, layers).requires_grad_(True)
        elif self.finetuning == "lora":
            for name, parameter in model.named_parameters():
                parameter.requires_grad_("lora_" in name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids and mask -> ``[B, D]`` note vectors."""
        states = self.language_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool_hidden_states(states, attention_mask, self.pooling)


def _after_layers(model: nn.Module, layers: nn.ModuleList) -> nn.Module:
    """The final normalisation a base model applies after its layer stack (GPT-2's ``ln_f``, Llama's ``norm``), or an
    empty module when it has none (BERT's last LayerNorm is inside its last layer)."""
    names = [name for name, module in model.named_children() if isinstance(module, nn.LayerNorm | nn.RMSNorm)]
    names += [name for name in ("norm", "ln_f", "final_layer_norm") if hasattr(model, name)]
    return nn.ModuleList([getattr(model, name) for name in dict.fromkeys(names)])


# --------------------------------------------------------------------------------------------------------------------
# Fusion and its losses
# --------------------------------------------------------------------------------------------------------------------


def info_nce(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows (row i of ``first`` belongs with row i of ``second``; the other rows of
    the batch are the negatives), on cosine similarities over ``temperature``: a lower bound of the mutual information
    between the two, up to ``log B``. ``[B, F]`` x 2 -> ``[]``; 0 (attached to the graph) with fewer than two rows.

    Written out because torch has the cross-entropy but no contrastive loss of its own.
    """
    if first.shape[0] < 2:
        return (first.sum() + second.sum()) * 0.0
    logits = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / temperature
    targets = torch.arange(first.shape[0], device=first.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def cross_correlation_penalty(shared: torch.Tensor, specific: torch.Tensor) -> torch.Tensor:
    """Mean squared Pearson correlation, over the batch, between every feature of ``shared`` and every feature of
    ``specific`` (``[B, F]`` x 2 -> ``[]``): 0 when the two parts are linearly uncorrelated, 1 when each specific
    feature is a linear function of every shared one. The orthogonality of DSN's difference loss (Bousmalis et al.
    2016), taken across samples rather than within one, so that it asks the parts to vary independently rather than
    only to point in different directions. 0 (attached) with fewer than two rows."""
    if shared.shape[0] < 2:
        return (shared.sum() + specific.sum()) * 0.0
    standardised = [
        (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False).clamp(min=1e-6) for x in (shared, specific)
    ]
    correlation = standardised[0].T @ standardised[1] / shared.shape[0]
    return (correlation**2).mean()


class ClubEstimator(nn.Module):
    """CLUB (Cheng et al. 2020): a contrastive log-ratio upper bound of the mutual information I(x; y), with a
    variational Gaussian q(y | x) whose mean and log-variance are small MLPs of x (the paper's ``CLUB`` class).

    ``forward`` returns the estimate (what the model minimises; q's parameters are read detached, so this term moves
    the encoders only) and q's fitting loss (its negative log-likelihood on detached pairs, so that term moves q
    only): one backward trains both, as CLUB's alternating updates would.
    """

    def __init__(self, size: int, hidden_size: int) -> None:
        super().__init__()
        self.mean = nn.Sequential(nn.Linear(size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, size))
        self.log_variance = nn.Sequential(
            nn.Linear(size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, size), nn.Tanh()
        )

    def _moments(self, x: torch.Tensor, detach_parameters: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not detach_parameters:
            return self.mean(x), self.log_variance(x)
        parameters = {name: value.detach() for name, value in self.named_parameters()}
        mean = torch.func.functional_call(self.mean, _children(parameters, "mean"), (x,))
        log_variance = torch.func.functional_call(self.log_variance, _children(parameters, "log_variance"), (x,))
        return mean, log_variance

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, F]`` pairs -> (CLUB estimate ``[]``, q's negative log-likelihood ``[]``)."""
        mean, log_variance = self._moments(x, detach_parameters=True)
        positive = -((mean - y) ** 2) / log_variance.exp() / 2
        # Every (x_i, y_j): log q(y_j | x_i), averaged over j.
        negative = -((mean.unsqueeze(1) - y.unsqueeze(0)) ** 2).mean(dim=1) / log_variance.exp() / 2
        estimate = (positive.sum(dim=-1) - negative.sum(dim=-1)).mean()
        fit_mean, fit_log_variance = self._moments(x.detach(), detach_parameters=False)
        fit = (((fit_mean - y.detach()) ** 2) / fit_log_variance.exp() + fit_log_variance).sum(dim=-1).mean() / 2
        return estimate, fit


def _children(parameters: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) + 1 :]: value for name, value in parameters.items() if name.startswith(prefix + ".")}


@dataclass
class MedFuseModelOutput(ModelOutput):
    """Output of :class:`MedFuseModel`.

    Attributes:
        fused: ``[B, D]`` the representation the classifier reads: the fusion transformer's outputs for the shared
            and specific vectors, concatenated (``D = 2 * len(modalities) * fusion_size``), or under ``concat``
            fusion the lab and note vectors concatenated.
        modality_vectors: modality (``labs``, ``notes``) -> ``[B, d_m]`` its encoder's vector (a note-less admission's
            note vector is the learned ``missing_note`` vector).
        shared: modality -> ``[B, fusion_size]`` its shared projection (disentangled fusion only).
        specific: modality -> ``[B, fusion_size]`` its specific projection (disentangled fusion only).
    """

    fused: torch.Tensor | None = None
    modality_vectors: dict[str, torch.Tensor] | None = None
    shared: dict[str, torch.Tensor] | None = None
    specific: dict[str, torch.Tensor] | None = None


@dataclass
class MedFuseOutput(ModelOutput):
    """Output of :class:`MedFuseForMultiLabelClassification`.

    Attributes:
        loss: ``[]`` the weighted sum of the terms (``config.loss_weights``), plus CLUB's fitting loss under
            ``independence="club"``; ``None`` without labels.
        losses: term -> ``[]``: ``task`` (binary cross-entropy, mean over examples and labels), ``infonce`` (both
            modalities, disentangled fusion; over the admissions with a note), ``independence`` (disentangled fusion;
            mean over modalities), ``club_fit`` (q's negative log-likelihood, under CLUB).
        logits: ``[B, K]`` one logit per label group.
        model_output: the :class:`MedFuseModelOutput` the logits came from.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    logits: torch.Tensor | None = None
    model_output: MedFuseModelOutput | None = None


class MedFusePreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for the MEDFuse classifier (the lab encoder and a language model inside it
    initialise themselves)."""

    config_class = MedFuseConfig
    base_model_prefix = "medfuse"
    main_input_name = "lab_values"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """``transformers``' load from a local directory (never a hub), with a fine-tuned language model's frozen part
        frozen again."""
        kwargs.setdefault("local_files_only", True)
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        for module in model.modules():
            if isinstance(module, NoteEncoder):
                module.freeze()
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if init_standard_module(module, std):
            return
        if isinstance(module, MedFuseModel):
            for parameter in (module.missing_note, module.slot_embeddings):
                if parameter is not None:
                    init.normal_(parameter, mean=0.0, std=std)


class MedFuseModel(MedFusePreTrainedModel):
    """MEDFuse's encoders and fusion: lab tokens and a note -> the fused representation (see the module docstring).

    Disentangled fusion: per modality, ``shared = W_sh h`` and ``specific = W_sp h`` (linear, ``fusion_size``
    wide); the (up to four) vectors plus a learned embedding per slot go through a transformer encoder; its outputs,
    concatenated in slot order (labs shared, labs specific, notes shared, notes specific), are the fused vector. An
    admission without a note reads a learned ``missing_note`` vector as its note vector.

    Args:
        config: the configuration.
        language_model: the pretrained language model when the configuration fine-tunes one (``note_encoder``);
            ``None`` builds it from the configuration (a saved model's weights then load over it).
    """

    _keys_to_ignore_on_load_unexpected = [r"^(classifier|club)\."]

    def __init__(self, config: MedFuseConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.modalities = list(config.modalities)
        self.lab_encoder = MedFuseLabModel(config.lab_config) if "labs" in self.modalities else None
        self.note_encoder = (
            NoteEncoder(config, language_model) if "notes" in self.modalities and config.note_encoder else None
        )
        self.missing_note = (
            nn.Parameter(torch.empty(config.note_embedding_size)) if "notes" in self.modalities else None
        )
        sizes = {"labs": config.lab_config.hidden_size, "notes": config.note_embedding_size}
        self.slot_embeddings = None
        if config.fusion == "disentangled":
            self.shared = nn.ModuleDict({m: nn.Linear(sizes[m], config.fusion_size) for m in self.modalities})
            self.specific = nn.ModuleDict({m: nn.Linear(sizes[m], config.fusion_size) for m in self.modalities})
            self.slot_embeddings = nn.Parameter(torch.empty(2 * len(self.modalities), config.fusion_size))
            self.fusion = _transformer(
                config.fusion_size,
                config.fusion_heads,
                config.fusion_intermediate_size,
                config.dropout,
                1e-12,
                config.fusion_layers,
            )
            self.fused_size = 2 * len(self.modalities) * config.fusion_size
        else:
            self.fused_size = sum(sizes[m] for m in self.modalities)
        self.post_init()

    def forward(
        self,
        lab_values: torch.Tensor | None = None,
        lab_observed: torch.Tensor | None = None,
        has_note: torch.Tensor | None = None,
        note_embedding: torch.Tensor | None = None,
        note_input_ids: torch.Tensor | None = None,
        note_attention_mask: torch.Tensor | None = None,
    ) -> MedFuseModelOutput:
        """Fuse a batch of admissions.

        Args:
            lab_values, lab_observed: ``[B, T]`` standardised lab values and observed flags (a model with labs).
            has_note: ``[B]`` 1 when the admission has a note (a model with notes).
            note_embedding: ``[B, D]`` precomputed note vectors (``note_finetuning="frozen"``).
            note_input_ids, note_attention_mask: ``[B, L]`` note tokens (a fine-tuned language model).
        """
        vectors: dict[str, torch.Tensor] = {}
        if self.lab_encoder is not None:
            vectors["labs"] = self.lab_encoder(lab_values, lab_observed).pooler_output
        if "notes" in self.modalities:
            if self.note_encoder is not None:
                notes = self.note_encoder(note_input_ids, note_attention_mask)
            else:
                notes = note_embedding
            notes = notes.to(self.missing_note.dtype)
            vectors["notes"] = torch.where(has_note.bool().unsqueeze(-1), notes, self.missing_note)
        if self.slot_embeddings is None:
            fused = torch.cat([vectors[m] for m in self.modalities], dim=-1)
            return MedFuseModelOutput(fused=fused, modality_vectors=vectors)
        shared = {m: self.shared[m](vectors[m]) for m in self.modalities}
        specific = {m: self.specific[m](vectors[m]) for m in self.modalities}
        slots = torch.stack([part[m] for m in self.modalities for part in (shared, specific)], dim=1)
        fused = self.fusion(slots + self.slot_embeddings).flatten(start_dim=1)
        return MedFuseModelOutput(fused=fused, modality_vectors=vectors, shared=shared, specific=specific)


class MedFuseForMultiLabelClassification(MedFusePreTrainedModel):
    """MEDFuse with its classifier (an MLP over the fused vector, one logit per label group) and its losses (see
    :class:`MedFuseOutput`)."""

    def __init__(self, config: MedFuseConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.medfuse = MedFuseModel(config, language_model)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(self.medfuse.fused_size, config.classifier_hidden_size),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden_size, config.num_labels),
        )
        self.club = None
        if config.fusion == "disentangled" and config.independence == "club":
            self.club = nn.ModuleDict(
                {m: ClubEstimator(config.fusion_size, config.club_hidden_size) for m in config.modalities}
            )
        self.post_init()

    def forward(
        self,
        lab_values: torch.Tensor | None = None,
        lab_observed: torch.Tensor | None = None,
        has_note: torch.Tensor | None = None,
        note_embedding: torch.Tensor | None = None,
        note_input_ids: torch.Tensor | None = None,
        note_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MedFuseOutput:
        """Logits, and with ``labels`` (``[B, K]`` multi-hot) the losses; the other arguments are those of
        :meth:`MedFuseModel.forward`."""
        encoded = self.medfuse(
            lab_values=lab_values,
            lab_observed=lab_observed,
            has_note=has_note,
            note_embedding=note_embedding,
            note_input_ids=note_input_ids,
            note_attention_mask=note_attention_mask,
        )
        logits = self.classifier(encoded.fused)
        if labels is None:
            return MedFuseOutput(logits=logits, model_output=encoded)
        config = self.config
        losses = {"task": F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))}
        if encoded.shared is not None:
            # The note's parts of an admission without one are the projections of the learned missing_note vector:
            # they say nothing about that admission, so they take no part in the mutual-information terms.
            rows = {"labs": slice(None), "notes": has_note.bool() if "notes" in encoded.shared else slice(None)}
            if len(encoded.shared) == 2:
                with_note = rows["notes"]
                losses["infonce"] = info_nce(
                    encoded.shared["labs"][with_note], encoded.shared["notes"][with_note], config.infonce_temperature
                )
            terms, fits = [], []
            for modality in encoded.shared:
                shared, specific = encoded.shared[modality][rows[modality]], encoded.specific[modality][rows[modality]]
                if self.club is None:
                    terms.append(cross_correlation_penalty(shared, specific))
                else:
                    estimate, fit = self.club[modality](shared, specific)
                    terms.append(estimate)
                    fits.append(fit)
            losses["independence"] = torch.stack(terms).mean()
            if fits:
                losses["club_fit"] = torch.stack(fits).mean()
        weights = config.loss_weights
        loss = sum(weights[name] * value for name, value in losses.items() if name in weights)
        if "club_fit" in losses:
            loss = loss + losses["club_fit"]
        return MedFuseOutput(loss=loss, losses=losses, logits=logits, model_output=encoded)


__all__ = [
    "ClubEstimator",
    "MedFuseForMultiLabelClassification",
    "MedFuseLabForMaskedModeling",
    "MedFuseLabModel",
    "MedFuseLabModelOutput",
    "MedFuseLabPreTrainedModel",
    "MedFuseLabPretrainingOutput",
    "MedFuseModel",
    "MedFuseModelOutput",
    "MedFuseOutput",
    "MedFusePreTrainedModel",
    "NoteEncoder",
    "cross_correlation_penalty",
    "info_nce",
    "language_model_layers",
    "pool_hidden_states",
]
