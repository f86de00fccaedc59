"""Sweep configuration: the fine-tuning grid of the paper's Table III as one YAML file.

Same machinery as the run configs (``medmplm.config``): dataclass defaults, then ``--config FILE``, then dotted
``key=value`` overrides. The resolved config is saved in the sweep directory (``sweep_config.yaml``), which is what
``--resume`` reads back.

Learning rates are a grid per task, centred on the paper's values (5e-5 medication recommendation, 2e-5
readmission, 1e-5 ICD coding, 3e-5 NER; 5e-5 next-visit diagnosis categories, which the paper does not have) with a
factor of two either side.

NER (the auxiliary check) is a task of its own data and models: ``tasks: [ner]`` with ``ner_corpus`` (an
i2b2-2010-format corpus) and ``models`` among ``bilstm-crf``, ``bilstm-crf+bert`` (``exports.bert``) and
``bilstm-crf+medmplm`` (``exports.medmplm``); every model of a sweep must be a model of each of its tasks, so NER
sweeps apart from the visit tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medmplm.config import ConfigError

CONFIG_FILE_NAME = "sweep_config.yaml"
# next_dx is not a task of the paper: medication recommendation's rate, the other multi-label task over a history.
PAPER_LEARNING_RATES = {"medrec": 5e-5, "readmission": 2e-5, "icd": 1e-5, "next_dx": 5e-5, "ner": 3e-5}
# The paper's primary metric is the AUC; each task's AUC in medmplm.metrics. NER's is strict micro F1.
PRIMARY_METRICS = {
    "medrec": "auc_micro",
    "readmission": "auroc",
    "icd": "auc_micro",
    "disease10": "auc_micro",
    "next_dx": "auc_micro",
    "ner": "f1",
}
# Kind of pretrained backbone -> the key of `exports` naming its export (an M-BEHRT export per layout: one
# pretraining run each; MEDFuse's lab encoder: a medfuse-lab export).
EXPORT_KINDS = (
    "medmplm",
    "bert",
    "gbert",
    "medbert",
    "mbehrt-early",
    "mbehrt-late",
    "mbehrt-shared",
    "mbehrt-tabular",
    "medfuse-lab",
)
SCRATCH_SUFFIX = "-scratch"


def _paper_grid() -> dict[str, list[float]]:
    return {task: [lr / 2, lr, lr * 2] for task, lr in PAPER_LEARNING_RATES.items()}


@dataclass
class SearchSection:
    """How learning rates are searched.

    Attributes:
        algorithm: ``grid``: every learning rate of the task's grid, every seed (one Tune experiment for the whole
            sweep). ``optuna``: Optuna's TPE proposes ``samples`` learning rates per (task, model, train ratio),
            log-uniform between the smallest and largest of the task's grid, each run with every seed (Tune's
            ``Repeater``: Optuna sees the mean validation metric over seeds).
        samples: learning rates Optuna proposes per (task, model, train ratio).
        scheduler: ``asha`` stops trials whose validation metric trails the others at the same epoch (Tune's
            ``ASHAScheduler``), within one (task, model, train ratio); ``none`` runs every trial to its end.
        grace_period: epochs a trial runs before ASHA may stop it.
        reduction_factor: ASHA keeps 1 / reduction_factor of the trials at each rung.
    """

    algorithm: Literal["grid", "optuna"] = "grid"
    samples: int = 4
    scheduler: Literal["none", "asha"] = "none"
    grace_period: int = 2
    reduction_factor: int = 2


@dataclass
class ResourcesSection:
    """What one trial holds.

    Attributes:
        workers_per_trial: Ray Train workers of a torch trial.
        cpus_per_worker: CPUs each worker holds; its torch threads use exactly these.
        gpus_per_worker: GPUs (a fraction shares one GPU between trials); 0 trains on CPUs.
        extra_resources: other Ray resources each worker asks for, to steer the autoscaler
            (``{"accelerator_type:A10G": 0.001}``: one trial per A10G node; ``{"spot": 0.001}``: spot nodes).
        max_concurrent_trials: trials run at once; none: as many as the cluster's CPUs (and GPUs) hold.
    """

    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    extra_resources: dict[str, float] = field(default_factory=dict)
    max_concurrent_trials: int | None = None


# Sweep keys whose next part is a name of the user's (an export kind such as ``mbehrt-early``, a task) or fine-tuning's
# own free-form keys: hyphens there are kept (see medmplm.config.parse_overrides).
SWEEP_FREE_FORM_PREFIXES = (
    "exports.",
    "learning_rates.",
    "primary_metric.",
    "task_options.",
    "finetune.model.overrides.",
    "finetune.model.options.",
)


@dataclass
class SweepConfig:
    """Everything ``python -m tuning.sweep`` needs.

    Attributes:
        name: the sweep's directory name under ``storage_path``; none: ``<config file stem>-<time>-<hex>``.
        storage_path: where sweeps live: a local directory, a shared file system, ``s3://`` or ``gs://``.
        prepared_dir: the prepared directory (``python -m medmplm.prepare``) every trial of a visit task reads.
        ner_corpus: the i2b2-2010-format corpus the ``ner`` task reads (made absolute when validated: trials run in
            directories of their own).
        exports: the pretrained export of each backbone kind the models start from: ``medmplm`` (MedM-PLM,
            ``python -m medmplm.pretrain``), ``bert`` (a ``bert-mlm`` export, for ``clinicalbert`` and
            ``mbehrt-text``), ``gbert``, ``medbert``, and an ``mbehrt`` export per M-BEHRT model: ``mbehrt-early``,
            ``mbehrt-late``, ``mbehrt-shared`` and ``mbehrt-tabular``.
        tasks: fine-tuning tasks.
        models: model variants: a name of ``medmplm.tasks.encoders.MODELS`` (pretrained from ``exports`` when it has
            a backbone), or such a name with ``-scratch`` (the same architecture from random weights).
        train_ratios: fractions of the training patients (nested across ratios for a seed).
        seeds: fine-tuning seeds (also choose the training subset).
        learning_rates: the learning-rate grid of each task (``optuna``: its range).
        primary_metric: per task, the validation metric that selects learning rates (and that ASHA compares).
        task_options: per task, options of the task (``require_note``, ``max_history``, ...).
        finetune: dotted fine-tuning config keys applied to every trial (``train.epochs: 10``, ...).
        search: how learning rates are searched.
        resources: what one trial holds.
        max_failures: times an errored trial is retried; its errors are kept in its trial directory.
    """

    name: str | None = None
    storage_path: str = "runs/sweeps"
    prepared_dir: str | None = None
    ner_corpus: str | None = None
    exports: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(EXPORT_KINDS))
    tasks: list[str] = field(default_factory=lambda: ["medrec", "readmission", "icd"])
    models: list[str] = field(
        default_factory=lambda: [
            "medmplm",
            "medmplm-scratch",
            "medmplm-nocross",
            "medmplm-code",
            "medmplm-text",
            "logreg",
        ]
    )
    train_ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    learning_rates: dict[str, list[float]] = field(default_factory=_paper_grid)
    primary_metric: dict[str, str] = field(default_factory=lambda: dict(PRIMARY_METRICS))
    task_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"readmission": {"require_note": True}, "icd": {"require_note": True}}
    )
    finetune: dict[str, Any] = field(default_factory=dict)
    search: SearchSection = field(default_factory=SearchSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    max_failures: int = 1

    def validate(self) -> SweepConfig:
        """Check every key that can be checked without Ray; returns ``self``.

        Raises:
            ConfigError: naming the first offending key.
        """
        from medmplm.tasks import TASKS
        from medmplm.tasks.encoders import models_for
        from medmplm.train import storage

        if self.prepared_dir is None and any(task != "ner" for task in self.tasks):
            raise ConfigError("prepared_dir: required (a directory written by python -m medmplm.prepare)")
        if "ner" in self.tasks:
            if self.ner_corpus is None:
                raise ConfigError("ner_corpus: required by the ner task (an i2b2-2010-format corpus directory)")
            if "://" in self.ner_corpus or not Path(self.ner_corpus).expanduser().is_dir():
                raise ConfigError(f"ner_corpus: {self.ner_corpus} is not a local directory (a corpus every node sees)")
            self.ner_corpus = storage.resolve_storage_path(self.ner_corpus)
        for key, values in (("tasks", self.tasks), ("models", self.models), ("train_ratios", self.train_ratios)):
            if not values:
                raise ConfigError(f"{key}: must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{key}: repeated entries in {values}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct integers, got {self.seeds}")
        for task in self.tasks:
            if task not in TASKS:
                raise ConfigError(f"tasks: {task!r} is not a task; expected some of {sorted(TASKS)}")
            if not self.learning_rates.get(task):
                raise ConfigError(f"learning_rates.{task}: no learning rates for task {task}")
            if any(lr <= 0 for lr in self.learning_rates[task]):
                raise ConfigError(f"learning_rates.{task}: must be positive, got {self.learning_rates[task]}")
            if task not in self.primary_metric:
                raise ConfigError(f"primary_metric.{task}: no primary metric for task {task}")
        for ratio in self.train_ratios:
            if not 0.0 < ratio <= 1.0:
                raise ConfigError(f"train_ratios: each must be in (0, 1], got {ratio}")
        unknown = set(self.exports) - set(EXPORT_KINDS)
        if unknown:
            raise ConfigError(f"exports: unknown kinds {sorted(unknown)}; expected {list(EXPORT_KINDS)}")
        for model in self.models:
            name, pretrained = model_variant(model)
            init_keys(model, self.exports)
            for task in self.tasks:
                if name not in models_for(task):
                    raise ConfigError(
                        f"models: {model} is not a model of task {task} ({', '.join(models_for(task))}); a sweep's "
                        "models run on each of its tasks, so sweep ner and the visit tasks apart"
                    )
            if name in models_for("ner") and name != "bilstm-crf" and not pretrained:
                raise ConfigError(f"models: {model}: a NER model with a text encoder reads a pretrained export")
        search, resources = self.search, self.resources
        if search.samples < 1 or search.grace_period < 1 or search.reduction_factor < 2:
            raise ConfigError("search: samples and grace_period must be >= 1, reduction_factor >= 2")
        if resources.workers_per_trial < 1 or resources.cpus_per_worker <= 0 or resources.gpus_per_worker < 0:
            raise ConfigError("resources: workers_per_trial >= 1, cpus_per_worker > 0 and gpus_per_worker >= 0")
        if resources.max_concurrent_trials is not None and resources.max_concurrent_trials < 1:
            raise ConfigError(f"resources.max_concurrent_trials: must be >= 1, got {resources.max_concurrent_trials}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures: must be >= 0, got {self.max_failures}")
        return self


def model_variant(variant: str) -> tuple[str, bool]:
    """``(model name, pretrained)`` of a model variant (``medmplm``, ``medmplm-scratch``, ``logreg``, ...).

    Raises:
        ConfigError: for a name that is neither a model nor a model with ``-scratch``.
    """
    from medmplm.tasks.encoders import MODELS

    if variant in MODELS:
        spec = MODELS[variant]
        return variant, spec.code_backbone is not None or spec.text_backbone is not None
    if variant.endswith(SCRATCH_SUFFIX) and variant[: -len(SCRATCH_SUFFIX)] in MODELS:
        return variant[: -len(SCRATCH_SUFFIX)], False
    raise ConfigError(f"models: {variant!r} is not a model; expected one of {sorted(MODELS)}, optionally with -scratch")


def init_keys(variant: str, exports: dict[str, str | None]) -> dict[str, str | None]:
    """The fine-tuning config's ``--init`` keys of a model variant: each side that reads pretrained weights gets the
    export of its kind (``medmplm``, ``gbert``, ``medbert``: the code side; ``medmplm``, ``bert``: the text side).

    Raises:
        ConfigError: naming ``exports.<kind>`` when a pretrained variant needs an export that is not given.
    """
    from medmplm.tasks.encoders import model_spec

    model, pretrained = model_variant(variant)
    spec = model_spec(model)
    keys: dict[str, str | None] = {"model.init_from": None, "finetune.init_code": None, "finetune.init_text": None}
    if not pretrained:
        return keys
    for side, kind in (("code", spec.code_backbone), ("text", spec.text_backbone)):
        if kind is None:
            continue
        if exports.get(kind) is None:
            raise ConfigError(
                f"exports.{kind}: model {variant} starts its {side} side from a pretrained {kind} export; name it, "
                f"or sweep {model}{SCRATCH_SUFFIX}"
            )
        keys["model.init_from" if kind == "medmplm" else f"finetune.init_{side}"] = exports[kind]
    return keys
