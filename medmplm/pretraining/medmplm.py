"""The ``medmplm`` family: MedM-PLM pretrained with Text-to-Code and Code-to-Code masked-code prediction.

Model: :class:`medmplm.models.MedMPLMForPretraining`. Featuriser: :class:`medmplm.data.features.VisitFeaturizer`
(notes and both code types of each visit). Objective: codes masked by :class:`medmplm.data.masking.CodeMasker`,
predicted as a set from the fused note and code vectors (the model computes the loss).

A fresh model's text encoder comes from ``model.text_checkpoint`` (e.g. a ``bert-mlm`` export: the paper starts from
ClinicalBERT) or is a fresh BERT. Freezing layers of a fresh BERT freezes random features, so that is refused unless
``model.allow_random_frozen=true`` or no layer is frozen.

``model.init_from`` continues a MedM-PLM export, or starts a new MedM-PLM from the text and code encoders of a
``contrastive`` export (its cross-modal module and heads fresh; ``model.overrides`` set its objective, e.g.
``contrastive_weight``).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from medmplm.config import ConfigError, ModelSection, PretrainConfig
from medmplm.data.masking import CodeMasker
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

logger = logging.getLogger(__name__)


def prepared_code_vocabularies(prepared_dir: str | os.PathLike, min_count: int) -> dict[str, list[str]]:
    """Diagnosis and medication codes of a prepared directory's vocabularies, most frequent first."""
    from medmplm.data.schema import VOCAB_DIR
    from medmplm.data.vocab import CodeVocab
    from medmplm.models.configuration_medmplm import CODE_TYPES

    prepared = Path(prepared_dir)
    return {t: CodeVocab.from_tsv(prepared / VOCAB_DIR / f"{t}.tsv", t, min_count=min_count).codes for t in CODE_TYPES}


def prepared_ontologies(
    prepared_dir: str | os.PathLike, vocabularies: dict[str, list[str]]
) -> dict[str, dict[str, list[str]]]:
    """Each code type's ontology (code -> ancestors, root first) restricted to the vocabulary's codes."""
    from medmplm.data.schema import ONTOLOGY_DIR
    from medmplm.ontology import read_ontology

    prepared = Path(prepared_dir)
    ontologies = {}
    for code_type, codes in vocabularies.items():
        tree = read_ontology(prepared / ONTOLOGY_DIR / f"{code_type}.tsv")
        ontologies[code_type] = {code: tree[code] for code in codes if code in tree}
    return ontologies


def build_text_side(
    config: Any,
    prepared_dir: str | os.PathLike,
    tokenizer_dir: str | os.PathLike | None = None,
    text_checkpoint: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """The text encoder and tokenizer of a fresh model whose configuration has MedM-PLM's ``text_*`` fields (MedM-PLM,
    M-BEHRT), in order of preference: the checkpoint ``text_checkpoint`` (with its own tokenizer, or the one in
    ``tokenizer_dir``); a fresh BERT with the tokenizer in ``tokenizer_dir``; or a fresh BERT with a WordPiece tokenizer
    trained on the training split's notes (once per prepared directory, see
    :func:`~medmplm.models.tokenization.prepared_wordpiece_tokenizer`).

    Fills in ``config.text_config`` and ``config.text_pretrained``; with a checkpoint, the ``text_*`` size fields are
    replaced by the checkpoint's (the caller validates the configuration again).

    Returns:
        ``(backbone, tokenizer)``: the loaded checkpoint (``None`` for a fresh BERT, which the model builds from
        ``config.text_config``) and the tokenizer.

    Raises:
        ValueError: the tokenizer has more tokens than the text encoder's embedding has rows.
    """
    from medmplm.models.text_encoder import bert_text_config, load_backbone_checkpoint, text_config_dict
    from medmplm.models.tokenization import load_tokenizer, prepared_wordpiece_tokenizer

    backbone = None
    if text_checkpoint is not None:
        backbone = load_backbone_checkpoint(text_checkpoint)
        tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir is not None else text_checkpoint)
        text = backbone.config
        config.text_hidden_size = text.hidden_size
        config.text_num_layers = text.num_hidden_layers
        config.text_num_heads = text.num_attention_heads
        config.text_intermediate_size = text.intermediate_size
        config.text_vocab_size = text.vocab_size
        config.text_config = text_config_dict(text)
        config.text_pretrained = str(text_checkpoint)
    else:
        if tokenizer_dir is not None:
            tokenizer = load_tokenizer(tokenizer_dir)
        else:
            tokenizer = prepared_wordpiece_tokenizer(prepared_dir, config.text_vocab_size, config.text_max_length)
        config.text_config = bert_text_config(config, len(tokenizer), tokenizer.pad_token_id)
        config.text_pretrained = None
    if len(tokenizer) > config.text_config["vocab_size"]:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the text encoder's embedding has "
            f"{config.text_config['vocab_size']} rows"
        )
    return backbone, tokenizer


