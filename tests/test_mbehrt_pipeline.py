"""M-BEHRT through Ray (slow): a 2-worker DeepSpeed ZeRO-2 pretraining run of ``python -m medmplm.pretrain
model.family=mbehrt`` on synthetic data, and a patient-level fine-tuning run through the runner, on examples featurised
once for a sweep."""

from __future__ import annotations

import numpy as np
import pytest

from medmplm.models.mbehrt.testing_utils import write_patient_prepared_dir
from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pretrain_mbehrt_end_to_end_with_zero2(ray_local, synthetic_prepared, tmp_path):
    from transformers import AutoModel

    from medmplm.models.mbehrt import MBehrtModel

    output = run_pretraining(
        "model.family=mbehrt",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=x",
        "train.epochs=4",
        # A one-layer random BERT trained whole (nothing frozen), reading the head of each note; a short history.
        "model.overrides.text_num_layers=1",
        "model.overrides.text_num_frozen_layers=0",
        "model.overrides.text_max_length=32",
        "model.overrides.max_visits=6",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "pretrain.log",
    )
    assert "patient sequences" in output and "lab values not embedded" in output

    values = tensorboard_scalars(tmp_path / "x" / "tensorboard")
    losses = values["train/loss"]
    assert len(losses) >= 8, losses
    first, last = np.mean([v for _, v in losses[:3]]), np.mean([v for _, v in losses[-3:]])
    assert last < first * 0.95, f"train loss did not go down: first steps {losses[:3]}, last steps {losses[-3:]}"
    assert {"train/loss_mtm", "train/loss_mvp", "train/loss_alignment"} <= set(values)
    export = AutoModel.from_pretrained(tmp_path / "x" / "export")
    assert type(export) is MBehrtModel and export.tokenizer is not None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_finetune_mbehrt_through_the_runner_on_shared_features(ray_local, tmp_path):
    from medmplm.config import load_config
    from medmplm.tasks import build_task
    from medmplm.tasks.config import FinetuneConfig
    from medmplm.tasks.modeling import FineTuningModel, PatientFineTuningModel
    from medmplm.tasks.runner import build_backbones, featurize_all_examples, run_finetune

    prepared = str(write_patient_prepared_dir(tmp_path / "prepared"))
    config = load_config(
        FinetuneConfig,
        None,
        {
            "finetune.task": "next_dx",
            "finetune.model": "mbehrt-shared",
            "finetune.results_dir": str(tmp_path / "results"),
            "model.allow_random_frozen": True,
            "run.storage_path": str(tmp_path / "runs"),
            "run.name": "next-dx",
            "train.epochs": 1,
            "train.global_batch_size": 8,
            "train.micro_batch_size": 8,
            "logging.progress_bar": False,
        },
    )
    key, blocks = featurize_all_examples(build_task("next_dx"), prepared, build_backbones(config, prepared), 16)
    record = run_finetune(config, prepared, "next-dx", features={key: blocks})
    assert {"auc_micro", "ap_micro", "prauc", "f1_micro"} <= set(record.metrics["test"])
    assert record.num_examples["test"] > 0 and record.details["code_backbone"] == "mbehrt-shared"
    checkpoint = sorted((tmp_path / "runs" / "next-dx").glob("checkpoint_*"))[-1]
    assert type(FineTuningModel.from_pretrained(checkpoint / "model")) is PatientFineTuningModel
