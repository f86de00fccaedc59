"""The ``medbert`` pretraining family: Med-BERT on patient code sequences.

Fast: the patient-sequence featuriser on hand-built visits (order, serialization, visit ids, truncation from the oldest
end, the patient-level prolonged-stay label, unknown codes), masking, both objectives on a hand-built batch, the Auto
classes' round trip, ``encode_visits``, and building from a prepared directory. Slow: the featuriser through Ray Data
with a patient split over blocks, and a 2-worker ZeRO-2 run of ``python -m medmplm.pretrain model.family=medbert``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medmplm.config import ConfigError, ModelSection, PretrainConfig
from medmplm.data.vocab import CLS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, UNK_ID
from medmplm.data.vocab_io import write_vocab
from medmplm.models.medbert import MedBertConfig, MedBertForPretraining, MedBertModel
from medmplm.pretraining import get_family
from medmplm.pretraining.medbert import (
    FAMILY,
    MODEL_COLUMNS,
    MedBertPretrainingTask,
    PatientSequenceFeaturizer,
    model_rows,
    patient_sequences,
    read_patient_visits,
)
from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars
from medmplm.train.data import keep_row_order

DIAGNOSES = ["4019", "4280", "42731", "5849", "25000"]  # token ids 4..8
MEDICATIONS = ["N02B", "A02B", "B01A"]  # token ids 9..11
VOCABULARIES = {"diagnosis": DIAGNOSES, "medication": MEDICATIONS}
DIAGNOSIS_RANGE, MEDICATION_RANGE = (4, 9), (9, 12)


def tiny_config(**overrides) -> MedBertConfig:
    values = {
        "vocabularies": VOCABULARIES,
        "hidden_size": 16,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 32,
        "max_length": 12,
        "max_visits": 4,
        "max_codes_per_visit": 5,
        **overrides,
    }
    return MedBertConfig(**values)


def visit(subject: int, hadm: int, admit: str, days: float, diagnoses: list[str], medications: list[str]) -> dict:
    admittime = np.datetime64(admit, "s")
    return {
        "subject_id": subject,
        "hadm_id": hadm,
        "admittime": admittime,
        "dischtime": admittime + np.timedelta64(int(days * 86400), "s"),
        "diagnoses": diagnoses,
        "medications": medications,
    }


def visit_batch(visits: list[dict]) -> dict[str, np.ndarray]:
    """Visit rows as Ray Data hands a numpy batch to ``map_groups`` (list columns as object arrays of arrays)."""
    batch = {
        "subject_id": np.array([v["subject_id"] for v in visits], dtype=np.int64),
        "hadm_id": np.array([v["hadm_id"] for v in visits], dtype=np.int64),
        "admittime": np.array([v["admittime"] for v in visits], dtype="datetime64[s]"),
        "dischtime": np.array([v["dischtime"] for v in visits], dtype="datetime64[s]"),
    }
    for column in ("diagnoses", "medications"):
        batch[column] = np.empty(len(visits), dtype=object)
        batch[column][:] = [np.array(v[column], dtype=object) for v in visits]
    return batch


def featurizer(**overrides) -> PatientSequenceFeaturizer:
    return PatientSequenceFeaturizer(tiny_config(**overrides))


# --- patient sequences -----------------------------------------------------------------------------------------------


def test_visits_become_one_sequence_per_patient_in_admission_order():
    rows = featurizer()(
        visit_batch(
            [
                visit(20, 201, "2101-05-01", 6.0, ["9999", "5849"], []),
                visit(10, 102, "2100-03-01", 7.5, ["4280", "4019", "4280"], ["B01A"]),
                visit(30, 301, "2102-01-01", 3.0, [], []),
                visit(10, 101, "2100-01-01", 6.0, ["4019"], ["N02B", "A02B", "N02B"]),
            ]
        )
    )
    assert rows["subject_id"].tolist() == [10, 20, 30]

    # Patient 10: visit 101 then 102; diagnoses (record order) then medications; a code listed twice counts once.
    assert rows["input_ids"][0].tolist() == [CLS_ID, 4, 9, 10, 5, 4, 11] + [PAD_ID] * 5
    assert rows["visit_ids"][0].tolist() == [0, 1, 1, 1, 2, 2, 2] + [0] * 5
    assert rows["serialization_ids"][0].tolist() == [0, 1, 2, 3, 1, 2, 3] + [0] * 5
    assert rows["attention_mask"][0].tolist() == [1] * 7 + [0] * 5
    assert rows["num_codes"][0] == 6
    # Patient 20: an unknown code becomes [UNK] and is counted.
    assert rows["input_ids"][1, :3].tolist() == [CLS_ID, UNK_ID, 7]
    assert rows["unknown_codes"].tolist() == [0, 1, 0]
    # Patient 30 has no code: a row marked num_codes = 0, which model_rows drops.
    assert rows["num_codes"][2] == 0
    kept = model_rows(rows)
    assert sorted(kept) == sorted(MODEL_COLUMNS)
    assert kept["input_ids"].shape == (2, 12) and kept["los_label"].tolist() == [1, 0]
    assert all(rows[name].dtype == np.int64 for name in rows)


def test_prolonged_stay_label_is_patient_level_over_the_kept_visits():
    rows = featurizer()(
        visit_batch(
            [
                visit(1, 11, "2100-01-01", 7.5, ["4019"], []),  # 7.5 days: prolonged
                visit(2, 21, "2100-01-01", 6.0, ["4019"], []),  # 6 days: not
                visit(3, 31, "2100-01-01", 7.0, ["4019"], []),  # exactly 7 days: not (more than 7 days is)
                visit(4, 41, "2100-01-01", 2.0, ["4019"], []),  # any visit of the patient prolonged: 1
                visit(4, 42, "2100-02-01", 9.0, ["4280"], []),
                visit(4, 43, "2100-03-01", 1.0, ["5849"], []),
            ]
        )
    )
    assert rows["los_label"].tolist() == [1, 0, 0, 1]


def test_long_histories_lose_their_oldest_visits_and_are_counted():
    visits = [
        visit(1, 11, "2100-01-01", 10.0, ["4019", "4280", "42731"], []),  # oldest, prolonged: dropped
        visit(1, 12, "2100-02-01", 1.0, ["5849", "25000"], ["N02B"]),
        visit(1, 13, "2100-03-01", 1.0, ["4019"], ["A02B", "B01A"]),
    ]
    rows = featurizer(max_length=8)(visit_batch(visits))
    assert rows["input_ids"][0].tolist() == [CLS_ID, 7, 8, 9, 4, 10, 11, PAD_ID]
    assert rows["visit_ids"][0].tolist() == [0, 1, 1, 1, 2, 2, 2, 0]
    assert rows["serialization_ids"][0].tolist() == [0, 1, 2, 3, 1, 2, 3, 0]
    assert (rows["codes_dropped"][0], rows["visits_dropped"][0], rows["num_codes"][0]) == (3, 1, 6)
    assert rows["los_label"][0] == 0, "the label counts a visit that is no longer in the sequence"

    # At most max_visits - 1 visits (visit id 0 is [CLS]), the most recent ones.
    rows = featurizer(max_visits=3)(visit_batch(visits))
    assert rows["visit_ids"][0, 1:7].tolist() == [1, 1, 1, 2, 2, 2]
    assert rows["visits_dropped"][0] == 1

    # A most recent visit longer than the sequence keeps its first codes (diagnoses first).
    rows = featurizer(max_length=3)(visit_batch(visits))
    assert rows["input_ids"][0].tolist() == [CLS_ID, 4, 10]
    assert (rows["codes_dropped"][0], rows["visits_dropped"][0]) == (7, 2)

    # Untruncated patients count nothing.
    rows = featurizer(max_length=20)(visit_batch(visits))
    assert (rows["codes_dropped"][0], rows["visits_dropped"][0], rows["num_codes"][0]) == (0, 0, 9)


def test_codes_beyond_the_serialization_table_are_kept_and_counted():
    rows = featurizer(max_codes_per_visit=3)(visit_batch([visit(1, 11, "2100-01-01", 1.0, DIAGNOSES, MEDICATIONS)]))
    assert rows["serialization_ids"][0, 1:9].tolist() == list(range(1, 9))
    assert rows["serialization_shared"][0] == 8 - 2
    # The model embeds them with the table's last entry.
    embeddings = MedBertModel(tiny_config(max_codes_per_visit=3)).eval().embeddings
    ids, visits = torch.tensor([[4]]), torch.tensor([[1]])
    assert torch.equal(embeddings(ids, visits, torch.tensor([[7]])), embeddings(ids, visits, torch.tensor([[2]])))


def test_the_featuriser_refuses_a_code_column_that_is_not_a_list():
    batch = visit_batch([visit(1, 11, "2100-01-01", 1.0, ["4019"], [])])
    batch["diagnoses"][0] = "4019"
    with pytest.raises(ValueError, match="'diagnoses', hadm_id 11"):
        featurizer()(batch)
    with pytest.raises(KeyError, match="dischtime"):
        featurizer()({k: v for k, v in batch.items() if k != "dischtime"})


# --- masking ---------------------------------------------------------------------------------------------------------


def code_batch(size: int = 64, length: int = 40, seed: int = 0) -> dict[str, torch.Tensor]:
    """Patients of random diagnosis and medication codes with [UNK]s, [CLS] first, random padding at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL_TOKENS, MEDICATION_RANGE[1], size=(size, length))
    ids[rng.random((size, length)) < 0.05] = UNK_ID
    ids[:, 0] = CLS_ID
    lengths = rng.integers(2, length + 1, size=size)
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids[~mask] = PAD_ID
    zeros = np.zeros_like(ids)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        "visit_ids": torch.from_numpy(np.where(mask, 1, zeros)),
        "serialization_ids": torch.from_numpy(np.where(mask, np.arange(length)[None, :], zeros)),
        "los_label": torch.from_numpy(rng.integers(0, 2, size=size)),
    }


