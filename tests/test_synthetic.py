"""Tests of the synthetic MIMIC-III generator: layout, types, determinism, realism, quirks."""

from __future__ import annotations

import ast
import csv
import gzip
import io
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pytest

from medmplm.data.ndc_atc import load_ndc_to_atc3
from medmplm.ontology import ATC3_PATTERN, ICD9_DIAGNOSIS_PATTERN, ICD9_PROCEDURE_PATTERN
from medmplm.synthetic import generate_mimic3
from medmplm.synthetic.__main__ import main
from medmplm.synthetic.catalogue.conditions import (
    ADMISSION_REASONS,
    CHRONIC_CONDITIONS,
    COMPLICATIONS,
    HISTORIES,
    INCIDENTAL_CODES,
    MINOR_CONDITIONS,
)
from medmplm.synthetic.catalogue.drugs import DRUGS, DRUGS_BY_KEY
from medmplm.synthetic.catalogue.icd9cm import diagnosis_category, diagnosis_titles, procedure_titles
from medmplm.synthetic.catalogue.labs import LAB_ITEMS, LAB_PANELS
from medmplm.synthetic.formulary import build_formulary
from medmplm.synthetic.generate import NDC2ATC_FILE, NDC2RXNORM_FILE
from medmplm.synthetic.model import code_tails, modelled_codes
from medmplm.synthetic.realism import REAL_DEMO, STATISTICS, code_statistics, relative_gap

# MIMIC-III v1.4 column lists, in order (MIT-LCP mimic-code, postgres_create_tables.sql).
MIMIC3_COLUMNS = {
    "PATIENTS": ["ROW_ID", "SUBJECT_ID", "GENDER", "DOB", "DOD", "DOD_HOSP", "DOD_SSN", "EXPIRE_FLAG"],
    "ADMISSIONS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "DISCHTIME",
        "DEATHTIME",
        "ADMISSION_TYPE",
        "ADMISSION_LOCATION",
        "DISCHARGE_LOCATION",
        "INSURANCE",
        "LANGUAGE",
        "RELIGION",
        "MARITAL_STATUS",
        "ETHNICITY",
        "EDREGTIME",
        "EDOUTTIME",
        "DIAGNOSIS",
        "HOSPITAL_EXPIRE_FLAG",
        "HAS_CHARTEVENTS_DATA",
    ],
    "DIAGNOSES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "PROCEDURES_ICD": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"],
    "PRESCRIPTIONS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "ICUSTAY_ID",
        "STARTDATE",
        "ENDDATE",
        "DRUG_TYPE",
        "DRUG",
        "DRUG_NAME_POE",
        "DRUG_NAME_GENERIC",
        "FORMULARY_DRUG_CD",
        "GSN",
        "NDC",
        "PROD_STRENGTH",
        "DOSE_VAL_RX",
        "DOSE_UNIT_RX",
        "FORM_VAL_DISP",
        "FORM_UNIT_DISP",
        "ROUTE",
    ],
    "NOTEEVENTS": [
        "ROW_ID",
        "SUBJECT_ID",
        "HADM_ID",
        "CHARTDATE",
        "CHARTTIME",
        "STORETIME",
        "CATEGORY",
        "DESCRIPTION",
        "CGID",
        "ISERROR",
        "TEXT",
    ],
    "LABEVENTS": ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID", "CHARTTIME", "VALUE", "VALUENUM", "VALUEUOM", "FLAG"],
    "D_ICD_DIAGNOSES": ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "D_ICD_PROCEDURES": ["ROW_ID", "ICD9_CODE", "SHORT_TITLE", "LONG_TITLE"],
    "D_LABITEMS": ["ROW_ID", "ITEMID", "LABEL", "FLUID", "CATEGORY", "LOINC_CODE"],
}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DISCHARGE_SECTIONS = (
    "Admission Date:",
    "Discharge Date:",
    "Service:",
    "Chief Complaint:",
    "History of Present Illness:",
    "Past Medical History:",
    "Social History:",
    "Family History:",
    "Physical Exam:",
    "Pertinent Results:",
    "Brief Hospital Course:",
    "Medications on Admission:",
    "Discharge Medications:",
    "Discharge Disposition:",
    "Discharge Diagnosis:",
    "Followup Instructions:",
)
STRING_COLUMNS = ("ICD9_CODE", "NDC", "GSN", "DOSE_VAL_RX", "FORM_VAL_DISP", "VALUE", "LOINC_CODE", "ISERROR")


