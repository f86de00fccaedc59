"""The pretrain entry point's command line (fast: nothing is trained)."""

from __future__ import annotations

import pytest
import yaml

from medmplm.config import PretrainConfig, load_config
from medmplm.pretrain import _summary, check_inputs, main, warn_if_outputs_are_ephemeral
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


def test_print_config_resolves_file_and_overrides(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    assert main(["--config", str(path), "--print-config", "train.lr=1e-3", "--scaling.num_workers", "4", "train.global_batch_size=64"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3
    assert printed["train"]["lr"] == 1e-3
    assert printed["scaling"]["num_workers"] == 4


def test_bad_override_exits_with_the_key_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--print-config", "train.lr=fast"])
    assert exit_info.value.code == 2
    assert "train.lr: expected a number, got str 'fast'" in capsys.readouterr().err


def test_relative_outputs_inside_a_job_working_dir_are_warned_about(tmp_path, monkeypatch, caplog):
    job_dir = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    config = load_config(PretrainConfig, overrides=["run.storage_path=/abs/runs"])
    with caplog.at_level("WARNING", logger="medmplm.pretrain"):
        warn_if_outputs_are_ephemeral(config)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("data.data_root=runs/data is relative") for m in messages)
    assert not any(m.startswith("run.storage_path") for m in messages)


def test_config_presets_are_found_by_name_from_any_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "paper", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["preset"] == "paper"


def test_the_next_step_fine_tunes_on_the_data_pretraining_used():
    where = {
        "family": "medmplm",
        "run_name": "r",
        "run_dir": "/runs/r",
        "prepared_dir": "/data/mimic3-prepared",
        "export_dir": "/runs/r/export",
        "best_checkpoint": "/runs/r/checkpoint_step10",
        "best_val_loss": "1.0000",
        "best_step": "10",
    }
    (finetune,) = [line for line in _summary([where]).splitlines() if "medmplm.finetune" in line]
    assert "--init /runs/r/export" in finetune and "data.prepared_dir=/data/mimic3-prepared" in finetune
    text = {**where, "family": "bert-mlm", "run_name": "t", "export_dir": "/runs/t/export"}
    lines = _summary([text, where]).splitlines()
    assert sum(line.startswith("Pretraining finished") for line in lines) == 2
    (pretrain,) = [line for line in _summary([text]).splitlines() if "model.text_checkpoint=/runs/t/export" in line]
    assert "data.prepared_dir=/data/mimic3-prepared" in pretrain


def test_synthetic_data_is_announced_on_the_first_line(capsys, tmp_path):
    check_inputs(load_config(PretrainConfig))
    assert capsys.readouterr().out.splitlines()[0].startswith("SYNTHETIC DATA: ")
    prepared = write_finetune_prepared_dir(tmp_path / "prepared", patients=(4, 2, 2))
    check_inputs(load_config(PretrainConfig, overrides=[f"data.prepared_dir={prepared}"]))
    assert capsys.readouterr().out == ""
