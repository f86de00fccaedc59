"""Visit building on hand-built raw tables, without Ray: ordering, quirks, quarantine and drop reasons."""

from __future__ import annotations

import pyarrow as pa
import pytest
from test_prepare_support import (
    COLUMNS,
    admission,
    base_tables,
    diagnosis,
    lab,
    note,
    prescription,
    write_ndc_map,
)

from medmplm.data import quarantine as q
from medmplm.data.ndc_atc import load_ndc_to_atc3
from medmplm.data.quarantine import RowLedger
from medmplm.data.schema import VISIT_SCHEMA
from medmplm.data.visits import VisitOptions, build_visits, parse_timestamp


@pytest.fixture(scope="module")
def ndc_atc3(tmp_path_factory) -> pa.Table:
    directory = tmp_path_factory.mktemp("ndc")
    write_ndc_map(directory)
    return load_ndc_to_atc3(directory)


def raw(tables: dict[str, list[dict]]) -> dict[str, pa.Table]:
    return {
        name: pa.table(
            {c: pa.array([None if r.get(c) is None else str(r[c]) for r in rows], pa.string()) for c in COLUMNS[name]}
        )
        for name, rows in tables.items()
    }


def build(tables, ndc_atc3, options: VisitOptions | None = None, conflicting=()):
    ledger = RowLedger(raw_columns={name: list(COLUMNS[name]) for name in COLUMNS})
    visits, unmapped = build_visits(
        raw(tables), ledger.raw_columns, options or VisitOptions(), ndc_atc3, pa.array(conflicting, pa.int64()), ledger
    )
    by_hadm = {row["hadm_id"]: row for row in visits.to_pylist()}
    return visits, by_hadm, ledger, unmapped


def test_output_schema_and_order(ndc_atc3) -> None:
    visits, by_hadm, _, _ = build(base_tables(), ndc_atc3)
    assert visits.schema.equals(VISIT_SCHEMA, check_metadata=True)
    keys = list(zip(visits["subject_id"].to_pylist(), visits["admittime"].to_pylist(), visits["hadm_id"].to_pylist()))
    assert keys == sorted(keys)
    assert [by_hadm[h]["visit_index"] for h in (1001, 1002, 1003)] == [0, 1, 2]
    assert {by_hadm[h]["num_visits"] for h in (1001, 1002, 1003)} == {3}


def test_lists_are_ordered_and_codes_keep_leading_zeros(ndc_atc3) -> None:
    _, by_hadm, _, _ = build(base_tables(), ndc_atc3)
    first = by_hadm[1001]
    assert first["diagnoses"] == ["ICD9CM:0389", "ICD9CM:4019", "ICD9CM:V3000"]  # SEQ_NUM 1, 2, 3
    assert first["procedures"] == ["ICD9Proc:9604", "ICD9Proc:0040"]
    # Insulin (A10A) was prescribed first; acetaminophen (N02B) twice but listed once.
    assert first["medications"] == ["A10A", "N02B"]
    assert [e["itemid"] for e in first["labs"]] == ["50931", "50912"]
    assert first["labs"][0]["hours_since_admit"] == pytest.approx(1.5)
    assert first["labs"][1] == {
        "itemid": "50912",
        "value": "1.2",
        "valuenum": 1.2,
        "valueuom": "mg/dL",
        "flag": "abnormal",
        "hours_since_admit": pytest.approx(12.0),
    }
    assert by_hadm[2001]["labs"][0]["valuenum"] is None


def test_notes_concatenated_in_chartdate_order(ndc_atc3) -> None:
    _, by_hadm, ledger, _ = build(base_tables(), ndc_atc3)
    assert by_hadm[1001]["num_notes"] == 2
    assert by_hadm[1001]["note_text"] == (
        'Addendum written first "quoted".\n\nDischarge summary one.\nLine two, with a comma.'
    )
    # ISERROR note dropped -> admission 1002 has no note; null HADM_ID note counted, not attached.
    assert by_hadm[1002]["note_text"] is None and by_hadm[1002]["num_notes"] == 0
    assert ledger.counts[("dropped", "NOTEEVENTS", q.NOTE_ISERROR)] == 1
    assert ledger.counts[("dropped", "NOTEEVENTS", q.NO_HADM_ID)] == 1
    assert ledger.counts[("dropped", "NOTEEVENTS", q.NOTE_CATEGORY)] == 1


def test_note_categories_are_configurable(ndc_atc3) -> None:
    options = VisitOptions(note_categories=(" nursing ",))
    _, by_hadm, ledger, _ = build(base_tables(), ndc_atc3, options)
    assert by_hadm[1001]["note_text"] == "Nursing progress note."
    assert ledger.counts[("dropped", "NOTEEVENTS", q.NOTE_CATEGORY)] == 5


def test_admission_without_diagnoses_is_kept(ndc_atc3) -> None:
    _, by_hadm, _, _ = build(base_tables(), ndc_atc3)
    assert by_hadm[3002]["diagnoses"] == []
    assert by_hadm[3002]["medications"] == []


