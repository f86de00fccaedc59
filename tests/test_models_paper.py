"""The ``paper`` preset builds the sizes of Liu et al. 2022 (slow: a BERT-base text encoder)."""

from pathlib import Path

import pytest

from medmplm.models import MedMPLMConfig
from medmplm.models.summary import build_for_summary, parameter_table
from medmplm.models.testing_utils import write_tiny_prepared_dir


@pytest.mark.slow
def test_paper_preset_is_bert_base_training_its_last_two_layers(tmp_path: Path) -> None:
    model = build_for_summary(MedMPLMConfig.from_preset("paper"), write_tiny_prepared_dir(tmp_path))
    text = model.text_encoder
    assert len(text.backbone.encoder.layer) == 12 and text.hidden_size == 768
    assert text.backbone.config.num_attention_heads == 12 and text.num_frozen_layers == 10
    rows = {name: (total, trainable) for name, total, trainable in parameter_table(model)}
    # BERT-base without its pooler: 23.8M embedding + 12 x 7.09M layer parameters.
    assert rows["text embeddings"] == (23_837_184, 0)
    assert rows["text layers 1-10 (frozen)"] == (70_878_720, 0)
    assert rows["text layers 11-12"] == (14_175_744, 14_175_744)
    code = model.medmplm.code_encoder
    assert len(code.encoder.layers) == 2 and code.encoder.layers[0].self_attn.num_heads == 2
    assert code.embeddings.ontology["diagnosis"].stage_one.heads == 4
    assert code.embeddings.ontology["diagnosis"]().shape[1] == 300
