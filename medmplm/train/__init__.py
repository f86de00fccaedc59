"""The one training loop (pretraining and fine-tuning) on Ray Train + DeepSpeed, with its checkpoints and metrics.

Driver side: :func:`medmplm.train.trainer.fit` builds the ``TorchTrainer``; worker side:
:func:`medmplm.train.loop.train_loop_per_worker`; a task (:class:`medmplm.train.task.TrainingTask`, e.g.
:class:`medmplm.train.pretraining.PretrainingTask`) supplies what differs between tasks.
"""

from medmplm.train.bundle import ModelBundle
from medmplm.train.checkpoint import CheckpointMismatchError, TrainerState
from medmplm.train.loop import LoopSpec, train_loop_per_worker
from medmplm.train.pretraining import PretrainingTask
from medmplm.train.task import TrainingTask
from medmplm.train.trainer import DatasetTooSmallError, TrainingOutcome, export_checkpoint, fit, initial_model_bundle

__all__ = [
    "CheckpointMismatchError",
    "DatasetTooSmallError",
    "LoopSpec",
    "ModelBundle",
    "PretrainingTask",
    "TrainerState",
    "TrainingOutcome",
    "TrainingTask",
    "export_checkpoint",
    "fit",
    "initial_model_bundle",
    "train_loop_per_worker",
]