def test_masking_rate_specials_and_reproducibility():
    task = MedBertPretrainingTask(code_ranges=(DIAGNOSIS_RANGE, MEDICATION_RANGE))
    batch = code_batch()
    eligible = batch["attention_mask"].bool() & (batch["input_ids"] >= NUM_SPECIAL_TOKENS)
    generator = torch.Generator().manual_seed(0)
    targets, as_mask = 0, 0
    draws = 20
    for _ in range(draws):
        inputs = task.model_inputs(batch, generator, training=True)
        selected = inputs["labels"] != -100
        assert not bool((selected & ~eligible).any()), "[CLS], [PAD] or [UNK] became a target"
        assert torch.equal(inputs["input_ids"][~selected], batch["input_ids"][~selected])
        assert torch.equal(inputs["labels"][selected], batch["input_ids"][selected])
        targets += int(selected.sum())
        as_mask += int((inputs["input_ids"][selected] == MASK_ID).sum())
    rate = targets / (draws * int(eligible.sum()))
    assert abs(rate - 0.15) < 0.01, rate
    assert abs(as_mask / targets - 0.8) < 0.03, as_mask / targets
    assert sorted(inputs) == sorted(
        ["input_ids", "attention_mask", "visit_ids", "serialization_ids", "labels", "los_label"]
    )

    first = task.model_inputs(batch, torch.Generator().manual_seed(5), training=True)
    again = task.model_inputs(batch, torch.Generator().manual_seed(5), training=False)
    other = task.model_inputs(batch, torch.Generator().manual_seed(6), training=True)
    assert all(torch.equal(first[k], again[k]) for k in first), "the generator is not the only randomness"
    assert not torch.equal(first["labels"], other["labels"])