def read_table(directory: Path, table: str, gzip_files: bool = False, column_case: str = "upper") -> pa.Table:
    """Read a generated table with pyarrow, typed as MIMIC declares it."""
    path = directory / (f"{table}.csv.gz" if gzip_files else f"{table}.csv")
    columns = MIMIC3_COLUMNS[table]
    names = columns if column_case == "upper" else [column.lower() for column in columns]
    types = {}
    for column, name in zip(columns, names, strict=True):
        if column in STRING_COLUMNS:
            types[name] = pa.string()
    return pv.read_csv(
        path,
        parse_options=pv.ParseOptions(newlines_in_values=True),
        convert_options=pv.ConvertOptions(
            column_types=types,
            timestamp_parsers=[TIMESTAMP_FORMAT],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("mimic") / "release"
    counts = generate_mimic3(out, patients=200, seed=7)
    return out, counts


@pytest.fixture(scope="module")
def tables(release: tuple[Path, dict[str, int]]) -> dict[str, pa.Table]:
    out, _ = release
    return {table: read_table(out, table) for table in MIMIC3_COLUMNS}


def test_files_and_exact_columns_upper(release, tables):
    out, counts = release
    for table, columns in MIMIC3_COLUMNS.items():
        header = (out / f"{table}.csv").read_text(encoding="utf-8").split("\n", 1)[0]
        assert header == ",".join(f'"{column}"' for column in columns)
        assert tables[table].column_names == columns
        assert tables[table].num_rows == counts[table] > 0
    assert (out / "ndc2rxnorm_mapping.txt").is_file()
    assert (out / "ndc2atc_level4.csv").is_file()
    assert not list(out.parent.glob(".*partial*"))


def test_types_parse_as_mimic_declares(tables):
    integer_columns = {
        "PATIENTS": ("ROW_ID", "SUBJECT_ID", "EXPIRE_FLAG"),
        "ADMISSIONS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "HOSPITAL_EXPIRE_FLAG", "HAS_CHARTEVENTS_DATA"),
        "DIAGNOSES_ICD": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM"),
        "PRESCRIPTIONS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID"),
        "LABEVENTS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ITEMID"),
        "NOTEEVENTS": ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CGID"),
    }
    for table, columns in integer_columns.items():
        for column in columns:
            assert pa.types.is_integer(tables[table].schema.field(column).type), (table, column)
    timestamp_columns = {
        "PATIENTS": ("DOB", "DOD", "DOD_HOSP", "DOD_SSN"),
        "ADMISSIONS": ("ADMITTIME", "DISCHTIME", "DEATHTIME", "EDREGTIME", "EDOUTTIME"),
        "PRESCRIPTIONS": ("STARTDATE", "ENDDATE"),
        "LABEVENTS": ("CHARTTIME",),
        "NOTEEVENTS": ("CHARTTIME", "STORETIME"),
    }
    for table, columns in timestamp_columns.items():
        for column in columns:
            assert pa.types.is_timestamp(tables[table].schema.field(column).type), (table, column)
    assert pa.types.is_floating(tables["LABEVENTS"].schema.field("VALUENUM").type)
    # NOTEEVENTS.CHARTDATE is a bare date in the release.
    assert pa.types.is_date(tables["NOTEEVENTS"].schema.field("CHARTDATE").type)


