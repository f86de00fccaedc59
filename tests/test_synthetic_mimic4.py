"""``python -m medmplm.synthetic --layout mimic4``: MIMIC-IV's hosp/ + note/ layout with both ICD eras, and prepare
reading it."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from medmplm.data.pipeline import PrepareOptions, prepare
from medmplm.data.sources import detect_source
from medmplm.ontology import split_system_code
from medmplm.synthetic.__main__ import main as synthetic_main

EXPECTED_FILES = {
    "hosp/patients.csv.gz",
    "hosp/admissions.csv.gz",
    "hosp/diagnoses_icd.csv.gz",
    "hosp/procedures_icd.csv.gz",
    "hosp/prescriptions.csv.gz",
    "hosp/labevents.csv.gz",
    "hosp/d_labitems.csv.gz",
    "note/discharge.csv.gz",
    "note/radiology.csv.gz",
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "mimic-iv"
    assert synthetic_main(["--layout", "mimic4", "--out", str(out), "--patients", "80", "--seed", "2"]) == 0
    return out


def read(release, name):
    return pacsv.read_csv(release / name, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))


def test_layout_files_and_both_coding_eras(release) -> None:
    files = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
    assert EXPECTED_FILES <= files
    assert detect_source(str(release)) == "mimic4"
    diagnoses = read(release, "hosp/diagnoses_icd.csv.gz")
    assert diagnoses.column_names == ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
    versions = diagnoses["icd_version"].to_pylist()
    share = versions.count(10) / len(versions)
    assert 0.3 < share < 0.75, share  # admissions from 2008-2022, ICD-10 from October 2015
    counts = json.loads((release / "synthetic_manifest.json").read_text())["row_counts"]
    assert counts["icd10_diagnosis_share"] == pytest.approx(share, abs=1e-3)
    procedures = read(release, "hosp/procedures_icd.csv.gz")
    pcs = procedures.filter(pc.equal(procedures["icd_version"], 10))["icd_code"].to_pylist()
    assert pcs and all(len(code) == 7 for code in pcs)
    patients = read(release, "hosp/patients.csv.gz")
    assert pc.min(patients["anchor_age"]).as_py() >= 18  # MIMIC-IV holds adults only
    admission_types = set(read(release, "hosp/admissions.csv.gz")["admission_type"].to_pylist())
    assert admission_types <= {
        "EW EMER.",
        "EU OBSERVATION",
        "DIRECT EMER.",
        "OBSERVATION ADMIT",
        "URGENT",
        "ELECTIVE",
        "SURGICAL SAME DAY ADMISSION",
    }
    assert set(read(release, "note/discharge.csv.gz")["note_type"].to_pylist()) == {"DS"}


@pytest.mark.usefixtures("ray_local")
def test_prepare_reads_the_generated_layout(release, tmp_path) -> None:
    manifest = prepare(release, tmp_path / "out", PrepareOptions(num_shards_per_split=1, vocab_split="all"))
    assert manifest.source == "mimic4" and manifest.synthetic
    assert set(manifest.codes["systems"]["diagnosis"]) == {"ICD9CM", "ICD10CM"}
    assert set(manifest.codes["systems"]["procedure"]) == {"ICD9Proc", "ICD10PCS"}
    assert manifest.quarantined == {}
    assert sum(s["admissions_with_notes"] for s in manifest.splits.values()) > 0
    for code in (tmp_path / "out" / "vocab" / "diagnosis.tsv").read_text().splitlines()[1:]:
        split_system_code(code.split("\t")[0])
