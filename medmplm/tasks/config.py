"""Fine-tuning configuration: the pretraining sections (``medmplm.config``) plus a ``finetune`` section.

Same machinery as pretraining: dataclass defaults, then ``--config FILE`` (YAML), then ``key=value`` / ``--key value``
overrides with dotted keys. The entry point adds the short flags of the paper's experiments (``--task``, ``--model``,
``--init``, ``--train-ratio``, ``--seed``), which map onto the keys in :data:`SHORT_FLAGS`. The resolved config is
saved with every checkpoint as ``finetune_config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medmplm.config import (
    ConfigError,
    DataConfig,
    DeepSpeedSection,
    LoggingSection,
    ModelSection,
    PretrainConfig,
    RunSection,
    ScalingSection,
    TrainSection,
)

CONFIG_FILE_NAME = "finetune_config.yaml"

# Short flag -> dotted config key.
SHORT_FLAGS = {
    "task": "finetune.task",
    "model": "finetune.model",
    "init": "model.init_from",
    "init_code": "finetune.init_code",
    "init_text": "finetune.init_text",
    "train_ratio": "finetune.train_ratio",
    "seed": "train.seed",
    "lr": "train.lr",
    "ner_corpus": "finetune.ner_corpus",
}


@dataclass
class FinetuneSection:
    """What to fine-tune, on how much data, and where the result goes.

    Attributes:
        task: ``medrec``, ``readmission``, ``icd``, ``disease10`` (MEDFuse's 10 diagnosis groups, from labs and the
            note), ``next_dx`` (next visit's diagnosis categories), or ``ner`` (the NER auxiliary check, on
            ``ner_corpus``).
        model: a model of ``medmplm.tasks.encoders.MODELS`` (``medmplm``, ``medmplm-code``, ``logreg``, ...; for
            ``ner``: ``bilstm-crf``, ``bilstm-crf+bert``, ``bilstm-crf+medmplm``; ``disease10`` adds ``medfuse`` and
            its ablations); none: the task's first model (``medmplm``, ``bilstm-crf`` for ``ner``, ``medfuse`` for
            ``disease10``), set when the config is validated.
        ner_corpus: the i2b2-2010-format corpus the ``ner`` task reads (``--ner-corpus``, ``medmplm.data.i2b2``).
        init_code: a ``gbert`` or ``medbert`` pretraining export for the code side of the ``gbert`` / ``medbert``
            models and their concatenations, an ``mbehrt`` export for the M-BEHRT models, or a ``medfuse-lab`` export
            for MEDFuse's lab encoder (``--init-code``); none: that side starts from random weights.
        init_text: the text side's export when it comes from another pretraining run than ``model.init_from``
            (``--init-text``): a ``bert-mlm`` export (or any local BERT checkpoint) for ``clinicalbert`` models and
            ``mbehrt-text``, a MedM-PLM export for ``medmplm-text`` and ``medmplm-code+medmplm-text``; for MEDFuse
            the language model that reads the notes (any local Hugging Face checkpoint with its tokenizer).
        train_ratio: fraction of training patients kept (nested across ratios for a seed, see
            ``medmplm.data.splits``); validation and test are always whole.
        task_options: keyword options of the task (``threshold``, ``top_k``, ``max_history``, ``subsample_negatives``,
            ``require_note``, ``label_column``, ``ddi_table``; for ``ner`` see ``medmplm.tasks.ner.ConceptExtraction``).
        head_hidden_size: width of the MLP head's hidden layer (``ner``: of each direction of the BiLSTM).
        head_dropout: dropout in the MLP head (``ner``: on the word vectors and the BiLSTM's output).
        score_metric: validation metric that ranks checkpoints and drives early stopping: ``val_loss`` or
            ``val_<task metric>`` (e.g. ``val_auroc``).
        score_mode: ``min`` or ``max`` for ``score_metric``.
        results_dir: where the run's result record (one Parquet file) is written; many runs can share it.
        eval_batch_size: examples per batch when predicting the validation and test splits.
        logreg_c: inverse regularisation strength of the ``logreg`` model.
        logreg_max_iter: solver iterations of the ``logreg`` model.
    """

    task: Literal["medrec", "readmission", "icd", "disease10", "next_dx", "ner"] = "readmission"
    model: str | None = None
    ner_corpus: str | None = None
    init_code: str | None = None
    init_text: str | None = None
    train_ratio: float = 1.0
    task_options: dict[str, Any] = field(default_factory=dict)
    head_hidden_size: int = 128
    head_dropout: float = 0.1
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"
    results_dir: str = "runs/results"
    eval_batch_size: int = 64
    logreg_c: float = 1.0
    logreg_max_iter: int = 1000


def _finetune_train() -> TrainSection:
    # Fine-tuning converges in tens of epochs, not hundreds; checkpoint at epoch ends only and keep the best one.
    return TrainSection(
        epochs=30,
        global_batch_size=32,
        micro_batch_size=32,
        lr=5e-4,
        early_stopping_patience=3,
        checkpoint_every_steps=None,
        keep_checkpoints=1,
    )


@dataclass
class FinetuneConfig:
    """Everything ``python -m medmplm.finetune`` needs; defaults fit a laptop (one worker, tiny model)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=_finetune_train)
    deepspeed: DeepSpeedSection = field(default_factory=lambda: DeepSpeedSection(zero_stage=0))
    scaling: ScalingSection = field(default_factory=lambda: ScalingSection(num_workers=1))
    run: RunSection = field(default_factory=RunSection)
    logging: LoggingSection = field(default_factory=lambda: LoggingSection(mlflow_experiment="medmplm-finetune"))
    finetune: FinetuneSection = field(default_factory=FinetuneSection)

    def validate(self) -> FinetuneConfig:
        """Check the shared sections as pretraining does, then the fine-tuning ones; returns ``self``.

        Raises:
            ConfigError: naming the first offending key.
        """
        PretrainConfig(
            data=self.data,
            model=self.model,
            train=self.train,
            deepspeed=self.deepspeed,
            scaling=self.scaling,
            run=self.run,
            logging=self.logging,
        ).validate()
        # Imported here, not at module level: `--help` parses flags from this module and must not load torch.
        from medmplm.tasks import TASKS
        from medmplm.tasks.encoders import MODELS, models_for

        section = self.finetune
        if section.task in TASKS and section.model is None:
            section.model = models_for(section.task)[0]
        if section.model not in MODELS:
            raise ConfigError(f"finetune.model: expected one of {sorted(MODELS)}, got {section.model!r}")
        if section.task not in TASKS:
            raise ConfigError(f"finetune.task: expected one of {sorted(TASKS)}, got {section.task!r}")
        if section.model not in models_for(section.task):
            raise ConfigError(
                f"finetune.model: {section.model!r} is not a model of task {section.task}; expected one of "
                f"{models_for(section.task)}"
            )
        if (section.task == "ner") != (section.ner_corpus is not None):
            raise ConfigError(
                "finetune.ner_corpus: required by --task ner (--ner-corpus DIR)"
                if section.task == "ner"
                else f"finetune.ner_corpus: only the ner task reads a corpus, not {section.task}"
            )
        if not 0.0 < section.train_ratio <= 1.0:
            raise ConfigError(f"finetune.train_ratio: must be in (0, 1], got {section.train_ratio}")
        if section.head_hidden_size < 1 or not 0.0 <= section.head_dropout < 1.0:
            raise ConfigError("finetune.head_hidden_size must be >= 1 and finetune.head_dropout in [0, 1)")
        if section.eval_batch_size < 1:
            raise ConfigError(f"finetune.eval_batch_size: must be >= 1, got {section.eval_batch_size}")
        if section.score_metric != "val_loss" and not section.score_metric.startswith("val_"):
            raise ConfigError(f"finetune.score_metric: expected val_loss or val_<metric>, got {section.score_metric!r}")
        if self.data.text_cache:
            raise ConfigError("data.text_cache: not supported for fine-tuning (the encoders read token ids)")
        return self


def expand_short_flags(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with the short flags (``task``, ``init``, ...) renamed to their dotted keys."""
    return {SHORT_FLAGS.get(key, key): value for key, value in overrides.items()}