def test_timestamps_written_in_mimic_format(release):
    out, _ = release
    with open(out / "ADMISSIONS.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ("ADMITTIME", "DISCHTIME"):
            assert TIMESTAMP_RE.match(row[column]), row[column]
        assert row["DEATHTIME"] == "" or TIMESTAMP_RE.match(row["DEATHTIME"])


def test_icd9_codes_are_strings_with_leading_zeros_and_in_dictionaries(tables):
    diagnoses = [code for code in tables["DIAGNOSES_ICD"].column("ICD9_CODE").to_pylist() if code is not None]
    procedures = tables["PROCEDURES_ICD"].column("ICD9_CODE").to_pylist()
    assert any(code.startswith("0") for code in diagnoses)
    assert any(code.startswith("V") for code in diagnoses)
    assert all(re.match(ICD9_DIAGNOSIS_PATTERN, code) for code in diagnoses)
    assert all(re.match(ICD9_PROCEDURE_PATTERN, code) for code in procedures)
    assert set(diagnoses) <= set(tables["D_ICD_DIAGNOSES"].column("ICD9_CODE").to_pylist())
    assert set(procedures) <= set(tables["D_ICD_PROCEDURES"].column("ICD9_CODE").to_pylist())
    assert "4019" in diagnoses
    assert {"40390", "25000", "V5861"} & set(diagnoses)


def test_diagnoses_in_seq_num_order_and_principal_first(tables):
    table = tables["DIAGNOSES_ICD"].filter(pc.is_valid(tables["DIAGNOSES_ICD"].column("SEQ_NUM")))
    by_admission: dict[int, list[int]] = {}
    for hadm_id, seq in zip(table.column("HADM_ID").to_pylist(), table.column("SEQ_NUM").to_pylist(), strict=True):
        by_admission.setdefault(hadm_id, []).append(seq)
    for seqs in by_admission.values():
        assert seqs == list(range(1, len(seqs) + 1))
    per_admission = np.array([len(seqs) for seqs in by_admission.values()])
    assert 7 <= per_admission.mean() <= 15


def test_same_seed_identical_bytes_and_chunking_does_not_matter(tmp_path):
    first = generate_mimic3(tmp_path / "a", patients=40, seed=3)
    generate_mimic3(tmp_path / "b", patients=40, seed=3, chunk_size=7)
    generate_mimic3(tmp_path / "c", patients=40, seed=4)
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "NOTEEVENTS.csv").read_bytes() != (tmp_path / "c" / "NOTEEVENTS.csv").read_bytes()
    assert (tmp_path / "a" / "ADMISSIONS.csv").read_bytes() != (tmp_path / "c" / "ADMISSIONS.csv").read_bytes()
    assert first["PATIENTS"] == 40


def test_gzip_variant_holds_the_same_bytes(tmp_path):
    generate_mimic3(tmp_path / "plain", patients=30, seed=5)
    generate_mimic3(tmp_path / "gz", patients=30, seed=5, gzip=True)
    generate_mimic3(tmp_path / "gz2", patients=30, seed=5, gzip=True)
    for table in MIMIC3_COLUMNS:
        compressed = (tmp_path / "gz" / f"{table}.csv.gz").read_bytes()
        assert gzip.decompress(compressed) == (tmp_path / "plain" / f"{table}.csv").read_bytes()
        assert compressed == (tmp_path / "gz2" / f"{table}.csv.gz").read_bytes()
    notes = read_table(tmp_path / "gz", "NOTEEVENTS", gzip_files=True)
    assert notes.num_rows == read_table(tmp_path / "plain", "NOTEEVENTS").num_rows


def test_lower_case_variant_is_demo_style(tmp_path):
    counts = generate_mimic3(tmp_path / "demo", patients=30, seed=5, column_case="lower")
    for table, columns in MIMIC3_COLUMNS.items():
        header = (tmp_path / "demo" / f"{table}.csv").read_text(encoding="utf-8").split("\n", 1)[0]
        assert header == ",".join(column.lower() for column in columns)
    diagnoses = read_table(tmp_path / "demo", "DIAGNOSES_ICD", column_case="lower")
    assert diagnoses.num_rows == counts["DIAGNOSES_ICD"]
    notes = read_table(tmp_path / "demo", "NOTEEVENTS", column_case="lower")
    assert notes.num_rows == counts["NOTEEVENTS"]
    # Same values as the upper-case release, only header and quoting differ.
    generate_mimic3(tmp_path / "full", patients=30, seed=5)
    full = read_table(tmp_path / "full", "DIAGNOSES_ICD")
    assert diagnoses.column("icd9_code").to_pylist() == full.column("ICD9_CODE").to_pylist()


def test_dates_shifted_and_consistent_per_patient(tables):
    admissions = tables["ADMISSIONS"].to_pandas()
    patients = tables["PATIENTS"].to_pandas().set_index("SUBJECT_ID")
    assert admissions.ADMITTIME.dt.year.between(2100, 2200).all()
    assert (admissions.DISCHTIME > admissions.ADMITTIME).mean() > 0.97
    merged = admissions.join(patients[["DOB", "DOD"]], on="SUBJECT_ID")
    assert (merged.ADMITTIME >= merged.DOB).all()
    by_patient = admissions.groupby("SUBJECT_ID").ADMITTIME
    assert ((by_patient.max() - by_patient.min()).dt.days / 365.25).max() < 60
    died = admissions[admissions.HOSPITAL_EXPIRE_FLAG == 1]
    assert (died.DEATHTIME == died.DISCHTIME).all()
    assert admissions[admissions.HOSPITAL_EXPIRE_FLAG == 0].DEATHTIME.isna().all()
    last_admit = admissions.groupby("SUBJECT_ID").ADMITTIME.max()
    dead = patients[patients.DOD.notna()]
    assert (dead.DOD >= last_admit.loc[dead.index].dt.normalize()).all()
    assert set(patients.EXPIRE_FLAG) <= {0, 1}
    assert ((patients.EXPIRE_FLAG == 1) == patients.DOD.notna()).all()


