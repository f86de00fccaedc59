"""``python -m medmplm.finetune`` end to end: config flags, result records, nested train ratios, the shared loop."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from medmplm.config import load_config, parse_overrides
from medmplm.finetune import main
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.results import gather_results
from medmplm.tasks import build_task
from medmplm.tasks.config import FinetuneConfig, expand_short_flags
from medmplm.tasks.modeling import FineTuningModel
from medmplm.tasks.runner import build_example_sets, run_finetune
from medmplm.tasks.testing_utils import write_finetune_prepared_dir

TINY = ["model.preset=tiny", "model.overrides.text_max_length=32"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"), patients=(60, 20, 20))


def test_logreg_run_writes_a_result_record(prepared, tmp_path, capsys):
    results = tmp_path / "results"
    argv = [
        "--task",
        "icd",
        "--model",
        "logreg",
        "--seed",
        "3",
        "--train-ratio",
        "0.5",
        f"data.prepared_dir={prepared}",
        f"finetune.results_dir={results}",
        "finetune.task_options.top_k=4",
        *TINY,
    ]
    assert main(argv) == 0
    assert "test (" in capsys.readouterr().out
    df = gather_results(results)
    assert set(df.split) == {"val", "test"}
    assert set(df.metric) >= {"f1_micro", "f1_macro", "auc_micro", "auc_macro", "p_at_5", "accuracy"}
    row = df.iloc[0]
    assert (row.task, row.model, row.init, row.pretrained, row.train_ratio, row.seed) == (
        "icd",
        "logreg",
        "scratch",
        False,
        0.5,
        3,
    )
    excluded = pq.read_table(results / "excluded" / f"{row.run_id}.parquet")
    assert set(excluded.column("split").to_pylist()) <= {"train", "val", "test"} and excluded.num_rows > 0


def test_config_errors_and_short_flags(prepared, capsys):
    with pytest.raises(SystemExit):
        main(["--model", "bert", f"data.prepared_dir={prepared}"])
    assert "finetune.model: expected one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--train-ratio", "0", f"data.prepared_dir={prepared}"])
    assert "finetune.train_ratio" in capsys.readouterr().err
    assert main(["--print-config", "--task", "medrec", "--init", "/some/dir", "--seed", "7", "--lr", "0.001"]) == 0
    printed = capsys.readouterr().out
    assert (
        "task: medrec" in printed
        and "init_from: /some/dir" in printed
        and "seed: 7" in printed
        and "lr: 0.001" in printed
    )


def test_train_ratio_subsets_training_only_and_nests(prepared):
    task = build_task("medrec")
    _, half = build_example_sets(task, str(prepared), 0.5, seed=1)
    space, full = build_example_sets(task, str(prepared), 1.0, seed=1)
    half_train = set(half["train"].examples.column("hadm_id").to_pylist())
    full_train = set(full["train"].examples.column("hadm_id").to_pylist())
    assert half_train < full_train
    for split in ("val", "test"):
        assert half[split].examples.equals(full[split].examples)
    # The label space does not depend on the ratio.
    assert build_example_sets(task, str(prepared), 0.2, seed=1)[0] == space


def _config(prepared, tmp_path, *tokens):
    config = load_config(
        FinetuneConfig,
        None,
        expand_short_flags(
            parse_overrides(
                [
                    f"data.prepared_dir={prepared}",
                    f"finetune.results_dir={tmp_path / 'results'}",
                    f"run.storage_path={tmp_path / 'runs'}",
                    *tokens,
                ]
            )
        ),
    )
    config.run.name = f"{config.finetune.task}-test"
    return config


@pytest.mark.slow
def test_pretrained_medmplm_through_the_training_loop(ray_local, prepared, tmp_path):
    from medmplm.models import MedMPLMConfig, MedMPLMForPretraining

    torch.manual_seed(0)
    pretrained = tmp_path / "pretrained"
    build_medmplm(MedMPLMForPretraining, prepared, MedMPLMConfig.from_preset("tiny", text_max_length=32)
    ).save_pretrained(pretrained)
    config = _config(
        prepared,
        tmp_path,
        "--task",
        "medrec",
        "--init",
        str(pretrained),
        "train.epochs=2",
        "train.global_batch_size=16",
        "train.micro_batch_size=16",
    )
    record = run_finetune(config, str(prepared), config.run.name)
    df = gather_results(tmp_path / "results")
    assert set(df.metric) >= {"jaccard", "prauc", "f1", "auc_micro", "accuracy"}
    assert df.pretrained.all() and (df.init == str(pretrained)).all() and record.epochs >= 1
    checkpoints = sorted((tmp_path / "runs" / "medrec-test").glob("checkpoint_step*"))
    assert checkpoints and (checkpoints[-1] / "finetune_config.yaml").is_file()
    assert FineTuningModel.from_pretrained(checkpoints[-1] / "model").model_name == "medmplm"


@pytest.mark.slow
def test_gru_baseline_through_the_training_loop(ray_local, prepared, tmp_path):
    config = _config(
        prepared,
        tmp_path,
        "--task",
        "readmission",
        "--model",
        "rnn",
        "train.epochs=1",
        "train.global_batch_size=8",
        "train.micro_batch_size=8",
        "finetune.score_metric=val_auprc",
        "finetune.score_mode=max",
        *TINY,
    )
    record = run_finetune(config, str(prepared), config.run.name)
    assert set(record.metrics["test"]) == {"auroc", "auprc", "f1", "accuracy", "rp80"}
    assert not record.pretrained


@pytest.mark.slow
@pytest.mark.parametrize("task", ["medrec", "readmission", "icd"])
def test_prepared_synthetic_data_every_task(ray_local, synthetic_prepared, tmp_path, task):
    """The whole stack: synthetic MIMIC-III -> prepare -> fine-tune (logreg in process, medmplm-code in the loop)."""
    for model in ("logreg", "medmplm-code"):
        config = _config(
            synthetic_prepared,
            tmp_path,
            "--task",
            task,
            "--model",
            model,
            "train.epochs=1",
            "train.global_batch_size=8",
            "train.micro_batch_size=8",
            *TINY,
        )
        config.run.name = f"{task}-{model}"
        record = run_finetune(config, str(synthetic_prepared), config.run.name)
        assert record.num_examples["test"] > 0 and record.metrics["test"]
