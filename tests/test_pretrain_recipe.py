"""The one pretraining recipe's family-agnostic parts: the registry, the text stage of the embedded default, the
refusal to freeze random text layers, and fine-tuning's backbones from other families' exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from medmplm.config import ConfigError, ModelSection, PretrainConfig, load_config
from medmplm.pretrain import text_stage_config
from medmplm.pretraining import FAMILIES, get_family
from medmplm.tasks.config import FinetuneConfig
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"), patients=(12, 4, 4))


def test_every_registered_family_declares_what_the_recipe_calls():
    for name in FAMILIES:
        family = get_family(name)
        assert family.name == name and "tiny" in family.presets
        for method in ("build_model", "load_model", "datasets", "task"):
            assert callable(getattr(family, method)), (name, method)
    assert FAMILIES[:4] == ("medmplm", "bert-mlm", "gbert", "medbert")
    assert set(FAMILIES[4:]) == {"mbehrt", "medfuse-lab", "contrastive"}
    with pytest.raises(ConfigError, match=re.escape(f"model.family: expected one of {list(FAMILIES)}")):
        load_config(PretrainConfig, overrides=["model.family=clinicalbert"])
    with pytest.raises(ValueError, match="unknown model family 'bert'"):
        get_family("bert")


def test_the_embedded_default_pretrains_a_text_encoder_first():
    config = load_config(PretrainConfig, overrides=["run.name=r", "train.epochs=3"])
    stage = text_stage_config(config)
    assert stage.model == ModelSection(family="bert-mlm", preset="tiny")
    assert stage.run.name == "r-text" and stage.train.epochs == config.model.text_stage_epochs == 2
    assert stage.run.export_dir is None and stage.train.lr == config.train.lr
    assert config.model.family == "medmplm", "the MedM-PLM config itself is left alone"
    paper = load_config(PretrainConfig, "paper", ["run.name=r"])
    assert paper.data.text_cache and text_stage_config(paper).model.preset == "base"
    assert not text_stage_config(paper).data.text_cache
    for no_stage in (
        ["model.text_checkpoint=/ckpt"],
        ["model.init_from=/export"],
        ["model.family=gbert"],
        ["model.pretrain_text_first=false"],
    ):
        assert text_stage_config(load_config(PretrainConfig, overrides=["run.name=r", *no_stage])) is None, no_stage


def test_frozen_random_text_layers_are_refused_unless_allowed(prepared):
    family = get_family("medmplm")
    with pytest.raises(
        ConfigError, match=r"model.text_checkpoint: .*1 of its layers .* model.allow_random_frozen=true"
    ):
        family.build_model(str(prepared), ModelSection())
    torch.manual_seed(0)
    allowed = family.build_model(str(prepared), ModelSection(allow_random_frozen=True))
    assert allowed.model.config.text_pretrained is None and "text encoder random" in allowed.description
    unfrozen = family.build_model(str(prepared), ModelSection(overrides={"text_num_frozen_layers": 0}))
    assert unfrozen.model.config.text_num_frozen_layers == 0
    with pytest.raises(ConfigError, match=r"model.options.mask_rate: unknown option of family 'medmplm'"):
        family.build_model(str(prepared), ModelSection(options={"mask_rate": 0.2}, allow_random_frozen=True))
    with pytest.raises(ConfigError, match="model.preset: family 'medmplm' has no preset 'base'"):
        family.build_model(str(prepared), ModelSection(preset="base", allow_random_frozen=True))


def test_finetuning_backbones_come_from_each_familys_export(prepared, tmp_path):
    from medmplm.tasks.encoders import model_spec
    from medmplm.tasks.runner import build_backbones, record_init

    torch.manual_seed(0)
    gbert = get_family("gbert").build_model(str(prepared), ModelSection(family="gbert")).model
    gbert.save_pretrained(tmp_path / "gbert")
    bert = get_family("bert-mlm").build_model(str(prepared), ModelSection(family="bert-mlm"))
    bert.model.save_pretrained(tmp_path / "bert")
    bert.tokenizer.save_pretrained(tmp_path / "bert")

    def config(*overrides: str) -> FinetuneConfig:
        return load_config(FinetuneConfig, overrides=[f"data.prepared_dir={prepared}", *overrides])

    backbones = build_backbones(
        config("finetune.model=gbert+clinicalbert", f"finetune.init_code={tmp_path / 'gbert'}",
               f"finetune.init_text={tmp_path / 'bert'}"),
        str(prepared),
    )  # fmt: skip
    assert backbones.code.config.model_type == "gbert" and backbones.code_init == str(tmp_path / "gbert")
    assert torch.equal(
        backbones.code.code_encoder.embeddings.code_type.weight, gbert.gbert.code_encoder.embeddings.code_type.weight
    )
    assert backbones.text.config.text_pretrained == str(tmp_path / "bert")
    assert torch.equal(
        backbones.text.text_encoder.backbone.embeddings.word_embeddings.weight,
        bert.model.bert.embeddings.word_embeddings.weight,
    )
    assert record_init(model_spec("gbert+clinicalbert"), backbones) == (
        f"code={tmp_path / 'gbert'}; text={tmp_path / 'bert'}"
    )
    scratch = build_backbones(config("finetune.model=clinicalbert"), str(prepared))
    assert scratch.text_init is None and record_init(model_spec("clinicalbert"), scratch) == "scratch"
    # --init names a MedM-PLM; clinicalbert's BERT does not take MedM-PLM's text part from it.
    torch.manual_seed(0)
    medmplm = get_family("medmplm").build_model(str(prepared), ModelSection(allow_random_frozen=True)).model
    with torch.no_grad():
        medmplm.text_encoder.backbone.encoder.layer[1].output.dense.weight.add_(1.0)  # as if pretrained
    medmplm.save_pretrained(tmp_path / "medmplm")
    beside = build_backbones(
        config("finetune.model=clinicalbert", f"model.init_from={tmp_path / 'medmplm'}"), str(prepared)
    )
    assert beside.text is not beside.vocabularies and record_init(model_spec("clinicalbert"), beside) == "scratch"
    assert not torch.equal(
        beside.text.text_encoder.backbone.encoder.layer[1].output.dense.weight,
        medmplm.text_encoder.backbone.encoder.layer[1].output.dense.weight,
    )

    with pytest.raises(
        ConfigError, match=r"finetune.init_text: .* is a bert-mlm export .* medmplm-text takes a MedM-PLM"
    ):
        build_backbones(config("finetune.model=medmplm-text", f"finetune.init_text={tmp_path / 'bert'}"), str(prepared))
    with pytest.raises(
        ConfigError, match=r"finetune.init_code: .* holds a 'gbert' model; --model medbert reads a 'medbert'"
    ):
        build_backbones(config("finetune.model=medbert", f"finetune.init_code={tmp_path / 'gbert'}"), str(prepared))
    with pytest.raises(ConfigError, match="finetune.init_code: --model medmplm reads no G-BERT or Med-BERT"):
        build_backbones(config("finetune.model=medmplm", f"finetune.init_code={tmp_path / 'gbert'}"), str(prepared))
    other = write_finetune_prepared_dir(tmp_path / "other", patients=(6, 2, 2), seed=3)
    with pytest.raises(
        ConfigError, match=r"finetune.init_code: the diagnosis vocabulary of .*gbert \(\d+ codes\) is not"
    ):
        build_backbones(config("finetune.model=gbert", f"finetune.init_code={tmp_path / 'gbert'}"), str(other))
