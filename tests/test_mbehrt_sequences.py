"""M-BEHRT's patient sequences: visit records -> one row per patient (``medmplm.pretraining.mbehrt``).

Order of visits and tokens, ages, segments, visit positions, continuous times, the gender token, lab values (binned
and standardised, on hand-built values), note slots, truncation from the oldest end (counted), bad input named; and
the family's model built from a schema-2 prepared directory (vocabularies, lab value statistics, config errors).
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from medmplm.config import ConfigError, ModelSection
from medmplm.data.vocab import CLS_ID, PAD_ID, UNK_ID
from medmplm.data.vocab_io import read_vocab
from medmplm.models.mbehrt.configuration_mbehrt import MASKED_VALUE_ID, NO_VALUE_ID, PRESENT_VALUE_ID
from medmplm.models.mbehrt.testing_utils import tiny_config, visit_record, word_tokenizer, write_patient_prepared_dir
from medmplm.pretraining import get_family
from medmplm.pretraining.mbehrt import (
    COUNT_COLUMNS,
    FAMILY,
    VISIT_COLUMNS,
    PatientSequenceBuilder,
    PatientSequenceFeaturizer,
    as_visit,
    lab_value_statistics,
    read_visit_table,
)

F, M, HTN, HF, DM, PROC, N02B, C07A, CREATININE, POTASSIUM = range(4, 14)


def build(visits: list[dict], gender: str | None = "F", **overrides) -> dict[str, np.ndarray]:
    builder = PatientSequenceBuilder(tiny_config(**overrides), word_tokenizer())
    return builder.build([([as_visit(v) for v in visits], gender)])


def visit_batch(visits: list[dict]) -> dict[str, np.ndarray]:
    """Visit records as Ray Data hands a numpy batch to ``map_groups``."""
    batch = {}
    for column in VISIT_COLUMNS:
        values = [v[column] for v in visits]
        batch[column] = np.empty(len(values), dtype=object)
        batch[column][:] = values
    batch["subject_id"] = batch["subject_id"].astype(np.int64)
    batch["hadm_id"] = batch["hadm_id"].astype(np.int64)
    batch["admittime"] = batch["admittime"].astype("datetime64[s]")
    return batch


def test_visits_in_admission_order_with_ages_segments_positions_and_times():
    visits = [
        # Given out of order: the featuriser orders each patient's visits by admission time.
        visit_record(12, "2100-03-01", ["ICD9CM:4280", "ICD9CM:4019", "ICD9CM:4280"], ["C07A"], age=61.7),
        visit_record(11, "2100-01-01", ["ICD9CM:4019"], ["N02B"], [("50971", 4.0, 5.4), ("50912", 1.5, 2.0)], age=61.2),
        visit_record(21, "2100-01-01", ["ICD9CM:99999"], subject_id=2, gender=None, age=None),
    ]
    rows = PatientSequenceFeaturizer(PatientSequenceBuilder(tiny_config(), word_tokenizer()))(visit_batch(visits))
    assert rows["subject_id"].tolist() == [1, 2]
    # [CLS], gender; visit 11: diagnosis, medication, labs by time (creatinine at 2 h, potassium at 5.4 h); visit 12:
    # diagnoses in record order, each once, then its medication.
    assert rows["input_ids"][0, :9].tolist() == [CLS_ID, F, HTN, N02B, CREATININE, POTASSIUM, HF, HTN, C07A]
    assert rows["attention_mask"][0].tolist() == [1] * 9 + [0] * 7
    assert rows["visit_ids"][0, :9].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert rows["segment_ids"][0, :9].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    # Age id = 1 + whole years at admission.
    assert rows["age_ids"][0, :9].tolist() == [0, 0, 62, 62, 62, 62, 62, 62, 62]
    # Hours since the first admission (labs: plus their hours since admission, rounded); 59 days later for visit 12.
    assert rows["time_hours"][0, :9].tolist() == [0, 0, 0, 0, 2, 5, 1416, 1416, 1416]
    # Hours since the previous discharge (2 days after admission): 57 days.
    assert rows["gap_hours"][0, :9].tolist() == [0, 0, 0, 0, 0, 0, 1368, 1368, 1368]
    # Creatinine 1.5 lies in bin 1 of the edges [1, 2]; potassium has no training statistics: no value embedded.
    assert rows["value_ids"][0, :6].tolist() == [NO_VALUE_ID] * 4 + [PRESENT_VALUE_ID + 1, NO_VALUE_ID]
    assert rows["lab_values_without_statistics"].tolist() == [1, 0]
    # Patient 2: no gender token, an unknown age, an unknown code.
    assert rows["input_ids"][1, :3].tolist() == [CLS_ID, UNK_ID, PAD_ID]
    assert rows["age_ids"][1, 1] == 0 and rows["unknown_tokens"].tolist() == [0, 1]
    # Note slots follow the kept visits.
    assert rows["note_visit_ids"].tolist() == [[1, 2, 0], [1, 0, 0]]
    assert rows["note_time_hours"][0].tolist() == [0, 1416, 0]
    assert rows["num_visits"].tolist() == [2, 1]


def test_lab_values_binned_by_the_item_quantiles_or_standardised():
    labs = [("50912", value, float(hours)) for hours, value in enumerate([0.5, 1.0, 1.99, 2.0, 7.0, None])]
    rows = build([visit_record(1, "2100-01-01", [], labs=labs)], gender=None, max_lab_events_per_visit=6)
    # Edges [1, 2]: below the first edge bin 0, an edge belongs to the bin above it, the last bin is open.
    expected_bins = [0, 1, 1, 2, 2]
    assert rows["value_ids"][0, 1:7].tolist() == [PRESENT_VALUE_ID + b for b in expected_bins] + [NO_VALUE_ID]
    assert rows["lab_values_missing"][0] == 1 and "values" not in rows

    projection = {
        "lab_value_embedding": "projection",
        "lab_value_edges": {},
        "lab_value_means": {"50912": 1.0, "50971": 4.0},
        "lab_value_stds": {"50912": 0.5, "50971": 0.0},
        "lab_value_clip": 3.0,
        "max_lab_events_per_visit": 6,
    }
    labs = [("50912", 1.25, 0.0), ("50912", 0.0, 1.0), ("50912", 9.0, 2.0), ("50971", 4.5, 3.0), ("50912", None, 4.0)]
    rows = build([visit_record(1, "2100-01-01", [], labs=labs)], gender=None, **projection)
    np.testing.assert_allclose(rows["values"][0, 1:6], [0.5, -2.0, 3.0, 0.5, 0.0])
    assert rows["value_ids"][0, 1:6].tolist() == [PRESENT_VALUE_ID] * 4 + [NO_VALUE_ID]
    # 9.0 is 16 standard deviations out: clipped, counted; a constant item (std 0) is only centred.
    assert rows["lab_values_clipped"][0] == 1 and rows["values"].dtype == np.float32
    assert MASKED_VALUE_ID not in rows["value_ids"]


def test_long_histories_lose_their_oldest_visits_and_are_counted():
    visits = [
        visit_record(1, "2100-01-01", ["ICD9CM:4019", "ICD9CM:4280", "ICD9CM:25000"], ["N02B"], note="findings"),
        visit_record(2, "2100-02-01", ["ICD9CM:4280"], ["C07A"], note="stable"),
        visit_record(3, "2100-03-01", ["ICD9CM:25000"], [], [("50912", 1.5, 1.0)], note="plan"),
    ]
    # 8 positions less [CLS] and gender: 6 token slots; visits 3 and 2 (2 tokens each) fit whole, visit 1 (4) not.
    rows = build(visits, max_length=8)
    assert rows["input_ids"][0].tolist() == [CLS_ID, F, HF, C07A, DM, CREATININE, PAD_ID, PAD_ID]
    assert rows["visit_ids"][0, 2:6].tolist() == [1, 1, 2, 2]
    assert (rows["visits_dropped"][0], rows["tokens_dropped"][0], rows["num_visits"][0]) == (1, 4, 2)
    # Times restart at the first kept visit; its gap still counts from the dropped visit's discharge.
    assert rows["time_hours"][0, 2] == 0 and rows["gap_hours"][0, 2] == (31 - 2) * 24
    assert rows["note_mask"][0].tolist() == [1, 1, 0]

    # At most max_visits - 1 visits.
    rows = build(visits, max_visits=2)
    assert rows["visits_dropped"][0] == 2 and rows["input_ids"][0, 2:4].tolist() == [DM, CREATININE]
    # A most recent visit longer than the sequence keeps its first tokens.
    rows = build(visits[:1], max_length=4)
    assert rows["input_ids"][0].tolist() == [CLS_ID, F, HTN, HF]
    assert (rows["tokens_dropped"][0], rows["visits_dropped"][0]) == (2, 0)
    # A visit with no token and no note is left out, counted; lab events beyond the per-visit limit are counted.
    many_labs = [("50971", None, float(h)) for h in range(5)]
    rows = build([visit_record(1, "2100-01-01", []), visit_record(2, "2100-02-01", [], labs=many_labs)])
    assert (rows["empty_visits"][0], rows["num_visits"][0], rows["lab_events_dropped"][0]) == (1, 1, 2)
    assert rows["input_ids"][0, 2:6].tolist() == [POTASSIUM] * 3 + [PAD_ID]
    # Untruncated patients count nothing.
    rows = build(visits)
    assert (rows["visits_dropped"][0], rows["tokens_dropped"][0]) == (0, 0)

    # Counting without building (fine-tuning's per-split log) gives the rows' counts, notes aside.
    builder = PatientSequenceBuilder(tiny_config(max_length=8, max_visits=3), word_tokenizer())
    patients = [([as_visit(v) for v in visits], "F"), ([as_visit(v) for v in visits[1:]], None)]
    rows = builder.build(patients)
    expected = {name: int(rows[name].sum()) for name in COUNT_COLUMNS if name != "notes_truncated"}
    assert builder.count(patients) == expected and expected["visits_dropped"] == 1


def test_ages_beyond_the_table_are_clamped_and_counted_and_bad_input_is_named():
    rows = build([visit_record(1, "2100-01-01", ["ICD9CM:4019"], age=300.0)], max_age=90)
    assert rows["age_ids"][0, 2] == 91 and rows["ages_clamped"][0] == 1
    with pytest.raises(ValueError, match="'age', hadm_id 7: negative"):
        as_visit(visit_record(7, "2100-01-01", [], age=-1.0))
    with pytest.raises(ValueError, match="'diagnoses', hadm_id 8: expected a list"):
        as_visit(visit_record(8, "2100-01-01", "ICD9CM:4019"))
    record = visit_record(9, "2100-01-01", [], labs=[("50912", 1.0, 0.0)])
    record["labs"][0]["hours_since_admit"] = None
    with pytest.raises(ValueError, match="'labs', hadm_id 9: a lab event without hours_since_admit"):
        build([record])


def test_a_text_only_model_reads_note_slots_and_notes_are_tokenised():
    visits = [
        visit_record(1, "2100-01-01", ["ICD9CM:4019"], note="Findings:\nHEARTFAILURE stable stable stable plan"),
        visit_record(2, "2100-02-01", ["ICD9CM:4280"], note="   "),
        visit_record(3, "2100-03-01", [], note="diabetes"),
    ]
    rows = build(visits, modalities=["text"])
    assert "input_ids" not in rows and rows["note_input_ids"].shape == (1, 3, 8)
    # Visit 2's note is blank: a visit without a note and, reading text only, without a token: left out.
    assert rows["note_mask"][0].tolist() == [1, 1, 0] and rows["empty_visits"][0] == 1
    tokenizer = word_tokenizer()
    expected = tokenizer("findings: heartfailure stable stable stable plan", truncation=True, max_length=8)
    assert rows["note_input_ids"][0, 0].tolist() == expected["input_ids"]
    assert rows["note_attention_mask"][0, 1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert rows["notes_truncated"][0] == 1


# --- the family on a prepared directory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_patient_prepared_dir(tmp_path_factory.mktemp("prepared"))


def test_build_model_from_a_prepared_directory(prepared):
    assert get_family("mbehrt") is FAMILY
    section = ModelSection(family="mbehrt", overrides={"modalities": ["tabular"], "hidden_size": 8, "num_heads": 2})
    config = FAMILY.build_model(str(prepared), section).model.config
    assert config.vocabularies["diagnosis"] == [code for code, _ in read_vocab(prepared / "vocab" / "diagnosis.tsv")]
    assert config.vocabularies["gender"] == ["F", "M"] and config.vocabularies["procedure"]
    assert sorted(config.vocabularies["lab"]) == ["50912", "50971", "51222"]
    assert config.loss_weights["alignment"] == 0.0
    # Edges: the training split's deciles of each item's numeric values.
    events = pc.list_flatten(read_visit_table(prepared, "train", ("labs",)).column("labs").combine_chunks())
    values = [e["valuenum"] for e in events.to_pylist() if e["itemid"] == "50912" and e["valuenum"] is not None]
    np.testing.assert_allclose(config.lab_value_edges["50912"], np.quantile(values, np.arange(1, 10) / 10))
    edges, means, stds = lab_value_statistics(prepared, ["50912"], 4)
    assert list(edges) == ["50912"] and len(edges["50912"]) == 3
    np.testing.assert_allclose([means["50912"], stds["50912"]], [np.mean(values), np.std(values)])

    overrides = {**section.overrides, "lab_value_embedding": "projection"}
    projection = FAMILY.build_model(str(prepared), ModelSection(family="mbehrt", overrides=overrides)).model.config
    assert projection.lab_value_edges == {} and sorted(projection.lab_value_stds) == ["50912", "50971", "51222"]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"overrides": {"modalities": ["text"]}}, "model.overrides.modalities"),
        ({"overrides": {"fusion": "late", "loss_weights": {"alignment": 0.0}}}, "model.overrides.loss_weights"),
        ({}, "model.text_checkpoint"),
        ({"overrides": {"hiden_size": 8}}, "model.overrides.hiden_size"),
        ({"overrides": {"fusion": "middle"}}, "model.overrides"),
        ({"preset": "huge"}, "model.preset"),
        ({"overrides": {"modalities": ["tabular"]}, "tokenizer_dir": "/t"}, "model.tokenizer_dir"),
        ({"options": {"whole_word_mask": True}}, "model.options.whole_word_mask"),
    ],
)
def test_build_model_names_the_wrong_key(prepared, section, key):
    with pytest.raises(ConfigError, match=f"^{key}"):
        FAMILY.build_model(str(prepared), ModelSection(family="mbehrt", **section))


def test_a_schema_1_directory_is_refused_naming_what_it_lacks(prepared, tmp_path):
    import pyarrow.parquet as pq

    old = tmp_path / "visits" / "train"
    old.mkdir(parents=True)
    table = pq.read_table(prepared / "visits" / "train" / "part-00000.parquet").drop_columns(["age", "gender"])
    pq.write_table(table, old / "part-00000.parquet")
    with pytest.raises(ValueError, match=r"visits/train: visit files lack column\(s\) \['gender', 'age'\]"):
        read_visit_table(tmp_path, "train")
