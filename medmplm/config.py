"""Configuration: dataclasses with defaults, loaded from YAML, overridden from the command line.

A run's configuration is a tree of dataclasses (:class:`PretrainConfig` for pretraining). It is built in three layers,
each overriding the one before:

1. the dataclass defaults (the embedded default: ``python -m medmplm.pretrain`` with no arguments);
2. a YAML file (``--config paper`` for a preset shipped in ``medmplm/configs/``, or ``--config FILE``), nested like
   the dataclasses;
3. overrides, ``key=value`` or ``--key value`` with dotted keys (``train.lr=1e-4``, ``--scaling.num_workers 4``),
   values parsed as YAML scalars (``true``, ``1e-4``, ``null``, ``[0.9, 0.98]``).

Every key and value is checked against the dataclass types; a mistake is a :class:`ConfigError` naming the key and
what was expected. The resolved configuration is saved beside every checkpoint and export (``pretrain_config.yaml``)
so a run can be reproduced from its outputs alone.

The machinery (:func:`from_dict`, :func:`to_dict`, :func:`load_config`, :func:`parse_overrides`) is generic, so the
fine-tuning entry point can define its own dataclass tree and reuse it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

CONFIG_FILE_NAME = "pretrain_config.yaml"
# Presets ship inside the package so that `--config tiny` works from any directory, not only the repository root.
PRESETS_DIR = Path(__file__).resolve().parent / "configs"
# The families that read notes through MedM-PLM's text encoder, so that model.text applies to them.
NOTE_READING_FAMILIES = ("medmplm", "contrastive")

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key and what was expected."""


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# --------------------------------------------------------------------------------------------------------------------
# The pretraining configuration tree
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the prepared visit records come from and how they are fed to the workers.

    Attributes:
        prepared_dir: a prepared directory (``python -m medmplm.prepare``). ``None``: generate a synthetic MIMIC-III
            of ``synthetic_patients`` patients under ``data_root`` and prepare it (both reused when already there).
        data_root: where the synthetic raw tables and their prepared directory go.
        synthetic_patients: patients in the generated synthetic MIMIC-III.
        synthetic_seed: seed of the generated synthetic MIMIC-III.
        materialize: featurise (and cache) the datasets once before training, in the object store; off streams them
            from Parquet every epoch, which needs CPUs beyond the training workers' for the Ray Data tasks.
        featurize_batch_size: visits per Ray Data batch when tokenising and mapping codes.
        text_cache: precompute the text encoder's frozen prefix (embeddings + frozen layers) once per note and train on
            the cached hidden states. Needs ``num_frozen_layers`` > 0. The cache is a Ray Data stage written as
            zstd-compressed Parquet shards under ``<run.storage_path>/<run.name>/text_cache/<split>/`` and reused when
            the run resumes. Size: notes x windows x window length x hidden size x dtype bytes before compression
            (paper preset, bfloat16: 0.79 MB per note and window, 786 MB per 1,000 notes and window; full MIMIC-III,
            ~59k notes x 4 windows: ~185 GB; see README "Long notes").
        text_cache_dtype: storage type of the cached hidden states: ``bfloat16`` (half of float32, and float32's
            range), ``float16`` or ``float32``.
    """

    prepared_dir: str | None = None
    data_root: str = "runs/data"
    synthetic_patients: int = 300
    synthetic_seed: int = 0
    materialize: bool = True
    featurize_batch_size: int = 128
    text_cache: bool = False
    text_cache_dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"


@dataclass
class TextSection:
    """How a note longer than one window is read by MedM-PLM's text encoder (MedM-PLM, its text-only and
    concatenated variants, ``clinicalbert``); see :mod:`medmplm.data.features`. ``null`` keeps the model's own
    value: its preset's (``tiny``: 4 windows of 128; ``paper``: 4 of 512), or for an export (``model.init_from``)
    what it was pretrained with, so fine-tuning can read a note differently from pretraining.

    Attributes:
        long_note: ``head`` (the first tokens; the paper), ``head_tail`` (the first quarter and last three quarters
            of one window), or ``windows``.
        window_length: tokens per window, special tokens included (at most the text encoder's positions, 512).
        stride: note tokens between the starts of consecutive windows (``null``: three quarters of a window).
        max_windows: windows read per note under ``windows``; the run log counts the notes longer than that.
        pooling: how the windows' [CLS] states make one note vector: ``mean`` or ``attention``.
    """

    long_note: Literal["head", "head_tail", "windows"] | None = None
    window_length: int | None = None
    stride: int | None = None
    max_windows: int | None = None
    pooling: Literal["mean", "attention"] | None = None

    def model_fields(self) -> dict[str, Any]:
        """The MedM-PLM configuration fields this section sets (``text_long_note``, ...); a ``long_note`` other
        than ``windows`` without ``max_windows`` reads one window."""
        fields = {
            "text_long_note": self.long_note,
            "text_max_length": self.window_length,
            "text_window_stride": self.stride,
            "text_max_windows": self.max_windows,
            "text_window_pooling": self.pooling,
        }
        if self.long_note in ("head", "head_tail") and self.max_windows is None:
            fields["text_max_windows"] = 1
        return {name: value for name, value in fields.items() if value is not None}


@dataclass
class ModelSection:
    """Which model family to pretrain, and how its model is built.

    Attributes:
        family: ``medmplm`` (text + codes, T2C/C2C), ``bert-mlm`` (a BERT text encoder by masked language modelling on
            the notes), ``gbert`` (G-BERT on codes alone), ``medbert`` (Med-BERT on patient code sequences),
            ``mbehrt`` (M-BEHRT on patient histories: time-stamped codes and labs, and notes), ``contrastive``
            (MedM-PLM's text and code encoders by a code-note InfoNCE); see :mod:`medmplm.pretraining`.
        preset: the family's model preset; every family has ``tiny``. MedM-PLM:
            ``tiny`` (seconds per step on a laptop CPU) or ``paper`` (BERT-base text encoder, 10 of 12 layers frozen;
            code encoder 2 x 300; ontology 75 x 4 heads).
        overrides: fields of the family's model configuration to change from the preset, e.g.
            ``model.overrides.text_num_frozen_layers=2``.
        options: the family's pretraining options (masking rates, windows), e.g. ``model.options.whole_word_mask=true``.
        text_checkpoint: a local BERT-family checkpoint directory (e.g. a ``bert-mlm`` export) for the text encoder:
            MedM-PLM's text side, or the model ``bert-mlm`` continues from (none: a fresh BERT with a WordPiece
            tokenizer trained on the training notes).
        tokenizer_dir: a local tokenizer directory to use instead of training one.
        init_from: a ``save_pretrained`` directory of the same family to start from instead of building a fresh model.
        allow_random_frozen: allow freezing text encoder layers that were never pretrained (random features); by
            default a MedM-PLM with frozen text layers needs ``text_checkpoint`` or ``init_from``.
        pretrain_text_first: a MedM-PLM run with neither ``text_checkpoint`` nor ``init_from`` first pretrains a
            ``bert-mlm`` text encoder on the same notes (run ``<name>-text``, same training settings) and starts from
            it; ``false`` builds MedM-PLM directly (then frozen random layers need ``allow_random_frozen``).
        text_stage_epochs: epochs of that ``bert-mlm`` stage (a synthetic discharge summary is about 12 windows of
            128 tokens, so one epoch is about 12 times as many steps as a MedM-PLM epoch).
        text: how MedM-PLM (and the contrastive family, its text encoder) reads a long note (:class:`TextSection`),
            e.g. ``model.text.long_note=head``.
    """

    family: str = "medmplm"
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    text_checkpoint: str | None = None
    tokenizer_dir: str | None = None
    init_from: str | None = None
    allow_random_frozen: bool = False
    pretrain_text_first: bool = True
    text_stage_epochs: int = 2
    text: TextSection = field(default_factory=TextSection)


@dataclass
class TrainSection:
    """Optimisation, validation, early stopping and checkpoint cadence.

    Paper settings (MedM-PLM, preset ``paper``): Adam, lr 5e-4, batch 32, up to 200 epochs with early stopping.
    The default of 10 epochs keeps the laptop quick start to a few minutes.

    Attributes:
        epochs: maximum number of epochs.
        max_steps: stop after this many optimizer steps (``None``: no limit besides ``epochs``).
        global_batch_size: visits per optimizer step over all workers; must equal
            ``micro_batch_size x gradient accumulation x num_workers`` (accumulation is derived from it).
        micro_batch_size: visits per forward/backward on one worker.
        lr: peak learning rate.
        lr_schedule: ``constant``, ``linear`` decay to 0, or ``cosine`` decay to 0, after ``warmup_steps``.
        warmup_steps: linear warm-up steps from 0 to ``lr``.
        weight_decay: AdamW weight decay (0: Adam as in the paper); never applied to biases and LayerNorm weights.
        betas: Adam betas.
        adam_eps: Adam epsilon.
        grad_clip: gradient norm clipping (0: off).
        seed: seeds model-independent randomness (masking, dropout, row order) per rank and step.
        shuffle: shuffle each worker's training rows every epoch, seeded by (seed, epoch, rank).
        shuffle_buffer_size: rows per worker in Ray Data's local shuffle buffer. A buffer as large as a worker's
            shard gives a full permutation each epoch; a smaller one mixes rows within a sliding window of the
            shard, which is sorted by patient. Memory: this many featurised rows per worker (with
            ``data.text_cache`` a row holds text length x hidden size floats: lower it for the paper preset).
        early_stopping_patience: stop after this many epochs without a better validation loss (``None``: never).
        early_stopping_min_delta: an improvement smaller than this does not count.
        checkpoint_every_steps: checkpoint every N optimizer steps, besides each epoch end (``None``: epoch ends only).
        keep_checkpoints: keep the best K checkpoints by validation loss (the latest is always kept too).
        log_every_steps: write step metrics (TensorBoard, MLflow) every N optimizer steps.
        prefetch_batches: micro-batches Ray Data prepares ahead of the training step on each worker (on GPU also
            pinned and copied to the device ahead), so the step never waits for its input.
        compile: ``torch.compile`` the model (DeepSpeed's ``engine.compile()``); pays a compilation at the start.
        gradient_checkpointing: recompute the trainable text layers' activations in the backward instead of keeping
            them (transformers' gradient checkpointing: less memory for long notes, about a third more compute).
    """

    epochs: int = 10
    max_steps: int | None = None
    global_batch_size: int = 32
    micro_batch_size: int = 16
    lr: float = 5e-4
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer_size: int = 8192
    early_stopping_patience: int | None = 5
    early_stopping_min_delta: float = 0.0
    checkpoint_every_steps: int | None = 100
    keep_checkpoints: int = 2
    log_every_steps: int = 5
    prefetch_batches: int = 2
    compile: bool = False
    gradient_checkpointing: bool = False


@dataclass
class DeepSpeedSection:
    """DeepSpeed engine settings.

    Attributes:
        zero_stage: ZeRO stage 0 (plain data parallel), 1 (optimizer state), 2 (+ gradients), 3 (+ parameters).
            Default 0: partitioning saves memory only when the training state is large. For the ``tiny`` model
            (430k trainable parameters, 7 MB of state) ZeRO-2 made 2 CPU workers about 5% slower than stage 0
            (0.96 and 1.01 of torch DDP's samples/s, alternating blocks). ``paper`` and ``cluster_pretrain`` ask for 2.
            A single fp32 worker runs stage 0 whatever is asked (``medmplm.train.engine.for_world_size``).
        precision: ``fp32``, ``bf16`` (GPU; master weights and optimizer state stay fp32), or ``auto``: bf16 on GPUs
            that support it (Ampere and later) with ZeRO stage >= 1, fp32 otherwise.
        backend: collective backend: ``auto`` picks ``nccl`` with GPUs and ``gloo`` on CPU.
    """

    zero_stage: int = 0
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    backend: Literal["auto", "nccl", "gloo"] = "auto"


@dataclass
class ScalingSection:
    """Ray Train workers (one DeepSpeed rank each).

    Attributes:
        num_workers: training workers.
        use_gpu: one (or ``gpus_per_worker``) GPU per worker.
        gpus_per_worker: GPUs reserved per worker when ``use_gpu``.
        cpus_per_worker: CPUs reserved per worker.
        extra_resources: other Ray resources each worker asks for, which steer the autoscaler to a node type
            (``{"accelerator_type:A10G": 0.001}`` for one trial per A10G node, ``{"spot": 0.001}`` for spot nodes;
            see ``cluster/``).
    """

    num_workers: int = 2
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    extra_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSection:
    """Run identity, storage and fault tolerance.

    Attributes:
        name: run name; a rerun with the same name and ``storage_path`` resumes from its latest checkpoint. ``None``:
            a new unique name (``pretrain-<timestamp>-<hash>``).
        storage_path: where checkpoints, the run snapshot, TensorBoard logs and the export go: a local directory, a
            shared file system, or ``s3://`` / ``gs://``. Multi-node runs need shared storage.
        max_failures: worker-group failures to recover from (restart from the latest checkpoint); -1: unlimited.
        export_dir: where the final model is exported (``None``: ``<storage_path>/<name>/export``).
    """

    name: str | None = None
    storage_path: str = "runs"
    max_failures: int = 2
    export_dir: str | None = None


@dataclass
class LoggingSection:
    """Metric sinks (rank 0 only).

    Attributes:
        tensorboard: write TensorBoard event files to ``<storage_path>/<name>/tensorboard``.
        mlflow_tracking_uri: log to MLflow as well (needs ``pip install medmplm[mlflow]``).
        mlflow_experiment: MLflow experiment name.
        progress_bar: a progress bar on the driver; ``null`` (default): when the driver's stdout is a terminal.
        console_interval_s: without a progress bar, at most one progress line per this many seconds (validations
            always print one line).
        verbose: show Ray's, Ray Data's and DeepSpeed's own output, workers' included (``--verbose``).
    """

    tensorboard: bool = True
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "medmplm-pretrain"
    progress_bar: bool | None = None
    console_interval_s: float = 30.0
    verbose: bool = False


@dataclass
class PretrainConfig:
    """Everything ``python -m medmplm.pretrain`` needs; the defaults are the laptop quick start."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=RunSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def validate(self) -> PretrainConfig:
        """Check values that types alone cannot; returns ``self``.

        Raises:
            ConfigError: naming the first offending key.
        """
        train, scaling = self.train, self.scaling
        from medmplm.pretraining import FAMILIES

        _require(self.model.family in FAMILIES, "model.family", f"expected one of {list(FAMILIES)}, got {self.model.family!r}")
        _require(self.model.text_stage_epochs >= 1, "model.text_stage_epochs", "must be >= 1")
        _require(
            self.model.family in NOTE_READING_FAMILIES or not self.model.text.model_fields(),
            "model.text",
            f"the {self.model.family} family does not read notes through MedM-PLM's text encoder; leave it unset",
        )
        _require(self.data.synthetic_patients >= 1, "data.synthetic_patients", "must be >= 1")
        _require(self.data.featurize_batch_size >= 1, "data.featurize_batch_size", "must be >= 1")
        _require(
            self.data.materialize or not self.data.text_cache,
            "data.text_cache",
            "needs data.materialize=true (a streamed cache would be recomputed every epoch)",
        )
        _require(train.epochs >= 1, "train.epochs", "must be >= 1")
        _require(train.max_steps is None or train.max_steps >= 1, "train.max_steps", "must be >= 1 or null")
        _require(train.micro_batch_size >= 1, "train.micro_batch_size", "must be >= 1")
        _require(train.global_batch_size >= 1, "train.global_batch_size", "must be >= 1")
        _require(train.lr > 0, "train.lr", "must be > 0")
        _require(train.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _require(train.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _require(
            len(train.betas) == 2 and all(0 <= b < 1 for b in train.betas),
            "train.betas",
            f"must be two numbers in [0, 1), got {train.betas}",
        )
        _require(train.adam_eps > 0, "train.adam_eps", "must be > 0")
        _require(train.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 turns clipping off)")
        _require(
            train.early_stopping_patience is None or train.early_stopping_patience >= 1,
            "train.early_stopping_patience",
            "must be >= 1 or null",
        )
        _require(
            train.checkpoint_every_steps is None or train.checkpoint_every_steps >= 1,
            "train.checkpoint_every_steps",
            "must be >= 1 or null",
        )
        _require(train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
        _require(train.log_every_steps >= 1, "train.log_every_steps", "must be >= 1")
        _require(train.shuffle_buffer_size >= 1, "train.shuffle_buffer_size", "must be >= 1")
        _require(train.prefetch_batches >= 0, "train.prefetch_batches", "must be >= 0")
        _require(self.deepspeed.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage", "must be 0, 1, 2 or 3")
        _require(
            not (self.deepspeed.backend == "nccl" and not scaling.use_gpu),
            "deepspeed.backend",
            "nccl needs GPUs (scaling.use_gpu=true); use gloo or auto on CPU",
        )
        _require(
            not (self.deepspeed.precision == "bf16" and self.deepspeed.zero_stage == 0),
            "deepspeed.precision",
            "bf16 needs deepspeed.zero_stage >= 1 (its fp32 master weights live in the ZeRO optimizer)",
        )
        _require(scaling.num_workers >= 1, "scaling.num_workers", "must be >= 1")
        _require(scaling.cpus_per_worker > 0, "scaling.cpus_per_worker", "must be > 0")
        _require(scaling.gpus_per_worker > 0, "scaling.gpus_per_worker", "must be > 0")
        _require(
            not {"CPU", "GPU"} & set(scaling.extra_resources) and all(v > 0 for v in scaling.extra_resources.values()),
            "scaling.extra_resources",
            "custom resources with positive amounts; CPUs and GPUs are cpus_per_worker and gpus_per_worker",
        )
        batch_plan(train.global_batch_size, train.micro_batch_size, scaling.num_workers)
        _require(self.run.max_failures >= -1, "run.max_failures", "must be >= -1 (-1: unlimited)")
        _require(bool(self.run.storage_path), "run.storage_path", "must not be empty")
        if self.run.name is not None:
            _require(
                bool(self.run.name) and "/" not in self.run.name and self.run.name not in (".", ".."),
                "run.name",
                f"must be a plain directory name, got {self.run.name!r}",
            )
        return self


@dataclass(frozen=True)
class BatchPlan:
    """How the global batch splits: ``global_batch_size = micro_batch_size x accumulation_steps x world_size``."""

    global_batch_size: int
    micro_batch_size: int
    accumulation_steps: int
    world_size: int


def batch_plan(global_batch_size: int, micro_batch_size: int, world_size: int) -> BatchPlan:
    """The one place the gradient accumulation is derived from the batch sizes and the number of workers.

    Raises:
        ConfigError: when the global batch is not a multiple of ``micro_batch_size x world_size``.
    """
    per_step = micro_batch_size * world_size
    if global_batch_size % per_step != 0:
        raise ConfigError(
            f"train.global_batch_size: {global_batch_size} is not a multiple of train.micro_batch_size "
            f"({micro_batch_size}) x scaling.num_workers ({world_size}) = {per_step}; "
            "gradient accumulation steps are derived as global / (micro x workers)"
        )
    return BatchPlan(global_batch_size, micro_batch_size, global_batch_size // per_step, world_size)


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


# --------------------------------------------------------------------------------------------------------------------
# Generic machinery: dict <-> dataclass, YAML, overrides
# --------------------------------------------------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-serialisable nested dict of a config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested mapping, checking every key and value.

    Missing keys take their defaults; unknown keys and wrongly typed values raise :class:`ConfigError` with the dotted
    key (``prefix`` is prepended to it).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping of keys to values, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {_join(prefix, close[0])!r}?)" if close else ""
        raise ConfigError(f"{_join(prefix, str(key))}: unknown key{hint}; valid keys here: {sorted(fields)}")
    values = {name: _coerce(data[name], hints[name], _join(prefix, name)) for name in fields if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix or '<root>'}: {error}") from error


# Keys under these prefixes name things of their own (a model configuration's fields, a family's options), not
# dataclass fields, so their hyphens are kept.
FREE_FORM_PREFIXES = ("model.overrides.", "model.options.")


def parse_overrides(tokens: Sequence[str], free_form: Sequence[str] = FREE_FORM_PREFIXES) -> dict[str, Any]:
    """Parse ``key=value``, ``--key=value`` and ``--key value`` tokens into ``{dotted key: value}``.

    Values are YAML scalars or flow collections (``1e-4`` -> float, ``null`` -> None, ``[0.9, 0.98]`` -> list).
    Hyphens in keys become underscores (``train.max-steps`` is ``train.max_steps``), except in keys under one of the
    ``free_form`` prefixes. The caller passes the tokens (library code never reads ``sys.argv``).
    """
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        body = token[2:] if token.startswith("--") else token
        if "=" in body:
            key, raw = body.split("=", 1)
        elif token.startswith("--"):
            if index >= len(tokens):
                raise ConfigError(f"{body}: expected a value after {token!r}")
            key, raw = body, tokens[index]
            index += 1
        else:
            raise ConfigError(f"cannot read override {token!r}: expected key=value or --key value")
        key = key.strip()
        if not key.startswith(tuple(free_form)):
            key = key.replace("-", "_")
        if not key or key.startswith(".") or key.endswith(".") or ".." in key:
            raise ConfigError(f"cannot read override {token!r}: the key must be dotted names like train.lr")
        try:
            overrides[key] = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"{key}: cannot parse value {raw!r} as YAML: {error}") from error
    return overrides


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested mapping ``data`` with dotted-key ``overrides`` applied."""
    merged: dict[str, Any] = _deep_copy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, not a section; cannot set {dotted}")
            node = child
        node[parts[-1]] = value
    return merged


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Sequence[str] = (),
) -> T:
    """Defaults, then the YAML file ``path`` (a file, or a preset name, see :func:`find_config_file`), then
    ``overrides`` (a mapping or CLI tokens).

    Validates with the dataclass's ``validate()`` when it has one.
    """
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        data = _merge(data, read_yaml(find_config_file(path)), "")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(list(overrides))
    data = apply_overrides(data, overrides)
    config = from_dict(cls, data)
    validate = getattr(config, "validate", None)
    return validate() if callable(validate) else config


def preset_names() -> list[str]:
    """Names of the presets shipped in ``medmplm/configs/`` (``tiny``, ``paper``, ...)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def find_config_file(name: str | os.PathLike) -> Path:
    """The config file ``--config`` means: an existing file, else the shipped preset of that name (``tiny``,
    ``paper.yaml``, ...).

    Raises:
        ConfigError: naming the argument and the presets when it is neither.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.name == str(name):
        preset = PRESETS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
        if preset.is_file():
            return preset
    raise ConfigError(
        f"config file {str(name)!r} does not exist; pass a YAML file or a preset name ({', '.join(preset_names())})"
    )


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file: a mapping at the top level.

    Raises:
        ConfigError: naming the file when it is missing, unreadable or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of sections at the top, got {_describe(data)}")
    return data


def to_yaml(config: Any) -> str:
    """The config as YAML text, sections in declaration order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (a temporary name, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(to_yaml(config))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``update`` merged into ``base`` section by section (a free-form dict field is replaced by the update's keys
    merged into it, so a YAML ``model.overrides`` adds to rather than wipes the defaults)."""
    merged = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, _join(prefix, str(key)))
        else:
            merged[key] = _deep_copy(value) if isinstance(value, Mapping) else value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against (and, for int -> float, converted to) the type ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {_describe(value)} matches none of {args}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value if value is not None else {}, key)
    if annotation is Any:
        return value
    if value is None:
        raise ConfigError(f"{key}: must not be null; expected {_type_name(annotation)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        item_type = args[0] if args else Any
        return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, value_type, _join(key, str(k))) for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
