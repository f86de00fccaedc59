"""``model.family=gbert``: G-BERT (Shang et al. 2019) pretrained on its own, on a visit's codes alone.

Model: :class:`medmplm.models.gbert.GBertForPretraining`, built from a preset with the prepared directory's diagnosis
and medication vocabularies and ontologies (held in its ``config.json``), or continued from a ``gbert`` export
(``model.init_from``). No notes and no tokenizer: ``model.text_checkpoint`` and ``model.tokenizer_dir`` are refused.

Featuriser (:class:`CodeFeaturizer`): each visit's diagnosis and medication ids, the code columns of
:class:`~medmplm.data.features.VisitFeaturizer` (distinct codes, [CLS] first, at most ``max_codes`` per type). Visits
without a single vocabulary code of either type are dropped (nothing to predict, nothing to predict from) and counted
in the log; a visit with codes of one type only counts for that type's self-prediction.

Objective (:class:`GBertPretrainingTask`): :class:`~medmplm.data.masking.CodeMasker` masks each code type with the
model configuration's rates (random replacements from the same type's vocabulary), with the loop's generator as its
only randomness; the model predicts each visit's full diagnosis and medication sets from each type's [CLS] state
(self- and dual prediction) and returns the loss. The family has no ``model.options``: the masking rates are model
configuration fields (``model.overrides.mask_prob=...``), saved with the model, so a resumed run masks as the run it
resumes.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medmplm.config import ConfigError
from medmplm.data.masking import CODE_KEYS, CodeMasker
from medmplm.data.vocab import NUM_SPECIAL_TOKENS, CodeVocab
from medmplm.models.configuration_medmplm import PRESETS as MEDMPLM_PRESETS
from medmplm.models.configuration_medmplm import MedMPLMConfig
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

if TYPE_CHECKING:
    import torch

    from medmplm.config import ModelSection, PretrainConfig
    from medmplm.models.gbert import GBertForPretraining

logger = logging.getLogger(__name__)

# The fields of G-BERT's encoder, named as MedM-PLM's code side names them.
CODE_SIDE_FIELDS = (
    "code_hidden_size",
    "code_num_layers",
    "code_num_heads",
    "code_intermediate_size",
    "max_codes",
    "ontology_head_size",
    "ontology_num_heads",
)
# Each preset is MedM-PLM's preset of that name, code side only (tiny: 32-d; paper: G-BERT's 300-d encoder of 2
# layers of 2 heads, ontology 75 x 4 heads, 61 codes), so that a G-BERT and a MedM-PLM of one preset featurise visits
# alike and compare as equals.
PRESETS: dict[str, dict[str, Any]] = {
    name: {field: getattr(MedMPLMConfig.from_preset(name), field) for field in CODE_SIDE_FIELDS}
    for name in MEDMPLM_PRESETS
}

# Visit columns the featuriser reads (hadm_id only names rows in error messages).
VISIT_COLUMNS = ("hadm_id", "diagnoses", "medications")
# Featuriser outputs the model takes.
MODEL_COLUMNS = ("diag_ids", "diag_mask", "med_ids", "med_mask")
# 1 when a visit has a vocabulary code of either type; visits without are dropped.
HAS_CODES = "has_codes"
# Column prefix (and CodeMasker's vocabulary-size key) -> code type.
CODE_TYPE_PREFIXES = {"diag": "diagnosis", "med": "medication"}


class CodeFeaturizer:
    """Visit records -> the code columns of :class:`~medmplm.data.features.VisitFeaturizer`, without notes.

    Outputs ``diag_ids``, ``diag_mask``, ``med_ids``, ``med_mask`` [B, 1 + max_codes] and the counts
    ``diag_truncated``, ``med_truncated``, ``diag_unknown``, ``med_unknown`` [B] exactly as ``VisitFeaturizer``, and
    ``has_codes`` [B]: 1 when the visit has a diagnosis or medication code of the vocabularies.

    Args:
        diagnosis_vocab, medication_vocab: the model's vocabularies.
        max_codes: distinct codes per type kept (the first ones, in record order); the sequence adds [CLS].
    """

    def __init__(self, diagnosis_vocab: CodeVocab, medication_vocab: CodeVocab, max_codes: int) -> None:
        self.diagnosis_vocab = diagnosis_vocab
        self.medication_vocab = medication_vocab
        self.max_codes = max_codes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise a batch of visit columns (``diagnoses``, ``medications``; ``hadm_id`` when present)."""
        from medmplm.data.features import encode_code_column

        missing = [c for c in ("diagnoses", "medications") if c not in batch]
        if missing:
            raise KeyError(f"visit batch lacks column(s) {missing}; expected VISIT_SCHEMA columns")
        row_ids = np.array(batch["hadm_id"], dtype=np.int64) if "hadm_id" in batch else None
        out: dict[str, np.ndarray] = {}
        for prefix, column, vocab in (
            ("diag", "diagnoses", self.diagnosis_vocab),
            ("med", "medications", self.medication_vocab),
        ):
            ids, mask, truncated, unknown = encode_code_column(batch[column], column, vocab, self.max_codes, row_ids)
            out[f"{prefix}_ids"], out[f"{prefix}_mask"] = ids, mask
            out[f"{prefix}_truncated"], out[f"{prefix}_unknown"] = truncated, unknown
        # Ids below NUM_SPECIAL_TOKENS ([PAD], [CLS], [UNK]) are no code.
        has_codes = (out["diag_ids"] >= NUM_SPECIAL_TOKENS).any(axis=1) | (out["med_ids"] >= NUM_SPECIAL_TOKENS).any(
            axis=1
        )
        out[HAS_CODES] = has_codes.astype(np.int64)
        return out


