"""Table readers and the NDC map (no Ray): file discovery, column checks, string typing, multi-line notes."""

from __future__ import annotations

import gzip

import pytest
from test_prepare_support import base_tables, note, write_mimic, write_ndc_map

from medmplm.data.ndc_atc import MissingNdcMapError, find_ndc_map, load_ndc_to_atc3
from medmplm.data.tables import (
    DIAGNOSES_ICD,
    NOTEEVENTS,
    MalformedCsvError,
    MissingColumnError,
    MissingTableError,
    find_table,
    locate_table,
    open_table_stream,
    read_table,
)


def test_finds_csv_and_csv_gz_case_insensitively(tmp_path) -> None:
    (tmp_path / "admissions.csv").write_text("A\n")
    (tmp_path / "DIAGNOSES_ICD.csv.gz").write_bytes(gzip.compress(b"A\n"))
    assert find_table(tmp_path, "ADMISSIONS") == str(tmp_path / "admissions.csv")
    assert find_table(tmp_path, "DIAGNOSES_ICD") == str(tmp_path / "DIAGNOSES_ICD.csv.gz")


def test_missing_table_error_names_the_expected_files(tmp_path) -> None:
    with pytest.raises(
        MissingTableError, match=r"table LABEVENTS not found: expected .*LABEVENTS\.csv or .*LABEVENTS\.csv\.gz"
    ):
        find_table(tmp_path, "LABEVENTS")


def test_both_csv_and_gz_is_ambiguous(tmp_path) -> None:
    (tmp_path / "ADMISSIONS.csv").write_text("A\n")
    (tmp_path / "ADMISSIONS.csv.gz").write_bytes(gzip.compress(b"A\n"))
    with pytest.raises(MissingTableError, match="ambiguous.*ADMISSIONS.csv, ADMISSIONS.csv.gz"):
        find_table(tmp_path, "ADMISSIONS")


def test_missing_column_error_names_file_and_column(tmp_path) -> None:
    write_mimic(tmp_path, columns={DIAGNOSES_ICD: ["ROW_ID", "SUBJECT_ID", "HADM_ID", "ICD9_CODE"]})
    with pytest.raises(MissingColumnError, match=r"DIAGNOSES_ICD\.csv: missing column\(s\) SEQ_NUM"):
        locate_table(tmp_path, DIAGNOSES_ICD)


@pytest.mark.parametrize("column_case", ["upper", "lower"])
@pytest.mark.parametrize("gzip_files", [False, True])
def test_codes_stay_strings_with_leading_zeros(tmp_path, column_case, gzip_files) -> None:
    write_mimic(tmp_path, column_case=column_case, gzip_files=gzip_files)
    table = read_table(locate_table(tmp_path, DIAGNOSES_ICD))
    assert table.column_names == ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
    assert {str(t) for t in table.schema.types} == {"string"}
    assert "0389" in table["ICD9_CODE"].to_pylist()


def test_multiline_note_text_streams_intact(tmp_path) -> None:
    tables = base_tables()
    text = 'Line one, "quoted".\n\nLine three\r\nwith CRLF.\n' * 15
    tables[NOTEEVENTS] = [note(i, 101, 1001, "2101-01-05", text) for i in range(4)]
    write_mimic(tmp_path, tables)
    # Small blocks, so quoted newlines fall across block boundaries (each row must fit in one block).
    reader = open_table_stream(locate_table(tmp_path, NOTEEVENTS), block_size=1024)
    rows = reader.read_all()
    assert rows["TEXT"].to_pylist() == [text] * 4


def test_empty_fields_are_null_but_na_strings_are_not(tmp_path) -> None:
    (tmp_path / "LABEVENTS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ITEMID,CHARTTIME,VALUE,VALUENUM,VALUEUOM,FLAG\n"
        "1,101,,50912,2101-01-01 00:00:00,NA,,mg/dL,\n"
    )
    row = read_table(locate_table(tmp_path, "LABEVENTS")).to_pylist()[0]
    assert row["HADM_ID"] is None and row["FLAG"] is None
    assert row["VALUE"] == "NA"


def test_ndc_map_first_rxcui_row_wins_and_truncates_to_atc3(tmp_path) -> None:
    write_ndc_map(tmp_path)
    table = load_ndc_to_atc3(tmp_path)
    assert dict(zip(table["ndc"].to_pylist(), table["atc3"].to_pylist())) == {
        "00002751001": "A10A",
        "00338004904": "B05B",
        "51079025520": "N02B",
    }


def test_ndc_map_missing_error_says_what_to_supply(tmp_path) -> None:
    with pytest.raises(MissingNdcMapError) as err:
        find_ndc_map(tmp_path)
    message = str(err.value)
    assert "ndc2rxnorm_mapping.txt" in message and "ndc2atc_level4.csv" in message
    assert "GAMENet" in message and "--medication-vocab" in message


def test_ndc_map_is_never_evaluated(tmp_path) -> None:
    write_ndc_map(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "ndc2rxnorm_mapping.txt").write_text(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    with pytest.raises(MissingNdcMapError, match="not a Python dict literal"):
        load_ndc_to_atc3(tmp_path)
    assert not marker.exists()


def test_ndc_map_bad_atc4_names_line(tmp_path) -> None:
    write_ndc_map(tmp_path)
    (tmp_path / "ndc2atc_level4.csv").write_text("RXCUI,YEAR,MONTH,NDC,ATC4\n1001,2016,1,1,A10AB\n1002,2016,1,2,xx\n")
    with pytest.raises(MissingNdcMapError, match=r"ndc2atc_level4\.csv:3: ATC4 'xx'"):
        load_ndc_to_atc3(tmp_path)


def test_malformed_row_error_gives_position_not_text(tmp_path) -> None:
    tables = base_tables()
    write_mimic(tmp_path, tables)
    path = tmp_path / "NOTEEVENTS.csv"
    path.write_text(path.read_text() + '7,101,1001,2101-01-05,,,Discharge summary,Report,,,"secret\nnote",extra\n')
    with pytest.raises(
        MalformedCsvError,
        match=r"NOTEEVENTS\.csv: 1 row\(s\) with the wrong number of fields \(expected 11, got 12\) around data rows 1-7",
    ) as err:
        open_table_stream(locate_table(tmp_path, NOTEEVENTS)).read_all()
    assert "secret" not in str(err.value)
