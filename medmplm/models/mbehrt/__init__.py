"""M-BEHRT: a multimodal BEHRT over a patient's whole history (time-stamped labs and codes, and notes), registered with
the ``transformers`` Auto classes.

Importing this package registers ``model_type="mbehrt"``: ``AutoConfig`` -> :class:`MBehrtConfig`, ``AutoModel`` ->
:class:`MBehrtModel`, ``AutoModelForPreTraining`` -> :class:`MBehrtForPretraining`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medmplm.models.mbehrt.configuration_mbehrt import MBehrtConfig
from medmplm.models.mbehrt.modeling_mbehrt import (
    MBehrtForPretraining,
    MBehrtModel,
    MBehrtModelOutput,
    MBehrtPreTrainedModel,
    MBehrtPretrainingOutput,
)

AutoConfig.register(MBehrtConfig.model_type, MBehrtConfig)
AutoModel.register(MBehrtConfig, MBehrtModel)
AutoModelForPreTraining.register(MBehrtConfig, MBehrtForPretraining)

__all__ = [
    "MBehrtConfig",
    "MBehrtForPretraining",
    "MBehrtModel",
    "MBehrtModelOutput",
    "MBehrtPreTrainedModel",
    "MBehrtPretrainingOutput",
]
