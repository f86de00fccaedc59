"""Example and label construction for each fine-tuning task, on hand-built visit tables."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmplm.data import schema
from medmplm.tasks import IcdCoding, MedicationRecommendation, PreparedDataError, Readmission, build_task, read_visits

_DAY = dt.timedelta(days=1)
_T0 = dt.datetime(2150, 1, 1)


def _visits(rows: list[dict]) -> pa.Table:
    """A VISIT_SCHEMA table from short row dicts (subject, hadm, day, dx, rx, note, readmit)."""
    full = []
    for row in rows:
        admit = _T0 + row["day"] * _DAY
        full.append(
            {
                "subject_id": row["subject"],
                "hadm_id": row["hadm"],
                "admittime": admit,
                "dischtime": admit + 3 * _DAY,
                "deathtime": None,
                "admission_type": "EMERGENCY",
                "visit_index": 0,
                "num_visits": 1,
                "diagnoses": row.get("dx", []),
                "procedures": [],
                "medications": row.get("rx", []),
                "labs": [],
                "note_text": row.get("note", f"note {row['hadm']}"),
                "num_notes": 1,
                "hospital_death": False,
                "readmission_30d": row.get("readmit", 0),
                "readmission_30d_nonelective": row.get("readmit_ne", 0),
            }
        )
    return pa.Table.from_pylist(full, schema=schema.VISIT_SCHEMA)


MEDREC_VISITS = _visits(
    [
        # Rows deliberately out of order: the task orders by patient and admission time itself.
        {"subject": 1, "hadm": 12, "day": 40, "dx": ["4280"], "rx": ["C03C"]},
        {"subject": 1, "hadm": 11, "day": 0, "dx": ["4019", "25000"], "rx": ["C07A", "A10B"], "note": "first"},
        {"subject": 1, "hadm": 13, "day": 90, "dx": ["4019"], "rx": ["C07A", "Z99Z"], "note": "third"},
        {"subject": 2, "hadm": 21, "day": 5, "dx": ["486"], "rx": ["J01C"]},
        {"subject": 3, "hadm": 31, "day": 0, "dx": ["486"], "rx": ["J01C"]},
        {"subject": 3, "hadm": 32, "day": 9, "dx": ["5849"], "rx": []},
        {"subject": 3, "hadm": 33, "day": 20, "dx": ["5849"], "rx": ["Z99Z"]},
    ]
)


def test_medrec_examples_and_no_leakage():
    task = MedicationRecommendation()
    space = ["C07A", "A10B", "C03C", "J01C"]
    result = task.build_examples(MEDREC_VISITS, space)
    rows = result.examples.to_pylist()
    assert [r["hadm_id"] for r in rows] == [12, 13]

    second, third = rows
    # Target visit 12: history is visit 11, then visit 12 with its diagnoses only.
    assert second["diagnoses"] == [["4019", "25000"], ["4280"]]
    assert second["medications"] == [["C07A", "A10B"], []]
    assert second["note_text"] == ["first", None]
    assert second["label_codes"] == ["C03C"]
    # Target visit 13: two history visits, oldest first; Z99Z is outside the label space.
    assert second["subject_id"] == third["subject_id"] == 1
    assert third["medications"] == [["C07A", "A10B"], ["C03C"], []]
    assert third["diagnoses"][-1] == ["4019"]
    assert third["label_codes"] == ["C07A"]
    assert result.dropped_label_codes == 2  # Z99Z in visits 13 and 33

    for row in rows:
        # The target visit's medications and note never reach the input.
        assert row["medications"][-1] == [] and row["note_text"][-1] is None
        assert len(row["note_text"]) == len(row["diagnoses"]) == len(row["medications"])

    assert result.exclusion_counts() == {
        "first_visit": 2,
        "no_medication_in_label_space": 1,
        "no_medications": 1,
        "single_visit_patient": 1,
    }
    excluded = dict(zip(result.excluded.column("hadm_id").to_pylist(), result.excluded.column("reason").to_pylist()))
    assert excluded[32] == "no_medications" and excluded[33] == "no_medication_in_label_space"
    # Every visit is either a target or excluded, never both.
    assert sorted([*excluded, *(r["hadm_id"] for r in rows)]) == sorted(MEDREC_VISITS.column("hadm_id").to_pylist())


def test_medrec_history_cap_and_label_space():
    task = MedicationRecommendation(max_history=1)
    assert task.max_visits == 2
    rows = task.build_examples(MEDREC_VISITS, ["C03C", "C07A"]).examples.to_pylist()
    third = [r for r in rows if r["hadm_id"] == 13][0]
    assert third["medications"] == [["C03C"], []]
    # Frequency over training visits, ties broken by code.
    assert task.label_space(MEDREC_VISITS) == ["C07A", "J01C", "Z99Z", "A10B", "C03C"]
    with pytest.raises(ValueError, match="max_history"):
        MedicationRecommendation(max_history=0)


READMIT_VISITS = _visits(
    [
        {"subject": 1, "hadm": 1, "day": 0, "dx": ["4280"], "rx": ["C03C"], "readmit": 1, "readmit_ne": 0},
        {"subject": 1, "hadm": 2, "day": 20, "dx": ["4280"], "rx": ["C03C"], "readmit": None},
        {"subject": 2, "hadm": 3, "day": 0, "dx": ["486"], "readmit": 0, "note": None},
        {"subject": 3, "hadm": 4, "day": 0, "dx": ["486"], "readmit": 0, "note": "  \n"},
        *({"subject": 10 + i, "hadm": 10 + i, "day": 0, "readmit": int(i < 3)} for i in range(12)),
    ]
)


def test_readmission_examples():
    task = Readmission(require_note=True)
    result = task.build_examples(READMIT_VISITS, [])
    rows = result.examples.to_pylist()
    assert result.exclusion_counts() == {"label_undefined": 1, "no_note": 2}
    first = [r for r in rows if r["hadm_id"] == 1][0]
    assert first == {
        "subject_id": 1,
        "hadm_id": 1,
        "note_text": ["note 1"],
        "diagnoses": [["4280"]],
        "medications": [["C03C"]],
        "label": 1,
    }
    assert len(rows) == 13 and sum(r["label"] for r in rows) == 4

    # By default a visit without a note is kept (the model masks the missing text out).
    assert len(Readmission().build_examples(READMIT_VISITS, [])) == 15
    nonelective = Readmission(label_column="readmission_30d_nonelective").build_examples(READMIT_VISITS, [])
    assert [r["label"] for r in nonelective.examples.to_pylist() if r["hadm_id"] == 1] == [0]
    with pytest.raises(ValueError, match="label_column"):
        Readmission(label_column="hospital_death")


def test_readmission_negative_subsampling_is_seeded_and_training_only():
    task = Readmission(subsample_negatives=True)
    examples = task.build_examples(READMIT_VISITS, [])
    train = task.training_examples(examples, seed=0)
    labels = train.examples.column("label").to_pylist()
    assert labels.count(1) == 4 and labels.count(0) == 4
    assert train.exclusion_counts()["negative_subsampled"] == 7
    assert train.examples.equals(task.training_examples(examples, seed=0).examples)
    other_seeds = {
        tuple(task.training_examples(examples, seed=s).examples.column("hadm_id").to_pylist()) for s in range(6)
    }
    assert len(other_seeds) > 1
    assert Readmission(subsample_negatives=False).training_examples(examples, seed=0) is examples


ICD_VISITS = _visits(
    [
        {"subject": 1, "hadm": 1, "day": 0, "dx": ["4019", "4280", "4019"], "rx": ["C03C"]},
        {"subject": 2, "hadm": 2, "day": 0, "dx": ["4280", "486"], "rx": ["J01C"]},
        {"subject": 3, "hadm": 3, "day": 0, "dx": ["5849"], "rx": []},
        {"subject": 4, "hadm": 4, "day": 0, "dx": ["4019"], "rx": [], "note": None},
    ]
)


def test_icd_label_space_and_no_leakage():
    task = IcdCoding(top_k=2, require_note=True)
    # 4019 and 4280 are in 2 visits each (a code repeated in a visit counts once); 486 and 5849 in one.
    assert task.label_space(ICD_VISITS) == ["4019", "4280"]
    assert IcdCoding(top_k=None).label_space(ICD_VISITS) == ["4019", "4280", "486", "5849"]
    result = task.build_examples(ICD_VISITS, ["4019", "4280"])
    rows = result.examples.to_pylist()
    assert [r["hadm_id"] for r in rows] == [1, 2]
    assert rows[0]["label_codes"] == ["4019", "4280"] and rows[1]["label_codes"] == ["4280"]
    for row in rows:
        # Diagnoses are the labels: never in the input.
        assert row["diagnoses"] == [[]]
    assert rows[1]["medications"] == [["J01C"]] and rows[1]["note_text"] == ["note 2"]
    assert result.exclusion_counts() == {"no_diagnosis_in_label_space": 1, "no_note": 1}
    assert result.dropped_label_codes == 2  # 486 in visit 2, 5849 in visit 3
    without_note = IcdCoding(top_k=2).build_examples(ICD_VISITS, ["4019", "4280"]).examples.to_pylist()
    assert [(r["hadm_id"], r["note_text"]) for r in without_note][-1] == (4, [None])


def test_build_task_errors():
    assert build_task("icd", top_k=5).top_k == 5
    with pytest.raises(ValueError, match="unknown task 'mortality'"):
        build_task("mortality")
    with pytest.raises(ValueError, match=r"no option\(s\) \['top_k'\]"):
        build_task("readmission", top_k=5)


def _prepared(tmp_path, version=schema.SCHEMA_VERSION, table=MEDREC_VISITS):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / schema.MANIFEST_FILE).write_text(json.dumps({"schema_version": version}))
    split_dir = tmp_path / schema.VISITS_DIR / "train"
    split_dir.mkdir(parents=True)
    pq.write_table(table, split_dir / "part-00000.parquet")
    return tmp_path


def test_read_visits(tmp_path):
    visits = read_visits(_prepared(tmp_path), "train")
    assert visits.column("hadm_id").to_pylist() == [11, 12, 13, 21, 31, 32, 33]
    with pytest.raises(PreparedDataError, match="no visit files"):
        read_visits(tmp_path, "val")
    with pytest.raises(PreparedDataError, match="unknown split"):
        read_visits(tmp_path, "dev")


def test_read_visits_errors(tmp_path):
    with pytest.raises(PreparedDataError, match="not a prepared directory"):
        read_visits(tmp_path, "train")
    with pytest.raises(PreparedDataError, match="schema_version 99"):
        read_visits(_prepared(tmp_path / "old", version=99), "train")
    with pytest.raises(PreparedDataError, match=r"lack column\(s\) \['note_text'\]"):
        read_visits(_prepared(tmp_path / "cols", table=MEDREC_VISITS.drop_columns(["note_text"])), "train")