def test_random_replacements_are_codes_of_the_same_type():
    task = MedBertPretrainingTask(
        code_ranges=(DIAGNOSIS_RANGE, MEDICATION_RANGE), mask_prob=1.0, mask_token_prob=0.0, random_token_prob=1.0
    )
    batch = code_batch(seed=1)
    inputs = task.model_inputs(batch, torch.Generator().manual_seed(0), training=True)
    original, replaced = batch["input_ids"], inputs["input_ids"]
    selected = inputs["labels"] != -100
    for start, end in (DIAGNOSIS_RANGE, MEDICATION_RANGE):
        of_type = selected & (original >= start) & (original < end)
        assert int(of_type.sum()) > 300
        assert bool(((replaced[of_type] >= start) & (replaced[of_type] < end)).all()), (start, end)
        # Every code of the type is drawn, not only the masked one.
        assert set(replaced[of_type].tolist()) == set(range(start, end))


# --- objectives ------------------------------------------------------------------------------------------------------


def hand_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.tensor(
        [
            [CLS_ID, MASK_ID, 5, 9, MASK_ID, 6, PAD_ID, PAD_ID],
            [CLS_ID, 7, 10, MASK_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
            [CLS_ID, 8, 4, 9, 10, 11, 5, 6],
        ]
    )
    labels = torch.full_like(input_ids, -100)
    labels[0, 1], labels[0, 4], labels[1, 3], labels[2, 2] = 4, 11, 8, 4
    attention_mask = (input_ids != PAD_ID).long()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "visit_ids": torch.tensor([[0, 1, 1, 1, 2, 2, 0, 0], [0, 1, 1, 2, 0, 0, 0, 0], [0, 1, 1, 1, 2, 3, 3, 3]]),
        "serialization_ids": torch.tensor(
            [[0, 1, 2, 3, 1, 2, 0, 0], [0, 1, 2, 1, 0, 0, 0, 0], [0, 1, 2, 3, 1, 1, 2, 3]]
        ),
        "labels": labels,
        "los_label": torch.tensor([1, 0, 1]),
    }


