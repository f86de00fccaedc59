"""MEDFuse (arXiv 2407.12309) fine-tuned on ``disease10``: its examples, model and training task for the runner.

A MEDFuse model reads what the generic visit featuriser does not (lab tokens, note vectors), so ``disease10`` hands
the runner its own featurised examples for these models (``Disease10.own_examples``; the runner trains, predicts and
records them as any other run). The examples themselves are ``disease10``'s (``build_examples``), so MEDFuse and the
visit models on ``disease10`` are scored on the same admissions.

Models (``--model``), all MEDFuse with one change each, for the paper's ablations:

===========================  ==============================================================================
``medfuse``                  labs + notes, disentangled fusion, InfoNCE and independence losses
``medfuse-labs``             labs only (shared + specific lab parts, fusion transformer, independence loss)
``medfuse-notes``            notes only
``medfuse-concat``           the lab and note vectors concatenated into the classifier (no fusion, no losses)
``medfuse-no-infonce``       ``medfuse`` without the InfoNCE loss (weight 0)
``medfuse-no-independence``  ``medfuse`` without the independence loss (weight 0)
===========================  ==============================================================================

Inputs (where they come from):

* the lab encoder: ``--init-code``, a ``medfuse-lab`` pretraining export (its lab items, standardisation and
  weights); none: a fresh one of the ``medfuse-lab`` preset ``model.preset``, its items and standardisation fitted on
  the training split;
* the language model: ``--init-text``, a local Hugging Face checkpoint directory (model and tokenizer; an encoder
  or a decoder, e.g. a ``bert-mlm`` export), required when the model reads notes; nothing is downloaded
  (``local_files_only``). ``model.overrides.note_pooling`` is ``mean`` (default) or ``last`` (the last token: use it
  for decoders); a decoder's tokenizer without a padding token pads with its end-of-sequence token;
* ``model.overrides`` set any other :class:`~medmplm.models.medfuse.MedFuseConfig` field (``independence: club``,
  ``loss_weights``, ``note_max_length``, ``note_finetuning``, ...) over the preset (:data:`PRESETS`) and the model's
  variant; ``model.overrides.lab_encoder`` (a mapping) changes a fresh lab encoder's preset.

Note vectors: with the language model frozen (``note_finetuning: frozen``, the default), each note is embedded once
by a Ray Data stage (:func:`cache_note_embeddings`, every split in one pass) and cached as zstd Parquet under
``<run.storage_path>/note_embeddings/<key>/``; the key hashes the language model's files, the pooling, the
note length and the prepared directory's manifest, so every run of a sweep (its runs share ``run.storage_path``)
reuses the first one's vectors. Fine-tuned (``last_layers``, or ``lora`` with ``pip install 'medmplm[lora]'``), the
language model is part of the MEDFuse model and the examples carry the notes' token ids (``note_max_length``). Note
text is never logged: only counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from medmplm.config import ConfigError
from medmplm.tasks.base import has_note

logger = logging.getLogger(__name__)

# --model name -> what its configuration changes from MEDFuse's.
VARIANTS: dict[str, dict[str, Any]] = {
    "medfuse": {},
    "medfuse-labs": {"modalities": ["labs"]},
    "medfuse-notes": {"modalities": ["notes"]},
    "medfuse-concat": {"fusion": "concat"},
    "medfuse-no-infonce": {"loss_weights": {"infonce": 0.0}},
    "medfuse-no-independence": {"loss_weights": {"independence": 0.0}},
}
# model.preset -> the fusion's and classifier's shape (the lab encoder: the medfuse-lab preset of the same name).
# The paper gives no sizes: ours.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "fusion_size": 32,
        "fusion_layers": 1,
        "fusion_heads": 2,
        "fusion_intermediate_size": 64,
        "classifier_hidden_size": 32,
        "note_max_length": 128,
    },
    "base": {
        "fusion_size": 128,
        "fusion_layers": 2,
        "fusion_heads": 4,
        "fusion_intermediate_size": 256,
        "classifier_hidden_size": 128,
        "note_max_length": 512,
    },
}
NOTE_CACHE_DIR = "note_embeddings"
NOTE_CACHE_MARKER = "_cache_complete.json"
# Model inputs a featurised example may carry.
MODEL_INPUTS = (
    "lab_values",
    "lab_observed",
    "has_note",
    "note_embedding",
    "note_input_ids",
    "note_attention_mask",
    "labels",
)


def load_language_model(directory: str) -> tuple[Any, Any]:
    """``(base model, tokenizer)`` of a local checkpoint directory, never from a hub; a tokenizer without a padding
    token pads with its end-of-sequence token (decoders).

    Raises:
        ConfigError: naming ``finetune.init_text`` when the directory is not a model with a tokenizer.
    """
    from transformers import AutoModel, AutoTokenizer

    path = Path(directory).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"finetune.init_text: {directory} has no config.json; expected a local language model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"finetune.init_text: {directory} is not a loadable model with its tokenizer: {error}"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"finetune.init_text: the tokenizer of {directory} has neither a padding nor an end token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def language_model_identity(directory: str) -> dict[str, Any]:
    """What a language model directory's vectors depend on: its ``config.json`` and every other file's name, size and
    modification time (weights are too large to hash at every run)."""
    path = Path(directory).expanduser().resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != "config.json")
    return {
        "path": str(path),
        "config": json.loads((path / "config.json").read_text(encoding="utf-8")),
        "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
    }


class NoteEmbedder:
    """Ray Data actor stage: ``hadm_id``, ``note_text`` -> ``hadm_id``, ``note_embedding`` (one pooled vector per note,
    a fixed-size list of float32). Reads notes with text only (the stage before filters them).

    Args:
        directory: the language model's checkpoint directory.
        pooling: ``mean`` or ``last``.
        max_length: tokens read per note (its head).
    """

    def __init__(self, directory: str, pooling: str, max_length: int) -> None:
        self.model, self.tokenizer = load_language_model(directory)
        self.model.eval()
        self.pooling = pooling
        self.max_length = max_length

    def __call__(self, batch: pa.Table) -> pa.Table:
        from medmplm.models.medfuse.modeling_medfuse import pool_hidden_states

        encoded = self.tokenizer(
            batch.column("note_text").to_pylist(),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            states = self.model(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
            ).last_hidden_state
            vectors = pool_hidden_states(states, encoded["attention_mask"], self.pooling).float().numpy()
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return pa.table(
            {
                "hadm_id": batch.column("hadm_id"),
                "note_embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            }
        )


def _notes_with_text(batch: pa.Table) -> pa.Table:
    keep = pa.array([has_note(text) for text in batch.column("note_text").to_pylist()], pa.bool_())
    return batch.filter(keep)


def cache_note_embeddings(
    prepared_dir: str, directory: str, pooling: str, max_length: int, location: str, batch_size: int
) -> pa.Table:
    """``hadm_id``, ``note_embedding`` of every note of a prepared directory (all splits: one pass, one language
    model loaded), computed once by :class:`NoteEmbedder` and cached at ``location`` (a local path or URI).

    Each computation writes its shards into a directory of its own under ``location``, then the marker
    (:data:`NOTE_CACHE_MARKER`, naming that directory and its rows) last: a cache cut short is never read, and two
    runs computing the same cache at once never write into each other's files. Needs Ray.
    """
    import pyarrow.dataset as ds
    import ray.data

    from medmplm.data.schema import SPLITS, VISITS_DIR
    from medmplm.train import storage

    marker = storage.join(location, NOTE_CACHE_MARKER)
    if not storage.exists(marker):
        attempt = f"part-{secrets.token_hex(4)}"
        splits = [storage.join(prepared_dir, VISITS_DIR, split) for split in SPLITS]
        visits = ray.data.read_parquet(splits, columns=["hadm_id", "note_text"])
        embedded = visits.map_batches(_notes_with_text, batch_format="pyarrow", num_cpus=0).map_batches(
            NoteEmbedder,
            fn_constructor_kwargs={"directory": directory, "pooling": pooling, "max_length": max_length},
            batch_format="pyarrow",
            batch_size=batch_size,
            concurrency=1,
        )
        embedded.write_parquet(storage.join(location, attempt), compression="zstd")
        rows = ray.data.read_parquet(storage.join(location, attempt)).count()
        storage.write_text(marker, json.dumps({"attempt": attempt, "rows": rows}, indent=1))
        logger.info("%d notes embedded into %s", rows, location)
    attempt = json.loads(storage.read_text(marker))["attempt"]
    return ds.dataset(storage.join(location, attempt), format="parquet").to_table()


def note_cache_location(config: Any, prepared_dir: str, medfuse: Any) -> str:
    """Where the prepared directory's note vectors are cached for this language model, pooling and note length."""
    from medmplm.data.schema import MANIFEST_FILE
    from medmplm.train import storage

    identity = {
        "language_model": language_model_identity(config.finetune.init_text),
        "pooling": medfuse.note_pooling,
        "max_length": medfuse.note_max_length,
        "manifest": storage.read_text(storage.join(prepared_dir, MANIFEST_FILE)),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    root = storage.resolve_storage_path(config.run.storage_path)
    return storage.join(root, NOTE_CACHE_DIR, key)


@dataclass
class MedFuseStart:
    """What a MEDFuse fine-tuning run starts from (:func:`build_medfuse_config`).

    Attributes:
        config: the ``MedFuseConfig`` of ``--model`` (preset, variant, overrides).
        lab_model: the lab model its lab encoder starts from (a ``medfuse-lab`` export, or fresh with its items and
            standardisation fitted on the training split); ``None`` when no labs are read.
        lab_init: that export (``None``: fresh, or no labs read).
        language_model, tokenizer: the language model of ``finetune.init_text`` (``None`` when no notes are read).
    """

    config: Any
    lab_model: Any
    lab_init: str | None
    language_model: Any = None
    tokenizer: Any = None


def build_medfuse_config(config: Any, prepared_dir: str, label_space: list[str]) -> MedFuseStart:
    """The MEDFuse configuration of ``--model`` and the models it starts from (:class:`MedFuseStart`).

    Raises:
        ConfigError: naming the ``model.*`` or ``finetune.*`` key that is wrong.
    """
    from huggingface_hub.errors import StrictDataclassError

    from medmplm.config import ModelSection
    from medmplm.models.medfuse import MedFuseConfig, MedFuseLabForMaskedModeling
    from medmplm.pretraining.medfuse_lab import FAMILY as LAB_FAMILY

    section, finetune = config.model, config.finetune
    if section.init_from is not None:
        raise ConfigError(
            "model.init_from: MEDFuse starts from finetune.init_code (a medfuse-lab export) and finetune.init_text "
            "(a language model), not from a MedM-PLM export"
        )
    if section.preset not in PRESETS:
        raise ConfigError(f"model.preset: MEDFuse has presets {sorted(PRESETS)}, got {section.preset!r}")
    overrides = dict(section.overrides)
    lab_overrides = overrides.pop("lab_encoder", {})
    values = {**PRESETS[section.preset], **VARIANTS[finetune.model]}
    values["loss_weights"] = {**values.get("loss_weights", {}), **overrides.pop("loss_weights", {})}
    values.update(overrides)
    unknown = sorted(set(values) - set(MedFuseConfig.__annotations__))
    if unknown:
        raise ConfigError(f"model.overrides.{unknown[0]}: not a MEDFuse configuration field")
    modalities = values.get("modalities", ["labs", "notes"])
    reads_notes = "notes" in modalities
    if reads_notes and finetune.init_text is None:
        raise ConfigError(
            f"finetune.init_text: --model {finetune.model} reads notes through a language model; give its local "
            "checkpoint directory (--init-text DIR, e.g. a bert-mlm export)"
        )
    lab_model = None
    if "labs" not in modalities:
        for key, value in (("finetune.init_code", finetune.init_code), ("model.overrides.lab_encoder", lab_overrides)):
            if value:
                raise ConfigError(f"{key}: --model {finetune.model} reads no lab tests")
    elif finetune.init_code is not None:
        if lab_overrides:
            raise ConfigError(
                "model.overrides.lab_encoder: the lab encoder of finetune.init_code keeps its configuration"
            )
        found = json.loads((Path(finetune.init_code).expanduser() / "config.json").read_text(encoding="utf-8"))
        if found.get("model_type") != "medfuse-lab":
            raise ConfigError(
                f"finetune.init_code: {finetune.init_code} holds a {found.get('model_type')!r} model; MEDFuse reads a "
                "medfuse-lab export (python -m medmplm.pretrain model.family=medfuse-lab)"
            )
        lab_model = MedFuseLabForMaskedModeling.from_pretrained(finetune.init_code)
    else:
        built = LAB_FAMILY.build_model(
            prepared_dir, ModelSection(family="medfuse-lab", preset=section.preset, overrides=lab_overrides)
        )
        lab_model = built.model
    language_model = tokenizer = None
    if reads_notes:
        language_model, tokenizer = load_language_model(finetune.init_text)
        values["note_embedding_size"] = language_model.config.hidden_size
        if values.get("note_finetuning", "frozen") != "frozen":
            values["note_encoder"] = language_model.config.to_dict()
    try:
        medfuse = MedFuseConfig(
            lab_encoder=lab_model.config.to_dict() if lab_model is not None else {},
            num_labels=len(label_space),
            label_names=list(label_space),
            **values,
        )
    except (TypeError, ValueError, StrictDataclassError) as error:
        raise ConfigError(f"model.overrides: {error}") from error
    return MedFuseStart(medfuse, lab_model, finetune.init_code, language_model, tokenizer)


def _label_matrix(label_codes: list[list[str]], label_space: list[str]) -> np.ndarray:
    from sklearn.preprocessing import MultiLabelBinarizer

    return MultiLabelBinarizer(classes=label_space).fit_transform(label_codes).astype(np.float32)


def featurize_split(
    examples: pa.Table,
    split: str,
    prepared_dir: str,
    medfuse: Any,
    label_space: list[str],
    lab_featurizer: Any,
    notes: pa.Table | None,
    tokenizer: Any,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """One split's MEDFuse inputs and labels for ``examples`` (``disease10`` examples: one visit each), in their order,
    and counts for the run log.

    Args:
        notes: the cached note vectors (``hadm_id``, ``note_embedding``) when the language model is frozen.
        tokenizer: the language model's tokenizer when it is fine-tuned.

    Raises:
        ValueError: naming the split and admission when an example's visit or note vector is missing.
    """
    from medmplm.pretraining.medfuse_lab import read_lab_split

    hadm_ids = examples.column("hadm_id")
    out: dict[str, np.ndarray] = {"labels": _label_matrix(examples.column("label_codes").to_pylist(), label_space)}
    counts: dict[str, int] = {}
    if "labs" in medfuse.modalities:
        labs = read_lab_split(prepared_dir, split)
        index = pc.index_in(hadm_ids, value_set=labs.column("hadm_id"))
        if index.null_count:
            missing = hadm_ids.filter(pc.is_null(index))[0].as_py()
            raise ValueError(f"{prepared_dir}: split {split} has no visit hadm_id {missing} of a disease10 example")
        features = lab_featurizer(labs.take(index))
        out["lab_values"], out["lab_observed"] = features["lab_values"], features["lab_observed"]
        counts["without_lab_items"] = int((features["lab_items_observed"] == 0).sum())
        counts["lab_events_other_items"] = int(features["lab_events_other_items"].sum())
        counts["lab_events_non_numeric"] = int(features["lab_events_non_numeric"].sum())
    if "notes" in medfuse.modalities:
        texts = [visit_notes[-1] for visit_notes in examples.column("note_text").to_pylist()]
        with_note = np.array([has_note(text) for text in texts], dtype=bool)
        out["has_note"] = with_note.astype(np.int64)
        counts["without_note"] = int((~with_note).sum())
        if notes is not None:
            index = pc.index_in(hadm_ids, value_set=notes.column("hadm_id")).to_numpy(zero_copy_only=False)
            lost = with_note & np.isnan(index.astype(np.float64))
            if lost.any():
                raise ValueError(
                    f"split {split}: the note vector cache has no vector for hadm_id {hadm_ids[int(np.argmax(lost))]}; "
                    "remove the cache directory to recompute it"
                )
            column = notes.column("note_embedding").combine_chunks()
            vectors = column.values.to_numpy().reshape(len(column), -1)
            embedding = np.zeros((len(texts), medfuse.note_embedding_size), dtype=np.float32)
            embedding[with_note] = vectors[index[with_note].astype(np.int64)]
            out["note_embedding"] = embedding
        else:
            encoded = tokenizer(
                [text if has else "" for text, has in zip(texts, with_note)],
                padding="max_length",
                truncation=True,
                max_length=medfuse.note_max_length,
                return_tensors="np",
            )
            out["note_input_ids"] = encoded["input_ids"].astype(np.int64)
            out["note_attention_mask"] = encoded["attention_mask"].astype(np.int64)
    return out, counts


@dataclass
class MedFuseFinetuningTask:
    """MEDFuse on ``disease10`` in the shared loop (``medmplm.train.task.TrainingTask``, with ``collect`` and
    ``evaluate``).

    Attributes:
        task: the ``disease10`` task (metrics).
        label_space: the label groups, in output order.
        score_metric, score_mode: what ranks checkpoints.
    """

    task: Any
    label_space: list[str] = field(default_factory=list)
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    @property
    def name(self) -> str:
        return self.task.name

    def load_model(self, directory: Path) -> Any:
        """The classifier saved in ``directory``, in training mode."""
        from medmplm.models.medfuse import MedFuseForMultiLabelClassification

        model = MedFuseForMultiLabelClassification.from_pretrained(directory)
        model.train()
        return model

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """The featurised batch's model inputs (no randomness)."""
        return {key: value for key, value in batch.items() if key in MODEL_INPUTS}

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each loss term, weighted by examples."""
        size = torch.tensor(float(inputs["labels"].shape[0]))
        return {f"loss_{name}": (value.detach().float() * size, size) for name, value in output.losses.items()}

    def collect(self, output: Any, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Labels and predicted probabilities of one validation batch."""
        return {
            "labels": inputs["labels"].detach().float().cpu().numpy(),
            "scores": torch.sigmoid(output.logits.detach().float()).cpu().numpy(),
        }

    def evaluate(self, collected: dict[str, np.ndarray]) -> dict[str, Any]:
        """The task's metrics over a whole validation pass."""
        return self.task.metrics(collected["labels"].astype(np.int64), collected["scores"], self.label_space)


def medfuse_examples(task: Any, config: Any) -> Any:
    """``disease10``'s examples featurised for the MEDFuse model ``config.finetune.model``, with its initial model
    and training task (:class:`~medmplm.tasks.base.OwnExamples`). Needs Ray (the note vector cache).

    Raises:
        ConfigError: naming the key that is wrong (see :func:`build_medfuse_config`).
        NoExamplesError: when a split has no example.
    """
    from medmplm.models.medfuse import MedFuseForMultiLabelClassification
    from medmplm.pretraining.medfuse_lab import LabFeaturizer
    from medmplm.results import SCRATCH
    from medmplm.tasks.base import OwnExamples
    from medmplm.tasks.runner import build_example_sets

    prepared_dir = config.data.prepared_dir
    finetune = config.finetune
    torch.manual_seed(config.train.seed)
    label_space, sets = build_example_sets(task, prepared_dir, finetune.train_ratio, config.train.seed)
    start = build_medfuse_config(config, prepared_dir, label_space)
    medfuse, tokenizer = start.config, start.tokenizer
    reads_notes = "notes" in medfuse.modalities
    lab_featurizer = LabFeaturizer(medfuse.lab_config) if start.lab_model is not None else None
    notes = None
    if reads_notes and medfuse.note_finetuning == "frozen":
        notes = cache_note_embeddings(
            prepared_dir,
            finetune.init_text,
            medfuse.note_pooling,
            medfuse.note_max_length,
            note_cache_location(config, prepared_dir, medfuse),
            finetune.eval_batch_size,
        )
    featurized, counts = {}, {}
    for split, examples in sets.items():
        featurized[split], counts[split] = featurize_split(
            examples.examples, split, prepared_dir, medfuse, label_space, lab_featurizer, notes, tokenizer
        )
        logger.info("%s %s (MEDFuse inputs): %s", task.name, split, counts[split])

    def build_model(directory: Path) -> None:
        torch.manual_seed(config.train.seed)
        fine_tuned = start.language_model if medfuse.note_finetuning != "frozen" else None
        model = MedFuseForMultiLabelClassification(medfuse, language_model=fine_tuned)
        if model.medfuse.lab_encoder is not None:
            model.medfuse.lab_encoder.load_state_dict(start.lab_model.medfuse_lab.state_dict())
        model.save_pretrained(directory)
        if fine_tuned is not None:
            tokenizer.save_pretrained(directory)

    lab_init = start.lab_init
    text_init = finetune.init_text if reads_notes else None
    sides = ([("code", lab_init or SCRATCH)] if start.lab_model is not None else []) + (
        [("text", text_init)] if reads_notes else []
    )
    return OwnExamples(
        featurized=featurized,
        num_examples={split: len(examples) for split, examples in sets.items()},
        training_task=MedFuseFinetuningTask(
            task=task, label_space=list(label_space), score_metric=finetune.score_metric, score_mode=finetune.score_mode
        ),
        build_model=build_model,
        # As the runner records a model of two backbones: each side's export, or one side's alone.
        init=sides[0][1] if len(sides) == 1 else "; ".join(f"{side}={init}" for side, init in sides),
        data=prepared_dir,
        details={
            "num_labels": len(label_space),
            "label_space": list(label_space),
            "exclusions": {split: s.exclusion_counts() for split, s in sets.items()},
            "dropped_label_codes": {split: s.dropped_label_codes for split, s in sets.items()},
            "medfuse_inputs": counts,
            "modalities": list(medfuse.modalities),
            "fusion": medfuse.fusion,
            "independence": medfuse.independence,
            "loss_weights": dict(medfuse.loss_weights),
            "note_pooling": medfuse.note_pooling if reads_notes else None,
            "note_finetuning": medfuse.note_finetuning if reads_notes else None,
            "note_max_length": medfuse.note_max_length if reads_notes else None,
            "code_backbone": "medfuse-lab" if start.lab_model is not None else None,
            "code_init": lab_init,
            "text_backbone": "language-model" if reads_notes else None,
            "text_init": text_init,
            "preset": config.model.preset,
            "prepared_dir": prepared_dir,
        },
    )
