"""MEDFuse (#19): lab aggregation and standardisation, masking, masked lab-test modelling, note pooling and vectors,
the fusion losses, the classifier's variants and save/load round trips, the ``disease10`` task, and (slow) pretraining
``medfuse-lab`` and fine-tuning MEDFuse on ``disease10`` through the shared loop."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, GPT2Config, GPT2Model

from medmplm.config import ConfigError, ModelSection
from medmplm.data.schema import (
    LAB_EVENT_TYPE,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    SPLITS,
    VISIT_SCHEMA,
    VISITS_DIR,
    VOCAB_DIR,
)
from medmplm.data.vocab_io import write_vocab
from medmplm.models.medfuse import (
    MedFuseConfig,
    MedFuseForMultiLabelClassification,
    MedFuseLabConfig,
    MedFuseLabForMaskedModeling,
    MedFuseLabModel,
)
from medmplm.models.medfuse.modeling_medfuse import (
    ClubEstimator,
    cross_correlation_penalty,
    info_nce,
    pool_hidden_states,
)
from medmplm.models.tokenization import train_wordpiece_tokenizer
from medmplm.pretraining.medfuse_lab import (
    FAMILY,
    LabFeaturizer,
    aggregate_labs,
    fit_lab_standardisation,
    mask_observed_items,
)
from medmplm.tasks.config import FinetuneConfig
from medmplm.tasks.disease10 import Disease10, ccs_groups, icd3_group
from medmplm.tasks.medfuse import NoteEmbedder, build_medfuse_config, featurize_split

STATISTICS = ["last", "min", "max", "mean", "count"]


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def event(itemid: str | None, valuenum: float | None, hours: float | None) -> dict:
    return {
        "itemid": itemid,
        "value": None,
        "valuenum": valuenum,
        "valueuom": None,
        "flag": None,
        "hours_since_admit": hours,
    }


def lab_column(admissions: list[list[dict]]) -> pa.Array:
    return pa.array(admissions, pa.list_(LAB_EVENT_TYPE))


# --- labs -----------------------------------------------------------------------------------------------------------


def test_lab_aggregation_and_standardisation_with_missing_items():
    labs = lab_column(
        [
            # A twice (the later one last), B without a numeric value, an item the model does not read.
            [event("A", 1.0, 5.0), event("A", 3.0, 2.0), event("B", None, 1.0), event("Z", 9.0, 1.0)],
            # B only, one event without a time (earliest), then a timed one.
            [event("B", 10.0, 4.0), event("B", 20.0, None)],
            # A once, B once.
            [event("A", 5.0, 1.0), event("B", 30.0, 1.0)],
            [],
        ]
    )
    aggregates = aggregate_labs(labs, ["A", "B"], STATISTICS)
    np.testing.assert_array_equal(aggregates.observed, [[True, False], [False, True], [True, True], [False, False]])
    np.testing.assert_allclose(aggregates.values[0, 0], [1.0, 1.0, 3.0, 2.0, math.log1p(2)])
    np.testing.assert_allclose(aggregates.values[1, 1], [10.0, 10.0, 20.0, 15.0, math.log1p(2)])
    np.testing.assert_array_equal(aggregates.values[0, 1], 0.0)
    np.testing.assert_array_equal(aggregates.events_other_items, [1, 0, 0, 0])
    np.testing.assert_array_equal(aggregates.events_non_numeric, [1, 0, 0, 0])

    # Z is the least frequent (one admission); A and B tie at two, broken by ITEMID.
    fitted = fit_lab_standardisation(labs, num_items=2, statistics=["last", "count"])
    assert fitted.items == ["A", "B"]
    assert (fitted.admissions, fitted.admissions_with_labs) == (4, 3)
    # A's last over the admissions that measured it: 1 and 5 -> mean 3, std 2; its count: log1p(2), log1p(1).
    assert fitted.mean[:2] == pytest.approx([3.0, (math.log1p(2) + math.log1p(1)) / 2])
    assert fitted.std[0] == pytest.approx(2.0)
    # B's last: 10 and 30.
    assert fitted.mean[2] == pytest.approx(20.0) and fitted.std[2] == pytest.approx(10.0)

    config = MedFuseLabConfig(
        lab_items=fitted.items, lab_statistics=["last", "count"], lab_mean=fitted.mean, lab_std=fitted.std
    )
    features = LabFeaturizer(config)(pa.table({"hadm_id": [1, 2, 3, 4], "labs": labs}))
    np.testing.assert_array_equal(features["lab_observed"], [[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert features["lab_values"][0, 0] == pytest.approx(-1.0)  # (1 - 3) / 2
    assert features["lab_values"][2, 2] == pytest.approx(1.0)  # (30 - 20) / 10
    assert (features["lab_values"][features["lab_observed"] == 0] == 0).all()
    np.testing.assert_array_equal(features["lab_items_observed"], [1, 1, 2, 0])
    np.testing.assert_array_equal(features["hadm_id"], [1, 2, 3, 4])


def test_a_constant_statistic_is_standardised_by_one_and_bad_lab_columns_are_named():
    fitted = fit_lab_standardisation(lab_column([[event("A", 2.0, 1.0)], [event("A", 2.0, 1.0)]]), 5, ["min"])
    assert fitted.std == [1.0]
    with pytest.raises(ValueError, match="column 'labs'"):
        aggregate_labs(pa.array([[1, 2]]), ["A"], ["min"])
    with pytest.raises(ValueError, match="no lab event with a numeric valuenum"):
        fit_lab_standardisation(lab_column([[event("A", None, 1.0)]]), 5, ["min"])


def test_masking_never_selects_a_missing_value():
    observed = torch.tensor([[1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])  # 3 items x 2 statistics
    everything = mask_observed_items(observed, 2, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(everything, observed.bool())
    generator = torch.Generator().manual_seed(1)
    for _ in range(50):
        masked = mask_observed_items(observed, 2, 0.5, generator)
        assert not (masked & ~observed.bool()).any()
        # An item's statistics are masked together.
        assert torch.equal(masked[:, 0::2], masked[:, 1::2])

    model = MedFuseLabForMaskedModeling(tiny_lab_config(items=3, statistics=["min", "max"]))
    with pytest.raises(ValueError, match="not observed"):
        model(torch.zeros(3, 6), observed, lab_masked=torch.ones(3, 6, dtype=torch.bool))


def tiny_lab_config(items: int = 4, statistics: list[str] | None = None, **overrides) -> MedFuseLabConfig:
    statistics = statistics or ["last", "mean"]
    tokens = items * len(statistics)
    values = {
        "lab_items": [f"I{i}" for i in range(items)],
        "lab_statistics": statistics,
        "lab_mean": [0.0] * tokens,
        "lab_std": [1.0] * tokens,
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 32,
        "dropout": 0.0,
    }
    return MedFuseLabConfig(**{**values, **overrides})


def test_reconstruction_loss_falls_on_tiny_data():
    torch.manual_seed(0)
    # 4 items x 2 statistics, all driven by one latent value per admission: a masked item is predictable from the
    # others; about a quarter of the items are missing.
    latent = torch.randn(64, 1)
    values = (latent * torch.tensor([1.0, 0.8, -1.0, -0.8, 0.5, 0.4, 2.0, 1.6])).float()
    observed = (torch.rand(64, 4) > 0.25).repeat_interleave(2, dim=1).long()
    values = values * observed
    model = MedFuseLabForMaskedModeling(tiny_lab_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    # Measured on one fixed masking, so that the two numbers differ by the training alone.
    probe = mask_observed_items(observed, 2, 0.3, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = model(values, observed, probe).loss.item()
    for _ in range(120):
        loss = model(values, observed, mask_observed_items(observed, 2, 0.3, generator)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(values, observed, probe).loss.item()
    assert after < 0.3 * before, (before, after)


def test_lab_model_round_trip_through_the_auto_classes(tmp_path):
    model = MedFuseLabForMaskedModeling(tiny_lab_config()).eval()
    model.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is MedFuseLabModel
    values, observed = torch.randn(3, 8), torch.ones(3, 8, dtype=torch.long)
    assert torch.equal(encoder(values, observed).pooler_output, model.medfuse_lab(values, observed).pooler_output)
    reloaded = MedFuseLabForMaskedModeling.from_pretrained(tmp_path).eval()
    assert reloaded.config.lab_items == model.config.lab_items
    assert torch.equal(reloaded(values, observed).predictions, model(values, observed).predictions)


# --- fusion losses --------------------------------------------------------------------------------------------------


def test_infonce_is_lower_for_aligned_pairs():
    torch.manual_seed(0)
    first = torch.randn(16, 8)
    aligned = info_nce(first, first + 0.01 * torch.randn(16, 8), temperature=0.1)
    shuffled = info_nce(first, first[torch.randperm(16)], temperature=0.1)
    unrelated = info_nce(first, torch.randn(16, 8), temperature=0.1)
    assert aligned < 0.05 < unrelated < shuffled
    assert info_nce(first[:1], first[:1], temperature=0.1) == 0


def test_cross_correlation_penalty_is_zero_for_uncorrelated_parts_and_one_for_copies():
    torch.manual_seed(0)
    shared = torch.randn(4096, 4)
    assert cross_correlation_penalty(shared, torch.randn(4096, 4)) < 0.01
    # Every specific feature a copy of one shared feature: the 4 matching pairs correlate fully, the 12 others not.
    assert cross_correlation_penalty(shared, 2 * shared + 1) == pytest.approx(4 / 16, abs=0.01)
    # Every specific feature the same linear function of one common factor as every shared feature.
    common = torch.randn(4096, 1)
    assert cross_correlation_penalty(common.repeat(1, 4), -common.repeat(1, 4)) == pytest.approx(1.0)


def test_club_estimate_is_higher_for_dependent_parts():
    torch.manual_seed(0)

    def fitted_estimate(dependent: bool) -> float:
        club = ClubEstimator(size=4, hidden_size=16)
        optimizer = torch.optim.Adam(club.parameters(), lr=1e-2)
        for _ in range(150):
            x = torch.randn(64, 4)
            y = x + 0.1 * torch.randn(64, 4) if dependent else torch.randn(64, 4)
            estimate, fit = club(x, y)
            optimizer.zero_grad()
            fit.backward()
            optimizer.step()
        x = torch.randn(256, 4)
        y = x + 0.1 * torch.randn(256, 4) if dependent else torch.randn(256, 4)
        return club(x, y)[0].item()

    assert fitted_estimate(dependent=True) > 10 * max(fitted_estimate(dependent=False), 0.1)


def test_club_estimate_moves_the_parts_and_the_fit_moves_q_only():
    club = ClubEstimator(size=3, hidden_size=8)
    x, y = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3, requires_grad=True)
    estimate, fit = club(x, y)
    estimate.backward(retain_graph=True)
    assert x.grad is not None and y.grad is not None
    assert all(p.grad is None for p in club.parameters())
    x.grad, y.grad = None, None
    fit.backward()
    assert x.grad is None and y.grad is None
    assert all(p.grad is not None for p in club.parameters())


# --- the classifier -------------------------------------------------------------------------------------------------


def tiny_medfuse_config(**overrides) -> MedFuseConfig:
    values = {
        "lab_encoder": tiny_lab_config().to_dict(),
        "note_embedding_size": 6,
        "fusion_size": 8,
        "fusion_layers": 1,
        "fusion_heads": 2,
        "fusion_intermediate_size": 16,
        "classifier_hidden_size": 8,
        "num_labels": 3,
        "dropout": 0.0,
    }
    return MedFuseConfig(**{**values, **overrides})


def batch(size: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    observed = (torch.rand(size, 8, generator=generator) > 0.3).long()
    return {
        "lab_values": torch.randn(size, 8, generator=generator) * observed,
        "lab_observed": observed,
        "has_note": torch.tensor([1, 0] + [1] * (size - 2)),
        "note_embedding": torch.randn(size, 6, generator=generator),
        "labels": (torch.rand(size, 3, generator=generator) > 0.5).float(),
    }


@pytest.mark.parametrize(
    ("overrides", "terms"),
    [
        ({}, {"task", "infonce", "independence"}),
        ({"independence": "club"}, {"task", "infonce", "independence", "club_fit"}),
        ({"modalities": ["labs"]}, {"task", "independence"}),
        ({"modalities": ["notes"]}, {"task", "independence"}),
        ({"fusion": "concat"}, {"task"}),
        ({"loss_weights": {"infonce": 0.0}}, {"task", "infonce", "independence"}),
    ],
)
def test_each_variant_computes_its_losses_and_trains_every_parameter(overrides, terms):
    torch.manual_seed(0)
    config = tiny_medfuse_config(**overrides)
    model = MedFuseForMultiLabelClassification(config)
    output = model(**batch())
    assert set(output.losses) == terms
    assert output.logits.shape == (6, 3)
    weights = config.loss_weights
    expected = sum(weights[name] * value for name, value in output.losses.items() if name in weights)
    expected = expected + output.losses.get("club_fit", 0.0)
    assert output.loss.item() == pytest.approx(float(expected.detach()))
    output.loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_the_missing_note_vector_stands_for_a_note_less_admission_and_it_takes_no_part_in_infonce():
    torch.manual_seed(0)
    model = MedFuseForMultiLabelClassification(tiny_medfuse_config()).eval()
    inputs = batch()
    changed = {**inputs, "note_embedding": inputs["note_embedding"].clone()}
    changed["note_embedding"][1] = 100.0  # admission 1 has no note
    first, second = model(**inputs), model(**changed)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.losses["infonce"], second.losses["infonce"])
    vectors = first.model_output.modality_vectors["notes"]
    assert torch.equal(vectors[1], model.medfuse.missing_note.detach())


def test_configuration_errors_name_the_field():
    with pytest.raises(ValueError, match="fusion"):
        tiny_medfuse_config(fusion="sum")
    with pytest.raises(ValueError, match="concat"):
        tiny_medfuse_config(fusion="concat", modalities=["labs"])
    with pytest.raises(ValueError, match="note_encoder"):
        tiny_medfuse_config(note_finetuning="last_layers")
    with pytest.raises(ValueError, match="loss_weights"):
        tiny_medfuse_config(loss_weights={"kl": 1.0})
    with pytest.raises(ValueError, match="lab_mean"):
        MedFuseLabConfig(lab_items=["A"], lab_mean=[0.0, 1.0])


# --- notes ----------------------------------------------------------------------------------------------------------


def test_note_pooling_mean_and_last_token_with_either_padding_side():
    states = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(pool_hidden_states(states, right, "mean"), torch.tensor([[2.0, 3.0], [9.0, 10.0]]))
    assert torch.equal(pool_hidden_states(states, right, "last"), states[[0, 1], [2, 1]])
    assert torch.equal(pool_hidden_states(states, left, "last"), states[[0, 1], [3, 3]])


WORDS = ["anemia", "sepsis", "diabetes", "statin", "fever", "stable", "discharged", "home"]


def write_language_model(directory: Path, kind: str = "bert") -> Path:
    """A tiny random language model with a WordPiece tokenizer trained on a few made-up words."""
    tokenizer = train_wordpiece_tokenizer([" ".join(WORDS)] * 4, vocab_size=60, model_max_length=32)
    size = len(tokenizer)
    if kind == "bert":
        model = BertModel(
            BertConfig(vocab_size=size, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
        )
    else:
        model = GPT2Model(GPT2Config(vocab_size=size, n_embd=8, n_layer=2, n_head=2, n_positions=32))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(("kind", "pooling"), [("bert", "mean"), ("gpt2", "last")])
def test_note_embedder_pools_one_vector_per_note(tmp_path, kind, pooling):
    directory = write_language_model(tmp_path / kind, kind)
    embedder = NoteEmbedder(str(directory), pooling, max_length=16)
    notes = ["anemia stable", "sepsis fever discharged home statin diabetes anemia"]
    table = embedder(pa.table({"hadm_id": [7, 8], "note_text": notes}))
    assert table.column("hadm_id").to_pylist() == [7, 8]
    vectors = np.asarray(table.column("note_embedding").to_pylist())
    assert vectors.shape == (2, 8)
    # The same note alone gives the same vector: padding does not reach it.
    alone = embedder(pa.table({"hadm_id": [7], "note_text": notes[:1]})).column("note_embedding").to_pylist()
    np.testing.assert_allclose(alone[0], vectors[0], atol=1e-5)


@pytest.mark.parametrize("finetuning", ["last_layers", "lora"])
def test_a_fine_tuned_language_model_trains_only_its_chosen_part_and_round_trips(tmp_path, finetuning):
    torch.manual_seed(0)
    directory = write_language_model(tmp_path / "lm")
    language_model = AutoModel.from_pretrained(directory)
    config = tiny_medfuse_config(
        note_embedding_size=8, note_encoder=language_model.config.to_dict(), note_finetuning=finetuning
    )
    model = MedFuseForMultiLabelClassification(config, language_model=language_model)
    encoder = model.medfuse.note_encoder.language_model
    assert torch.equal(
        encoder.embeddings.word_embeddings.weight, language_model.embeddings.word_embeddings.weight
    ), "the pretrained weights must survive the model's initialisation"
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    if finetuning == "last_layers":
        assert trainable and all(name.startswith("encoder.layer.1.") for name in trainable)
    else:
        assert trainable and all("lora_" in name for name in trainable)
    inputs = batch(4)
    del inputs["note_embedding"]
    inputs["note_input_ids"] = torch.randint(5, 40, (4, 10))
    inputs["note_attention_mask"] = torch.ones(4, 10, dtype=torch.long)
    model.eval()
    expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "saved")
    reloaded = MedFuseForMultiLabelClassification.from_pretrained(tmp_path / "saved").eval()
    assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-6)
    language_model = reloaded.medfuse.note_encoder.language_model
    assert {name for name, p in language_model.named_parameters() if p.requires_grad} == trainable


def test_classifier_round_trip_with_precomputed_note_vectors(tmp_path):
    torch.manual_seed(0)
    model = MedFuseForMultiLabelClassification(tiny_medfuse_config(independence="club")).eval()
    model.save_pretrained(tmp_path)
    reloaded = MedFuseForMultiLabelClassification.from_pretrained(tmp_path).eval()
    inputs = batch()
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
    encoder_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(base(**encoder_inputs).fused, model.medfuse(**encoder_inputs).fused)


# --- disease10 ------------------------------------------------------------------------------------------------------


def test_diagnosis_groups():
    assert icd3_group("ICD9CM:4280") == "ICD9CM:428"
    assert icd3_group("ICD9CM:E8497") == "ICD9CM:E849"
    assert icd3_group("ICD9CM:V4581") == "ICD9CM:V45"
    assert icd3_group("ICD10CM:I2510") == "ICD10CM:I25"
    assert icd3_group("4280") == "428"
    assert icd3_group("ICD9CM:XYZ") is None and icd3_group("nonsense") is None
    groups = ccs_groups(["ICD9CM:4280", "4019", "ICD10CM:I10", "ICD9CM:XYZ"])
    assert groups["ICD9CM:4280"] == "CCS:108" and groups["4019"] == "CCS:98"
    assert groups["ICD10CM:I10"].startswith("CCSR:CIR") and groups["ICD9CM:XYZ"] is None


# Groups the hand-built admissions carry, and the lab item each drives.
CONDITIONS = {"ICD9CM:2851": ("anemia", "HGB"), "ICD9CM:99592": ("sepsis", "WBC"), "ICD9CM:25000": ("diabetes", "GLU")}


def write_lab_prepared_dir(root: Path, patients: tuple[int, int, int] = (24, 8, 8), seed: int = 0) -> Path:
    """A schema-2 prepared directory whose admissions have labs driven by their conditions and notes naming them."""
    rng = np.random.default_rng(seed)
    codes = list(CONDITIONS)
    hadm_id = 100
    for split, count in zip(SPLITS, patients, strict=True):
        rows = []
        for index in range(count):
            diagnoses = list(rng.choice(codes, size=int(rng.integers(1, 3)), replace=False)) + ["ICD9CM:4019"]
            labs = [event("NA", float(rng.normal(140, 3)), float(h)) for h in range(2)]
            for code in diagnoses[:-1]:
                labs.append(event(CONDITIONS[code][1], float(rng.normal(10, 1)), 1.0))
            note = None if index % 5 == 4 else " ".join(CONDITIONS[c][0] for c in diagnoses[:-1]) + " stable"
            admit = datetime(2150, 1, 1) + timedelta(days=index)
            hadm_id += 1
            rows.append(
                {
                    "subject_id": hadm_id,
                    "hadm_id": hadm_id,
                    "admittime": admit,
                    "dischtime": admit + timedelta(days=2),
                    "visit_index": 0,
                    "num_visits": 1,
                    "diagnoses": diagnoses,
                    "procedures": [],
                    "medications": ["N02B"],
                    "labs": labs,
                    "note_text": note,
                    "num_notes": int(note is not None),
                    "hospital_death": False,
                    "readmission_30d": 0,
                    "readmission_30d_nonelective": 0,
                }
            )
        (root / VISITS_DIR / split).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=VISIT_SCHEMA), root / VISITS_DIR / split / "part-0.parquet")
    (root / VOCAB_DIR).mkdir()
    for code_type in ("diagnosis", "procedure", "medication", "lab"):
        write_vocab(root / VOCAB_DIR / f"{code_type}.tsv", {})
    (root / MANIFEST_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION, "synthetic": True}) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lab_prepared_dir(tmp_path_factory.mktemp("prepared"))


def test_disease10_labels_are_the_top_groups_and_no_code_is_input(prepared):
    from medmplm.tasks import read_visits

    visits = read_visits(prepared, "train")
    task = Disease10(top_k=2)
    label_space = task.label_space(visits)
    # Every admission has hypertension (401); of the three conditions, the more frequent one follows.
    assert label_space[0] == "ICD9CM:401" and len(label_space) == 2
    examples = task.build_examples(visits, label_space)
    assert len(examples) == visits.num_rows
    assert examples.examples.column("diagnoses").to_pylist() == [[[]]] * len(examples)
    assert examples.examples.column("medications").to_pylist() == [[[]]] * len(examples)
    # Each admission's one or two conditions outside the label space are counted, not silently lost.
    assert examples.dropped_label_codes > 0
    excluded = Disease10(top_k=1, grouping="ccs").build_examples(visits, ["CCS:59"])
    assert excluded.exclusion_counts() == {"no_group_in_label_space": visits.num_rows - len(excluded)}


def finetune_config(prepared: Path, model: str, **values) -> FinetuneConfig:
    config = FinetuneConfig()
    config.data.prepared_dir = str(prepared)
    config.finetune.model = model
    for key, value in values.items():
        section, name = key.split(".", 1)
        setattr(getattr(config, section), name, value)
    return config


def test_no_diagnosis_leaks_into_the_medfuse_inputs(prepared):
    from medmplm.tasks import read_visits

    visits = read_visits(prepared, "train")
    task = Disease10(top_k=3)
    label_space = task.label_space(visits)
    start = build_medfuse_config(finetune_config(prepared, "medfuse-labs"), str(prepared), label_space)
    featurizer = LabFeaturizer(start.config.lab_config)
    examples = task.build_examples(visits, label_space).examples
    arguments = (str(prepared), start.config, label_space, featurizer, None, None)
    features, counts = featurize_split(examples, "train", *arguments)
    assert set(features) == {"lab_values", "lab_observed", "labels"}
    assert counts["without_lab_items"] == 0
    # Other diagnoses for the same admissions change the labels and nothing else.
    shuffled = examples.set_column(
        examples.schema.get_field_index("label_codes"),
        "label_codes",
        pa.array(examples.column("label_codes").to_pylist()[::-1], pa.list_(pa.string())),
    )
    again, _ = featurize_split(shuffled, "train", *arguments)
    np.testing.assert_array_equal(again["lab_values"], features["lab_values"])
    assert not np.array_equal(again["labels"], features["labels"])


def test_medfuse_start_names_the_wrong_key(prepared, tmp_path):
    label_space = ["ICD9CM:401"]
    with pytest.raises(ConfigError, match=r"finetune\.init_text"):
        build_medfuse_config(finetune_config(prepared, "medfuse"), str(prepared), label_space)
    with pytest.raises(ConfigError, match=r"model\.overrides\.fusion_width"):
        build_medfuse_config(
            finetune_config(prepared, "medfuse-labs", **{"model.overrides": {"fusion_width": 3}}),
            str(prepared),
            label_space,
        )
    write_language_model(tmp_path / "lm")
    with pytest.raises(ConfigError, match=r"finetune\.init_code: .* holds a 'bert' model"):
        build_medfuse_config(
            finetune_config(prepared, "medfuse-labs", **{"finetune.init_code": str(tmp_path / "lm")}),
            str(prepared),
            label_space,
        )


def test_a_notes_only_model_builds_no_lab_encoder_and_refuses_a_lab_export(prepared, tmp_path):
    language_model = write_language_model(tmp_path / "lm")
    config = finetune_config(prepared, "medfuse-notes", **{"finetune.init_text": str(language_model)})
    start = build_medfuse_config(config, str(prepared), ["ICD9CM:401"])
    assert start.lab_model is None and start.config.modalities == ["notes"]
    assert start.config.note_embedding_size == 8
    config.finetune.init_code = str(tmp_path)
    with pytest.raises(ConfigError, match=r"finetune\.init_code: --model medfuse-notes reads no lab tests"):
        build_medfuse_config(config, str(prepared), ["ICD9CM:401"])


def test_lab_family_builds_its_items_from_the_training_split(prepared):
    built = FAMILY.build_model(str(prepared), ModelSection(family="medfuse-lab", overrides={"num_lab_items": 2}))
    config = built.model.config
    # Sodium is measured twice in every admission; of the condition-driven items, the more frequent one follows.
    assert config.lab_items[0] == "NA" and len(config.lab_items) == 2
    assert len(config.lab_mean) == 2 * len(config.lab_statistics)
    with pytest.raises(ConfigError, match=r"model\.overrides\.vocab"):
        FAMILY.build_model(str(prepared), ModelSection(family="medfuse-lab", overrides={"vocab": 1}))
    with pytest.raises(ConfigError, match=r"model\.text_checkpoint"):
        FAMILY.build_model(str(prepared), ModelSection(family="medfuse-lab", text_checkpoint="x"))


# --- through Ray (slow) ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pretrain_medfuse_lab_end_to_end_with_zero2(ray_local, synthetic_prepared, tmp_path):
    from medmplm.pretraining.testing_utils import TWO_WORKERS_ZERO2, run_pretraining, tensorboard_scalars

    output = run_pretraining(
        "model.family=medfuse-lab",
        f"data.prepared_dir={synthetic_prepared}",
        f"run.storage_path={tmp_path}",
        "run.name=x",
        "train.epochs=3",
        *TWO_WORKERS_ZERO2,
        log=tmp_path / "pretrain.log",
    )
    assert "Pretraining finished: medfuse-lab, run x" in output
    # Whether the loss falls is test_reconstruction_loss_falls_on_tiny_data's question: the synthetic labs are shifted
    # by conditions but mostly noise, and a few dozen steps barely move a masked item's error below its variance (1).
    scalars = tensorboard_scalars(tmp_path / "x" / "tensorboard")
    masked_mse = [value for tag, values in scalars.items() if tag.endswith("masked_mse") for _, value in values]
    assert len(scalars["train/loss"]) >= 20 and masked_mse and np.isfinite(masked_mse).all()
    assert all(0.0 < value < 5.0 for value in masked_mse), masked_mse
    encoder = AutoModel.from_pretrained(tmp_path / "x" / "export").eval()
    assert type(encoder) is MedFuseLabModel and len(encoder.config.lab_items) > 0
    initial = MedFuseLabModel.from_pretrained(tmp_path / "x" / "initial_model").state_dict()
    assert any(not torch.equal(value, initial[key]) for key, value in encoder.state_dict().items())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_finetune_medfuse_on_disease10_through_the_loop_and_the_note_cache(ray_local, prepared, tmp_path):
    from medmplm.config import load_config
    from medmplm.tasks.runner import run_finetune

    language_model = write_language_model(tmp_path / "lm")
    overrides = {
        "data.prepared_dir": str(prepared),
        "finetune.task": "disease10",
        "finetune.model": "medfuse",
        "finetune.init_text": str(language_model),
        "finetune.task_options": {"top_k": 3},
        "finetune.results_dir": str(tmp_path / "results"),
        "run.storage_path": str(tmp_path / "runs"),
        "train.epochs": 2,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 8,
        "logging.progress_bar": False,
    }
    config = load_config(FinetuneConfig, None, overrides)
    record = run_finetune(config, str(prepared), "medfuse-run")
    assert record.task == "disease10" and record.model == "medfuse" and record.synthetic_data
    assert {"f1_micro", "f1_macro", "auc_micro", "auc_macro"} <= set(record.metrics["test"])
    assert record.num_examples == {"val": 8, "test": 8}
    assert record.details["text_init"] == str(language_model) and record.details["code_init"] is None
    assert record.details["medfuse_inputs"]["train"]["without_note"] > 0
    # One vector cache, of every split's notes, written once: another run of the same data and language model reads
    # it back.
    (marker,) = (tmp_path / "runs" / "note_embeddings").glob("*/_cache_complete.json")
    # Every fifth admission of a split has no note: 20 of the 24 training ones, 7 of the 8 of each other split.
    assert json.loads(marker.read_text())["rows"] == 20 + 7 + 7
    written = marker.stat().st_mtime_ns
    again = Disease10(top_k=3).own_examples(load_config(FinetuneConfig, None, {**overrides, "train.seed": 1}))
    assert marker.stat().st_mtime_ns == written
    assert len(list(marker.parent.glob("part-*"))) == 1
    assert again.featurized["train"]["note_embedding"].shape == (24, 8)