def test_empty_and_zero_ndc_dropped_and_unmapped_counted(ndc_atc3) -> None:
    _, _, ledger, unmapped = build(base_tables(), ndc_atc3)
    assert ledger.counts[("dropped", "PRESCRIPTIONS", q.NDC_MISSING)] == 2
    assert ledger.counts[("dropped", "PRESCRIPTIONS", q.NDC_UNMAPPED)] == 2
    assert sorted(zip(unmapped["ndc"].to_pylist(), unmapped["rows"].to_pylist())) == [
        ("00000000001", 1),
        ("99999999999", 1),
    ]


@pytest.mark.parametrize(
    ("vocab", "expected"),
    [
        ("ndc", ["00002751001", "51079025520", "99999999999", "00000000001"]),
        ("drug", ["Insulin", "Acetaminophen", "Sodium chloride", "Heparin flush", "Unmapped drug", "No rxcui"]),
    ],
)
def test_other_medication_vocabularies(vocab, expected) -> None:
    _, by_hadm, _, _ = build(base_tables(), None, VisitOptions(medication_vocab=vocab))
    assert by_hadm[1001]["medications"] == expected


def test_exact_duplicates_dropped_once_each(ndc_atc3) -> None:
    tables = base_tables()
    tables["DIAGNOSES_ICD"].append(diagnosis(99, 101, 1001, "2", "4019"))  # same as ROW_ID 2 but ROW_ID
    tables["LABEVENTS"].append(dict(tables["LABEVENTS"][0]))
    tables["ADMISSIONS"].append(dict(tables["ADMISSIONS"][0], ROW_ID=77))
    _, by_hadm, ledger, _ = build(tables, ndc_atc3)
    assert by_hadm[1001]["diagnoses"] == ["ICD9CM:0389", "ICD9CM:4019", "ICD9CM:V3000"]
    assert len(by_hadm[1001]["labs"]) == 2
    for table in ("DIAGNOSES_ICD", "LABEVENTS", "ADMISSIONS"):
        assert ledger.counts[("dropped", table, q.DUPLICATE_ROW)] == 1


def test_dischtime_before_admittime_quarantines_admission_and_its_rows(ndc_atc3) -> None:
    tables = base_tables()
    tables["ADMISSIONS"][2] = admission(3, 101, 1003, "2101-06-03 00:00:00", "2101-06-01 00:00:00")
    _, by_hadm, ledger, _ = build(tables, ndc_atc3)
    assert 1003 not in by_hadm
    assert by_hadm[1001]["num_visits"] == 2
    quarantined = ledger.quarantined_table("ADMISSIONS").to_pylist()
    assert [(r["HADM_ID"], r["reason"]) for r in quarantined] == [("1003", q.DISCHTIME_BEFORE_ADMITTIME)]
    # Its diagnosis has no admission to attach to.
    assert ledger.quarantined_table("DIAGNOSES_ICD")["reason"].to_pylist() == [q.UNKNOWN_ADMISSION]


def test_bad_rows_quarantined_with_reasons(ndc_atc3) -> None:
    tables = base_tables()
    tables["ADMISSIONS"].append(admission(10, 104, "12x", "2101-01-01 00:00:00", "2101-01-02 00:00:00"))
    tables["ADMISSIONS"].append(admission(11, 104, 4002, "01/02/2101", "2101-01-02 00:00:00"))
    tables["ADMISSIONS"].append(admission(12, 104, 4003, "2101-01-01 00:00:00", "2101-01-02 00:00:00", expire="2"))
    tables["DIAGNOSES_ICD"] += [
        diagnosis(20, 101, 1001, "4", "401.9"),
        diagnosis(21, 101, 1001, "5", None),
        diagnosis(22, 101, 1001, "x", "4010"),
        diagnosis(23, 101, 9999, "1", "4010"),
        diagnosis(24, 102, 1001, "1", "4010"),  # HADM_ID of another patient
    ]
    tables["LABEVENTS"] += [
        lab(30, 101, 1001, "abc", "2101-01-01 10:00:00"),
        lab(31, 101, 1001, "50912", "yesterday"),
        lab(32, 101, 1001, "50912", "2101-01-01 10:00:00", valuenum="1.2.3"),
    ]
    tables["NOTEEVENTS"] += [
        note(40, 101, 1001, "2101-13-45", "Bad date."),
        note(41, 101, 1001, "2101-01-05", "Odd flag.", iserror="maybe"),
        note(42, 101, 1001, "2101-01-05", None),
    ]
    tables["PRESCRIPTIONS"].append(prescription(50, 101, 1001, "not a date", "51079025520"))
    _, by_hadm, ledger, _ = build(tables, ndc_atc3)

    def reasons(table):
        return sorted(ledger.quarantined_table(table)["reason"].to_pylist())

    assert reasons("ADMISSIONS") == sorted([q.INVALID_HADM_ID, q.INVALID_ADMITTIME, q.INVALID_HOSPITAL_EXPIRE_FLAG])
    assert reasons("DIAGNOSES_ICD") == sorted(
        [q.INVALID_ICD9_CODE, q.MISSING_ICD9_CODE, q.INVALID_SEQ_NUM, q.UNKNOWN_ADMISSION, q.UNKNOWN_ADMISSION]
    )
    assert reasons("LABEVENTS") == sorted([q.INVALID_ITEMID, q.INVALID_CHARTTIME, q.INVALID_VALUENUM])
    assert reasons("NOTEEVENTS") == sorted([q.INVALID_CHARTDATE, q.INVALID_ISERROR, q.MISSING_TEXT])
    assert reasons("PRESCRIPTIONS") == [q.INVALID_STARTDATE]
    # Quarantine rows carry every input column as a string.
    bad_note = ledger.quarantined_table("NOTEEVENTS").to_pylist()[0]
    assert set(bad_note) == set(COLUMNS["NOTEEVENTS"]) | {"reason"}
    assert by_hadm[1001]["diagnoses"] == ["ICD9CM:0389", "ICD9CM:4019", "ICD9CM:V3000"]
    assert sum(v for (kind, _, _), v in ledger.counts.items() if kind == "quarantined") == 15


