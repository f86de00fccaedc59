"""The config system: defaults < YAML < overrides, strict keys and types, clear errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medmplm.config import (
    PRESETS_DIR,
    ConfigError,
    PretrainConfig,
    batch_plan,
    load_config,
    parse_overrides,
    preset_names,
    read_yaml,
    save_config,
    to_dict,
)

CONFIGS = Path(__file__).resolve().parents[1] / "medmplm" / "configs"


def test_defaults_are_the_laptop_quick_start():
    config = load_config(PretrainConfig)
    assert config.model.preset == "tiny"
    assert config.data.prepared_dir is None
    assert not config.scaling.use_gpu
    assert config.train.lr == 5e-4


def test_yaml_then_overrides_in_both_spellings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  epochs: 7\nscaling:\n  num_workers: 4\n")
    config = load_config(
        PretrainConfig,
        path,
        ["train.lr=2e-4", "--scaling.num_workers", "2", "--run.name=abc", "--deepspeed.zero-stage", "3"],
    )
    assert config.train.lr == 2e-4
    assert config.train.epochs == 7  # from the file
    assert config.scaling.num_workers == 2  # override wins over the file
    assert config.run.name == "abc"
    assert config.deepspeed.zero_stage == 3


def test_free_form_model_overrides_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  overrides:\n    hidden_dropout: 0.2\n")
    config = load_config(PretrainConfig, path, ["model.overrides.num_frozen_layers=1"])
    assert config.model.overrides == {"hidden_dropout": 0.2, "num_frozen_layers": 1}


def test_values_are_parsed_as_yaml_scalars():
    assert parse_overrides(["a=null", "b=true", "c=[0.9, 0.98]", "d=1e-4", "e=s3://bucket/x"]) == {
        "a": None,
        "b": True,
        "c": [0.9, 0.98],
        "d": 1e-4,
        "e": "s3://bucket/x",
    }


def test_hyphens_become_underscores_except_under_free_form_prefixes():
    tokens = ["train.max-steps=5", "model.overrides.my-field=1", "exports.mbehrt-early=/x"]
    assert parse_overrides(tokens) == {"train.max_steps": 5, "model.overrides.my-field": 1, "exports.mbehrt_early": "/x"}
    assert parse_overrides(tokens, free_form=["exports."]) == {
        "train.max_steps": 5,
        "model.overrides.my_field": 1,
        "exports.mbehrt-early": "/x",
    }


def test_int_is_accepted_for_float_and_converted():
    config = load_config(PretrainConfig, overrides=["train.lr=1"])
    assert isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "train.lrr: unknown key (did you mean 'train.lr'?)"),
        ("trian.lr=1", "trian: unknown key"),
        ("train.lr=fast", "train.lr: expected a number, got str 'fast'"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("scaling.use_gpu=1", "scaling.use_gpu: expected true or false"),
        ("deepspeed.precision=fp16", "deepspeed.precision: expected one of ['fp32', 'bf16', 'auto']"),
        ("train.betas=0.9", "train.betas: expected a list"),
        ("train.betas=[0.9, x]", "train.betas[1]: expected a number"),
        ("train.epochs=null", "train.epochs: must not be null"),
        ("train.lr.x=1", "train.lr: is a value, not a section"),
        ("train=3", "train: expected a mapping"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(PretrainConfig, overrides=[override])
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=0", "train.lr"),
        ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
        ("train.global_batch_size=30", "train.global_batch_size"),
        ("scaling.num_workers=0", "scaling.num_workers"),
        ("deepspeed.backend=nccl", "deepspeed.backend"),
        ("run.name=a/b", "run.name"),
        ("train.betas=[0.9]", "train.betas"),
        ("run.max_failures=-2", "run.max_failures"),
        ("data.text_cache=true data.materialize=false", "data.text_cache"),
        ("deepspeed.precision=bf16 deepspeed.zero_stage=0", "deepspeed.precision"),
    ],
)
def test_validation_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_config(PretrainConfig, overrides=override.split())


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value or --key value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="expected a value after"):
        parse_overrides(["--train.lr"])


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml.*expected a mapping"):
        read_yaml(bad)


def test_batch_plan_derives_accumulation():
    plan = batch_plan(32, 4, 2)
    assert plan.accumulation_steps == 4
    assert plan.micro_batch_size * plan.accumulation_steps * plan.world_size == plan.global_batch_size


def test_saved_config_round_trips_and_leaves_no_temp_file(tmp_path):
    config = load_config(PretrainConfig, overrides=["train.lr=3e-4", "model.overrides.hidden_dropout=0.1"])
    path = save_config(config, tmp_path / "out" / "pretrain_config.yaml")
    assert [p.name for p in path.parent.iterdir()] == ["pretrain_config.yaml"]
    assert load_config(PretrainConfig, path) == config
    assert yaml.safe_load(path.read_text()) == to_dict(config)


@pytest.mark.parametrize("name", ["tiny.yaml", "paper.yaml", "cluster_pretrain.yaml"])
def test_shipped_presets_load(name):
    config = load_config(PretrainConfig, CONFIGS / name)
    assert config.train.global_batch_size % (config.train.micro_batch_size * config.scaling.num_workers) == 0


def test_presets_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert PRESETS_DIR == CONFIGS
    assert preset_names() == ["cluster_pretrain", "paper", "tiny"]
    for name in ("paper", "paper.yaml"):
        assert load_config(PretrainConfig, name) == load_config(PretrainConfig, CONFIGS / "paper.yaml")
    assert load_config(PretrainConfig, "paper").model.preset == "paper"


def test_an_existing_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper.yaml").write_text("train:\n  epochs: 3\n")
    config = load_config(PretrainConfig, "paper.yaml")
    assert config.train.epochs == 3 and config.model.preset == "tiny"


def test_unknown_config_names_the_argument_and_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file 'nosuch' does not exist; .*cluster_pretrain, paper, tiny"):
        load_config(PretrainConfig, "nosuch")
    with pytest.raises(ConfigError, match="config file 'configs/tiny.yaml' does not exist"):
        load_config(PretrainConfig, "configs/tiny.yaml")


def test_cluster_preset_is_the_paper_model_on_gpus_with_shared_storage():
    config = load_config(PretrainConfig, CONFIGS / "cluster_pretrain.yaml")
    assert config.model.preset == "paper"
    assert config.deepspeed.zero_stage == 2 and config.deepspeed.precision == "bf16"
    assert config.scaling.use_gpu and config.scaling.num_workers > 1
    assert "://" in config.run.storage_path
