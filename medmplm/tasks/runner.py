"""One fine-tuning run, from a prepared directory to a result record.

Library code behind ``python -m medmplm.finetune`` (and the benchmark grid, and Tune sweeps): it expects Ray to be
initialised by its caller and never parses argv.

1. Task examples for every split, from the prepared visits (the training split reduced to ``train_ratio`` of its
   patients first); the label space comes from the whole training split, so every ratio predicts the same codes.
2. Backbones: the pretrained model(s) of ``model.init_from``, ``finetune.init_text`` and ``finetune.init_code``, or
   models built from the prepared directory (``model.preset``) for a run from scratch. A MedM-PLM fixes the tokenizer
   and vocabularies.
3. Torch models train in the shared loop (``medmplm.train``: Ray Train + DeepSpeed, checkpoints, early stopping,
   validation metrics); the ``logreg`` model is fitted in process.
4. The best checkpoint predicts the validation and test splits (Ray Data), the task's metrics are computed, and the
   record goes to ``finetune.results_dir/<run>.parquet``; the visits each split could not use go to
   ``finetune.results_dir/excluded/<run>.parquet``.

A task that reads its own corpus (``ner``, see :func:`medmplm.tasks.base.reads_own_examples`) replaces steps 1 and 2:
it hands over featurised examples, its initial model and its training task; training, prediction and the record are
the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from medmplm.config import ConfigError, to_dict, to_yaml
from medmplm.data.features import VisitFeaturizer
from medmplm.data.manifest import is_synthetic_release
from medmplm.data.splits import subset_train_visits
from medmplm.models import MedMPLMConfig, MedMPLMModel
from medmplm.pretraining.mbehrt import read_visit_table
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.results import SCRATCH, ResultRecord, setting_of, write_result
from medmplm.tasks import build_task, read_visits
from medmplm.tasks.base import ExampleSet, NoExamplesError, OwnExamples, Task, reads_own_examples, task_options
from medmplm.tasks.config import CONFIG_FILE_NAME, FinetuneConfig
from medmplm.tasks.data_source import is_synthetic
from medmplm.tasks.encoders import ModelSpec, build_logistic_regression, model_spec
from medmplm.tasks.featurize import ExampleFeaturizer
from medmplm.tasks.modeling import HeadConfig, build_finetuning_model
from medmplm.tasks.patient import (
    PatientExampleFeaturizer,
    patient_backbone,
    patient_examples,
    patient_featurizer,
    patient_featurizer_key,
    with_patient_histories,
)
from medmplm.tasks.training import FinetuningTask
from medmplm.train import storage
from medmplm.train.task import concatenate_collected

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")
EXCLUDED_DIR = "excluded"
# Examples are keyed by their target admission: one example per target visit and split.
EXAMPLE_ID = "hadm_id"

# Resolved config keys (a dotted key, or a whole section) that are not part of a run's setting (medmplm.results):
# they say where a run goes or how its work is spread, not what it computes. Every other key is part of it, keys added
# later included, so that a new option keeps runs apart rather than averaging different ones together.
NOT_IN_SETTING: dict[str, str] = {
    "train.seed": "runs of one setting differ only in their seed; summaries average over it",
    "run": "name, storage path, retries, export directory: where the run goes",
    "logging": "metric sinks, progress bar, verbosity",
    "scaling": "workers, CPUs, GPUs: how the work is spread (the batch is train.global_batch_size whatever the split)",
    "train.micro_batch_size": "with train.global_batch_size fixed, it trades memory for gradient accumulation steps",
    "deepspeed.zero_stage": "which training state is partitioned over the workers; the update is the same",
    "deepspeed.backend": "how the workers communicate",
    "train.checkpoint_every_steps": "mid-epoch checkpoints serve resumption; the best one is chosen at epoch ends",
    "train.keep_checkpoints": "the best checkpoint is always kept",
    "train.log_every_steps": "how often metrics are written",
    "data.data_root": "these choose generated data, which data.prepared_dir (the directory read) identifies",
    "data.synthetic_patients": "as data.data_root",
    "data.synthetic_seed": "as data.data_root",
    "data.materialize": "fine-tuning always materialises its featurised examples",
    "data.featurize_batch_size": "visits are featurised one at a time into fixed shapes; batching changes no array",
    "finetune.results_dir": "where the record goes",
    "finetune.eval_batch_size": "predictions in eval mode do not depend on the batch they are made in",
}
# Keys only one kind of model reads: the scikit-learn logistic regression has no training loop or head, the torch
# models no logistic-regression solver.
TORCH_ONLY_KEYS = (
    "train",
    "deepspeed",
    "finetune.head_hidden_size",
    "finetune.head_dropout",
    "finetune.score_metric",
    "finetune.score_mode",
)
LOGREG_ONLY_KEYS = ("finetune.logreg_c", "finetune.logreg_max_iter")
PATH_KEYS = (
    "data.prepared_dir",
    "model.init_from",
    "finetune.init_text",
    "finetune.init_code",
    "model.text_checkpoint",
    "model.tokenizer_dir",
    "finetune.ner_corpus",
)


def run_setting(config: FinetuneConfig, prepared_dir: str | None) -> tuple[str, str]:
    """``(setting, setting_json)`` of a fine-tuning run (``medmplm.results.setting_of``).

    The values are the resolved config as ``section.key``, with ``data.prepared_dir`` the directory read and
    ``finetune.task_options`` every option of the task (defaults included, so an option given at its default value
    is the same setting), less :data:`NOT_IN_SETTING` and the keys the model does not read. Local paths are
    normalised (``runs/x/`` is ``runs/x``). ``finetune.ner_corpus`` and ``model.text`` are left out when unset, so
    that settings are those they had before the ``ner`` task and the long-note options came.
    """
    values = {f"{section}.{key}": value for section, fields in to_dict(config).items() for key, value in fields.items()}
    values["data.prepared_dir"] = prepared_dir
    if values["finetune.ner_corpus"] is None:
        del values["finetune.ner_corpus"]
    if not config.model.text.model_fields():
        del values["model.text"]
    values["finetune.task_options"] = task_options(build_task(config.finetune.task, **config.finetune.task_options))
    for key in PATH_KEYS:
        if values.get(key) is not None and "://" not in values[key]:
            values[key] = os.path.normpath(values[key])
    torch_model = model_spec(config.finetune.model).trains_in_loop
    left_out = (*NOT_IN_SETTING, *(LOGREG_ONLY_KEYS if torch_model else TORCH_ONLY_KEYS))
    return setting_of(
        {key: value for key, value in values.items() if not any(key == p or key.startswith(f"{p}.") for p in left_out)}
    )


@dataclass
class Backbones:
    """The models a fine-tuning run's encoder is built from, and where their weights came from.

    Attributes:
        code: the code-side backbone: a MedM-PLM, or a ``gbert`` / ``medbert`` family model; for a patient-level model
            its M-BEHRT (``medmplm.tasks.patient``).
        text: the text-side backbone (a MedM-PLM; text-only models read only its text encoder); for a patient-level
            model the same M-BEHRT.
        vocabularies: the MedM-PLM whose code vocabularies and ``max_codes`` fix the code ids (the code backbone when
            it is a MedM-PLM; a family model's vocabularies are checked equal to it); ``None`` for a patient-level
            model, which featurises with its M-BEHRT's own vocabularies.
        code_init: the export the code side's weights came from; ``None`` when they are freshly initialised.
        text_init: the same for the text side.
    """

    code: torch.nn.Module
    text: MedMPLMModel
    vocabularies: MedMPLMModel | None
    code_init: str | None
    text_init: str | None


def _model_type(directory: str) -> str:
    config = json.loads((Path(directory).expanduser() / "config.json").read_text(encoding="utf-8"))
    return str(config.get("model_type"))


def _family_code_model(
    kind: str, config: FinetuneConfig, prepared_dir: str, reference: MedMPLMModel
) -> torch.nn.Module:
    """The ``gbert`` / ``medbert`` model of the code side: ``finetune.init_code`` loaded, or freshly built from the
    prepared directory with ``model.preset``; its vocabularies must be ``reference``'s."""
    from transformers import AutoModel

    from medmplm.config import ModelSection
    from medmplm.pretraining import get_family

    init_code = config.finetune.init_code
    if init_code is not None:
        found = _model_type(init_code)
        if found != kind:
            raise ConfigError(
                f"finetune.init_code: {init_code} holds a {found!r} model; --model {config.finetune.model} reads a "
                f"{kind!r} export (python -m medmplm.pretrain model.family={kind})"
            )
        model = AutoModel.from_pretrained(init_code, local_files_only=True)
    else:
        built = get_family(kind).build_model(prepared_dir, ModelSection(family=kind, preset=config.model.preset))
        model = built.model.base_model
    for code_type, vocab in reference.vocabs.items():
        codes = list(model.config.vocabularies.get(code_type, []))
        if codes != vocab.codes:
            raise ConfigError(
                f"finetune.init_code: the {code_type} vocabulary of {init_code or 'the fresh ' + kind} ({len(codes)} "
                f"codes) is not that of {prepared_dir} ({len(vocab.codes)} codes): it was pretrained on other data or "
                "with another code_min_count"
            )
    return model


def build_backbones(config: FinetuneConfig, prepared_dir: str) -> Backbones:
    """The backbones of ``--model`` (see :mod:`medmplm.tasks.encoders`): a MedM-PLM from ``model.init_from`` or built
    from the prepared directory with ``model.preset`` (seeded by ``train.seed``); the text side from
    ``finetune.init_text`` (a MedM-PLM export, or for ``clinicalbert`` models a BERT checkpoint such as a ``bert-mlm``
    export); the code side of ``gbert`` / ``medbert`` models from ``finetune.init_code`` or freshly built; a
    patient-level model's M-BEHRT from :func:`~medmplm.tasks.patient.patient_backbone` (no MedM-PLM is built).

    Raises:
        ConfigError: naming the ``finetune.init_*`` key when it holds a kind of model the ``--model`` does not read.
    """
    section, finetune = config.model, config.finetune
    spec = model_spec(finetune.model)
    torch.manual_seed(config.train.seed)
    if spec.patient_level:
        model, init = patient_backbone(config, prepared_dir)
        return Backbones(model, model, None, init if spec.code_backbone else None, init if spec.text_backbone else None)
    note_reading = section.text.model_fields()

    def medmplm_preset(text_checkpoint: str | None) -> MedMPLMModel:
        try:
            preset = MedMPLMConfig.from_preset(section.preset, **{**section.overrides, **note_reading})
        except ValueError as error:
            raise ConfigError(f"model.overrides or model.text: {error}") from error
        return build_medmplm(
            MedMPLMModel, prepared_dir, preset, tokenizer_dir=section.tokenizer_dir, text_checkpoint=text_checkpoint
        )

    def medmplm_export(directory: str) -> MedMPLMModel:
        model = MedMPLMModel.from_pretrained(directory)
        try:
            model.config.set_note_reading(**note_reading)
        except ValueError as error:
            raise ConfigError(f"model.text: {error}") from error
        return model

    if section.init_from is not None:
        reference = medmplm_export(section.init_from)
    else:
        reference = medmplm_preset(section.text_checkpoint)
    text, text_init = reference, section.init_from if spec.text_backbone == "medmplm" else None
    if finetune.init_text is not None:
        found = "medmplm" if _model_type(finetune.init_text) == "medmplm" else "bert"
        if spec.text_backbone != found:
            kinds = {"medmplm": "a MedM-PLM export", "bert": "a bert-mlm export or BERT checkpoint", None: "none"}
            raise ConfigError(
                f"finetune.init_text: {finetune.init_text} is {kinds[found]}; --model {finetune.model} takes "
                f"{kinds[spec.text_backbone]} for its text side"
            )
        if found == "medmplm":
            text = medmplm_export(finetune.init_text)
        else:
            text = medmplm_preset(finetune.init_text)
        text_init = finetune.init_text
    elif spec.text_backbone == "bert":
        # A BERT side never inherits MedM-PLM's pretrained text part: without --init-text it is the preset's BERT
        # (random, or model.text_checkpoint), whatever --init says.
        text = reference if section.init_from is None else medmplm_preset(section.text_checkpoint)
        text_init = text.config.text_pretrained
    code, code_init = reference, section.init_from if spec.code_backbone == "medmplm" else None
    if spec.code_backbone in ("gbert", "medbert"):
        code = _family_code_model(spec.code_backbone, config, prepared_dir, reference)
        code_init = finetune.init_code
    elif finetune.init_code is not None:
        raise ConfigError(
            f"finetune.init_code: --model {finetune.model} reads no G-BERT or Med-BERT; --init-code is for gbert, "
            "medbert and their concatenations"
        )
    return Backbones(code, text, reference, code_init, text_init)


def record_init(spec: ModelSpec, backbones: Backbones) -> str:
    """The result record's ``init``: the export(s) the model's pretrained weights came from, ``scratch`` when none.
    A model whose two sides come from different backbones names both (``code=...; text=...``)."""
    code = (backbones.code_init or SCRATCH) if spec.code_backbone else None
    text = (backbones.text_init or SCRATCH) if spec.text_backbone else None
    if code is not None and text is not None and backbones.code is not backbones.text:
        return SCRATCH if code == text == SCRATCH else f"code={code}; text={text}"
    return code or text or SCRATCH


def example_featurizer(
    task: Task, label_space: list[str], backbones: Backbones
) -> ExampleFeaturizer | PatientExampleFeaturizer:
    """Featuriser of the task's examples: the text backbone's tokenizer, the reference MedM-PLM's vocabularies; a
    patient-level model's own featuriser of patient examples (``medmplm.tasks.patient``)."""
    if backbones.vocabularies is None:
        return patient_featurizer(task, label_space, backbones.code)
    reference, text = backbones.vocabularies, backbones.text
    visits = VisitFeaturizer(
        text.tokenizer,
        reference.diagnosis_vocab,
        reference.medication_vocab,
        text_max_length=text.config.text_max_length,
        max_codes=reference.config.max_codes,
        long_note=text.config.text_long_note,
        max_windows=text.config.text_max_windows,
        stride=text.config.text_window_stride,
    )
    return ExampleFeaturizer(visits, task.max_visits, label_space if task.multilabel else None)


def featurizer_key(task: Task, label_space: Sequence[str], backbones: Backbones) -> str:
    """What a task's featurised examples depend on, hashed: the task and its options, the label space, the
    tokenizer and the code vocabularies, the note length and the code slots. Runs with the same key featurise every
    example identically, whatever their model, train ratio or seed."""
    if backbones.vocabularies is None:
        return patient_featurizer_key(task, label_space, backbones.code)
    reference, text = backbones.vocabularies, backbones.text
    identity = {
        "task": task.name,
        "options": task_options(task),
        "label_space": list(label_space),
        "tokenizer": text.tokenizer.backend_tokenizer.to_str(),
        "vocabularies": {name: vocab.codes for name, vocab in reference.vocabs.items()},
        "text_max_length": text.config.text_max_length,
        "text_long_note": text.config.text_long_note,
        "text_max_windows": text.config.text_max_windows,
        "text_window_stride": text.config.text_window_stride,
        "max_codes": reference.config.max_codes,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _FeaturizeWithIds:
    """The example featuriser, keeping each example's target ``hadm_id`` beside its arrays."""

    def __init__(self, featurizer: ExampleFeaturizer) -> None:
        self.featurizer = featurizer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**self.featurizer(batch), EXAMPLE_ID: batch[EXAMPLE_ID]}


def featurize_all_examples(
    task: Task, prepared_dir: str, backbones: Backbones, batch_size: int
) -> tuple[str, dict[str, list[Any]]]:
    """Every example of every split featurised once with Ray Data (training: the whole split, before any ratio or
    seed-dependent selection), for runs that share them (a Tune sweep's trials, see ``features`` of
    :func:`run_finetune`).

    Returns:
        ``(featurizer_key, {split: [ObjectRef of an Arrow block]})``: the featurised columns plus ``hadm_id``.
    """
    import ray.data

    from medmplm.train.data import keep_row_order

    train_visits = read_visits(prepared_dir, "train")
    label_space = task.label_space(train_visits)
    featurizer = _FeaturizeWithIds(example_featurizer(task, label_space, backbones))
    keep_row_order()
    blocks = {}
    for split in ("train", *EVAL_SPLITS):
        visits = train_visits if split == "train" else read_visits(prepared_dir, split)
        examples = task.build_examples(visits, label_space).examples
        if backbones.vocabularies is None:
            examples = patient_examples(examples, read_visit_table(prepared_dir, split))
        dataset = ray.data.from_arrow(examples).map_batches(featurizer, batch_format="numpy", batch_size=batch_size)
        blocks[split] = dataset.to_arrow_refs()
    return featurizer_key(task, label_space, backbones), blocks


def featurized_rows(featurized: pa.Table, examples: pa.Table, split: str) -> pa.Table:
    """The rows of ``featurized`` (all of a split's examples, featurised) that are ``examples``, matched by
    ``hadm_id``, in the order of ``examples``, without the id column.

    Raises:
        ValueError: when some of ``examples`` are not in ``featurized``.
    """
    index = pc.index_in(examples.column(EXAMPLE_ID), value_set=featurized.column(EXAMPLE_ID))
    if index.null_count:
        raise ValueError(f"{split}: {index.null_count} examples are missing from the shared featurised examples")
    return featurized.take(index).drop_columns([EXAMPLE_ID])


def build_example_sets(
    task: Task, prepared_dir: str, train_ratio: float, seed: int
) -> tuple[list[str], dict[str, ExampleSet]]:
    """The label space and each split's examples (training: the task's training-only selection, such as negative
    subsampling, drawn over the whole training split, then restricted to ``train_ratio`` of the patients).

    Raises:
        NoExamplesError: when a split is left with no example.
    """
    train_visits = read_visits(prepared_dir, "train")
    label_space = task.label_space(train_visits)
    if task.multilabel and not label_space:
        raise ValueError(f"{prepared_dir}: the training split has no {task.name} label codes")
    # Selecting once over the whole split keeps the example sets of the nested patient subsets nested: selecting
    # within each subset would draw other negatives at every ratio.
    selection = task.training_examples(task.build_examples(train_visits, label_space), seed)
    if train_ratio == 1.0:
        sets = {"train": selection}
    else:
        subset = task.build_examples(subset_train_visits(train_visits, train_ratio, seed), label_space)
        sets = {"train": subset.restricted_to(selection)}
    for split in EVAL_SPLITS:
        sets[split] = task.build_examples(read_visits(prepared_dir, split), label_space)
    for split, examples in sets.items():
        logger.info(
            "%s %s: %d examples; excluded visits by reason %s; label codes outside the label space: %d",
            task.name,
            split,
            len(examples),
            examples.exclusion_counts(),
            examples.dropped_label_codes,
        )
        if len(examples) == 0:
            raise NoExamplesError(prepared_dir, split, task.name, examples.exclusion_counts())
    return label_space, sets


def _numpy_columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def featurize_in_process(featurizer: ExampleFeaturizer, examples: pa.Table, batch_size: int) -> dict[str, np.ndarray]:
    """Featurise a whole example table in this process (used by the ``logreg`` model), batch by batch."""
    parts = [
        featurizer(_numpy_columns(examples.slice(start, batch_size)))
        for start in range(0, examples.num_rows, batch_size)
    ]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _run_logistic_regression(
    config: FinetuneConfig,
    task: Task,
    vocabularies: MedMPLMModel,
    featurizer: ExampleFeaturizer,
    sets: dict[str, ExampleSet],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    section = config.finetune
    model = build_logistic_regression(
        vocabularies, task.multilabel, c=section.logreg_c, max_iter=section.logreg_max_iter, seed=config.train.seed
    )
    arrays = {
        split: featurize_in_process(featurizer, sets[split].examples, config.data.featurize_batch_size)
        for split in sets
    }
    model.fit(arrays["train"])
    predictions = {split: (arrays[split]["labels"], model.predict_proba(arrays[split])) for split in EVAL_SPLITS}
    return predictions, {"epochs": 0}


def _predict(
    datasets: dict[str, Any], model_dir: Path, task: Any, batch_size: int, threads: int
) -> dict[str, dict[str, np.ndarray]]:
    """What ``task`` (a training task) collects at validation (``collect``: labels and probabilities, or true and
    predicted tags) of every split in ``datasets``, from the saved model in ``model_dir`` in eval mode, plus the columns
    the task's ``model_inputs`` leaves out (window ids).

    Runs here, in the run's own process, with ``threads`` torch threads (the CPUs the run holds): the model is loaded
    once for every split, and no Ray worker has to start and import torch for it, which was most of a small run's
    evaluation time.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        model = task.load_model(model_dir).eval()
        collected = {}
        for split, dataset in datasets.items():
            parts = []
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=batch_size):
                # torch.tensor copies: Ray Data hands out read-only arrays.
                inputs = task.model_inputs(
                    {key: torch.tensor(value) for key, value in batch.items()}, torch.Generator(), training=False
                )
                with torch.no_grad():
                    outputs = task.collect(model(**inputs), inputs)
                parts.append({**{key: batch[key] for key in batch if key not in inputs}, **outputs})
            collected[split] = concatenate_collected(parts)
        return collected
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_predict(
    config: FinetuneConfig,
    training_task: Any,
    build: Any,
    datasets: dict[str, Any],
    run_name: str,
    progress_bar: bool,
    callbacks: Sequence[Any],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Train in the shared loop from the initial model ``build(directory)`` saves (or the run's stored one, when it
    resumes), then let the best checkpoint predict the validation and test splits of ``datasets`` (Ray Datasets).

    Returns:
        What ``training_task`` collects of each evaluation split, and the run's details (epochs, steps, paths).
    """
    import ray

    from medmplm.train.checkpoint import MODEL_DIR
    from medmplm.train.trainer import fit, initial_model_bundle

    run_dir = storage.join(storage.resolve_storage_path(config.run.storage_path), run_name)
    config_yaml = to_yaml(config)
    storage.write_text(storage.join(run_dir, CONFIG_FILE_NAME), config_yaml)
    bundle, reused = initial_model_bundle(run_dir, build)
    if reused:
        logger.info("run %s exists: resuming with its initial model", run_name)
    started = time.perf_counter()
    outcome = fit(
        training_task,
        {"train": datasets["train"], "val": datasets["val"]},
        ray.put(bundle),
        train=config.train,
        deepspeed=config.deepspeed,
        scaling=config.scaling,
        run=config.run,
        logging=config.logging,
        run_name=run_name,
        config_yaml=config_yaml,
        config_file_name=CONFIG_FILE_NAME,
        progress_bar=progress_bar,
        callbacks=callbacks,
    )
    train_seconds = time.perf_counter() - started
    with outcome.best_checkpoint.as_directory() as directory:
        collected = _predict(
            {split: datasets[split] for split in EVAL_SPLITS},
            Path(directory) / MODEL_DIR,
            training_task,
            config.finetune.eval_batch_size,
            int(config.scaling.cpus_per_worker),
        )
    info = {
        "epochs": int(outcome.best_metrics.get("epoch", 0)),
        "best_step": int(outcome.best_metrics.get("global_step", 0)),
        "steps_per_epoch": outcome.steps_per_epoch,
        "epochs_run": int(outcome.latest_metrics.get("epoch", 0)),
        # Wall time of the whole training run (workers' start and validations included).
        "train_seconds": train_seconds,
        "run_dir": run_dir,
        "best_checkpoint": outcome.best_checkpoint.path,
    }
    return collected, info


def _run_torch(
    config: FinetuneConfig,
    task: Task,
    label_space: list[str],
    backbones: Backbones,
    featurizer: ExampleFeaturizer,
    sets: dict[str, ExampleSet],
    run_name: str,
    progress_bar: bool,
    featurized: dict[str, list[Any]] | None,
    callbacks: Sequence[Any],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    import ray
    import ray.data

    from medmplm.train.data import keep_row_order

    section = config.finetune
    head = HeadConfig(
        num_labels=len(label_space) if task.multilabel else 1,
        has_history=task.max_visits > 1,
        target_modalities=frozenset(task.target_modalities),
        hidden_size=section.head_hidden_size,
        dropout=section.head_dropout,
    )

    def build(directory: Path) -> None:
        torch.manual_seed(config.train.seed)
        build_finetuning_model(section.model, head, backbones.code, backbones.text).save_pretrained(directory)

    keep_row_order()
    if featurized is not None:
        datasets = {
            split: ray.data.from_arrow(
                featurized_rows(pa.concat_tables(ray.get(featurized[split])), sets[split].examples, split)
            )
            for split in sets
        }
    else:
        datasets = {
            split: ray.data.from_arrow(sets[split].examples)
            .map_batches(featurizer, batch_format="numpy", batch_size=config.data.featurize_batch_size)
            .materialize()
            for split in sets
        }
    training_task = FinetuningTask(
        task=task, label_space=list(label_space), score_metric=section.score_metric, score_mode=section.score_mode
    )
    collected, info = _train_and_predict(config, training_task, build, datasets, run_name, progress_bar, callbacks)
    return {split: (collected[split]["labels"], collected[split]["scores"]) for split in EVAL_SPLITS}, info


def _arrow_columns(columns: dict[str, np.ndarray]) -> pa.Table:
    """Featurised columns as an Arrow table Ray Data reads back as the same arrays (2-D columns as tensors)."""
    from ray.data.extensions import ArrowTensorArray

    return pa.table(
        {name: ArrowTensorArray.from_numpy(value) if value.ndim > 1 else value for name, value in columns.items()}
    )


def _run_own_examples(
    config: FinetuneConfig,
    task: Any,
    prepared_dir: str | None,
    run_name: str,
    progress_bar: bool,
    callbacks: Sequence[Any],
) -> ResultRecord:
    """Fine-tune and evaluate a task's own model on the examples it featurises (:class:`OwnExamples`): a task that
    reads its own corpus (``ner``), or a visit task's own models (``disease10``'s MEDFuse, which read the prepared
    ``prepared_dir``); write its result record."""
    import ray.data

    from medmplm.train.data import keep_row_order

    section = config.finetune
    spec = model_spec(section.model)
    own: OwnExamples = task.own_examples(config)
    keep_row_order()
    datasets = {split: ray.data.from_arrow(_arrow_columns(columns)) for split, columns in own.featurized.items()}
    collected, info = _train_and_predict(
        config, own.training_task, own.build_model, datasets, run_name, progress_bar, callbacks
    )
    visit_data = prepared_dir if callable(getattr(task, "build_examples", None)) else None
    setting, setting_json = run_setting(config, visit_data)
    record = ResultRecord(
        run_id=run_name,
        task=task.name,
        model=section.model,
        init=own.init or SCRATCH,
        train_ratio=section.train_ratio,
        seed=config.train.seed,
        setting=setting,
        setting_json=setting_json,
        synthetic_data=(
            is_synthetic(visit_data)
            if visit_data is not None
            else is_synthetic_release(Path(section.ner_corpus).expanduser())
        ),
        lr=config.train.lr,
        epochs=info.pop("epochs"),
        num_train=own.num_examples["train"],
        metrics={split: own.training_task.evaluate(collected[split]) for split in EVAL_SPLITS},
        num_examples={split: own.num_examples[split] for split in EVAL_SPLITS},
        details={
            **info,
            "global_batch_size": config.train.global_batch_size,
            "max_epochs": config.train.epochs,
            "task_options": task_options(task),
            "text_backbone": spec.text_backbone,
            "text_init": own.init,
            "data": own.data,
            **own.details,
        },
    )
    location = write_result(section.results_dir, record)
    logger.info("result record written to %s", location)
    return record


def run_finetune(
    config: FinetuneConfig,
    prepared_dir: str | None,
    run_name: str,
    progress_bar: bool = False,
    features: Mapping[str, dict[str, list[Any]]] | None = None,
    callbacks: Sequence[Any] = (),
) -> ResultRecord:
    """Fine-tune and evaluate one (task, model, init, train ratio, seed); write and return its result record.

    ``prepared_dir`` is not read by a task that reads its own corpus (``ner``: ``finetune.ner_corpus``).

    Args:
        features: examples featurised once for many runs (:func:`featurize_all_examples`), by featurizer key; a run
            whose key is there reads its rows from them instead of featurising its own.
        callbacks: Ray Train callbacks of the training run (torch models).
    """
    section = config.finetune
    spec = model_spec(section.model)
    task = build_task(section.task, **section.task_options)
    # A task's own models (ner's, disease10's MEDFuse) train on its own examples; disease10 also serves visit models.
    if reads_own_examples(task) and spec.task == task.name:
        return _run_own_examples(config, task, prepared_dir, run_name, progress_bar, callbacks)
    label_space, sets = build_example_sets(task, prepared_dir, section.train_ratio, config.train.seed)
    backbones = build_backbones(config, prepared_dir)
    featurizer = example_featurizer(task, label_space, backbones)
    if spec.patient_level:
        sets = with_patient_histories(sets, prepared_dir, task, featurizer.builder)
    if spec.build is None:
        predictions, info = _run_logistic_regression(config, task, backbones.vocabularies, featurizer, sets)
    else:
        featurized = (features or {}).get(featurizer_key(task, label_space, backbones))
        predictions, info = _run_torch(
            config, task, label_space, backbones, featurizer, sets, run_name, progress_bar, featurized, callbacks
        )

    metrics = {
        split: task.metrics(labels.astype(np.int64), scores, label_space)
        for split, (labels, scores) in predictions.items()
    }
    setting, setting_json = run_setting(config, prepared_dir)
    record = ResultRecord(
        run_id=run_name,
        task=task.name,
        model=section.model,
        init=record_init(spec, backbones),
        train_ratio=section.train_ratio,
        seed=config.train.seed,
        setting=setting,
        setting_json=setting_json,
        synthetic_data=is_synthetic(prepared_dir),
        lr=config.train.lr if spec.build is not None else 0.0,
        epochs=info.pop("epochs"),
        num_train=len(sets["train"]),
        metrics=metrics,
        num_examples={split: len(sets[split]) for split in EVAL_SPLITS},
        details={
            **info,
            "global_batch_size": config.train.global_batch_size,
            "max_epochs": config.train.epochs,
            "task_options": task_options(task),
            "num_labels": len(label_space),
            "preset": config.model.preset if config.model.init_from is None else None,
            "vocabularies_from": config.model.init_from or "prepared",
            "code_backbone": spec.code_backbone,
            "code_init": backbones.code_init if spec.code_backbone else None,
            "text_backbone": spec.text_backbone,
            "text_init": backbones.text_init if spec.text_backbone else None,
            "text_pretrained": backbones.text.config.text_pretrained if spec.text_backbone else None,
            "text_reading": note_reading_record(backbones.text.config) if spec.text_backbone else None,
            "prepared_dir": prepared_dir,
            "exclusions": {split: s.exclusion_counts() for split, s in sets.items()},
            "dropped_label_codes": {split: s.dropped_label_codes for split, s in sets.items()},
        },
    )
    location = write_result(section.results_dir, record)
    _write_exclusions(storage.join(section.results_dir, EXCLUDED_DIR, f"{run_name}.parquet"), sets)
    logger.info("result record written to %s", location)
    return record


def note_reading_record(config: MedMPLMConfig) -> dict[str, Any]:
    """How the model read each note, for its result record."""
    return {
        "long_note": config.text_long_note,
        "window_length": config.text_max_length,
        "max_windows": config.text_max_windows,
        "stride": config.text_window_stride,
        "pooling": config.text_window_pooling,
    }


def _write_exclusions(location: str, sets: dict[str, ExampleSet]) -> None:
    tables = [
        s.excluded.append_column("split", pa.array([split] * s.excluded.num_rows, pa.string()))
        for split, s in sets.items()
    ]
    storage.write_parquet(pa.concat_tables(tables), location)