def test_objectives_are_cross_entropy_at_masked_positions_and_bce_on_cls():
    torch.manual_seed(0)
    model = MedBertForPretraining(tiny_config(loss_weights={"mlm": 2.0, "prolonged_los": 0.5})).eval()
    batch = hand_batch()
    with torch.no_grad():
        output = model(**batch)
        hidden = output.model_output.last_hidden_state
        # Scores at every position, the loss over the labelled ones: independent of the model's own gathering.
        scores = model.code_prediction_head(hidden, model.medbert.embeddings.code_embeddings.weight)
        expected_mlm = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), batch["labels"].reshape(-1))
        cls_logit = model.prolonged_los_head(torch.tanh(model.medbert.pooler.dense(hidden[:, 0]))).squeeze(-1)
        expected_los = F.binary_cross_entropy_with_logits(cls_logit, batch["los_label"].float())
    targets = batch["labels"] != -100
    torch.testing.assert_close(output.losses["mlm"], expected_mlm)
    torch.testing.assert_close(output.losses["prolonged_los"], expected_los)
    torch.testing.assert_close(output.loss, 2.0 * expected_mlm + 0.5 * expected_los)
    assert output.masked_code_logits.shape == (4, NUM_SPECIAL_TOKENS + 8)
    torch.testing.assert_close(output.masked_code_logits, scores[targets])
    expected_accuracy = (scores[targets].argmax(-1) == batch["labels"][targets]).float().mean()
    assert torch.equal(output.masked_code_accuracy, expected_accuracy)
    assert torch.equal(output.prolonged_los_accuracy, ((cls_logit > 0) == batch["los_label"].bool()).float().mean())
    assert {k: int(v) for k, v in output.target_counts.items()} == {"mlm": 4, "prolonged_los": 3}

    task = MedBertPretrainingTask.from_config(model.config)
    statistics = task.batch_statistics(output, batch)
    assert sorted(statistics) == ["loss_mlm", "loss_prolonged_los", "masked_code_accuracy", "prolonged_los_accuracy"]
    total, weight = statistics["loss_mlm"]
    assert float(weight) == 4 and torch.allclose(total, 4 * expected_mlm)
    assert float(statistics["prolonged_los_accuracy"][1]) == 3