def test_admission_types_and_multi_admission_distribution(tables):
    admissions = tables["ADMISSIONS"].to_pandas()
    per_patient = admissions.groupby("SUBJECT_ID").size()
    assert per_patient.min() >= 1
    assert 0.7 <= (per_patient == 1).mean() <= 0.92
    assert (per_patient >= 3).sum() >= 3
    assert 1.1 <= per_patient.mean() <= 1.5
    assert set(admissions.ADMISSION_TYPE) <= {"EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"}
    assert {"EMERGENCY", "ELECTIVE", "NEWBORN"} <= set(admissions.ADMISSION_TYPE)
    assert admissions.HADM_ID.is_unique


def test_medications_follow_diagnoses(tables):
    diagnoses = tables["DIAGNOSES_ICD"].to_pandas()
    prescriptions = tables["PRESCRIPTIONS"].to_pandas()
    all_admissions = set(tables["ADMISSIONS"].column("HADM_ID").to_pylist())
    # A condition's code family (category 428, 250) means the condition, whichever leaf was coded.
    checks = (
        ("428", {"Furosemide"}),
        ("250", {"MetFORMIN (Glucophage)", "Glipizide", "Glargine"}),
        ("42731", {"Warfarin", "Diltiazem", "Amiodarone HCl", "Digoxin"}),
    )
    for codes, drugs in checks:
        with_code = set(diagnoses[diagnoses.ICD9_CODE.str.startswith(codes, na=False)].HADM_ID)
        given = set(prescriptions[prescriptions.DRUG.isin(drugs)].HADM_ID)
        without_code = all_admissions - with_code
        assert len(with_code) >= 20, codes
        rate_with = len(with_code & given) / len(with_code)
        rate_without = len(without_code & given) / len(without_code)
        assert rate_with > 0.35 and rate_with > 2.5 * rate_without, (codes, rate_with, rate_without)


def test_notes_multiline_quoted_and_read_back(release, tables):
    out, counts = release
    notes = tables["NOTEEVENTS"]
    assert notes.num_rows == counts["NOTEEVENTS"]
    with open(out / "NOTEEVENTS.csv", newline="", encoding="utf-8") as handle:
        assert sum(1 for _ in csv.reader(handle)) - 1 == counts["NOTEEVENTS"]
    texts = notes.column("TEXT").to_pylist()
    assert all("\n" in text for text in texts if len(text) > 500)
    assert any('"' in text for text in texts)
    categories = set(notes.column("CATEGORY").to_pylist())
    assert {"Discharge summary", "Nursing/other", "Radiology", "ECG", "Physician "} <= categories
    assert notes.column("HADM_ID").null_count > 0
    errors = notes.column("ISERROR")
    assert errors.null_count > 0.95 * notes.num_rows


def test_discharge_summaries_look_like_mimic(tables):
    notes = tables["NOTEEVENTS"].to_pandas()
    summaries = notes[(notes.CATEGORY == "Discharge summary") & (notes.DESCRIPTION == "Report")]
    admissions = tables["ADMISSIONS"].to_pandas()
    adult = admissions[admissions.ADMISSION_TYPE != "NEWBORN"]
    assert summaries.HADM_ID.isin(adult.HADM_ID).sum() > 0.85 * len(adult)
    adult_summaries = summaries[summaries.HADM_ID.isin(adult.HADM_ID)]
    lengths = adult_summaries.TEXT.str.len()
    assert 2500 < lengths.median() < 9000
    for text in adult_summaries.TEXT.head(40):
        positions = [text.find(section) for section in DISCHARGE_SECTIONS]
        assert -1 not in positions, [s for s, p in zip(DISCHARGE_SECTIONS, positions, strict=True) if p < 0]
        assert positions == sorted(positions)
        assert re.search(r"\[\*\*\d{4}-\d{1,2}-\d{1,2}\*\*\]", text)
    joined = " ".join(adult_summaries.TEXT)
    for abbreviation in ("HTN", "CHF", "DM2", "CAD"):
        assert f" {abbreviation}" in joined
    for phrase in ("Lives alone", "ppd", "pack-year"):
        assert phrase in joined


