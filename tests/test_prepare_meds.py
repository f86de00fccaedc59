"""MEDS input on a hand-written dataset: admissions from admission and discharge codes, code prefixes, events without
time, subject splits (listed and not), quarantine, and a YAML code config."""

from __future__ import annotations

from datetime import datetime

import meds
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmplm.data import quarantine as q
from medmplm.data.pipeline import PrepareOptions, assign_splits, prepare
from medmplm.data.quarantine import RowLedger
from medmplm.data.schema import SPLITS
from medmplm.data.sources import detect_source
from medmplm.data.sources import meds as meds_source
from medmplm.data.sources.meds import EVENTS, MedsCodes, MedsFormatError, build_meds_visits
from medmplm.data.visits import VisitOptions

T = datetime.fromisoformat
ADMIT_1 = "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"

# (subject_id, time, code, numeric_value, text_value)
SUBJECT_1 = [
    (1, None, "GENDER//F", None, None),
    (1, T("2100-01-01"), meds.birth_code, None, None),
    (1, None, "STATIC//SOMETHING", None, None),  # no time, not a demographic: dropped
    (1, T("2150-01-01 10:00"), ADMIT_1, None, None),
    (1, T("2150-01-01 11:00"), "LAB//RESULT//50912//mg/dL", 1.5, "1.5"),
    (1, T("2150-01-02 09:00"), "MEDICATION//START//Aspirin", None, None),
    (1, T("2150-01-02 09:30"), "ICU_ADMISSION//MICU", None, None),  # in the stay, no prefix takes it
    (1, T("2150-01-02 10:00"), "MEDICATION//START//Heparin", None, None),
    (1, T("2150-01-02 11:00"), "MEDICATION//START//Aspirin", None, None),
    (1, T("2150-01-03 11:00"), "NOTE//DISCHARGE", None, "Discharge note of the first stay."),
    (1, T("2150-01-03 12:00"), "HOSPITAL_DISCHARGE//HOME", None, None),
    (1, T("2150-01-03 12:00"), "DIAGNOSIS//ICD//10//I2510", None, None),
    (1, T("2150-01-03 12:00"), "DIAGNOSIS//ICD//9//4019", None, None),
    (1, T("2150-01-03 12:00"), "DIAGNOSIS//ICD//10//I25.10", None, None),  # dotted: quarantined
    (1, T("2150-01-03 12:00"), "PROCEDURE//ICD//10//0016070", None, None),
    (1, T("2150-01-03 12:00"), "PROCEDURE//ICD//10//0016070", None, None),  # exact duplicate: dropped
    (1, T("2150-01-10 08:00"), "LAB//RESULT//50912//mg/dL", 1.1, "1.1"),  # between stays: dropped
    (1, T("2150-01-20 08:00"), "HOSPITAL_ADMISSION//URGENT//TRANSFER", None, None),
    (1, T("2150-01-22 08:00"), "HOSPITAL_DISCHARGE//SKILLED NURSING FACILITY", None, None),
    (1, T("2150-01-22 08:00"), "DIAGNOSIS//ICD//10//N179", None, None),
]
SUBJECT_2 = [
    (2, None, "GENDER//M", None, None),
    (2, T("1990-06-01"), meds.birth_code, None, None),
    (2, T("2160-05-01 00:00"), "HOSPITAL_ADMISSION//ELECTIVE//PHYSICIAN REFERRAL", None, None),
    (2, T("2160-05-03 00:00"), meds.death_code, None, None),
    (2, T("2160-05-03 00:00"), "HOSPITAL_DISCHARGE//DIED", None, None),
    (2, T("2161-01-01 00:00"), "HOSPITAL_ADMISSION//URGENT//UNK", None, None),  # never discharged
]
SUBJECT_3 = [  # not in subject_splits
    (3, T("2170-02-01 00:00"), "HOSPITAL_DISCHARGE//HOME", None, None),  # no admission before it
    (3, T("2170-03-01 00:00"), "HOSPITAL_ADMISSION//EW EMER.//UNK", None, None),
    (3, T("2170-03-02 00:00"), "DIAGNOSIS//ICD//9//0389", None, None),
    (3, T("2170-03-04 00:00"), "HOSPITAL_DISCHARGE//HOME", None, None),
]


