"""The one training loop (pretraining and fine-tuning) on Ray Train + DeepSpeed, with its checkpoints and metrics.

Driver side: :func:`medmplm.train.trainer.fit` builds the ``TorchTrainer``; worker side:
:func:`medmplm.train.loop.train_loop_per_worker`; a task (:class:`medmplm.train.task.TrainingTask`: a pretraining
family's in :mod:`medmplm.pretraining`, a fine-tuning task's in :mod:`medmplm.tasks`) supplies what differs. This
package knows no model family.
"""

from medmplm.train.bundle import ModelBundle
from medmplm.train.checkpoint import CheckpointMismatchError, TrainerState
from medmplm.train.loop import LoopSpec, train_loop_per_worker
from medmplm.train.task import TrainingTask
from medmplm.train.trainer import DatasetTooSmallError, TrainingOutcome, export_checkpoint, fit, initial_model_bundle

__all__ = [
    "CheckpointMismatchError",
    "DatasetTooSmallError",
    "LoopSpec",
    "ModelBundle",
    "TrainerState",
    "TrainingOutcome",
    "TrainingTask",
    "export_checkpoint",
    "fit",
    "initial_model_bundle",
    "train_loop_per_worker",
]
