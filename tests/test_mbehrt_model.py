"""The M-BEHRT model: lab value embedding on hand-built values, the fusion modes' shapes and masks, the visit alignment
loss, the pretraining objectives and masking, and the Auto classes' save/load round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, BertConfig, BertModel

from medmplm.data.vocab import MASK_ID, NUM_SPECIAL_TOKENS
from medmplm.models.mbehrt import MBehrtConfig, MBehrtForPretraining, MBehrtModel
from medmplm.models.mbehrt.configuration_mbehrt import MASKED_VALUE_ID, NO_VALUE_ID, PRESENT_VALUE_ID
from medmplm.models.mbehrt.modeling_mbehrt import LabValueEmbedding
from medmplm.models.mbehrt.testing_utils import tiny_config, visit_record, word_tokenizer
from medmplm.models.text_encoder import load_backbone_checkpoint
from medmplm.pretraining.mbehrt import MBehrtPretrainingTask, PatientSequenceBuilder, as_visit

LAYOUTS = {
    "early": {"fusion": "early"},
    "late": {"fusion": "late"},
    "shared_attention": {"fusion": "shared_attention"},
    "tabular": {"modalities": ["tabular"]},
    "text": {"modalities": ["text"]},
}


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def patients() -> list[tuple[list, str | None]]:
    """Two patients: one with three visits (two notes, labs), one with one visit and no note."""
    first = [
        visit_record(1, "2100-01-01", ["ICD9CM:4019"], ["N02B"], [("50912", 1.5, 2.0)], note="findings hypertension"),
        visit_record(2, "2100-02-01", ["ICD9CM:4280"], ["C07A"], [("50912", 2.5, 1.0), ("50971", 4.0, 3.0)]),
        visit_record(3, "2100-03-01", ["ICD9CM:25000"], [], [("50912", 0.5, 1.0)], note="diabetes stable plan"),
    ]
    second = [visit_record(4, "2100-01-01", ["ICD9CM:4280", "ICD9CM:4019"], ["C07A"], subject_id=2, gender="M")]
    return [([as_visit(v) for v in first], "F"), ([as_visit(v) for v in second], "M")]


def batch_of(config: MBehrtConfig) -> dict[str, torch.Tensor]:
    builder = PatientSequenceBuilder(config, word_tokenizer() if "text" in config.modalities else None)
    rows = builder.build(patients())
    return {name: torch.from_numpy(rows[name]) for name in builder.model_columns}


# --- lab values ------------------------------------------------------------------------------------------------------


def test_lab_value_embedding_on_hand_built_values():
    torch.manual_seed(0)
    binned = LabValueEmbedding(tiny_config())
    value_ids = torch.tensor([[NO_VALUE_ID, MASKED_VALUE_ID, PRESENT_VALUE_ID, PRESENT_VALUE_ID + 2]])
    table = binned.value_embeddings.weight.detach()
    out = binned(value_ids, None)
    # No value: exactly nothing added; a hidden value and each bin: their own rows.
    assert torch.equal(out[0, 0], torch.zeros(8)) and torch.equal(out[0, 1:], table[value_ids[0, 1:]])
    assert table.shape == (PRESENT_VALUE_ID + 3, 8)

    projection = LabValueEmbedding(
        tiny_config(
            lab_value_embedding="projection",
            lab_value_edges={},
            lab_value_means={"50912": 1.0},
            lab_value_stds={"50912": 0.5},
        )
    )
    value_ids = torch.tensor([[NO_VALUE_ID, MASKED_VALUE_ID, PRESENT_VALUE_ID, PRESENT_VALUE_ID]])
    values = torch.tensor([[7.0, 7.0, 0.5, -2.0]])
    out = projection(value_ids, values)
    table = projection.value_embeddings.weight.detach()
    weight, bias = projection.projection.weight.detach()[:, 0], projection.projection.bias.detach()
    # A value's standardised number enters only where a value is present; a hidden one gets the mask row alone.
    torch.testing.assert_close(out[0, 0], torch.zeros(8))
    torch.testing.assert_close(out[0, 1], table[MASKED_VALUE_ID])
    torch.testing.assert_close(out[0, 2], table[PRESENT_VALUE_ID] + 0.5 * weight + bias)
    torch.testing.assert_close(out[0, 3], table[PRESENT_VALUE_ID] - 2.0 * weight + bias)
    with pytest.raises(ValueError, match="values is required"):
        projection(value_ids, None)


# --- fusion ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fusion_modes_shapes_and_masks(layout):
    torch.manual_seed(0)
    config = tiny_config(**LAYOUTS[layout])
    model = MBehrtModel(config).eval()
    batch = batch_of(config)
    with torch.no_grad():
        out = model(**batch)
    both = config.fused
    assert out.patient_embedding.shape == (2, 16 if both and layout != "early" else 8)
    assert model.patient_embedding_size == out.patient_embedding.shape[1]
    if "tabular" in config.modalities:
        assert out.tabular_hidden_state.shape == (2, 16, 8)
    else:
        assert out.tabular_hidden_state is None
    if "text" in config.modalities:
        assert out.note_hidden_state.shape == (2, 3, 8)
    else:
        assert out.note_hidden_state is None
    assert (out.visit_alignment_loss is not None) == both

    # Masked positions are never read: padded tokens, slots without a note, a note's padding.
    changed = {name: value.clone() for name, value in batch.items()}
    if "tabular" in config.modalities:
        padding = batch["attention_mask"] == 0
        changed["input_ids"][padding] = 7
        changed["age_ids"][padding] = 50
        changed["visit_ids"][padding] = 2
    if "text" in config.modalities:
        no_note = batch["note_mask"] == 0
        changed["note_input_ids"][no_note] = 6
        changed["note_attention_mask"][no_note] = 1
        changed["note_age_ids"][no_note] = 30
        note_padding = (batch["note_attention_mask"] == 0) & ~no_note.unsqueeze(-1)
        changed["note_input_ids"][note_padding] = 7
    with torch.no_grad():
        again = model(**changed)
    torch.testing.assert_close(again.patient_embedding, out.patient_embedding)
    if out.tabular_hidden_state is not None:
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(again.tabular_hidden_state[real], out.tabular_hidden_state[real])
    if out.note_hidden_state is not None:
        real = batch["note_mask"].bool()
        torch.testing.assert_close(again.note_hidden_state[real], out.note_hidden_state[real])

    if both:
        # The tabular tokens read the notes in early fusion and shared attention, never in late fusion.
        other_note = {**batch, "note_input_ids": batch["note_input_ids"].clone()}
        other_note["note_input_ids"][0, 0, 1] = 9
        with torch.no_grad():
            tabular = model(**other_note).tabular_hidden_state
        # Exact comparison: at initialisation a note moves the tabular states by little, and a stream that never reads
        # the notes computes the very same numbers.
        reads_notes = not torch.equal(tabular[0], out.tabular_hidden_state[0])
        assert reads_notes == (layout != "late")
        # The patient without a note is untouched by another patient's note.
        torch.testing.assert_close(tabular[1], out.tabular_hidden_state[1])


def test_visit_alignment_is_symmetric_infonce_over_the_visits_with_both_modalities():
    torch.manual_seed(0)
    config = tiny_config(fusion="late", alignment_temperature=0.5)
    model = MBehrtModel(config).eval()
    batch = batch_of(config)
    with torch.no_grad():
        out = model(**batch)
    # Visits with a note and tokens: patient 1's visits 1 and 3 (slots 0 and 2).
    assert int(out.aligned_visits) == 2
    states, visits = out.tabular_hidden_state[0], batch["visit_ids"][0]
    tabular = torch.stack([states[visits == v].mean(dim=0) for v in (1, 3)])
    notes = out.note_hidden_state[0, [0, 2]]
    logits = F.normalize(tabular, dim=-1) @ F.normalize(notes, dim=-1).T / 0.5
    targets = torch.arange(2)
    expected = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(out.visit_alignment_loss, expected)


# --- pretraining -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["binned", "projection"])
def test_pretraining_objectives_at_masked_tokens_and_hidden_values(values):
    torch.manual_seed(0)
    extra = {} if values == "binned" else {"lab_value_embedding": "projection", "lab_value_edges": {}}
    if values == "projection":
        extra |= {"lab_value_means": {"50912": 1.5, "50971": 4.0}, "lab_value_stds": {"50912": 1.0, "50971": 0.5}}
    weights = {"mtm": 2.0, "mvp": 0.5, "alignment": 0.25}
    config = tiny_config(loss_weights=weights, mask_prob=0.5, value_mask_prob=1.0, **extra)
    model = MBehrtForPretraining(config).eval()
    task = MBehrtPretrainingTask.from_config(config, tuple(batch_of(config)))
    inputs = task.model_inputs(batch_of(config), torch.Generator().manual_seed(1), training=True)
    hidden = inputs["value_ids"] == MASKED_VALUE_ID
    # Every present value is hidden at value_mask_prob 1: creatinine 1.5, 2.5 and 0.5, and potassium where it has
    # statistics (projection).
    assert int(hidden.sum()) == (3 if values == "binned" else 4)
    with torch.no_grad():
        out = model(**inputs)
        states = out.model_output.tabular_hidden_state
        table = model.mbehrt.tabular_embeddings.token_embeddings.weight
        scores = model.token_prediction_head(states, table)
        targets = inputs["labels"] != -100
        expected_mtm = F.cross_entropy(scores[targets], inputs["labels"][targets])
        predicted = model.value_prediction_head(states[hidden])
    torch.testing.assert_close(out.losses["mtm"], expected_mtm)
    if values == "binned":
        torch.testing.assert_close(out.losses["mvp"], F.cross_entropy(predicted, inputs["value_labels"][hidden]))
        assert inputs["value_labels"][hidden].tolist() == [1, 2, 0]
    else:
        # Standardised values of creatinine 1.5, 2.5, 0.5 and potassium 4.0.
        assert sorted(inputs["value_labels"][hidden].tolist()) == [-1.0, 0.0, 0.0, 1.0]
        assert torch.all(inputs["values"][hidden] == 0)
        torch.testing.assert_close(out.losses["mvp"], F.mse_loss(predicted.squeeze(-1), inputs["value_labels"][hidden]))
    expected = 2.0 * expected_mtm + 0.5 * out.losses["mvp"] + 0.25 * out.losses["alignment"]
    torch.testing.assert_close(out.loss, expected)
    assert {name: int(count) for name, count in out.target_counts.items()} == {
        "mtm": int(targets.sum()),
        "mvp": int(hidden.sum()),
        "alignment": 2,
    }
    statistics = task.batch_statistics(out, inputs)
    expected_keys = {"loss_mtm", "loss_mvp", "loss_alignment", "masked_token_accuracy"}
    assert set(statistics) == expected_keys | ({"masked_value_accuracy"} if values == "binned" else set())


def test_a_batch_without_targets_has_zero_losses_that_backpropagate():
    torch.manual_seed(0)
    config = tiny_config(modalities=["tabular"])
    model = MBehrtForPretraining(config)
    batch = batch_of(config)
    batch["value_ids"] = torch.where(batch["value_ids"] >= PRESENT_VALUE_ID, NO_VALUE_ID, batch["value_ids"])
    labels = torch.full_like(batch["input_ids"], -100)
    out = model(**batch, labels=labels, value_labels=torch.zeros_like(batch["input_ids"]))
    assert float(out.loss.detach()) == 0.0 and sorted(out.losses) == ["mtm", "mvp"]
    out.loss.backward()
    assert model.value_prediction_head.weight.grad is not None and model.token_prediction_head.bias.grad is not None


def test_masking_rate_types_and_reproducibility():
    config = tiny_config(modalities=["tabular"], max_length=64, max_lab_events_per_visit=40)
    labs = [("50912", 1.5, 1.0)] * 8
    visits = [
        visit_record(i, f"2100-01-{i + 1:02d}", ["ICD9CM:4019", "ICD9CM:4280"], ["N02B", "C07A"], labs)
        for i in range(4)
    ]
    rows = PatientSequenceBuilder(config).build([([as_visit(v) for v in visits], "F")] * 128)
    batch = {name: torch.from_numpy(rows[name]) for name in ("input_ids", "attention_mask", "value_ids")}
    task = MBehrtPretrainingTask.from_config(config, tuple(batch))
    eligible = batch["attention_mask"].bool() & (batch["input_ids"] >= NUM_SPECIAL_TOKENS)
    inputs = task.model_inputs(batch, torch.Generator().manual_seed(0), training=True)
    selected = inputs["labels"] != -100
    assert not bool((selected & ~eligible).any())
    assert abs(int(selected.sum()) / int(eligible.sum()) - 0.15) < 0.03
    assert abs(int((inputs["input_ids"][selected] == MASK_ID).sum()) / int(selected.sum()) - 0.8) < 0.06
    hidden = inputs["value_ids"] == MASKED_VALUE_ID
    present = batch["value_ids"] >= PRESENT_VALUE_ID
    assert not bool((hidden & ~present).any()) and abs(int(hidden.sum()) / int(present.sum()) - 0.15) < 0.04
    assert torch.equal(inputs["value_labels"][hidden], batch["value_ids"][hidden] - PRESENT_VALUE_ID)

    all_random = MBehrtPretrainingTask.from_config(
        tiny_config(mask_prob=1.0, mask_token_prob=0.0, random_token_prob=1.0), tuple(batch)
    )
    replaced = all_random.model_inputs(batch, torch.Generator().manual_seed(0), training=True)["input_ids"]
    for token_type in ("gender", "diagnosis", "medication", "lab"):
        start, end = config.token_range(token_type)
        of_type = eligible & (batch["input_ids"] >= start) & (batch["input_ids"] < end)
        assert bool(((replaced[of_type] >= start) & (replaced[of_type] < end)).all()), token_type

    again = task.model_inputs(batch, torch.Generator().manual_seed(0), training=False)
    assert all(torch.equal(inputs[k], again[k]) for k in inputs), "the generator is not the only randomness"


# --- saving and loading ----------------------------------------------------------------------------------------------


def test_save_and_load_round_trip_with_the_tokenizer_and_the_frozen_prefix(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(text_num_frozen_layers=1)
    model = MBehrtForPretraining(config).eval()
    model.tokenizer = word_tokenizer()
    model.save_pretrained(tmp_path / "saved")
    files = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "mbehrt" and saved["lab_value_edges"] == {"50912": [1.0, 2.0]}
    assert type(AutoConfig.from_pretrained(tmp_path / "saved")) is MBehrtConfig

    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "saved").eval()
    encoder = AutoModel.from_pretrained(tmp_path / "saved").eval()
    assert type(loaded) is MBehrtForPretraining and type(encoder) is MBehrtModel
    assert loaded.tokenizer is not None and encoder.tokenizer is not None
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert sorted(state) == sorted(loaded_state) and all(torch.equal(state[k], loaded_state[k]) for k in state)
    # The text encoder's embeddings and first layer stay frozen after loading.
    backbone = loaded.mbehrt.text_encoder.backbone
    assert not backbone.embeddings.word_embeddings.weight.requires_grad
    assert not backbone.encoder.layer[0].output.dense.weight.requires_grad

    batch = batch_of(config)
    task = MBehrtPretrainingTask.from_config(config, tuple(batch))
    inputs = task.model_inputs(batch, torch.Generator().manual_seed(0), training=False)
    with torch.no_grad():
        expected, again = model(**inputs), loaded(**inputs)
        encoded, expected_encoding = encoder(**batch), model.mbehrt(**batch)
    # Loaded weights sit at other memory alignments than freshly built ones, which can change a CPU kernel's summation
    # order in the last bits, hence a float32-ulp tolerance.
    torch.testing.assert_close(again.loss, expected.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(encoded.patient_embedding, expected_encoding.patient_embedding, rtol=1e-6, atol=1e-7)


def test_a_text_checkpoint_passed_in_keeps_its_weights(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    bert = BertModel(BertConfig.from_dict(config.text_config), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    checkpoint = load_backbone_checkpoint(tmp_path / "bert")
    model = MBehrtModel(config, text_backbone=checkpoint)
    assert torch.equal(
        model.text_encoder.backbone.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight
    )