def test_a_batch_without_masked_codes_has_a_zero_masked_code_loss_that_backpropagates():
    model = MedBertForPretraining(tiny_config())
    batch = hand_batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    output = model(**batch)
    assert float(output.losses["mlm"].detach()) == 0.0 and int(output.target_counts["mlm"]) == 0
    output.loss.backward()
    assert model.prolonged_los_head.weight.grad is not None
    statistics = MedBertPretrainingTask.from_config(model.config).batch_statistics(output, batch)
    assert float(statistics["masked_code_accuracy"][1]) == 0.0


# --- saving, loading, encoding visits --------------------------------------------------------------------------------


def test_auto_classes_round_trip_with_the_vocabularies_in_config_json(tmp_path):
    torch.manual_seed(0)
    model = MedBertForPretraining(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "medbert" and saved["vocabularies"] == VOCABULARIES
    assert type(AutoConfig.from_pretrained(tmp_path)) is MedBertConfig

    pretraining = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(pretraining) is MedBertForPretraining and type(encoder) is MedBertModel
    saved_state, loaded_state = model.state_dict(), pretraining.state_dict()
    assert sorted(saved_state) == sorted(loaded_state)
    assert all(torch.equal(saved_state[k], loaded_state[k]) for k in saved_state), "weights changed on the way"

    batch = hand_batch()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "los_label")}
    with torch.no_grad():
        expected, loaded, encoded = model(**batch), pretraining(**batch), encoder(**inputs)
    assert torch.equal(encoded.last_hidden_state, loaded.model_output.last_hidden_state)
    assert torch.equal(encoded.pooler_output, loaded.model_output.pooler_output)
    # Loaded weights sit at other memory alignments than freshly built ones, which can change the CPU kernel's
    # summation order in the last bits (seen: 2e-9 on the [1, H] prolonged-stay head), hence a float32-ulp tolerance.
    for name in ("loss", "masked_code_logits", "prolonged_los_logits"):
        torch.testing.assert_close(getattr(loaded, name), getattr(expected, name), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(encoded.last_hidden_state, expected.model_output.last_hidden_state, rtol=1e-6, atol=1e-7)


def visit_codes() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three visits as VisitFeaturizer encodes them with the per-type vocabularies: [CLS] + up to 4 codes per type."""
    diag_ids = torch.tensor([[CLS_ID, 4, 5, PAD_ID, PAD_ID], [CLS_ID, 8, UNK_ID, 6, PAD_ID], [CLS_ID, PAD_ID, 0, 0, 0]])
    med_ids = torch.tensor([[CLS_ID, 4, PAD_ID, PAD_ID, PAD_ID], [CLS_ID, PAD_ID, 0, 0, 0], [CLS_ID, 5, 6, 4, PAD_ID]])
    return diag_ids, (diag_ids != PAD_ID).long(), med_ids, (med_ids != PAD_ID).long()


def test_encode_visits_reads_one_visit_as_a_patient_sequence_and_ignores_padding():
    torch.manual_seed(0)
    model = MedBertModel(tiny_config()).eval()
    diag_ids, diag_mask, med_ids, med_mask = visit_codes()
    with torch.no_grad():
        vectors = model.encode_visits(diag_ids, diag_mask, med_ids, med_mask)
        assert vectors.shape == (3, model.visit_embedding_size) and model.visit_embedding_size == 16

        # A padded position's id is never read.
        changed_diag, changed_med = diag_ids.clone(), med_ids.clone()
        changed_diag[diag_mask == 0] = 7
        changed_med[med_mask == 0] = 6
        assert torch.equal(model.encode_visits(changed_diag, diag_mask, changed_med, med_mask), vectors)

        # Visit 0 is [CLS] 4019 4280 N02B: medication id 4 of its own vocabulary is token 9 of the shared space.
        direct = model(
            input_ids=torch.tensor([[CLS_ID, 4, 5, 9]]),
            attention_mask=torch.ones(1, 4, dtype=torch.long),
            visit_ids=torch.tensor([[0, 1, 1, 1]]),
            serialization_ids=torch.tensor([[0, 1, 2, 3]]),
        )
    torch.testing.assert_close(vectors[0], direct.last_hidden_state[0, 0], rtol=1e-5, atol=1e-6)
    assert model.config.code_vocab("medication").encode(["N02B"]) == [4]


# --- building from a prepared directory ------------------------------------------------------------------------------


@pytest.fixture
def prepared(tmp_path) -> Path:
    """A prepared directory with just the vocabulary files build_model reads (counts: most frequent first)."""
    (tmp_path / "prepared" / "vocab").mkdir(parents=True)
    write_vocab(tmp_path / "prepared" / "vocab" / "diagnosis.tsv", {c: 10 - i for i, c in enumerate(DIAGNOSES)})
    write_vocab(tmp_path / "prepared" / "vocab" / "medication.tsv", {"N02B": 3, "A02B": 2, "B01A": 1})
    return tmp_path / "prepared"


def test_build_model_from_a_prepared_directory_and_continue_from_its_save(prepared, tmp_path):
    assert get_family("medbert") is FAMILY
    torch.manual_seed(0)
    built = FAMILY.build_model(str(prepared), ModelSection(family="medbert"))
    assert built.tokenizer is None and "tiny preset" in built.description
    config = built.model.config
    assert config.vocabularies == VOCABULARIES
    assert (config.hidden_size, config.num_layers, config.max_length, config.max_visits) == (32, 2, 128, 16)
    assert config.max_codes_per_visit == 33
    built.model.save_pretrained(tmp_path / "initial")
    task = FAMILY.task(tmp_path / "initial")
    assert task.code_ranges == (DIAGNOSIS_RANGE, MEDICATION_RANGE) and task.mask_prob == 0.15
    assert FAMILY.load_model(tmp_path / "initial").training

    continued = FAMILY.build_model(str(prepared), ModelSection(family="medbert", init_from=str(tmp_path / "initial")))
    continued_state = continued.model.state_dict()
    assert all(torch.equal(v, continued_state[k]) for k, v in built.model.state_dict().items())

    paper = FAMILY.build_model(str(prepared), ModelSection(family="medbert", preset="paper")).model.config
    assert (paper.hidden_size, paper.num_layers, paper.num_heads, paper.intermediate_size) == (192, 6, 6, 64)
    assert paper.max_length == 512

    section = ModelSection(family="medbert", overrides={"hidden_size": 8, "los_days": 3}, options={"code_min_count": 2})
    small = FAMILY.build_model(str(prepared), section).model.config
    assert (small.hidden_size, small.los_days) == (8, 3)
    assert small.vocabularies == {"diagnosis": DIAGNOSES, "medication": ["N02B", "A02B"]}


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"text_checkpoint": "/some/bert"}, "model.text_checkpoint"),
        ({"tokenizer_dir": "/some/tokenizer"}, "model.tokenizer_dir"),
        ({"preset": "huge"}, "model.preset"),
        ({"overrides": {"hiden_size": 8}}, "model.overrides.hiden_size"),
        ({"overrides": {"hidden_size": 30, "num_heads": 4}}, "model.overrides"),
        ({"options": {"whole_word_mask": True}}, "model.options.whole_word_mask"),
    ],
)
def test_build_model_names_the_wrong_key(prepared, section, key):
    with pytest.raises(ConfigError, match=f"^{key}"):
        FAMILY.build_model(str(prepared), ModelSection(family="medbert", **section))


def test_build_model_refuses_a_checkpoint_of_another_family(prepared, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "gbert"}))
    with pytest.raises(ConfigError, match="^model.init_from: .* 'gbert' model"):
        FAMILY.build_model(str(prepared), ModelSection(family="medbert", init_from=str(tmp_path / "other")))
    MedBertForPretraining(tiny_config()).save_pretrained(tmp_path / "mine")
    with pytest.raises(ConfigError, match="^model.overrides"):
        FAMILY.build_model(
            str(prepared), ModelSection(family="medbert", init_from=str(tmp_path / "mine"), overrides={"dropout": 0.0})
        )


# --- through Ray (slow) ----------------------------------------------------------------------------------------------


def write_visits(path: Path, visits: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {key: [v[key] for v in visits] for key in visits[0]}
    columns["admittime"] = pa.array(columns["admittime"], pa.timestamp("s"))
    columns["dischtime"] = pa.array(columns["dischtime"], pa.timestamp("s"))
    pq.write_table(pa.table(columns), path)


@pytest.mark.slow
def test_datasets_group_a_patient_whose_visits_lie_in_two_files(ray_local, prepared, tmp_path):
    keep_row_order()  # as the recipe does before building datasets
    first = [visit(1, 11, "2100-01-01", 1.0, ["4019"], ["N02B"]), visit(2, 21, "2100-01-01", 9.0, ["4280"], [])]
    second = [visit(2, 22, "2100-05-01", 1.0, ["5849", "0000"], ["A02B"]), visit(3, 31, "2100-01-01", 1.0, [], [])]
    for split in ("train", "val"):
        write_visits(prepared / "visits" / split / "part-00000.parquet", first)
        write_visits(prepared / "visits" / split / "part-00001.parquet", second)
    torch.manual_seed(0)
    FAMILY.build_model(str(prepared), ModelSection(family="medbert")).model.save_pretrained(tmp_path / "initial")

    config = PretrainConfig()
    datasets = FAMILY.datasets(str(prepared), tmp_path / "initial", config)
    rows = datasets["train"].take_batch(10, batch_format="numpy")
    assert sorted(rows) == sorted(MODEL_COLUMNS)
    expected = model_rows(
        PatientSequenceFeaturizer(MedBertConfig.from_pretrained(tmp_path / "initial"))(visit_batch(first + second))
    )
    assert len(rows["input_ids"]) == 2, "patient 3 (no codes) is dropped, patient 2 is one row"
    for name in MODEL_COLUMNS:
        assert np.array_equal(rows[name], expected[name]), name
    assert rows["input_ids"][1, :5].tolist() == [CLS_ID, 5, 7, UNK_ID, 10]
    assert rows["visit_ids"][1, :5].tolist() == [0, 1, 2, 2, 2]

    # The same rows, in the same order, every time.
    again = patient_sequences(
        read_patient_visits(str(prepared), "val"),
        PatientSequenceFeaturizer(MedBertConfig.from_pretrained(tmp_path / "initial")),
        num_partitions=3,
    ).take_batch(10, batch_format="numpy")
    assert again["subject_id"].tolist() == [1, 2, 3]

    config.data.text_cache = True
    with pytest.raises(ConfigError, match="^data.text_cache"):
        FAMILY.datasets(str(prepared), tmp_path / "initial", config)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pretrain_medbert_end_to_end_with_zero2(ray_local, synthetic_prepared, tmp_path):
    run_pretraining(
        "model.family=medbert",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=x",
        "train.epochs=4",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "pretrain.log",
    )

    values = tensorboard_scalars(tmp_path / "x" / "tensorboard")
    losses = values["train/loss"]
    assert len(losses) >= 8, losses
    first, last = np.mean([v for _, v in losses[:3]]), np.mean([v for _, v in losses[-3:]])
    assert last < first * 0.95, f"train loss did not go down: first steps {losses[:3]}, last steps {losses[-3:]}"
    assert values["train/masked_code_accuracy"]

    export = tmp_path / "x" / "export"
    encoder = AutoModel.from_pretrained(export).eval()
    assert type(encoder) is MedBertModel
    initial = MedBertModel.from_pretrained(tmp_path / "x" / "initial_model")
    exported_state, initial_state = encoder.state_dict(), initial.state_dict()
    assert any(not torch.equal(exported_state[k], initial_state[k]) for k in exported_state), "export is untrained"
    assert type(AutoModelForPreTraining.from_pretrained(export)) is MedBertForPretraining
