"""Ontology ancestor paths and the ontology / vocabulary file round trips."""

from __future__ import annotations

import pytest

from medmplm.data.vocab_io import VocabFormatError, read_vocab, write_vocab
from medmplm.ontology import (
    ATC_ROOT,
    ICD9_ROOT,
    OntologyError,
    atc3_ancestors,
    build_ontology,
    icd9_chapter,
    icd9_diagnosis_ancestors,
    is_icd9_diagnosis,
    read_ontology,
    write_ontology,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("4019", [ICD9_ROOT, "390-459", "401"]),
        ("40391", [ICD9_ROOT, "390-459", "403", "4039"]),
        ("0389", [ICD9_ROOT, "001-139", "038"]),
        ("042", [ICD9_ROOT, "001-139"]),
        ("1398", [ICD9_ROOT, "001-139", "139"]),
        ("1400", [ICD9_ROOT, "140-239", "140"]),
        ("99591", [ICD9_ROOT, "800-999", "995", "9959"]),
        ("V3000", [ICD9_ROOT, "V01-V91", "V30", "V300"]),
        ("V053", [ICD9_ROOT, "V01-V91", "V05"]),
        ("V15", [ICD9_ROOT, "V01-V91"]),
        ("E8889", [ICD9_ROOT, "E000-E999", "E888"]),
        ("E849", [ICD9_ROOT, "E000-E999"]),
    ],
)
def test_icd9_diagnosis_ancestors(code: str, expected: list[str]) -> None:
    assert icd9_diagnosis_ancestors(code) == expected


@pytest.mark.parametrize("code", ["", "40", "401911", "4O19", "401.9", "V1", "E88", "E88891", "000", "0001"])
def test_icd9_rejects_malformed_codes(code: str) -> None:
    with pytest.raises(OntologyError, match=repr(code).replace(".", r"\.")):
        icd9_chapter(code)


def test_icd9_shape() -> None:
    assert is_icd9_diagnosis("0389")
    assert not is_icd9_diagnosis("389.0")
    assert not is_icd9_diagnosis("v3000")


def test_atc3_ancestors() -> None:
    assert atc3_ancestors("N02B") == [ATC_ROOT, "N", "N02"]
    with pytest.raises(OntologyError, match="'N02'"):
        atc3_ancestors("N02")


def test_flat_ontology_for_other_medication_vocabularies() -> None:
    assert build_ontology(["00001", "12345"], "ndc") == {"00001": ["NDC"], "12345": ["NDC"]}


def test_ontology_round_trip(tmp_path) -> None:
    ontology = build_ontology(["40391", "0389", "V053", "E8889"], "icd9_diagnosis")
    path = tmp_path / "diagnosis.tsv"
    write_ontology(path, ontology)
    assert read_ontology(path) == ontology
    lines = path.read_text().splitlines()
    assert lines[0] == "code\tancestors"
    assert lines[1] == "0389\tICD9CM|001-139|038"
    assert [p.name for p in tmp_path.iterdir()] == ["diagnosis.tsv"]


def test_read_ontology_names_bad_line(tmp_path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("code\tancestors\n4019\tICD9CM|390-459|401\n4010\n")
    with pytest.raises(OntologyError, match=r"bad\.tsv:3"):
        read_ontology(path)
    path.write_text("code\tparents\n")
    with pytest.raises(OntologyError, match=r"bad\.tsv:1: expected header"):
        read_ontology(path)


def test_write_ontology_rejects_separator_in_names(tmp_path) -> None:
    with pytest.raises(OntologyError, match="'a|b'"):
        write_ontology(tmp_path / "o.tsv", {"a|b": ["ROOT"]})


def test_vocab_round_trip_sorted_by_count_then_code(tmp_path) -> None:
    path = tmp_path / "diagnosis.tsv"
    write_vocab(path, {"4019": 3, "0389": 7, "V053": 3, "E8889": 1})
    assert path.read_text().splitlines()[0] == "code\tcount"
    assert read_vocab(path) == [("0389", 7), ("4019", 3), ("V053", 3), ("E8889", 1)]


def test_vocab_errors(tmp_path) -> None:
    with pytest.raises(VocabFormatError, match="appears twice"):
        write_vocab(tmp_path / "v.tsv", [("a", 1), ("a", 2)])
    with pytest.raises(VocabFormatError, match="non-negative int"):
        write_vocab(tmp_path / "v.tsv", {"a": -1})
    path = tmp_path / "bad.tsv"
    path.write_text("code\tcount\n4019\tmany\n")
    with pytest.raises(VocabFormatError, match=r"bad\.tsv:2: count 'many'"):
        read_vocab(path)