def test_mapping_files_in_gamenet_format_with_unmapped_ndcs(release, tables):
    out, _ = release
    ndc2rxnorm = ast.literal_eval((out / "ndc2rxnorm_mapping.txt").read_text(encoding="utf-8"))
    assert isinstance(ndc2rxnorm, dict) and ndc2rxnorm
    assert all(isinstance(key, str) and len(key) == 11 and key.isdigit() for key in ndc2rxnorm)
    assert "" in ndc2rxnorm.values()
    header = (out / "ndc2atc_level4.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert header == "RXCUI,YEAR,MONTH,NDC,ATC4"
    atc = pv.read_csv(
        out / "ndc2atc_level4.csv",
        convert_options=pv.ConvertOptions(column_types={"RXCUI": pa.string(), "NDC": pa.string()}),
    )
    assert all(len(code) == 5 and re.match(ATC3_PATTERN, code[:4]) for code in atc.column("ATC4").to_pylist())
    rxcui_to_atc = dict(zip(atc.column("RXCUI").to_pylist(), atc.column("ATC4").to_pylist(), strict=True))

    ndcs = tables["PRESCRIPTIONS"].column("NDC").to_pylist()
    assert None in ndcs and "0" in ndcs
    real = [ndc for ndc in ndcs if ndc not in (None, "0")]
    assert all(len(ndc) == 11 and ndc.isdigit() for ndc in real)
    mapped = [ndc for ndc in real if ndc2rxnorm.get(ndc) and ndc2rxnorm[ndc] in rxcui_to_atc]
    coverage = len(mapped) / len(ndcs)
    assert 0.6 < coverage < 0.99
    assert any(ndc not in ndc2rxnorm for ndc in real)


def test_every_emitted_code_exists_in_icd9cm(tables):
    diagnoses = {code for code in tables["DIAGNOSES_ICD"].column("ICD9_CODE").to_pylist() if code}
    procedures = set(tables["PROCEDURES_ICD"].column("ICD9_CODE").to_pylist())
    assert diagnoses <= set(diagnosis_titles()), diagnoses - set(diagnosis_titles())
    assert procedures <= set(procedure_titles()), procedures - set(procedure_titles())
    assert tables["D_ICD_DIAGNOSES"].column("ICD9_CODE").to_pylist() == list(diagnosis_titles())
    assert tables["D_ICD_PROCEDURES"].column("ICD9_CODE").to_pylist() == list(procedure_titles())
    # The tail reaches well beyond the curated catalogue: 200 patients use hundreds of codes.
    assert len(diagnoses) > 800 and len(procedures) > 150


def test_code_vocabulary_matches_the_real_demo(tmp_path):
    # The acceptance: 150 patients, first 129 admissions by HADM_ID, every statistic within 25%
    # of the MIMIC-III demo's. Seed 0; seeds 0-4 all pass (benchmarks/synthetic_realism.py).
    generate_mimic3(tmp_path / "demo", patients=150, seed=0)
    measured = code_statistics(tmp_path / "demo", admissions=129)
    gaps = {name: relative_gap(measured[name], REAL_DEMO[name]) for name, _ in STATISTICS}
    assert all(abs(gap) <= 0.25 for gap in gaps.values()), gaps
    # The tail's shape: most distinct diagnosis and procedure codes occur once, most NDCs more often.
    assert measured["diagnosis_codes_seen_once"] > 0.45 and measured["procedure_codes_seen_once"] > 0.45
    assert 0.15 < measured["ndcs_seen_once"] < 0.45


def test_tail_keeps_modelled_categories_and_sexes_apart():
    tails = code_tails()
    modelled, _ = modelled_codes()
    modelled_categories = {diagnosis_category(code) for code in modelled}
    male, female = tails.diagnoses["M", False].codes, tails.diagnoses["F", False].codes
    assert len(male) > 5_000 and len(female) > 5_000
    assert not {diagnosis_category(code) for code in male | female} & modelled_categories
    assert "6010" in male and "6010" not in female  # acute prostatitis
    assert "V220" in female and "V220" not in male  # supervision of normal first pregnancy
    assert not any(code.startswith(("76", "77")) for code in male)  # perinatal codes only for newborns
    rng = random.Random(0)
    variants = {tails.diagnosis_families.vary("5853", 1.0, rng) for _ in range(2_000)}
    # CKD stage III varies within category 585 but never becomes ESRD (5856), another modelled condition.
    assert len(variants) > 3 and all(code.startswith("585") for code in variants) and "5856" not in variants


def test_every_ndc_that_should_map_does_map(release, tables):
    out, _ = release
    mapped = dict(zip(*load_ndc_to_atc3(out).to_pydict().values(), strict=True))
    formulary = build_formulary()
    products = [product for drug in DRUGS for product in formulary.products[drug.key]]
    assert sum(len(formulary.products[drug.key]) > 10 for drug in DRUGS) >= 20
    for product in products:
        if product.maps:
            assert mapped.get(product.ndc) == product.drug.atc4[:4], product
        else:
            assert product.ndc not in mapped, product
    # GAMENet's map misses a few per cent of PRESCRIPTIONS rows, not tens.
    ndcs = [ndc for ndc in tables["PRESCRIPTIONS"].column("NDC").to_pylist() if ndc not in (None, "0")]
    unmapped = sum(ndc not in mapped for ndc in ndcs) / len(ndcs)
    assert 0.01 < unmapped < 0.08, unmapped
    assert (out / NDC2RXNORM_FILE).is_file() and (out / NDC2ATC_FILE).is_file()


def test_dictionaries_and_labs(tables):
    assert tables["D_LABITEMS"].column("ITEMID").to_pylist() == [item.itemid for item in LAB_ITEMS]
    labs = tables["LABEVENTS"]
    assert set(labs.column("ITEMID").to_pylist()) <= {item.itemid for item in LAB_ITEMS}
    flags = set(labs.column("FLAG").to_pylist())
    assert flags == {None, "abnormal"}
    numeric = labs.filter(pc.is_valid(labs.column("VALUENUM")))
    assert pc.all(pc.equal(pc.cast(numeric.column("VALUE"), pa.float64()), numeric.column("VALUENUM"))).as_py()
    assert labs.column("HADM_ID").null_count > 0
    long_titles = dict(
        zip(
            tables["D_ICD_DIAGNOSES"].column("ICD9_CODE").to_pylist(),
            tables["D_ICD_DIAGNOSES"].column("LONG_TITLE").to_pylist(),
            strict=True,
        )
    )
    assert long_titles["4019"] == "Unspecified essential hypertension"


def test_refuses_to_overwrite_and_cleans_up_after_a_crash(tmp_path, monkeypatch):
    out = tmp_path / "release"
    generate_mimic3(out, patients=5, seed=1)
    with pytest.raises(FileExistsError, match="release"):
        generate_mimic3(out, patients=5, seed=1)
    before = (out / "PATIENTS.csv").read_bytes()
    generate_mimic3(out, patients=6, seed=1, overwrite=True)
    assert (out / "PATIENTS.csv").read_bytes() != before

    import medmplm.synthetic.generate as generate_module

    calls = {"n": 0}
    original = generate_module._render_patient

    def failing_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(generate_module, "_render_patient", failing_render)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_mimic3(crashed, patients=10, seed=1)
    assert not crashed.exists()
    assert not list(tmp_path.glob(".crashed*"))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"patients": 0}, ValueError), ({"column_case": "title"}, ValueError), ({"seed": -1}, ValueError)],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, error):
    with pytest.raises(error):
        generate_mimic3(tmp_path / "x", **{"patients": 5, **kwargs})