def test_conflicting_hadm_ids_quarantined(ndc_atc3) -> None:
    tables = base_tables()
    tables["ADMISSIONS"].append(admission(20, 101, 1002, "2101-04-01 00:00:00", "2101-04-02 00:00:00"))
    _, by_hadm, ledger, _ = build(tables, ndc_atc3, conflicting=[2001])
    assert 1002 not in by_hadm and 2001 not in by_hadm
    assert ledger.counts[("quarantined", "ADMISSIONS", q.CONFLICTING_HADM_ID)] == 3


def test_parse_timestamp_formats() -> None:
    values, invalid = parse_timestamp(pa.chunked_array([["2101-10-20 19:08:00", "2101-10-20", None, "20/10/2101"]]))
    assert values.to_pylist()[0].isoformat() == "2101-10-20T19:08:00"
    assert values.to_pylist()[1].isoformat() == "2101-10-20T00:00:00"
    assert invalid.to_pylist() == [False, False, False, True]


def test_rows_differing_only_in_unused_columns_are_not_duplicates(ndc_atc3) -> None:
    tables = base_tables()
    first = tables["PRESCRIPTIONS"][0]
    tables["PRESCRIPTIONS"].append(dict(first, ROW_ID=60, DOSE_VAL_RX="2"))  # another dose: not a duplicate
    tables["PRESCRIPTIONS"].append(dict(first, ROW_ID=61))  # identical but ROW_ID: duplicate
    tables["PRESCRIPTIONS"].append(dict(first, ROW_ID=62))  # and another one
    _, by_hadm, ledger, _ = build(tables, ndc_atc3)
    assert ledger.counts[("dropped", "PRESCRIPTIONS", q.DUPLICATE_ROW)] == 2
    assert by_hadm[1001]["medications"] == ["A10A", "N02B"]


def test_header_only_tables_give_empty_lists(ndc_atc3) -> None:
    tables = base_tables()
    tables["PROCEDURES_ICD"] = []
    tables["LABEVENTS"] = []
    visits, _, _, _ = build(tables, ndc_atc3)
    assert visits.num_rows == 6
    assert visits["procedures"].to_pylist() == [[]] * 6
    assert visits["labs"].to_pylist() == [[]] * 6


def test_gender_and_age_from_patients(ndc_atc3) -> None:
    _, by_hadm, ledger, _ = build(base_tables(), ndc_atc3)
    assert by_hadm[1001]["gender"] == "M"
    assert by_hadm[1001]["age"] == pytest.approx(50.0, abs=0.01)
    assert by_hadm[2001]["age"] == 90.0  # DOB shifted ~300 years back: older than 89
    assert by_hadm[3001]["age"] == pytest.approx(0.0, abs=0.01)  # newborn
    tables = base_tables()
    tables["PATIENTS"] = [dict(tables["PATIENTS"][0], DOB="not a date"), *tables["PATIENTS"][1:]]
    tables["PATIENTS"].append(dict(tables["PATIENTS"][1], ROW_ID=9, GENDER="M"))  # 102 twice, differing
    _, by_hadm, ledger, _ = build(tables, ndc_atc3)
    assert by_hadm[1001]["gender"] is None and by_hadm[1001]["age"] is None
    assert by_hadm[2001]["gender"] is None
    assert by_hadm[3001]["gender"] == "F"
    reasons = sorted(ledger.quarantined_table("PATIENTS")["reason"].to_pylist())
    assert reasons == [q.CONFLICTING_SUBJECT_ID, q.CONFLICTING_SUBJECT_ID, q.INVALID_DOB]