def events_table(rows, hadm_ids=None) -> pa.Table:
    columns = list(zip(*rows))
    table = pa.table(
        {
            "subject_id": pa.array(columns[0], pa.int64()),
            "time": pa.array(columns[1], pa.timestamp("us")),
            "code": pa.array(columns[2], pa.string()),
            "numeric_value": pa.array(columns[3], pa.float32()),
            "text_value": pa.array(columns[4], pa.large_string()),
        }
    )
    if hadm_ids is not None:
        table = table.append_column("hadm_id", pa.array(hadm_ids, pa.int64()))
    return table


def write_meds(directory, shards: dict[str, pa.Table], splits: dict[int, str] | None) -> str:
    for relative, table in shards.items():
        path = directory / "data" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    if splits is not None:
        (directory / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table({"subject_id": pa.array(list(splits), pa.int64()), "split": list(splits.values())}),
            directory / meds.subject_splits_filepath,
        )
    return str(directory)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return write_meds(
        tmp_path_factory.mktemp("meds"),
        {"train/0.parquet": events_table(SUBJECT_1 + SUBJECT_3), "held_out/0.parquet": events_table(SUBJECT_2)},
        {1: meds.train_split, 2: meds.held_out_split},
    )


def build(directory: str, config: str | None = None):
    source = meds_source.locate(directory, VisitOptions(note_categories=()), config, False, None)
    events = pa.concat_tables(source._reader(unit).read_all() for unit in source.data_files)
    ledger = RowLedger(raw_columns=source.raw_columns)
    visits = build_meds_visits(events, source, ledger)
    return visits, ledger, source


def test_admissions_from_admission_and_discharge_codes(dataset) -> None:
    visits, _, _ = build(dataset)
    rows = visits.to_pylist()
    assert [(r["subject_id"], str(r["admittime"]), str(r["dischtime"])) for r in rows] == [
        (1, "2150-01-01 10:00:00", "2150-01-03 12:00:00"),
        (1, "2150-01-20 08:00:00", "2150-01-22 08:00:00"),
        (2, "2160-05-01 00:00:00", "2160-05-03 00:00:00"),
        (3, "2170-03-01 00:00:00", "2170-03-04 00:00:00"),
    ]
    first, second, died, third = rows
    assert first["admission_type"] == "EW EMER." and second["admission_type"] == "URGENT"
    assert first["diagnoses"] == ["ICD10CM:I2510", "ICD9CM:4019"]  # time, then file order
    assert first["procedures"] == ["ICD10PCS:0016070"]
    assert first["medications"] == ["Aspirin", "Heparin"]
    assert [(lab["itemid"], lab["valuenum"], lab["valueuom"], lab["hours_since_admit"]) for lab in first["labs"]] == [
        ("50912", 1.5, "mg/dL", 1.0)
    ]
    assert first["note_text"] == "Discharge note of the first stay." and first["num_notes"] == 1
    assert (first["gender"], first["age"]) == ("F", pytest.approx(50.0, abs=0.01))
    assert first["readmission_30d"] == 1 and first["readmission_30d_nonelective"] == 1
    assert second["diagnoses"] == ["ICD10CM:N179"]  # stamped at the discharge time
    assert (
        died["hospital_death"] and str(died["deathtime"]) == "2160-05-03 00:00:00" and died["readmission_30d"] is None
    )
    assert third["diagnoses"] == ["ICD9CM:0389"] and third["gender"] is None and third["age"] is None
    assert len({r["hadm_id"] for r in rows}) == 4


def test_events_outside_admissions_without_time_or_unused_are_counted(dataset) -> None:
    _, ledger, _ = build(dataset)
    assert ledger.counts[("dropped", EVENTS, q.NO_TIME)] == 1
    assert ledger.counts[("dropped", EVENTS, q.NOT_IN_AN_ADMISSION)] == 1
    assert ledger.counts[("dropped", EVENTS, q.CODE_NOT_USED)] == 1
    assert ledger.counts[("dropped", EVENTS, q.DUPLICATE_ROW)] == 1
    quarantined = ledger.quarantined_table(EVENTS).to_pylist()
    assert sorted((r["subject_id"], r["reason"]) for r in quarantined) == [
        ("1", q.INVALID_ICD10CM_CODE),
        ("2", q.ADMISSION_WITHOUT_DISCHARGE),
        ("3", q.DISCHARGE_WITHOUT_ADMISSION),
    ]