def test_cli_writes_release_and_prints_counts(tmp_path, capsys):
    assert (
        main(["--out", str(tmp_path / "cli"), "--patients", "8", "--seed", "2", "--column-case", "lower", "--gzip"])
        == 0
    )
    printed = capsys.readouterr().out
    assert '"PATIENTS": 8' in printed
    assert (tmp_path / "cli" / "ADMISSIONS.csv.gz").is_file()
    header = io.TextIOWrapper(gzip.open(tmp_path / "cli" / "PATIENTS.csv.gz"), encoding="utf-8").readline()
    assert header.startswith("row_id,subject_id")


def test_catalogue_is_consistent():
    diagnosis_codes = set(diagnosis_titles())
    procedure_codes = set(procedure_titles())
    # CMS v32, the size of MIMIC-III v1.4's D_ICD_DIAGNOSES and D_ICD_PROCEDURES.
    assert (len(diagnosis_codes), len(procedure_codes)) == (14_567, 3_882)
    titles = [*diagnosis_titles().values(), *procedure_titles().values()]
    assert all(0 < len(short) <= 24 and long for short, long in titles)
    used_diagnoses = {code for code, _ in INCIDENTAL_CODES} | {history.code for history in HISTORIES}
    used_diagnoses |= {minor.code for minor in MINOR_CONDITIONS if minor.code}
    for condition in CHRONIC_CONDITIONS:
        used_diagnoses |= {code for code, _ in condition.codes + condition.extra_codes}
        assert all(drug in DRUGS_BY_KEY for drug, _ in condition.drugs)
    used_procedures = set()
    for reason in ADMISSION_REASONS:
        used_diagnoses |= {code for code, _ in reason.codes + reason.extra_codes}
        used_procedures |= {code for code, _ in reason.procedures}
        assert all(drug in DRUGS_BY_KEY for drug, _ in reason.drugs)
    for complication in COMPLICATIONS:
        used_diagnoses |= {code for code, _ in complication.codes}
        used_procedures |= {code for code, _ in complication.procedures}
    assert used_diagnoses <= diagnosis_codes, used_diagnoses - diagnosis_codes
    assert used_procedures <= procedure_codes, used_procedures - procedure_codes
    assert all(re.match(ICD9_DIAGNOSIS_PATTERN, code) for code in diagnosis_codes)
    assert all(re.match(ICD9_PROCEDURE_PATTERN, code) for code in procedure_codes)
    assert all(len(drug.atc4) == 5 and re.match(ATC3_PATTERN, drug.atc4[:4]) for drug in DRUGS)
    lab_ids = {item.itemid for item in LAB_ITEMS}
    assert all(set(items) <= lab_ids for items in LAB_PANELS.values())


