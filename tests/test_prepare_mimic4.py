"""MIMIC-IV (hosp/ + note/) on hand-written tables: code systems, shape checks, notes, demographics, labels, GEMs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from test_prepare_mimic4_support import mimic4_tables, write_mimic4

from medmplm.data import quarantine as q
from medmplm.data.manifest import read_manifest
from medmplm.data.pipeline import PrepareOptions, prepare
from medmplm.data.quarantine import RowLedger
from medmplm.data.sources import detect_source, mimic4
from medmplm.data.tables import MissingTableError, PrepareInputError, read_table
from medmplm.data.visits import VisitOptions
from medmplm.ontology import read_ontology


def build(directory, options: VisitOptions | None = None, icd10_to_icd9: bool = False):
    """Visits of the whole release as one bucket (no Ray), by hadm_id, and the ledger."""
    options = options or VisitOptions(note_categories=("discharge",), medication_vocab="drug")
    source = mimic4.locate(str(directory), options, None, icd10_to_icd9, None)
    tables = {table: read_table(table_file) for table, table_file in source.table_files.items()}
    ledger = RowLedger(raw_columns=source.raw_columns)
    visits, _ = source.build_visits(tables, ledger)
    return {row["hadm_id"]: row for row in visits.to_pylist()}, ledger


def reasons(ledger: RowLedger, table: str) -> list[str]:
    return sorted(ledger.quarantined_table(table)["reason"].to_pylist())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_mimic4(tmp_path_factory.mktemp("mimic4") / "mimic-iv-3.1")


def test_icd9_and_icd10_of_one_patient_keep_their_systems(release) -> None:
    visits, ledger = build(release)
    assert visits[20001]["diagnoses"] == ["ICD9CM:4019", "ICD9CM:E8809"]
    # SEQ_NUM order; the ICD-10 E8809 is not the ICD-9 one.
    assert visits[20002]["diagnoses"] == ["ICD10CM:I2510", "ICD10CM:E119", "ICD10CM:E8809", "ICD10CM:U071"]
    assert visits[20001]["procedures"] == ["ICD9Proc:3893"]
    assert visits[20002]["procedures"] == ["ICD10PCS:0016070"]
    assert visits[20003]["diagnoses"] == ["ICD10CM:N179"]


def test_missing_or_unknown_icd_version_and_bad_shapes_are_quarantined(release) -> None:
    _, ledger = build(release)
    assert reasons(ledger, "DIAGNOSES_ICD") == [q.INVALID_ICD10CM_CODE, q.INVALID_ICD_VERSION, q.MISSING_ICD_VERSION]
    quarantined = ledger.quarantined_table("PROCEDURES_ICD").to_pylist()
    assert [(r["ICD_CODE"], r["reason"]) for r in quarantined] == [("0016070ABC", q.INVALID_ICD10PCS_CODE)]
    assert set(ledger.quarantined_table("DIAGNOSES_ICD").column_names) >= {"ICD_CODE", "ICD_VERSION", "reason"}


def test_notes_of_selected_files_and_notes_without_an_admission(release) -> None:
    visits, ledger = build(release)
    assert visits[20002]["note_text"] == "Discharge summary of the ICD-10 stay." and visits[20002]["num_notes"] == 1
    assert visits[20001]["note_text"] is None and visits[20001]["num_notes"] == 0
    assert reasons(ledger, "DISCHARGE") == [q.UNKNOWN_ADMISSION]
    assert ledger.counts[("dropped", "DISCHARGE", q.NO_HADM_ID)] == 1
    both = VisitOptions(note_categories=("discharge", "radiology"), medication_vocab="drug")
    visits, _ = build(release, both)
    # CHARTTIME order across the files: the radiograph (day 2) before the discharge summary (day 4).
    assert visits[20002]["note_text"] == "Chest radiograph report.\n\nDischarge summary of the ICD-10 stay."
    assert visits[20002]["num_notes"] == 2


def test_without_note_directory_visits_have_no_notes(tmp_path) -> None:
    visits, _ = build(write_mimic4(tmp_path / "hosp-only", notes=False))
    assert len(visits) == 4
    assert all(v["note_text"] is None and v["num_notes"] == 0 for v in visits.values())


def test_demographics_from_anchor_age_and_year(release) -> None:
    visits, _ = build(release)
    assert (visits[20001]["gender"], visits[20001]["age"]) == ("F", 58.0)  # 60 in 2150, admitted in 2148
    assert visits[20002]["age"] == 62.0
    assert (visits[20004]["gender"], visits[20004]["age"]) == ("M", 90.0)  # anchor age 91: over 89


def test_readmission_labels_and_discharge_location_filter(release) -> None:
    visits, _ = build(release)
    assert visits[20002]["readmission_30d"] == 1  # 20003 starts 16 days after discharge
    assert visits[20002]["readmission_30d_nonelective"] == 1  # 20003 is EW EMER.
    assert visits[20001]["readmission_30d"] == 0
    assert visits[20004]["readmission_30d"] is None  # died
    filtered = VisitOptions(
        note_categories=("discharge",), medication_vocab="drug", readmission_exclude_discharge=("against advice",)
    )
    visits, _ = build(release, filtered)
    assert visits[20002]["readmission_30d"] is None and visits[20002]["readmission_30d_nonelective"] is None
    assert visits[20001]["readmission_30d"] == 0


def test_labs_need_a_known_item(release) -> None:
    visits, ledger = build(release)
    assert [lab["itemid"] for lab in visits[20002]["labs"]] == ["50912"]
    assert reasons(ledger, "LABEVENTS") == [q.UNKNOWN_ITEMID]
    assert ledger.counts[("dropped", "LABEVENTS", q.NO_HADM_ID)] == 1


def test_icd10_to_icd9_with_the_gem(release) -> None:
    visits, ledger = build(release, icd10_to_icd9=True)
    # I2510 -> 41401 (first alternative), E119 -> 25000, E8809 -> 2738; U071 is not in the 2018 GEM: kept.
    assert visits[20002]["diagnoses"] == ["ICD9CM:41401", "ICD9CM:25000", "ICD9CM:2738", "ICD10CM:U071"]
    assert visits[20001]["diagnoses"] == ["ICD9CM:4019", "ICD9CM:E8809"]
    assert ledger.counts[("icd10_to_icd9", "DIAGNOSES_ICD", "mapped_rows")] == 5
    assert ledger.counts[("icd10_to_icd9", "DIAGNOSES_ICD", "unmapped_rows")] == 1


def test_source_detection_and_layout_errors(release, tmp_path) -> None:
    assert detect_source(str(release)) == "mimic4"
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareInputError, match="not a layout prepare knows"):
        detect_source(str(tmp_path / "empty"))
    tables = mimic4_tables()
    write_mimic4(tmp_path / "no-discharge", tables)
    (tmp_path / "no-discharge" / "note" / "discharge.csv.gz").unlink()
    with pytest.raises(MissingTableError, match="discharge"):
        build(tmp_path / "no-discharge")
    with pytest.raises(PrepareInputError, match="not MIMIC-IV-Note files"):
        build(release, VisitOptions(note_categories=("Discharge summary",), medication_vocab="drug"))


@pytest.mark.usefixtures("ray_local")
def test_prepare_detects_mimic4_and_writes_both_code_trees(release, tmp_path) -> None:
    out = tmp_path / "out"
    manifest = prepare(release, out, PrepareOptions(medication_vocab="drug", num_shards_per_split=1, vocab_split="all"))
    assert manifest.source == "mimic4" and manifest.options["note_files"] == ["discharge"]
    assert manifest.codes["systems"]["diagnosis"].keys() <= {"ICD9CM", "ICD10CM"}
    assert manifest.tables["DIAGNOSES_ICD"]["quarantined"] == {
        q.INVALID_ICD10CM_CODE: 1,
        q.INVALID_ICD_VERSION: 1,
        q.MISSING_ICD_VERSION: 1,
    }
    assert manifest.tables["DISCHARGE"]["dropped"] == {q.NO_HADM_ID: 1}
    assert "D_LABITEMS" in manifest.inputs and "LABEVENTS" in manifest.inputs
    assert sum(s["admissions"] for s in manifest.splits.values()) == 4
    quarantined = pq.read_table(out / "quarantine" / "PROCEDURES_ICD.parquet").to_pylist()
    assert [r["ICD_CODE"] for r in quarantined] == ["0016070ABC"]
    diagnosis_tree = read_ontology(out / "ontology" / "diagnosis.tsv")
    procedure_tree = read_ontology(out / "ontology" / "procedure.tsv")
    assert diagnosis_tree["ICD10CM:I2510"] == ["ICD10CM", "I00-I99", "I20-I25", "I25", "I251"]
    assert diagnosis_tree["ICD10CM:E8809"] == ["ICD10CM", "E00-E89", "E70-E88", "E88", "E880"]
    assert diagnosis_tree["ICD9CM:E8809"] == ["ICD9CM", "E000-E999", "E880"]
    assert procedure_tree == {
        "ICD9Proc:3893": ["ICD9Proc", "35-39", "38", "389"],
        "ICD10PCS:0016070": ["ICD10PCS", "0", "00", "001", "0016"],
    }
    assert read_manifest(out).schema_version == 2
