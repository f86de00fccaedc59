"""Fine-tuning reads the data the model was pretrained on, and says when that data is synthetic."""

from __future__ import annotations

import json
import shutil

import pytest

from medmplm.config import CONFIG_FILE_NAME, PretrainConfig, load_config, to_yaml
from medmplm.data.manifest import SYNTHETIC_MARKER_FILE, is_synthetic_release, read_manifest
from medmplm.data.schema import MANIFEST_FILE, VOCAB_DIR
from medmplm.data.vocab_io import read_vocab, write_vocab
from medmplm.finetune import resolve_inputs
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.tasks.config import FinetuneConfig
from medmplm.tasks.data_source import (
    DataSourceError,
    check_vocabularies,
    is_synthetic,
    recorded_prepared_dir,
    resolve_prepared_dir,
)
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


@pytest.fixture(scope="module")
def pretrained_on_a(tmp_path_factory):
    """(A, export): a prepared directory A and a model pretrained on it, exported as pretraining exports it."""
    from medmplm.models import MedMPLMConfig, MedMPLMForPretraining

    root = tmp_path_factory.mktemp("source")
    prepared = write_finetune_prepared_dir(root / "A")
    export = root / "runs" / "pretrain" / "export"
    model = build_medmplm(MedMPLMForPretraining, prepared, MedMPLMConfig.from_preset("tiny", text_max_length=32))
    model.save_pretrained(export)
    pretrain_config = load_config(PretrainConfig, overrides={"data.prepared_dir": str(prepared)})
    (export / CONFIG_FILE_NAME).write_text(to_yaml(pretrain_config), encoding="utf-8")
    return prepared, export


def finetune_config(*overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, overrides=list(overrides))


def test_init_reads_the_prepared_dir_the_model_was_pretrained_on(pretrained_on_a):
    prepared, export = pretrained_on_a
    assert recorded_prepared_dir(str(export)) == str(prepared)
    config = finetune_config(f"model.init_from={export}")
    assert resolve_prepared_dir(config) == str(prepared)
    check_vocabularies(str(export), str(prepared))


def test_an_explicit_prepared_dir_wins(pretrained_on_a, tmp_path):
    prepared, export = pretrained_on_a
    copy = shutil.copytree(prepared, tmp_path / "B")
    config = finetune_config(f"model.init_from={export}", f"data.prepared_dir={copy}")
    assert resolve_prepared_dir(config) == str(copy)
    check_vocabularies(str(export), str(copy))


def test_a_recorded_dir_that_is_gone_is_an_error_never_synthetic_data(pretrained_on_a, tmp_path):
    prepared, export = pretrained_on_a
    gone = tmp_path / "gone"
    moved = shutil.copytree(export, tmp_path / "export")
    recorded = load_config(PretrainConfig, overrides={"data.prepared_dir": str(gone)})
    (moved / CONFIG_FILE_NAME).write_text(to_yaml(recorded), encoding="utf-8")
    config = finetune_config(f"model.init_from={moved}")
    with pytest.raises(DataSourceError) as error:
        resolve_prepared_dir(config)
    message = str(error.value)
    assert "\n" not in message
    assert f"was pretrained on {gone}, which no longer exists" in message
    assert "data.prepared_dir=DIR" in message


def test_a_model_without_a_recorded_prepared_dir_needs_one(pretrained_on_a, tmp_path):
    _, export = pretrained_on_a
    bare = shutil.copytree(export, tmp_path / "bare")
    (bare / CONFIG_FILE_NAME).unlink()
    with pytest.raises(DataSourceError, match=r"records no prepared directory.*data\.prepared_dir=DIR"):
        resolve_prepared_dir(finetune_config(f"model.init_from={bare}"))


def test_an_init_dir_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(DataSourceError, match=f"model.init_from: {tmp_path / 'nosuch'} does not exist"):
        resolve_prepared_dir(finetune_config(f"model.init_from={tmp_path / 'nosuch'}"))
    with pytest.raises(DataSourceError, match=f"finetune.init_text: {tmp_path} is not a saved model"):
        resolve_prepared_dir(finetune_config(f"finetune.init_text={tmp_path}"))


def test_without_init_or_prepared_dir_the_default_is_synthetic():
    assert resolve_prepared_dir(finetune_config()) is None
    assert is_synthetic(None)


def test_a_vocabulary_mismatch_is_an_error(pretrained_on_a, tmp_path):
    prepared, export = pretrained_on_a
    other = shutil.copytree(prepared, tmp_path / "other")
    table = other / VOCAB_DIR / "medication.tsv"
    write_vocab(table, [*read_vocab(table), ("R03A", 1)])
    with pytest.raises(DataSourceError) as error:
        check_vocabularies(str(export), str(other))
    message = str(error.value)
    assert "medication vocabulary" in message and str(export) in message and str(table) in message
    assert "1 codes in only one" in message and "data.prepared_dir=DIR" in message


def test_resolve_inputs_sets_the_data_and_says_first_when_it_is_synthetic(pretrained_on_a, tmp_path, capsys):
    prepared, export = pretrained_on_a
    config = finetune_config(f"model.init_from={export}")
    resolve_inputs(config)
    assert config.data.prepared_dir == str(prepared)
    assert capsys.readouterr().out == ""

    synthetic = shutil.copytree(prepared, tmp_path / "synthetic")
    manifest = json.loads((synthetic / MANIFEST_FILE).read_text())
    (synthetic / MANIFEST_FILE).write_text(json.dumps({**manifest, "synthetic": True}))
    resolve_inputs(finetune_config(f"model.init_from={export}", f"data.prepared_dir={synthetic}"))
    assert capsys.readouterr().out.splitlines()[0].startswith("SYNTHETIC DATA: ")


def test_older_manifests_are_judged_by_the_generators_marker(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    prepared = write_finetune_prepared_dir(tmp_path / "prepared", patients=(4, 2, 2))
    manifest = {**json.loads((prepared / MANIFEST_FILE).read_text()), "options": {"mimic_dir": str(raw)}}
    (prepared / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not is_synthetic(str(prepared))
    (raw / SYNTHETIC_MARKER_FILE).write_text("{}")
    assert is_synthetic(str(prepared))


def test_prepare_records_whether_its_input_is_synthetic(ray_local, tmp_path):
    from medmplm.data.pipeline import PrepareOptions, prepare
    from medmplm.synthetic import generate_mimic3

    raw = tmp_path / "mimic"
    generate_mimic3(raw, patients=6, seed=1)
    assert is_synthetic_release(raw) and not is_synthetic_release(tmp_path)
    prepare(raw, tmp_path / "prepared", PrepareOptions(ndc_map_dir=str(raw), num_shards_per_split=1))
    assert read_manifest(tmp_path / "prepared").synthetic is True
    assert json.loads((tmp_path / "prepared" / MANIFEST_FILE).read_text())["synthetic"] is True
    assert is_synthetic(str(tmp_path / "prepared"))