# Larger releases -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mimic_large") / "release"
    generate_mimic3(out, patients=3000, seed=11)
    return out


def _readmission_labels(admissions):
    """Admissions eligible for the label (alive, not newborn) and their 30-day non-elective label."""
    admissions = admissions.sort_values(["SUBJECT_ID", "ADMITTIME"])
    next_admit = admissions.groupby("SUBJECT_ID").ADMITTIME.shift(-1)
    next_type = admissions.groupby("SUBJECT_ID").ADMISSION_TYPE.shift(-1)
    gap_days = (next_admit - admissions.DISCHTIME).dt.total_seconds() / 86400
    label = ((gap_days <= 30) & (next_type != "ELECTIVE")).astype(int)
    eligible = (admissions.HOSPITAL_EXPIRE_FLAG == 0) & (admissions.ADMISSION_TYPE != "NEWBORN")
    return admissions[eligible], label[eligible]


@pytest.mark.slow
def test_readmission_deaths_newborns_at_mimic_rates(large_release):
    admissions = read_table(large_release, "ADMISSIONS").to_pandas()
    eligible, label = _readmission_labels(admissions)
    assert 0.04 <= label.mean() <= 0.11
    assert 0.06 <= admissions.HOSPITAL_EXPIRE_FLAG.mean() <= 0.14
    assert 0.01 <= (admissions.ADMISSION_TYPE == "NEWBORN").mean() <= 0.08
    per_patient = admissions.groupby("SUBJECT_ID").size()
    assert per_patient.max() >= 10
    assert 0.78 <= (per_patient == 1).mean() <= 0.9


@pytest.mark.slow
def test_mimic_quirks_present(large_release):
    admissions = read_table(large_release, "ADMISSIONS").to_pandas()
    assert (admissions.DISCHTIME < admissions.ADMITTIME).sum() >= 1
    diagnoses = read_table(large_release, "DIAGNOSES_ICD").to_pandas()
    assert not set(admissions.HADM_ID) <= set(diagnoses.HADM_ID)
    assert diagnoses.ICD9_CODE.isna().sum() >= 1
    assert diagnoses.duplicated(["HADM_ID", "ICD9_CODE"]).sum() >= 1
    prescriptions = read_table(large_release, "PRESCRIPTIONS").to_pandas()
    content = [column for column in prescriptions.columns if column != "ROW_ID"]
    assert 0.002 < prescriptions.duplicated(content).mean() < 0.2
    patients = read_table(large_release, "PATIENTS").to_pandas()
    first_admit = admissions.groupby("SUBJECT_ID").ADMITTIME.min()
    age_years = (first_admit - patients.set_index("SUBJECT_ID").DOB.loc[first_admit.index]).dt.days / 365.25
    assert (age_years > 250).sum() >= 10  # ages above 89 shifted to ~300, as MIMIC hides them
    assert (age_years[age_years < 250] <= 90).all()


