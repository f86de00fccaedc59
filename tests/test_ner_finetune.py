"""The ``ner`` task through the shared pieces: config, corpus splits, the runner and the training loop, records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medmplm.config import ConfigError, load_config, parse_overrides
from medmplm.data.i2b2 import read_corpus
from medmplm.results import gather_results
from medmplm.tasks.config import FinetuneConfig, expand_short_flags
from medmplm.tasks.ner import NerDataError, split_documents, subset_documents
from medmplm.tasks.runner import run_finetune, run_setting


def ner_config(tmp_path: Path, corpus: Path, *tokens: str) -> FinetuneConfig:
    overrides = expand_short_flags(
        parse_overrides(
            [
                "--task",
                "ner",
                "--ner-corpus",
                str(corpus),
                f"finetune.results_dir={tmp_path / 'results'}",
                f"run.storage_path={tmp_path / 'runs'}",
                "scaling.cpus_per_worker=1",
                *tokens,
            ]
        )
    )
    return load_config(FinetuneConfig, None, overrides)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from medmplm.synthetic.ner import generate_ner_corpus

    path = tmp_path_factory.mktemp("ner") / "corpus"
    generate_ner_corpus(path, documents=12, seed=0)
    return path


def test_the_ner_task_needs_its_corpus_and_its_own_models(tmp_path, corpus):
    assert ner_config(tmp_path, corpus).finetune.model == "bilstm-crf"
    assert load_config(FinetuneConfig, None, {}).finetune.model == "medmplm"
    with pytest.raises(ConfigError, match="is not a model of task ner"):
        ner_config(tmp_path, corpus, "--model", "medmplm")
    with pytest.raises(ConfigError, match="required by --task ner"):
        load_config(FinetuneConfig, None, {"finetune.task": "ner", "finetune.model": "bilstm-crf"})
    with pytest.raises(ConfigError, match="is not a model of task readmission"):
        load_config(FinetuneConfig, None, {"finetune.model": "bilstm-crf"})
    with pytest.raises(ConfigError, match="only the ner task reads a corpus"):
        load_config(FinetuneConfig, None, {"finetune.ner_corpus": str(corpus)})


def finetune_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medmplm.finetune", *args], capture_output=True, text=True, timeout=300
    )


def test_a_missing_corpus_or_export_is_one_line_before_ray_starts(tmp_path, corpus):
    result = finetune_cli("--task", "ner", "--ner-corpus", str(tmp_path / "absent"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: finetune.ner_corpus: {tmp_path / 'absent'} is not a directory"
    result = finetune_cli("--task", "ner", "--model", "bilstm-crf+bert", "--ner-corpus", str(corpus))
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: finetune.init_text: --model bilstm-crf+bert reads a pretrained bert export; "
        "name it with --init-text DIR"
    )
    assert result.stdout.startswith("SYNTHETIC DATA: this run reads a generated synthetic i2b2-format corpus")
    medmplm = ["--model", "bilstm-crf+medmplm", "--init", str(corpus)]
    result = finetune_cli("--task", "ner", "--ner-corpus", str(corpus), *medmplm)
    assert result.returncode == 2 and "model.init_from: " in result.stderr and "holds no config.json" in result.stderr


def test_documents_split_by_seed_and_a_shipped_test_split_is_kept(tmp_path, corpus):
    documents = read_corpus(corpus)
    first = split_documents(documents, 0.2, 0.2, seed=0)
    assert {k: len(v) for k, v in first.items()} == {"train": 8, "val": 2, "test": 2}
    names = [[d.name for d in first[s]] for s in ("train", "val", "test")]
    assert sorted(sum(names, [])) == sorted(d.name for d in documents.documents["all"])
    assert [[d.name for d in v] for v in split_documents(documents, 0.2, 0.2, seed=0).values()] == names
    assert [[d.name for d in v] for v in split_documents(documents, 0.2, 0.2, seed=1).values()] != names
    half = {d.name for d in subset_documents(first["train"], 0.5, seed=3)}
    assert len(half) == 4 and half <= {d.name for d in subset_documents(first["train"], 0.8, seed=3)}
    with pytest.raises(NerDataError, match="no val document"):
        split_documents(documents, 0.01, 0.2, seed=0)

    shipped = tmp_path / "shipped"
    shutil.copytree(corpus, shipped / "train")
    shutil.copytree(corpus, shipped / "test")
    splits = split_documents(read_corpus(shipped), 0.25, 0.5, seed=0)
    assert len(splits["test"]) == 12 and len(splits["val"]) == 3 and len(splits["train"]) == 9


def test_visit_task_settings_do_not_name_the_corpus_key(tmp_path, corpus):
    visit = load_config(FinetuneConfig, None, {"finetune.model": "rnn"})
    assert "ner_corpus" not in run_setting(visit, "prepared")[1]
    setting = json.loads(run_setting(ner_config(tmp_path, corpus, "--model", "bilstm-crf"), None)[1])
    assert setting["finetune.ner_corpus"] == str(corpus) and setting["finetune.task_options"]["pooling"] == "first"


def write_bert_export(directory: Path, corpus: Path) -> Path:
    """A tiny BERT masked LM with a WordPiece tokenizer of the corpus, saved as a bert-mlm export is."""
    from transformers import BertConfig, BertForMaskedLM

    from medmplm.models.tokenization import train_wordpiece_tokenizer

    texts = [p.read_text(encoding="utf-8") for p in sorted((corpus / "txt").glob("*.txt"))]
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=400, model_max_length=64)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_medmplm_export(directory: Path, tmp_path: Path) -> Path:
    from medmplm.models import MedMPLMConfig, MedMPLMModel
    from medmplm.models.testing_utils import write_tiny_prepared_dir
    from medmplm.pretraining.medmplm import build_medmplm

    prepared = write_tiny_prepared_dir(tmp_path / "prepared")
    torch.manual_seed(0)
    config = MedMPLMConfig.from_preset("tiny", text_max_length=32)
    build_medmplm(MedMPLMModel, prepared, config).save_pretrained(directory)
    return directory


def validation_losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars("val/loss")]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bilstm-crf", "bilstm-crf+bert", "bilstm-crf+medmplm"])
def test_each_model_fine_tunes_through_the_loop_and_its_loss_falls(ray_local, tmp_path, corpus, model):
    init = []
    if model == "bilstm-crf+bert":
        init = ["--init-text", str(write_bert_export(tmp_path / "bert", corpus))]
    elif model == "bilstm-crf+medmplm":
        init = ["--init", str(write_medmplm_export(tmp_path / "medmplm", tmp_path))]
    config = ner_config(
        tmp_path,
        corpus,
        "--model",
        model,
        *init,
        "train.epochs=3",
        "train.lr=0.005",
        "finetune.score_metric=val_f1",
        "finetune.score_mode=max",
        "finetune.task_options.max_words=12",
    )
    config.run.name = f"ner-{model.replace('+', '_')}"
    record = run_finetune(config, None, config.run.name)

    losses = validation_losses(tmp_path / "runs" / config.run.name)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert record.task == "ner" and record.model == model and record.init == (init[1] if init else "scratch")
    assert record.synthetic_data  # the generated corpus carries the synthetic-data marker
    assert {"precision", "recall", "f1", "f1_problem", "f1_test", "f1_treatment"} <= set(record.metrics["test"])
    counts = record.details["ner_counts"]
    # max_words=12 splits long sentences; the record counts sentences, the windows were joined back for scoring.
    assert counts["train"]["split_sentences"] > 0 and record.num_train == counts["train"]["sentences"]
    assert record.num_examples["test"] == counts["test"]["sentences"]
    assert record.details["train_seconds"] > 0 and record.details["epochs_run"] == 3
    df = gather_results(tmp_path / "results")
    assert set(df.task) == {"ner"} and df[df.metric == "f1"].value.between(0.0, 1.0).all()


def test_ner_is_a_sweep_task_with_its_own_models(tmp_path, corpus):
    from tuning.config import SweepConfig
    from tuning.trials import featurize_for_sweep, grid_cells, trial_config

    values = {
        "tasks": ["ner"],
        "ner_corpus": str(corpus),
        "models": ["bilstm-crf", "bilstm-crf+bert"],
        "exports.bert": "/exports/bert",
        "train_ratios": [1.0],
        "seeds": [0, 1],
    }
    sweep = load_config(SweepConfig, None, values)
    assert sweep.prepared_dir is None and sweep.primary_metric["ner"] == "f1"
    cells = grid_cells(sweep)
    assert len(cells) == 2 * 3 * 2 and {c["lr"] for c in cells} == {1.5e-5, 3e-5, 6e-5}
    cell = {"task": "ner", "variant": "bilstm-crf+bert", "train_ratio": 1.0, "lr": 3e-5, "seed": 1}
    config = trial_config(sweep, "/sweeps/s", cell, "run-a")
    assert config.finetune.ner_corpus == str(corpus) and config.finetune.init_text == "/exports/bert"
    assert (config.finetune.score_metric, config.finetune.score_mode) == ("val_f1", "max")
    # Nothing to featurise ahead: a NER trial reads and featurises its corpus itself (and no prepared directory).
    assert featurize_for_sweep(sweep) == {}
    with pytest.raises(ConfigError, match="models: medmplm is not a model of task ner"):
        load_config(SweepConfig, None, {**values, "models": ["medmplm"], "exports.medmplm": "/e"})
    with pytest.raises(ConfigError, match="models: bilstm-crf is not a model of task readmission"):
        load_config(SweepConfig, None, {**values, "tasks": ["ner", "readmission"], "prepared_dir": "/p"})
    with pytest.raises(ConfigError, match="bilstm-crf\\+bert-scratch: a NER model with a text encoder"):
        load_config(SweepConfig, None, {**values, "models": ["bilstm-crf+bert-scratch"]})


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_ner_sweep_runs_its_trials_and_reports_them_in_table_v_layout(ray_local, tmp_path, corpus):
    # In process on the test's own local Ray: `python -m tuning.sweep` would join any `ray start` cluster of the machine.
    from tuning.config import SweepConfig
    from tuning.report import main as report_main
    from tuning.tuner import run_sweep

    values = {
        "tasks": ["ner"],
        "ner_corpus": str(corpus),
        "models": ["bilstm-crf"],
        "train_ratios": [1.0],
        "seeds": [0, 1],
        "learning_rates.ner": [5e-3],
        "finetune": {"train.epochs": 2, "train.global_batch_size": 16, "train.micro_batch_size": 16},
        "resources.max_concurrent_trials": 1,
    }
    sweep = load_config(SweepConfig, None, values)
    sweep_dir = str(tmp_path / "sweep")
    outcome = run_sweep(sweep, sweep_dir)
    assert (outcome.trials, outcome.errors, outcome.unfinished) == (2, 0, 0)
    df = gather_results(tmp_path / "sweep" / "results")
    assert set(df.task) == {"ner"} and sorted(df.seed.unique()) == [0, 1]
    assert report_main([sweep_dir, "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "table3.md").read_text()
    assert "## ner (primary: f1; the paper's Table V" in table
    assert "| model | train ratio | lr | seeds | Precision | Recall | F1 |" in table