def refuse_random_frozen(model: ModelSection, frozen_layers: int) -> None:
    """Raise ConfigError when a text encoder without ``model.text_checkpoint`` (random weights) would have frozen
    layers, unless ``model.allow_random_frozen``."""
    if model.text_checkpoint is None and frozen_layers > 0 and not model.allow_random_frozen:
        raise ConfigError(
            f"model.text_checkpoint: none given, so the text encoder starts from random weights, and "
            f"{frozen_layers} of its layers (and its embeddings) would stay frozen: random features "
            "that never learn. Pretrain a text encoder first (python -m medmplm.pretrain model.family=bert-mlm) and "
            "pass its export as model.text_checkpoint=DIR, or set model.overrides.text_num_frozen_layers=0, or "
            "model.allow_random_frozen=true to train on random frozen features anyway"
        )


def export_model_type(directory: str | os.PathLike) -> str | None:
    """The ``model_type`` in an export's ``config.json``.

    Raises:
        ConfigError: naming ``model.init_from`` when the directory has no ``config.json``.
    """
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"model.init_from: {config_file} is missing; expected a save_pretrained directory")
    return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")


def refuse_unknown_overrides(overrides: dict[str, Any]) -> None:
    """Raise ConfigError naming the first ``model.overrides`` key that is no MedM-PLM configuration field (the
    configuration itself would keep it as a stray attribute)."""
    from medmplm.models import MedMPLMConfig

    known = set(inspect.signature(MedMPLMConfig.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"model.overrides.{unknown[0]}: not a MedM-PLM configuration field; known: {sorted(known)}")


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` (a MedM-PLM configuration) with ``model.overrides`` set on it.

    Raises:
        ConfigError: naming an override that is no configuration field, or a value out of range.
    """
    refuse_unknown_overrides(overrides)
    for name, value in overrides.items():
        setattr(config, name, value)
    try:
        config.validate_sizes()
    except ValueError as error:
        raise ConfigError(f"model.overrides: {error}") from error
    return config


def build_medmplm(
    model_class: type,
    prepared_dir: str | os.PathLike,
    config: Any,
    tokenizer_dir: str | os.PathLike | None = None,
    text_checkpoint: str | os.PathLike | None = None,
) -> Any:
    """A freshly initialised MedM-PLM model (``MedMPLMModel`` or ``MedMPLMForPretraining``) for a prepared directory.

    Code vocabularies and ontologies come from ``vocab/`` and ``ontology/``; the text side from
    :func:`build_text_side` (with a checkpoint, the ``text_*`` size fields of ``config`` are replaced by the
    checkpoint's).
    """
    config.vocabularies = prepared_code_vocabularies(prepared_dir, config.code_min_count)
    config.ontologies = prepared_ontologies(prepared_dir, config.vocabularies)
    backbone, tokenizer = build_text_side(config, prepared_dir, tokenizer_dir, text_checkpoint)
    config.validate_sizes()
    model = model_class(config, text_backbone=backbone)
    model.tokenizer = tokenizer
    return model


@dataclass
class MedMPLMPretrainingTask:
    """Masked-code pretraining of :class:`medmplm.models.MedMPLMForPretraining` for the shared loop.

    Args:
        masker: the model's :class:`~medmplm.data.masking.CodeMasker` (vocabulary sizes and masking rates), built on the
            driver with ``CodeMasker.from_config(config)``.
    """

    masker: CodeMasker
    name: str = "pretrain"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> torch.nn.Module:
        """The pretraining model saved in ``directory``, in training mode."""
        from medmplm.models import MedMPLMForPretraining

        model = MedMPLMForPretraining.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask codes (15%: 80% [MASK], 10% random same-type code, 10% kept) and add their labels."""
        return self.masker(batch, generator)

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-objective loss and accuracy (T2C/C2C x diagnosis/medication), weighted by their masked-code counts."""
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, loss in output.losses.items():
            count = output.target_counts[name].detach().float()
            stats[f"loss_{name}"] = (loss.detach().float() * count, count)
            accuracy = torch.nan_to_num(output.accuracies[name].detach().float())
            stats[f"accuracy_{name}"] = (accuracy * count, count)
        return stats


class MedMPLMFamily:
    """MedM-PLM in the pretraining recipe (see the module docstring)."""

    name = "medmplm"
    summary = "MedM-PLM: BERT text + G-BERT codes + cross-attention, Text-to-Code and Code-to-Code objectives"
    default_preset = "tiny"
    options: dict[str, Any] = {}

    @property
    def presets(self) -> dict[str, dict[str, Any]]:
        from medmplm.models.configuration_medmplm import PRESETS

        return PRESETS

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
        from medmplm.models.configuration_medmplm import ENCODER_EXPORT_TYPES

        resolve_options(self, model.options)
        note_reading = model.text.model_fields()
        if model.init_from is not None:
            try:
                config = MedMPLMConfig.from_pretrained(model.init_from)
                config.set_note_reading(**note_reading)
            except ValueError as error:
                raise ConfigError(f"model.text: {error}") from error
            source = export_model_type(model.init_from)
            if source in ENCODER_EXPORT_TYPES:
                config = with_overrides(config, model.overrides)
                try:
                    built = MedMPLMForPretraining.from_pretrained(model.init_from, config=config)
                except ValueError as error:
                    # The weights do not fit: an override changed a shape the export's encoders have.
                    raise ConfigError(f"model.overrides: {error}") from error
                return BuiltModel(
                    built,
                    description=f"text and code encoders from the {source} export {model.init_from}, "
                    "cross-modal module and heads fresh",
                )
            built = MedMPLMForPretraining.from_pretrained(model.init_from, config=config)
            return BuiltModel(built, description=f"continued from {model.init_from}")
        try:
            config = MedMPLMConfig(**{**preset_values(self, model), **note_reading})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.overrides or model.text: {error}") from error
        refuse_random_frozen(model, config.text_num_frozen_layers)
        built = build_medmplm(MedMPLMForPretraining, prepared_dir, config, model.tokenizer_dir, model.text_checkpoint)
        text = f"text encoder from {model.text_checkpoint}" if model.text_checkpoint else "text encoder random"
        frozen = config.text_num_frozen_layers
        return BuiltModel(
            built, description=f"{model.preset or self.default_preset} preset, {text}, {frozen} frozen layer(s)"
        )

    def load_model(self, directory: Path) -> torch.nn.Module:
        from medmplm.models import MedMPLMForPretraining

        model = MedMPLMForPretraining.from_pretrained(directory)
        model.train()
        return model

    def task(self, model_dir: Path) -> MedMPLMPretrainingTask:
        from medmplm.models import MedMPLMConfig

        return MedMPLMPretrainingTask(masker=CodeMasker.from_config(MedMPLMConfig.from_pretrained(model_dir)))

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """Featurised (and, with ``data.text_cache``, prefix-cached) ``train`` and ``val`` Ray Datasets."""
        import ray

        from medmplm.data.features import VisitFeaturizer
        from medmplm.train import storage
        from medmplm.train.bundle import ModelBundle
        from medmplm.train.data import TEXT_CACHE_DIR, cache_frozen_prefix, feature_counts, featurize, read_visits, select_model_columns

        featurizer = VisitFeaturizer.from_model(self.load_model(model_dir))
        data, scaling = config.data, config.scaling
        model_ref = ray.put(ModelBundle.from_directory(model_dir)) if data.text_cache else None
        datasets = {}
        for split in ("train", "val"):
            dataset = featurize(read_visits(prepared_dir, split), featurizer, data.featurize_batch_size)
            if data.text_cache:
                # Tokenised first: the cache actors may hold every CPU, and reading would then wait for one forever.
                dataset, cache = cache_frozen_prefix(
                    dataset.materialize(),
                    model_ref,
                    storage.join(config.run.storage_path, config.run.name, TEXT_CACHE_DIR, split),
                    dtype=data.text_cache_dtype,
                    batch_size=max(1, min(data.featurize_batch_size, 32)),
                    concurrency=scaling.num_workers,
                    use_gpu=scaling.use_gpu,
                    cpus_per_actor=scaling.cpus_per_worker,
                )
                logger.info(
                    "%s: frozen-prefix cache of %d visits, %s, %.1f MB on storage (%.1f MB per 1,000 notes)",
                    split,
                    cache["rows"],
                    cache["dtype"],
                    cache["bytes"] / 1e6,
                    cache["bytes"] / 1e3 / max(cache["rows"], 1),
                )
            if data.materialize:
                dataset = dataset.materialize()
                counts = feature_counts(dataset)
                logger.info(
                    "%s: %d visits featurised; notes not read to their end (%s): %d; codes beyond max_codes: %d "
                    "diagnosis, %d medication; codes not in the vocabulary: %d diagnosis, %d medication",
                    split,
                    counts["visits"],
                    note_reading(featurizer),
                    counts["text_truncated"],
                    counts["diag_truncated"],
                    counts["med_truncated"],
                    counts["diag_unknown"],
                    counts["med_unknown"],
                )
            dataset = select_model_columns(dataset, cached=data.text_cache)
            # Materialised after the projection too: the training workers then hold every CPU, and a lazy projection
            # would wait for one forever.
            datasets[split] = dataset.materialize() if data.materialize else dataset
        return datasets


def note_reading(featurizer: Any) -> str:
    """How a featuriser reads a note, for the run log: ``head of 128 tokens``, ``4 windows of 128 tokens, stride 94``."""
    if featurizer.long_note == "windows":
        return (
            f"at most {featurizer.max_windows} windows of {featurizer.text_max_length} tokens, stride {featurizer.stride}"
        )
    return f"{featurizer.long_note.replace('_', ' and ')} of {featurizer.text_max_length} tokens"


FAMILY = MedMPLMFamily()
