"""Code systems beside ICD-9-CM diagnoses: system prefixes, ICD-10-CM / ICD-10-PCS / ICD-9 procedure trees, GEMs."""

from __future__ import annotations

import pytest

from medmplm.data.icd_gem import GemFormatError, load_gem
from medmplm.ontology import (
    ICD9PROC,
    ICD10CM,
    ICD10CM_UNLISTED,
    ICD10PCS,
    OntologyError,
    build_ontology,
    icd9_procedure_ancestors,
    icd10cm_ancestors,
    icd10pcs_ancestors,
    split_system_code,
    system_code,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("I2510", [ICD10CM, "I00-I99", "I20-I25", "I25", "I251"]),
        ("I10", [ICD10CM, "I00-I99", "I10-I1A"]),
        ("E119", [ICD10CM, "E00-E89", "E08-E13", "E11"]),
        # An E code of ICD-10-CM is an endocrine disorder, not an external cause as in ICD-9-CM.
        ("E8809", [ICD10CM, "E00-E89", "E70-E88", "E88", "E880"]),
        ("S72001A", [ICD10CM, "S00-T88", "S70-S79", "S72", "S720"]),
        ("O9989", [ICD10CM, "O00-O9A", "O94-O9A", "O99", "O998"]),
        ("Q999", [ICD10CM, "Q00-QA0", "Q90-Q99", "Q99"]),
        ("U071", [ICD10CM, "U00-U85", "U00-U49", "U07"]),
        # A block of one category is named as a range, like every other block.
        ("B20", [ICD10CM, "A00-B99", "B20-B20"]),
        # A category the tabular list does not hold still gets its category levels.
        ("D9912", [ICD10CM, ICD10CM_UNLISTED, "D99", "D991"]),
    ],
)
def test_icd10cm_tree_chapter_block_category_subcategory(code: str, expected: list[str]) -> None:
    assert icd10cm_ancestors(code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("0016070", [ICD10PCS, "0", "00", "001", "0016"]),
        ("B2111ZZ", [ICD10PCS, "B", "B2", "B21", "B211"]),
    ],
)
def test_icd10pcs_tree_by_axes(code: str, expected: list[str]) -> None:
    assert icd10pcs_ancestors(code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("3893", [ICD9PROC, "35-39", "38", "389"]),
        ("966", [ICD9PROC, "87-99", "96"]),
        ("0040", [ICD9PROC, "00", "00", "004"]),
        ("17", [ICD9PROC, "17"]),
    ],
)
def test_icd9_procedure_tree(code: str, expected: list[str]) -> None:
    assert icd9_procedure_ancestors(code) == expected


@pytest.mark.parametrize(
    ("function", "code"),
    [
        (icd10cm_ancestors, "I25.10"),
        (icd10cm_ancestors, "4019"),
        (icd10cm_ancestors, "I2510123"),
        (icd10pcs_ancestors, "00160701ZZ"),  # 10 characters
        (icd10pcs_ancestors, "0016O70"),  # the letter O is not a PCS character
        (icd9_procedure_ancestors, "38931"),
    ],
)
def test_malformed_codes_are_rejected_by_name(function, code: str) -> None:
    with pytest.raises(OntologyError, match=repr(code).replace(".", r"\.")):
        function(code)


def test_system_prefix_round_trip_and_errors() -> None:
    assert system_code(ICD10CM, "I10") == "ICD10CM:I10"
    assert split_system_code("ICD9Proc:3893") == (ICD9PROC, "3893")
    with pytest.raises(OntologyError, match="no code-system prefix"):
        split_system_code("4019")
    with pytest.raises(OntologyError, match="shape of an undotted ICD10PCS"):
        split_system_code("ICD10PCS:00160701ZZ")


def test_build_ontology_on_prefixed_codes_keeps_systems_apart() -> None:
    tree = build_ontology(["ICD9CM:E8809", "ICD10CM:E8809", "ICD10PCS:0016070"], "coded")
    assert tree == {
        "ICD9CM:E8809": ["ICD9CM", "E000-E999", "E880"],
        "ICD10CM:E8809": [ICD10CM, "E00-E89", "E70-E88", "E88", "E880"],
        "ICD10PCS:0016070": [ICD10PCS, "0", "00", "001", "0016"],
    }
    # Schema-1 directories hold bare ICD-9-CM codes: still built as before.
    assert build_ontology(["4019"], "icd9_diagnosis") == {"4019": ["ICD9CM", "390-459", "401"]}


def gem_targets(path=None) -> dict[str, list[str]]:
    gem = load_gem(path)
    return dict(zip(gem["icd10cm"].to_pylist(), gem["icd9cm"].to_pylist()))


def test_gem_rules_on_a_cms_layout_file(tmp_path) -> None:
    gem = tmp_path / "2018_I10gem.txt"
    gem.write_text(
        "A044    00800    10000\n"
        "A044    00809    10000\n"  # a second alternative: not taken
        "A1801   01500    10000\n"  # a plain alternative of a combination code: not taken
        "A1801   01500    10111\n"
        "A1801   71148    10122\n"  # scenario 2: not taken
        "A1801   73740    10112\n"
        "R6889   NoDx     01000\n"  # no map
        "I10     4019     00000\n"
    )
    assert gem_targets(gem) == {"A044": ["00800"], "A1801": ["01500", "73740"], "I10": ["4019"], "R6889": []}


def test_gem_bad_row_is_named_by_line(tmp_path) -> None:
    gem = tmp_path / "gem.txt"
    gem.write_text("I10     4019     00000\nI25.10  41401    00000\n")
    with pytest.raises(GemFormatError, match=r"gem.txt:2: .*'I25.10'"):
        load_gem(gem)


def test_packaged_gem_maps_common_codes() -> None:
    targets = gem_targets()
    assert targets["I10"] == ["4010"]
    assert targets["E119"] == ["25000"]
    assert targets["A021"] == ["0031", "99591"]  # a combination: salmonella sepsis
