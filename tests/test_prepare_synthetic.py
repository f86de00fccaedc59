"""Prepare on the synthetic MIMIC-III generator's output, upper- and lower-case (gzipped) releases."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medmplm.data.manifest import read_manifest
from medmplm.data.pipeline import PrepareOptions, prepare
from medmplm.data.schema import SPLITS, VISIT_SCHEMA
from medmplm.data.vocab_io import read_vocab
from medmplm.ontology import ATC3_PATTERN, ICD9_DIAGNOSIS_PATTERN, read_ontology, split_system_code

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def read_visits(out) -> pa.Table:
    parts = [
        pq.read_table(f, schema=VISIT_SCHEMA) for s in SPLITS for f in sorted((out / "visits" / s).glob("*.parquet"))
    ]
    return pa.concat_tables(parts)


@pytest.fixture(scope="module")
def synthetic_prepared(tmp_path_factory):
    from medmplm.synthetic import generate_mimic3

    root = tmp_path_factory.mktemp("synthetic")
    outputs = {}
    for column_case, gzip in (("upper", False), ("lower", True)):
        mimic = root / f"mimic-{column_case}"
        generate_mimic3(mimic, patients=400, seed=3, gzip=gzip, column_case=column_case)
        outputs[column_case] = root / f"out-{column_case}"
        prepare(mimic, outputs[column_case], PrepareOptions(num_shards_per_split=2, admissions_per_bucket=100))
    return outputs


def test_both_column_cases_give_identical_visits(synthetic_prepared) -> None:
    upper, lower = synthetic_prepared["upper"], synthetic_prepared["lower"]
    assert read_visits(upper).equals(read_visits(lower))
    assert read_manifest(upper).tables == read_manifest(lower).tables
    for name in ("vocab/diagnosis.tsv", "vocab/medication.tsv", "ontology/diagnosis.tsv"):
        assert (upper / name).read_bytes() == (lower / name).read_bytes()


def test_synthetic_output_is_consistent(synthetic_prepared) -> None:
    out = synthetic_prepared["upper"]
    manifest = read_manifest(out)
    visits = read_visits(out)
    for table, counts in manifest.tables.items():
        lost = sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
        assert counts["rows_kept"] + lost == counts["rows_read"], table
    assert visits.num_rows == manifest.tables["ADMISSIONS"]["rows_kept"]
    assert manifest.tables["PRESCRIPTIONS"]["dropped"].get("ndc_missing_or_zero", 0) > 0
    assert manifest.medications["unmapped_ndc_rows"] > 0
    diagnoses = pc.list_flatten(visits["diagnoses"]).to_pylist()
    assert diagnoses and all(re.match(ICD9_DIAGNOSIS_PATTERN, split_system_code(c)[1]) for c in diagnoses)
    assert {split_system_code(c)[0] for c in diagnoses} == {"ICD9CM"}
    assert visits["gender"].null_count == 0 and set(visits["gender"].to_pylist()) == {"F", "M"}
    assert 0 <= pc.min(visits["age"]).as_py() and pc.max(visits["age"]).as_py() <= 90.0
    medications = pc.list_flatten(visits["medications"]).to_pylist()
    assert medications and all(re.match(ATC3_PATTERN, c) for c in medications)
    assert pc.sum(pc.greater(visits["num_notes"], 0)).as_py() > 0.5 * visits.num_rows
    positives = pc.sum(visits["readmission_30d"]).as_py()
    assert 0 < positives < 0.5 * visits.num_rows
    assert set(read_ontology(out / "ontology" / "diagnosis.tsv")) == {
        c for c, _ in read_vocab(out / "vocab" / "diagnosis.tsv")
    }