def keep_visits_with_codes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model columns of the visits with a vocabulary code (``has_codes``)."""
    keep = batch[HAS_CODES].astype(bool)
    return {column: batch[column][keep] for column in MODEL_COLUMNS}


def read_code_columns(prepared_dir: str, split: str) -> Any:
    """A Ray Dataset of one split's visit records, only the columns :class:`CodeFeaturizer` reads.

    Raises:
        FileNotFoundError: naming the directory when the split is missing.
    """
    import ray.data

    from medmplm.data.schema import VISITS_DIR
    from medmplm.train import storage

    location = storage.join(prepared_dir, VISITS_DIR, split)
    if not storage.exists(location):
        raise FileNotFoundError(
            f"{location}: missing; {prepared_dir} is not a prepared directory (run python -m medmplm.prepare)"
        )
    return ray.data.read_parquet(location, columns=list(VISIT_COLUMNS))


@dataclass
class GBertPretrainingTask:
    """G-BERT pretraining (:class:`medmplm.models.gbert.GBertForPretraining`) for the shared loop.

    Args:
        masker: the masker of the model's configuration (``CodeMasker.from_config``).
    """

    masker: CodeMasker
    name: str = "pretrain-gbert"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> GBertForPretraining:
        """The pretraining model saved in ``directory``, in training mode."""
        from medmplm.models.gbert import GBertForPretraining

        model = GBertForPretraining.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask each code type (``mask_prob`` of the codes: [MASK], a random code of the same type, or kept) and add
        the labels (original ids at masked positions, -100 elsewhere). Validation batches are masked the same way, so
        that the validation loss measures the training objective."""
        inputs: dict[str, torch.Tensor] = {}
        for (ids_key, mask_key, labels_key), prefix in zip(CODE_KEYS, CODE_TYPE_PREFIXES, strict=True):
            inputs[ids_key], inputs[labels_key] = self.masker.mask_codes(
                batch[ids_key], batch[mask_key], self.masker.vocab_sizes[prefix], generator
            )
            inputs[mask_key] = batch[mask_key]
        return inputs

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-objective loss and recall@k (k = the visit's number of target codes), weighted by eligible visits."""
        import torch

        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, loss in output.losses.items():
            visits = output.visit_counts[name].detach().float()
            stats[f"loss_{name}"] = (loss.detach().float() * visits, visits)
            recall = torch.nan_to_num(output.recalls[name].detach().float())
            stats[f"recall_at_k_{name}"] = (recall * visits, visits)
        return stats


class GBertFamily:
    """G-BERT in the pretraining recipe (see the module docstring)."""

    name = "gbert"
    summary = "G-BERT: ontology-embedded code transformer, self- and dual prediction of a visit's codes (codes only)"
    presets = PRESETS
    default_preset = "tiny"
    options: dict[str, Any] = {}

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        from huggingface_hub.errors import StrictDataclassError

        from medmplm.models.gbert import GBertConfig, GBertForPretraining
        from medmplm.pretraining.medmplm import prepared_code_vocabularies, prepared_ontologies

        resolve_options(self, model.options)
        for key in ("text_checkpoint", "tokenizer_dir"):
            if getattr(model, key) is not None:
                raise ConfigError(
                    f"model.{key}: the gbert family encodes codes only and has no text encoder or tokenizer"
                )
        if model.init_from is not None:
            if model.overrides:
                raise ConfigError(
                    "model.overrides: the model continued from model.init_from keeps its own configuration"
                )
            config_file = Path(model.init_from) / "config.json"
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
            if model_type != GBertConfig.model_type:
                raise ConfigError(f"model.init_from: {config_file} is a {model_type!r} model, expected a gbert export")
            return BuiltModel(
                GBertForPretraining.from_pretrained(model.init_from), description=f"continued from {model.init_from}"
            )
        values = preset_values(self, model)
        known = set(inspect.get_annotations(GBertConfig)) - {"vocabularies", "ontologies"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"model.overrides.{unknown[0]}: not a G-BERT configuration field; known: {sorted(known)}")
        try:
            config = GBertConfig(**values)
        except (TypeError, ValueError, StrictDataclassError) as error:  # the last: a value of the wrong type
            raise ConfigError(f"model.overrides: {error}") from error
        config.vocabularies = prepared_code_vocabularies(prepared_dir, config.code_min_count)
        config.ontologies = prepared_ontologies(prepared_dir, config.vocabularies)
        sizes = ", ".join(f"{len(codes)} {t}" for t, codes in config.vocabularies.items())
        return BuiltModel(
            GBertForPretraining(config), description=f"{model.preset or self.default_preset} preset, {sizes} codes"
        )

    def load_model(self, directory: Path) -> GBertForPretraining:
        from medmplm.models.gbert import GBertForPretraining

        model = GBertForPretraining.from_pretrained(directory)
        model.train()
        return model

    def task(self, model_dir: Path) -> GBertPretrainingTask:
        from medmplm.models.gbert import GBertConfig

        return GBertPretrainingTask(masker=CodeMasker.from_config(GBertConfig.from_pretrained(model_dir)))

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """Featurised ``train`` and ``val`` Ray Datasets of the model columns, visits without codes dropped."""
        from medmplm.models.gbert import GBertConfig
        from medmplm.train.data import feature_counts

        data = config.data
        if data.text_cache:
            raise ConfigError("data.text_cache: the gbert family reads no notes; set data.text_cache=false")
        model_config = GBertConfig.from_pretrained(model_dir)
        featurizer = CodeFeaturizer(
            *(CodeVocab(t, model_config.vocabularies[t]) for t in CODE_TYPE_PREFIXES.values()),
            max_codes=model_config.max_codes,
        )
        datasets = {}
        for split in ("train", "val"):
            dataset = read_code_columns(prepared_dir, split).map_batches(
                featurizer, batch_format="numpy", batch_size=data.featurize_batch_size
            )
            if data.materialize:
                dataset = dataset.materialize()
                counts = feature_counts(dataset)
            dataset = dataset.map_batches(
                keep_visits_with_codes, batch_format="numpy", batch_size=data.featurize_batch_size
            )
            if data.materialize:
                # Materialised after the projection too: the training workers then hold every CPU, and a lazy stage
                # would wait for one forever.
                dataset = dataset.materialize()
                kept = dataset.count()
                logger.info(
                    "%s: %d visits featurised, %d without a diagnosis or medication code of the vocabulary dropped; "
                    "codes beyond max_codes: %d diagnosis, %d medication; codes not in the vocabulary: %d diagnosis, "
                    "%d medication",
                    split,
                    counts["visits"],
                    counts["visits"] - kept,
                    counts["diag_truncated"],
                    counts["med_truncated"],
                    counts["diag_unknown"],
                    counts["med_unknown"],
                )
            datasets[split] = dataset
        return datasets


FAMILY = GBertFamily()
