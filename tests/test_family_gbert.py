"""The ``gbert`` pretraining family: G-BERT's objectives on a hand-built batch, masking through the task, the codes-only
featuriser, building from a prepared directory, the Auto-class round trip, and (slow) pretraining end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

from medmplm.config import ConfigError, ModelSection
from medmplm.data.masking import IGNORE_INDEX
from medmplm.data.schema import VOCAB_DIR
from medmplm.data.vocab import CLS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, UNK_ID, CodeVocab
from medmplm.models.gbert import GBertConfig, GBertForPretraining, GBertModel
from medmplm.models.gbert.modeling_gbert import _recall_at_set_size
from medmplm.models.testing_utils import write_tiny_prepared_dir
from medmplm.pretraining.gbert import FAMILY, CodeFeaturizer, keep_visits_with_codes
from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars

DIAGNOSES = ["D1", "D2", "D3", "D4", "D5"]  # ids 4..8
MEDICATIONS = ["R1", "R2", "R3"]  # ids 4..6


def tiny_config(**overrides) -> GBertConfig:
    values = {
        "vocabularies": {"diagnosis": DIAGNOSES, "medication": MEDICATIONS},
        "ontologies": {
            "diagnosis": {"D1": ["ROOT", "A"], "D2": ["ROOT", "A"], "D3": ["ROOT", "B"]},
            "medication": {"R1": ["ATC", "N"], "R2": ["ATC", "N"]},
        },
        "code_hidden_size": 8,
        "code_num_layers": 1,
        "code_num_heads": 2,
        "code_intermediate_size": 16,
        "max_codes": 4,
        "ontology_head_size": 2,
        "ontology_num_heads": 4,
    }
    return GBertConfig(**{**values, **overrides})


def hand_batch() -> dict[str, torch.Tensor]:
    """Three masked visits; their full code sets are written out in ``FULL_SETS``.

    Visit 0: diagnoses D1 D3 and D4 (masked); medications R2 R1.
    Visit 1: diagnosis D5 and an unknown code; no medication.
    Visit 2: diagnoses D2 and D5 (replaced by the random code D1); medications R1 (masked) and R3.
    """
    diag_ids = torch.tensor(
        [[CLS_ID, 4, 6, MASK_ID, PAD_ID], [CLS_ID, 8, UNK_ID, PAD_ID, PAD_ID], [CLS_ID, 5, 4, 0, 0]]
    )
    diag_labels = torch.full_like(diag_ids, IGNORE_INDEX)
    diag_labels[0, 3] = 7
    diag_labels[2, 2] = 8
    med_ids = torch.tensor([[CLS_ID, 5, 4, 0, 0], [CLS_ID, 0, 0, 0, 0], [CLS_ID, MASK_ID, 6, 0, 0]])
    med_labels = torch.full_like(med_ids, IGNORE_INDEX)
    med_labels[2, 1] = 4
    return {
        "diag_ids": diag_ids,
        "diag_mask": (diag_ids != PAD_ID).long(),
        "med_ids": med_ids,
        "med_mask": (med_ids != PAD_ID).long(),
        "diag_labels": diag_labels,
        "med_labels": med_labels,
    }


# Multi-hot over the codes (column i: id NUM_SPECIAL_TOKENS + i): the visits' original codes, [UNK] excluded.
FULL_SETS = {
    "diagnosis": torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 1, 0, 0, 1]]),
    "medication": torch.tensor([[1.0, 1, 0], [0, 0, 0], [1, 0, 1]]),
}


def test_objectives_are_bce_against_the_full_code_sets_of_eligible_visits():
    torch.manual_seed(0)
    model = GBertForPretraining(tiny_config(loss_weights={"rx2dx": 0.5})).eval()
    output = model(**hand_batch())
    cls = {
        "diagnosis": output.model_output.diagnosis_last_hidden_state[:, 0],
        "medication": output.model_output.medication_last_hidden_state[:, 0],
    }
    both = [0, 2]  # visit 1 has no medication: it counts for dx2dx alone
    expected_rows = {
        "dx2dx": ("diagnosis", "diagnosis", [0, 1, 2]),
        "rx2rx": ("medication", "medication", both),
        "dx2rx": ("diagnosis", "medication", both),
        "rx2dx": ("medication", "diagnosis", both),
    }
    for name, (source, target, rows) in expected_rows.items():
        logits = model.heads[name](cls[source])
        torch.testing.assert_close(output.logits[name], logits)
        expected = F.binary_cross_entropy_with_logits(logits[rows], FULL_SETS[target][rows])
        torch.testing.assert_close(output.losses[name], expected, msg=name)
        assert int(output.visit_counts[name]) == len(rows), name
        assert int(output.target_counts[name]) == int(FULL_SETS[target][rows].sum()), name
    losses = output.losses
    torch.testing.assert_close(output.loss, losses["dx2dx"] + losses["rx2rx"] + losses["dx2rx"] + 0.5 * losses["rx2dx"])


def test_gradients_reach_every_head_even_when_no_visit_is_eligible():
    torch.manual_seed(0)
    model = GBertForPretraining(tiny_config())
    model(**hand_batch()).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

    model.zero_grad(set_to_none=True)
    batch = hand_batch()
    batch["med_ids"] = torch.full_like(batch["med_ids"], PAD_ID)
    batch["med_ids"][:, 0] = CLS_ID
    batch["med_mask"] = (batch["med_ids"] != PAD_ID).long()
    batch["med_labels"] = torch.full_like(batch["med_ids"], IGNORE_INDEX)
    output = model(**batch)
    for name in ("rx2rx", "dx2rx", "rx2dx"):
        assert output.losses[name].item() == 0.0 and int(output.visit_counts[name]) == 0
        assert torch.isnan(output.recalls[name])
    output.loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_recall_at_set_size():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    torch.testing.assert_close(_recall_at_set_size(logits, targets), torch.tensor([0.5, 1.0, 0.0]))


def test_config_names_the_inconsistent_field():
    with pytest.raises(ValueError, match="code_hidden_size"):
        tiny_config(code_hidden_size=12)
    with pytest.raises(ValueError, match="loss_weights"):
        tiny_config(loss_weights={"dx2px": 1.0})
    with pytest.raises(ValueError, match="vocabularies"):
        tiny_config(vocabularies={"diagnosis": ["D1", "D1"], "medication": MEDICATIONS})
    with pytest.raises(ValueError, match="mask_token_prob"):
        tiny_config(mask_token_prob=0.8, random_token_prob=0.3)
    assert tiny_config(loss_weights={"dx2rx": 2}).loss_weights == {
        "dx2dx": 1.0,
        "rx2rx": 1.0,
        "dx2rx": 2.0,
        "rx2dx": 1.0,
    }


def featurised(visits: list[tuple[list[str], list[str]]], config: GBertConfig) -> dict[str, np.ndarray]:
    """``CodeFeaturizer`` output for (diagnoses, medications) visits."""
    featurizer = CodeFeaturizer(
        CodeVocab("diagnosis", config.vocabularies["diagnosis"]),
        CodeVocab("medication", config.vocabularies["medication"]),
        max_codes=config.max_codes,
    )
    return featurizer(
        {
            "hadm_id": np.arange(len(visits)),
            "diagnoses": [diagnoses for diagnoses, _ in visits],
            "medications": [medications for _, medications in visits],
        }
    )


def test_code_featurizer_drops_visits_without_vocabulary_codes():
    config = tiny_config(max_codes=2)
    features = featurised([(["D2", "D2", "X9", "D1"], []), (["X9"], ["Y1"]), ([], ["R3"])], config)
    np.testing.assert_array_equal(features["diag_ids"], [[CLS_ID, 5, UNK_ID], [CLS_ID, UNK_ID, PAD_ID], [CLS_ID, 0, 0]])
    np.testing.assert_array_equal(features["med_ids"], [[CLS_ID, 0, 0], [CLS_ID, UNK_ID, 0], [CLS_ID, 6, 0]])
    np.testing.assert_array_equal(features["diag_truncated"], [1, 0, 0])
    np.testing.assert_array_equal(features["diag_unknown"] + features["med_unknown"], [1, 2, 0])
    np.testing.assert_array_equal(features["has_codes"], [1, 0, 1])
    kept = keep_visits_with_codes(features)
    assert sorted(kept) == ["diag_ids", "diag_mask", "med_ids", "med_mask"]
    np.testing.assert_array_equal(kept["med_ids"][:, 1], [0, 6])


def random_visits(rng: np.random.Generator, count: int, diagnoses: list[str], medications: list[str]):
    return [
        (
            list(rng.choice(diagnoses, size=rng.integers(0, 6), replace=False)),
            list(rng.choice(medications, size=rng.integers(0, 3), replace=False)),
        )
        for _ in range(count)
    ]


def test_task_masks_only_codes_and_replaces_within_the_same_vocabulary(tmp_path):
    diagnoses = [f"D{i}" for i in range(30)]
    config = tiny_config(vocabularies={"diagnosis": diagnoses, "medication": MEDICATIONS}, max_codes=6)
    visits = random_visits(np.random.default_rng(0), 200, diagnoses, MEDICATIONS)
    batch = {k: torch.from_numpy(v) for k, v in keep_visits_with_codes(featurised(visits, config)).items()}
    config.save_pretrained(tmp_path / "default")
    task = FAMILY.task(tmp_path / "default")

    inputs = task.model_inputs(batch, torch.Generator().manual_seed(1), training=True)
    again = task.model_inputs(batch, torch.Generator().manual_seed(1), training=True)
    assert all(torch.equal(inputs[k], again[k]) for k in inputs), "the generator is not the only randomness"
    assert sorted(inputs) == sorted(["diag_ids", "diag_mask", "diag_labels", "med_ids", "med_mask", "med_labels"])
    for prefix in ("diag", "med"):
        original, masked, labels = batch[f"{prefix}_ids"], inputs[f"{prefix}_ids"], inputs[f"{prefix}_labels"]
        selected = labels != IGNORE_INDEX
        assert torch.equal(labels[selected], original[selected])
        assert bool((original[selected] >= NUM_SPECIAL_TOKENS).all()), "a special token or [UNK] became a target"
        assert torch.equal(masked[~selected], original[~selected])
        assert torch.equal(selected.any(dim=1), (original >= NUM_SPECIAL_TOKENS).any(dim=1)), "a visit lacks a target"
        assert bool(((masked == MASK_ID) | (masked >= NUM_SPECIAL_TOKENS))[selected].all())

    # Every code selected and replaced by a random code: each from its own type's vocabulary, never a special token.
    tiny_config(
        vocabularies=config.vocabularies, max_codes=6, mask_prob=1.0, mask_token_prob=0.0, random_token_prob=1.0
    ).save_pretrained(tmp_path / "replacing")
    inputs = FAMILY.task(tmp_path / "replacing").model_inputs(batch, torch.Generator().manual_seed(2), training=True)
    for prefix, vocab_size in (("diag", NUM_SPECIAL_TOKENS + 30), ("med", NUM_SPECIAL_TOKENS + 3)):
        replaced = inputs[f"{prefix}_ids"][inputs[f"{prefix}_labels"] != IGNORE_INDEX]
        assert replaced.numel() > 100
        assert bool(((replaced >= NUM_SPECIAL_TOKENS) & (replaced < vocab_size)).all()), prefix


def test_auto_classes_round_trip_from_config_json_and_weights_alone(tmp_path):
    torch.manual_seed(0)
    model = GBertForPretraining(tiny_config()).eval()
    model.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "gbert"
    assert saved["vocabularies"] == {"diagnosis": DIAGNOSES, "medication": MEDICATIONS}
    assert saved["ontologies"] == tiny_config().ontologies

    batch = hand_batch()
    with torch.no_grad():
        expected = model(**batch)
        pretraining = AutoModelForPreTraining.from_pretrained(tmp_path / "saved").eval()
        assert type(pretraining) is GBertForPretraining
        loaded = pretraining(**batch)
        encoder = AutoModel.from_pretrained(tmp_path / "saved").eval()
        assert type(encoder) is GBertModel
        encoded = encoder(**{k: v for k, v in batch.items() if not k.endswith("_labels")})
    assert torch.equal(loaded.loss, expected.loss)
    for name in expected.logits:
        assert torch.equal(loaded.logits[name], expected.logits[name]), name
    assert encoded.visit_embedding.shape == (3, 16)
    assert torch.equal(encoded.visit_embedding, expected.model_output.visit_embedding)
    assert torch.equal(encoded.diagnosis_last_hidden_state, expected.model_output.diagnosis_last_hidden_state)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("gbert") / "prepared", num_visits=24)


def test_build_model_from_a_prepared_directory_and_continue_from_its_export(prepared, tmp_path):
    torch.manual_seed(0)
    built = FAMILY.build_model(str(prepared), ModelSection(family="gbert"))
    model = built.model
    assert isinstance(model, GBertForPretraining) and built.tokenizer is None
    assert model.config.code_hidden_size == 32 and model.config.max_codes == 32
    for code_type in ("diagnosis", "medication"):
        expected = CodeVocab.from_tsv(prepared / VOCAB_DIR / f"{code_type}.tsv", code_type).codes
        assert model.config.vocabularies[code_type] == expected
        assert set(model.config.ontologies[code_type]) <= set(expected)
    assert built.description.startswith("tiny preset")

    model.save_pretrained(tmp_path / "export")
    continued = FAMILY.build_model(str(prepared), ModelSection(family="gbert", init_from=str(tmp_path / "export")))
    state = continued.model.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    with pytest.raises(ConfigError, match="model.overrides"):
        FAMILY.build_model(
            str(prepared),
            ModelSection(family="gbert", init_from=str(tmp_path / "export"), overrides={"code_dropout": 0.2}),
        )
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model.init_from: .* 'bert' model"):
        FAMILY.build_model(str(prepared), ModelSection(family="gbert", init_from=str(tmp_path / "bert")))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"text_checkpoint": "/nowhere"}, "model.text_checkpoint"),
        ({"tokenizer_dir": "/nowhere"}, "model.tokenizer_dir"),
        ({"overrides": {"hidden_size": 64}}, "model.overrides.hidden_size"),
        ({"overrides": {"code_hidden_size": 48}}, "model.overrides"),
        ({"options": {"mlm_probability": 0.2}}, "model.options.mlm_probability"),
        ({"preset": "base"}, "model.preset"),
    ],
)
def test_build_model_names_the_wrong_key(prepared, section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        FAMILY.build_model(str(prepared), ModelSection(family="gbert", **section))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pretrain_gbert_end_to_end_with_zero2(ray_local, synthetic_prepared, tmp_path):
    output = run_pretraining(
        "model.family=gbert",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=x",
        "train.epochs=3",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "pretrain.log",
    )
    assert "Pretraining finished: gbert, run x" in output

    losses = tensorboard_scalars(tmp_path / "x" / "tensorboard")["train/loss"]
    assert len(losses) >= 8, losses
    first, last = np.mean([v for _, v in losses[:3]]), np.mean([v for _, v in losses[-3:]])
    assert last < first * 0.9, f"train loss did not go down: first steps {losses[:3]}, last steps {losses[-3:]}"

    export = tmp_path / "x" / "export"
    encoder = AutoModel.from_pretrained(export).eval()
    assert type(encoder) is GBertModel
    initial = GBertModel.from_pretrained(tmp_path / "x" / "initial_model")
    exported_state, initial_state = encoder.state_dict(), initial.state_dict()
    assert any(not torch.equal(exported_state[k], initial_state[k]) for k in exported_state), "export is untrained"
    shutil.rmtree(tmp_path / "x" / "tensorboard", ignore_errors=True)
