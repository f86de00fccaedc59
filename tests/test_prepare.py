"""End-to-end prepare on hand-built tiny tables, with one shared local Ray."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_prepare_support import (
    admission,
    base_tables,
    diagnosis,
    prescription,
    write_mimic,
)

from medmplm.data import quarantine as q
from medmplm.data.manifest import read_manifest
from medmplm.data.ndc_atc import MissingNdcMapError
from medmplm.data.pipeline import (
    STATS_SCHEMA,
    OutputExistsError,
    PrepareOptions,
    _map_work_items,
    assign_splits,
    count_buckets,
    prepare,
    shard_buckets,
)
from medmplm.data.schema import SPLITS, VISIT_SCHEMA
from medmplm.data.tables import MalformedCsvError, MissingColumnError, MissingTableError
from medmplm.data.vocab_io import read_vocab
from medmplm.ontology import read_ontology
from medmplm.prepare import main as prepare_main

pytestmark = pytest.mark.usefixtures("ray_local")


def many_patients(n: int, first_subject: int = 1000) -> dict[str, list[dict]]:
    """``n`` patients with two admissions each and one diagnosis per admission."""
    tables = base_tables()
    for i in range(n):
        subject = first_subject + i
        for k in range(2):
            hadm = subject * 10 + k
            tables["ADMISSIONS"].append(
                admission(hadm, subject, hadm, f"2130-0{k + 1}-01 00:00:00", f"2130-0{k + 1}-03 00:00:00")
            )
            tables["DIAGNOSES_ICD"].append(diagnosis(hadm, subject, hadm, "1", "4280" if k else "41401"))
    return tables


def with_bad_rows() -> dict[str, list[dict]]:
    tables = base_tables()
    tables["ADMISSIONS"].append(admission(90, 105, 5001, "2101-01-02 00:00:00", "2101-01-01 00:00:00"))
    tables["ADMISSIONS"].append(dict(tables["ADMISSIONS"][0], ROW_ID=91))  # exact duplicate but ROW_ID
    tables["DIAGNOSES_ICD"].append(diagnosis(90, "abc", 1001, "9", "4019"))  # non-numeric SUBJECT_ID
    tables["DIAGNOSES_ICD"].append(diagnosis(91, 101, 1001, "9", "ABCDE"))
    tables["PRESCRIPTIONS"].append(prescription(90, 101, 1001, "2101-01-01 00:00:00", "0"))
    return tables


def stored_arrow_schema(path: Path) -> pa.Schema:
    """The Arrow schema the writer stored in a Parquet file (``ARROW:schema`` metadata)."""
    encoded = pq.read_metadata(path).metadata[b"ARROW:schema"]
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))


def read_split(out: Path, split: str) -> pa.Table:
    files = sorted((out / "visits" / split).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def all_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prepared")
    mimic = write_mimic(root / "mimic", with_bad_rows())
    out = root / "out"
    prepare(mimic, out, PrepareOptions(num_shards_per_split=2, split=(0.5, 0.25, 0.25)))
    return mimic, out


def test_layout_and_schema(prepared) -> None:
    _, out = prepared
    names = set(all_files(out))
    for split in SPLITS:
        assert {f"visits/{split}/part-00000.parquet", f"visits/{split}/part-00001.parquet"} <= names
        for f in (out / "visits" / split).glob("*.parquet"):
            assert stored_arrow_schema(f).equals(VISIT_SCHEMA, check_metadata=True)
            # Parquet has no seconds unit: plain readers see timestamp[ms]; passing the schema restores it.
            assert pq.read_table(f, schema=VISIT_SCHEMA).schema.equals(VISIT_SCHEMA, check_metadata=True)
    for code_type in ("diagnosis", "procedure", "medication", "lab"):
        assert f"vocab/{code_type}.tsv" in names
    assert {"ontology/diagnosis.tsv", "ontology/medication.tsv", "manifest.json"} <= names
    assert not any(".tmp-" in n or n.startswith("_work") for n in names)
    assert not list(out.parent.glob("out.tmp-*"))


def test_all_admissions_present_once_and_rows_sorted(prepared) -> None:
    _, out = prepared
    hadms = []
    for split in SPLITS:
        table = read_split(out, split)
        keys = list(zip(table["subject_id"].to_pylist(), table["admittime"].to_pylist(), table["hadm_id"].to_pylist()))
        assert keys == sorted(keys)
        hadms += table["hadm_id"].to_pylist()
    assert sorted(hadms) == [1001, 1002, 1003, 2001, 3001, 3002]


def test_manifest_counts(prepared) -> None:
    _, out = prepared
    manifest = read_manifest(out)
    assert manifest.schema_version == 2
    assert manifest.tables["ADMISSIONS"]["rows_read"] == 8
    assert manifest.tables["ADMISSIONS"]["dropped"] == {q.DUPLICATE_ROW: 1}
    assert manifest.tables["ADMISSIONS"]["quarantined"] == {q.DISCHTIME_BEFORE_ADMITTIME: 1}
    assert manifest.tables["ADMISSIONS"]["rows_kept"] == 6
    assert manifest.tables["DIAGNOSES_ICD"]["quarantined"] == {q.INVALID_ICD9_CODE: 1, q.INVALID_SUBJECT_ID: 1}
    assert manifest.medications == {
        "vocabulary": "atc3",
        "missing_or_zero_ndc_rows": 3,
        "unmapped_ndc_rows": 2,
        "unmapped_ndc_distinct": 2,
        "ndc_map_entries": 3,
    }
    assert manifest.quarantined == {q.DISCHTIME_BEFORE_ADMITTIME: 1, q.INVALID_ICD9_CODE: 1, q.INVALID_SUBJECT_ID: 1}
    assert sum(manifest.splits[s]["admissions"] for s in SPLITS) == 6
    assert sum(manifest.splits[s]["patients"] for s in SPLITS) == 3
    for name in ("ADMISSIONS", "NOTEEVENTS", "ndc2rxnorm_mapping.txt"):
        assert len(manifest.inputs[name]["sha256"]) == 64 and manifest.inputs[name]["bytes"] > 0
    assert manifest.vocab["source_splits"] == ["train"]
    assert "created" not in json.loads((out / "manifest.json").read_text())


def test_quarantine_files_hold_raw_rows_with_reason(prepared) -> None:
    _, out = prepared
    diagnoses = pq.read_table(out / "quarantine" / "DIAGNOSES_ICD.parquet").to_pylist()
    assert sorted((r["SUBJECT_ID"], r["ICD9_CODE"], r["reason"]) for r in diagnoses) == [
        ("101", "ABCDE", q.INVALID_ICD9_CODE),
        ("abc", "4019", q.INVALID_SUBJECT_ID),
    ]
    admissions = pq.read_table(out / "quarantine" / "ADMISSIONS.parquet")
    assert admissions.column_names[-1] == "reason" and admissions.num_rows == 1
    assert pq.read_table(out / "quarantine" / "LABEVENTS.parquet").num_rows == 0


def test_vocab_from_train_split_and_ontology_covers_it(prepared) -> None:
    _, out = prepared
    train = read_split(out, "train")
    diagnosis_vocab = dict(read_vocab(out / "vocab" / "diagnosis.tsv"))
    expected: dict[str, int] = {}
    for codes in train["diagnoses"].to_pylist():
        for code in set(codes):
            expected[code] = expected.get(code, 0) + 1
    assert diagnosis_vocab == expected
    ontology = read_ontology(out / "ontology" / "diagnosis.tsv")
    assert set(ontology) == set(diagnosis_vocab)
    assert set(read_ontology(out / "ontology" / "medication.tsv")) == {
        c for c, _ in read_vocab(out / "vocab" / "medication.tsv")
    }


def test_rerun_is_byte_identical_and_other_case_and_gzip_give_same_visits(prepared, tmp_path) -> None:
    mimic, out = prepared
    again = tmp_path / "again"
    prepare(mimic, again, PrepareOptions(num_shards_per_split=2, split=(0.5, 0.25, 0.25)))
    assert all_files(again) == all_files(out)

    lower = write_mimic(tmp_path / "lower", with_bad_rows(), column_case="lower", gzip_files=True)
    lower_out = tmp_path / "lower_out"
    prepare(lower, lower_out, PrepareOptions(num_shards_per_split=2, split=(0.5, 0.25, 0.25)))
    for split in SPLITS:
        assert read_split(lower_out, split).equals(read_split(out, split))
    assert read_manifest(lower_out).tables == read_manifest(out).tables


@pytest.mark.parametrize("admissions", [1, 390, 7_999, 8_000, 8_001, 21_080, 84_621, 431_231])
def test_buckets_stay_within_their_size_at_every_input_size_and_each_is_built_by_one_shard(admissions: int) -> None:
    options = PrepareOptions(num_shards_per_split=4, admissions_per_bucket=2000)
    buckets = count_buckets(admissions, options)
    assert buckets >= 4 and admissions / buckets <= 2000
    if admissions >= 4 * 2000:
        # Full buckets once the input fills the shards: the size (and a visits task's memory) no longer follows it.
        assert admissions / buckets > 2000 * (buckets - 1) / buckets
    ranges = [shard_buckets(shard, buckets, 4) for shard in range(4)]
    assert [b for r in ranges for b in r] == list(range(buckets))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_split_is_patient_level_deterministic_and_configurable(tmp_path) -> None:
    mimic = write_mimic(tmp_path / "mimic", many_patients(200))
    out = tmp_path / "out"
    manifest = prepare(
        mimic, out, PrepareOptions(split=(0.6, 0.2, 0.2), seed=7, num_shards_per_split=3, admissions_per_bucket=50)
    )
    subjects = {}
    for split in SPLITS:
        table = read_split(out, split)
        keys = list(zip(table["subject_id"].to_pylist(), table["admittime"].to_pylist(), table["hadm_id"].to_pylist()))
        assert keys == sorted(keys)  # several buckets per shard, shards in order
        subjects[split] = set(table["subject_id"].to_pylist())
    assert not (
        subjects["train"] & subjects["val"]
        or subjects["train"] & subjects["test"]
        or subjects["val"] & subjects["test"]
    )
    assert sum(len(s) for s in subjects.values()) == 203
    assert 0.45 < len(subjects["train"]) / 203 < 0.75
    for split in SPLITS:
        expected = {
            s for s in range(1000, 1200) if SPLITS[assign_splits(np.array([s]), 7, (0.6, 0.2, 0.2))[0]] == split
        }
        assert expected <= subjects[split]
        assert manifest.splits[split]["patients"] == len(subjects[split])


def test_split_assignment_is_stable_when_patients_are_added() -> None:
    few = np.arange(100, 300)
    more = np.concatenate([few, np.arange(5000, 9000)])
    assert (assign_splits(few, 3, (0.8, 0.1, 0.1)) == assign_splits(more, 3, (0.8, 0.1, 0.1))[: len(few)]).all()
    assert (assign_splits(few, 3, (0.8, 0.1, 0.1)) != assign_splits(few, 4, (0.8, 0.1, 0.1))).any()
    counts = np.bincount(assign_splits(np.arange(20000), 0, (0.8, 0.1, 0.1)), minlength=3) / 20000
    assert np.allclose(counts, [0.8, 0.1, 0.1], atol=0.02)


def test_missing_table_and_column_are_clear_errors(tmp_path) -> None:
    mimic = write_mimic(tmp_path / "mimic")
    (mimic / "LABEVENTS.csv").unlink()
    with pytest.raises(MissingTableError, match="LABEVENTS"):
        prepare(mimic, tmp_path / "out")
    write_mimic(mimic, columns={"PRESCRIPTIONS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "STARTDATE", "DRUG"]})
    with pytest.raises(MissingColumnError, match=r"PRESCRIPTIONS\.csv: missing column\(s\) NDC"):
        prepare(mimic, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_ndc_map_error_unless_another_vocab_is_chosen(tmp_path) -> None:
    mimic = write_mimic(tmp_path / "mimic", ndc_map=False)
    with pytest.raises(MissingNdcMapError, match="ndc2rxnorm_mapping.txt and ndc2atc_level4.csv"):
        prepare(mimic, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    manifest = prepare(mimic, tmp_path / "out", PrepareOptions(medication_vocab="drug"))
    assert manifest.medications["vocabulary"] == "drug"
    assert "Acetaminophen" in dict(read_vocab(tmp_path / "out" / "vocab" / "medication.tsv"))
    assert set(read_ontology(tmp_path / "out" / "ontology" / "medication.tsv")["Acetaminophen"]) == {"DRUG"}


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tmp_path, monkeypatch) -> None:
    mimic = write_mimic(tmp_path / "mimic")
    out = tmp_path / "out"
    prepare(mimic, out, PrepareOptions(medication_vocab="ndc"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare(mimic, out, PrepareOptions(medication_vocab="ndc"))
    assert prepare_main(["--mimic", str(mimic), "--out", str(out)]) == 2  # refused before Ray starts

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("medmplm.data.pipeline.write_ontology", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(mimic, out, PrepareOptions(medication_vocab="atc3", overwrite=True))
    assert read_manifest(out).options["medication_vocab"] == "ndc"  # previous output untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic", "out"]
    monkeypatch.undo()

    prepare(mimic, out, PrepareOptions(medication_vocab="atc3", overwrite=True))
    assert read_manifest(out).options["medication_vocab"] == "atc3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic", "out"]

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="refusing"):
        prepare(mimic, stranger, PrepareOptions(overwrite=True))
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_malformed_csv_row_fails_cleanly_without_quoting_text(tmp_path) -> None:
    mimic = write_mimic(tmp_path / "mimic")
    path = mimic / "NOTEEVENTS.csv"
    path.write_text(path.read_text() + '7,101,1001,2101-01-05,,,Discharge summary,Report,,,"secret\nnote",extra\n')
    with pytest.raises(Exception) as err:
        prepare(mimic, tmp_path / "out")
    assert isinstance(err.value, MalformedCsvError)
    assert "wrong number of fields" in str(err.value) and "secret" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic"]


def test_worker_per_task_runs_each_work_item_in_a_fresh_worker_process():
    # A worker keeps memory after its task; each task starting on a fresh worker keeps one task's leftovers from
    # adding to the next one's peak (4 items on 2 CPUs: a reused worker would show its pid twice).
    def _worker_pid(batch: pa.Table) -> pa.Table:  # defined here: Ray's workers cannot import this test module
        return pa.table(
            {"kind": ["pid"], "scope": [""], "key": [str(os.getpid())], "value": [1]}, schema=STATS_SCHEMA
        )

    pids = _map_work_items([{"unit": i} for i in range(4)], _worker_pid, worker_per_task=True)["key"].to_pylist()
    assert len(pids) == 4 and len(set(pids)) == 4, pids


@pytest.mark.parametrize(
    ("worker_per_task", "min_admissions", "expected"),
    [(None, 50_000, False), (None, 1, True), (False, 1, False), (True, 50_000, True)],
)
def test_worker_per_task_is_on_from_a_number_of_admissions_unless_set(
    worker_per_task, min_admissions, expected, tmp_path, monkeypatch
):
    from medmplm.data import pipeline

    seen = []

    def recording(items, fn, worker_per_task):
        seen.append(worker_per_task)
        return _map_work_items(items, fn, worker_per_task=False)

    monkeypatch.setattr(pipeline, "_map_work_items", recording)
    monkeypatch.setattr(pipeline, "WORKER_PER_TASK_MIN_ADMISSIONS", min_admissions)
    mimic = write_mimic(tmp_path / "mimic", many_patients(3))
    prepare(mimic, tmp_path / "out", PrepareOptions(num_shards_per_split=1, worker_per_task=worker_per_task))
    assert seen == [expected, expected]
