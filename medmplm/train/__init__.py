"""The one training loop (pretraining and fine-tuning) on Ray Train + DeepSpeed, with its checkpoints and metrics.

Driver side: :func:`medmplm.train.trainer.fit` builds the ``TorchTrainer``; worker side:
:func:`medmplm.train.loop.train_loop_per_worker`; a task (:class:`medmplm.train.task.TrainingTask`: a pretraining
family's in :mod:`medmplm.pretraining`, a fine-tuning task's in :mod:`medmplm.tasks`) supplies what differs. This
package knows no model family.
"""

import importlib
from typing import Any

# Imported on first use (PEP 562): the package's light modules (progress, storage) run in Ray processes that never
# train, such as the progress inbox actor, and the loop's imports (torch, DeepSpeed) cost them a second or more each.
_EXPORTS = {
    "CheckpointMismatchError": "medmplm.train.checkpoint",
    "DatasetTooSmallError": "medmplm.train.trainer",
    "LoopSpec": "medmplm.train.loop",
    "ModelBundle": "medmplm.train.bundle",
    "TrainerState": "medmplm.train.checkpoint",
    "TrainingOutcome": "medmplm.train.trainer",
    "TrainingTask": "medmplm.train.task",
    "export_checkpoint": "medmplm.train.trainer",
    "fit": "medmplm.train.trainer",
    "initial_model_bundle": "medmplm.train.trainer",
    "train_loop_per_worker": "medmplm.train.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