@pytest.mark.slow
def test_readmission_signal_needs_codes_and_text(tmp_path):
    """A late fusion of a codes model and a text model beats either alone on held-out patients.

    The codes model sees each diagnosis code, its category (its ontology parent) and how many diagnoses
    the stay has: rare leaves carry their condition's signal through the category, which a model of
    leaves alone misses.
    """
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    out = tmp_path / "release"
    generate_mimic3(out, patients=6000, seed=21)
    admissions = read_table(out, "ADMISSIONS").to_pandas()
    eligible, label = _readmission_labels(admissions)
    diagnoses = read_table(out, "DIAGNOSES_ICD").to_pandas().dropna(subset=["ICD9_CODE"])
    procedures = read_table(out, "PROCEDURES_ICD").to_pandas()
    leaves = pd.concat(
        [
            pd.DataFrame({"HADM_ID": diagnoses.HADM_ID, "token": "D" + diagnoses.ICD9_CODE}),
            pd.DataFrame({"HADM_ID": procedures.HADM_ID, "token": "P" + procedures.ICD9_CODE}),
        ]
    )
    categories = pd.DataFrame(
        {"HADM_ID": diagnoses.HADM_ID, "token": "C" + diagnoses.ICD9_CODE.map(diagnosis_category)}
    )
    # How many diagnoses a stay has (frailty shows in many incidental codes), as a sequence model sees it.
    counts = diagnoses.groupby("HADM_ID").size()
    burden = pd.DataFrame({"HADM_ID": counts.index, "token": "N" + (counts.to_numpy() // 3).clip(0, 8).astype(str)})
    codes = pd.concat([leaves, categories, burden]).groupby("HADM_ID").token.agg(" ".join)
    leaf_codes = leaves.groupby("HADM_ID").token.agg(" ".join)
    notes = read_table(out, "NOTEEVENTS").to_pandas()
    summaries = (
        notes[(notes.CATEGORY == "Discharge summary") & (notes.DESCRIPTION == "Report")].groupby("HADM_ID").TEXT.first()
    )
    code_docs = eligible.HADM_ID.map(codes).fillna("")
    leaf_docs = eligible.HADM_ID.map(leaf_codes).fillna("")
    text_docs = eligible.HADM_ID.map(summaries).fillna("")
    subjects = np.sort(eligible.SUBJECT_ID.unique())
    test_subjects = set(np.random.default_rng(0).permutation(subjects)[: len(subjects) // 3])
    test = eligible.SUBJECT_ID.isin(test_subjects).to_numpy()
    y = label.to_numpy()

    train_scores, test_scores, aucs = [], [], {}
    for name, docs, vectorizer, c in (
        ("leaves", leaf_docs, TfidfVectorizer(token_pattern=r"\S+", lowercase=False, min_df=2, binary=True), 0.3),
        ("codes", code_docs, TfidfVectorizer(token_pattern=r"\S+", lowercase=False, min_df=2, binary=True), 0.3),
        (
            "text",
            text_docs,
            TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=100_000, sublinear_tf=True),
            0.3,
        ),
    ):
        train_matrix = vectorizer.fit_transform(docs[~test])
        test_matrix = vectorizer.transform(docs[test])
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        train_scores.append(cross_val_predict(model, train_matrix, y[~test], cv=5, method="decision_function"))
        test_scores.append(model.fit(train_matrix, y[~test]).decision_function(test_matrix))
        aucs[name] = roc_auc_score(y[test], test_scores[-1])
    fusion = LogisticRegression().fit(np.column_stack(train_scores[1:]), y[~test])
    aucs["both"] = roc_auc_score(y[test], fusion.decision_function(np.column_stack(test_scores[1:])))
    assert aucs["codes"] > aucs["leaves"] + 0.01, aucs
    assert aucs["codes"] > 0.68 and aucs["text"] > 0.68, aucs
    assert aucs["both"] > max(aucs["codes"], aucs["text"]) + 0.005, aucs