def test_hadm_id_column_pairs_and_names_admissions(tmp_path) -> None:
    # Two overlapping stays (a transfer): only the hadm_id column can tell their events apart.
    rows = [
        (5, T("2150-01-01 00:00"), "HOSPITAL_ADMISSION//EW EMER.//UNK", None, None),
        (5, T("2150-01-02 00:00"), "HOSPITAL_ADMISSION//URGENT//UNK", None, None),
        (5, T("2150-01-03 00:00"), "HOSPITAL_DISCHARGE//HOME", None, None),
        (5, T("2150-01-03 00:00"), "DIAGNOSIS//ICD//10//I10", None, None),
        (5, T("2150-01-04 00:00"), "HOSPITAL_DISCHARGE//HOME", None, None),
        (5, T("2150-01-04 00:00"), "DIAGNOSIS//ICD//10//N179", None, None),
        (5, T("2150-01-05 00:00"), "DIAGNOSIS//ICD//10//A419", None, None),  # an id no admission has
    ]
    directory = write_meds(tmp_path, {"0.parquet": events_table(rows, [71, 72, 71, 71, 72, 72, 79])}, None)
    visits, ledger, source = build(directory)
    assert source.has_hadm_id
    assert [(r["hadm_id"], r["diagnoses"]) for r in visits.to_pylist()] == [
        (71, ["ICD10CM:I10"]),
        (72, ["ICD10CM:N179"]),
    ]
    assert ledger.quarantined_table(EVENTS)["reason"].to_pylist() == [q.UNKNOWN_ADMISSION]


def test_code_prefixes_from_yaml(dataset, tmp_path) -> None:
    config = tmp_path / "codes.yaml"
    config.write_text("note_prefixes: [NOTE//NONE]\nmedication_prefixes: ['MEDICATION//START//A']\n")
    visits, _, source = build(dataset, str(config))
    assert source.codes.note_prefixes == ("NOTE//NONE",)
    first = visits.to_pylist()[0]
    assert first["note_text"] is None and first["medications"] == ["spirin"]
    config.write_text("note_prefix: NOTE//\n")
    with pytest.raises(MedsFormatError, match=r"codes.yaml: unknown key 'note_prefix'"):
        MedsCodes.from_yaml(str(config))
    config.write_text("diagnosis_prefixes: {'DX//': ICD11}\n")
    with pytest.raises(MedsFormatError, match="unknown code system"):
        MedsCodes.from_yaml(str(config))


def test_files_not_in_meds_schema_are_rejected(tmp_path) -> None:
    bad = pa.table({"subject_id": pa.array(["x"]), "code": ["A"]})
    directory = write_meds(tmp_path, {"0.parquet": bad}, None)
    assert detect_source(directory) == "meds"
    with pytest.raises(MedsFormatError, match=r"0.parquet: not a MEDS data file"):
        build(directory)
    write_meds(tmp_path, {"0.parquet": events_table(SUBJECT_3)}, {3: "validation"})
    with pytest.raises(MedsFormatError, match="'validation' is not one of train, tuning, held_out"):
        build(directory)


@pytest.mark.usefixtures("ray_local")
def test_prepare_meds_keeps_subject_splits(dataset, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare(dataset, out, PrepareOptions(source="meds", num_shards_per_split=1))
    assert manifest.source == "meds" and manifest.options["subject_splits"]
    assert manifest.tables[EVENTS]["rows_read"] == len(SUBJECT_1) + len(SUBJECT_2) + len(SUBJECT_3)
    assert manifest.tables[EVENTS]["quarantined"] == {
        q.ADMISSION_WITHOUT_DISCHARGE: 1,
        q.DISCHARGE_WITHOUT_ADMISSION: 1,
        q.INVALID_ICD10CM_CODE: 1,
    }
    subjects = {
        split: set(pq.read_table(out / "visits" / split / "part-00000.parquet")["subject_id"].to_pylist())
        for split in SPLITS
    }
    assert 1 in subjects["train"] and 2 in subjects["test"]  # listed: train and held_out
    assert 3 in subjects[SPLITS[assign_splits([3], 0, (0.8, 0.1, 0.1))[0]]]  # not listed: hashed
    assert pq.read_table(out / "quarantine" / f"{EVENTS}.parquet").num_rows == 3
