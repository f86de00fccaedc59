"""Summary-statistics embeddings (``python -m medmplm.embeddings``): co-occurrence counts on a hand-built patient table
(visits, patients, time windows), small-cell suppression, two sites summed against the pooled data, term matching,
shifted PPMI and the truncated SVD on a planted structure, related-pair AUC. The command line through Ray Data is in
the end-to-end test of ``tests/test_family_contrastive.py``."""

from __future__ import annotations

import itertools
import os
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from medmplm.embeddings.cooccur import (
    ItemIndex,
    count_table,
    read_counts,
    release,
    sum_counts,
    within_unit_pairs,
    write_counts,
)
from medmplm.embeddings.evaluate import evaluate, icd9_category, random_pairs
from medmplm.embeddings.sppmi import Embeddings, read_embeddings, shifted_ppmi, svd_embeddings, write_embeddings
from medmplm.embeddings.terms import TermList, TermMatcher, read_term_file

START = datetime(2130, 1, 1)
HTN, DM, AF = "ICD9CM:4019", "ICD9CM:25000", "ICD9CM:42731"
TERMS = TermList.from_entries([("test", t) for t in ("HTN", "diabetes", "a-fib", "heart failure", "htn")], "test")
INDEX = ItemIndex({"diagnosis": (HTN, DM, AF), "medication": ("C07A", "B01A")}, TERMS.terms)

# Subject 1: three admissions (days 0, 10 and 45), subject 2: one; one code no vocabulary holds.
VISITS = [
    (1, 11, 0, [HTN, DM], ["C07A"], "Pt with HTN and diabetes."),
    (1, 12, 10, [HTN], [], None),
    (1, 13, 45, [AF], ["B01A"], "new A-Fib, HTN"),
    (2, 21, 0, [HTN, "ICD9CM:9999"], ["C07A"], "heart failure; htn"),
]
# Each visit's items, written out by hand.
VISIT_ITEMS = {
    11: {("diagnosis", HTN), ("diagnosis", DM), ("medication", "C07A"), ("term", "htn"), ("term", "diabetes")},
    12: {("diagnosis", HTN)},
    13: {("diagnosis", AF), ("medication", "B01A"), ("term", "a fib"), ("term", "htn")},
    21: {("diagnosis", HTN), ("medication", "C07A"), ("term", "heart failure"), ("term", "htn")},
}
# The units of each way of counting, as sets of admissions: patients, and 30-day windows from a patient's first one.
UNITS = {"visit": [{11}, {12}, {13}, {21}], "patient": [{11, 12, 13}, {21}], "window": [{11, 12}, {13}, {21}]}


def visit_table(rows=VISITS) -> pa.Table:
    return pa.table(
        {
            "subject_id": pa.array([r[0] for r in rows], pa.int64()),
            "hadm_id": pa.array([r[1] for r in rows], pa.int64()),
            "admittime": pa.array([START + timedelta(days=r[2]) for r in rows], pa.timestamp("s")),
            "diagnoses": pa.array([r[3] for r in rows], pa.list_(pa.string())),
            "procedures": pa.array([[] for _ in rows], pa.list_(pa.string())),
            "medications": pa.array([r[4] for r in rows], pa.list_(pa.string())),
            "note_text": pa.array([r[5] for r in rows], pa.string()),
        }
    )


def expected_counts(unit: str) -> dict:
    """Item and pair counts by brute force over the hand-written units (term-term pairs are not counted)."""
    found: dict = {}
    for unit_visits in UNITS[unit]:
        items = sorted(set().union(*(VISIT_ITEMS[v] for v in unit_visits)))
        for item in items:
            found[(*item, *item)] = found.get((*item, *item), 0) + 1
        for a, b in itertools.combinations(items, 2):
            if a[0] != "term" or b[0] != "term":
                found[(*a, *b)] = found.get((*a, *b), 0) + 1
    return found


@pytest.mark.parametrize("unit", ["visit", "patient", "window"])
def test_counts_of_a_hand_built_patient_table(unit):
    counted = count_table(visit_table(), INDEX, unit, window_days=30)
    released, report = release(counted, INDEX, min_count=1)
    assert released.as_dict() == expected_counts(unit)
    assert (counted.units, counted.visits, counted.outside_vocabulary) == (len(UNITS[unit]), 4, 1)
    assert released.units == len(UNITS[unit])
    assert report == {"suppressed_items": 0, "suppressed_pairs": 0, "unseen_items": 0}


def test_a_window_unit_needs_every_admission_time():
    table = visit_table()
    table = table.set_column(2, "admittime", pa.array([START, None, START, START], pa.timestamp("s")))
    with pytest.raises(ValueError, match="column 'admittime', hadm_id 12: null"):
        count_table(table, INDEX, "window")
    table = visit_table().set_column(3, "diagnoses", pa.array([[HTN], [None], [], []], pa.list_(pa.string())))
    with pytest.raises(ValueError, match="column 'diagnoses', hadm_id 12: a null code"):
        count_table(table, INDEX, "visit")


def test_within_unit_pairs_are_every_pair_of_each_unit_once():
    left, right = within_unit_pairs(np.array([0, 3, 3, 5, 6]), np.array([1, 4, 7, 2, 9, 5]))
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == [(1, 4), (1, 7), (2, 9), (4, 7)]


def test_small_cells_are_suppressed_counted_and_written_without_them(tmp_path):
    released, report = release(count_table(visit_table(), INDEX, "visit"), INDEX, min_count=2)
    full = expected_counts("visit")
    kept = {key: n for key, n in full.items() if n >= 2}
    assert released.as_dict() == kept
    assert report == {
        "suppressed_items": sum(1 for k, n in full.items() if k[:2] == k[2:] and n < 2),
        "suppressed_pairs": sum(1 for k, n in full.items() if k[:2] != k[2:] and n < 2),
        "unseen_items": 0,
    }
    assert report["suppressed_items"] == 6 and report["suppressed_pairs"] == 13
    released.manifest = {"unit": "visit", "window_days": None, "min_count": 2, **report}
    write_counts(tmp_path / "counts", released)
    assert sorted(os.listdir(tmp_path)) == ["counts"]
    again = read_counts(tmp_path / "counts")
    assert again.as_dict() == kept and again.units == 4 and again.manifest["suppressed_pairs"] == 13
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_counts(tmp_path / "counts", released)


def test_reading_counts_names_the_bad_file_row_and_column(tmp_path):
    released, _ = release(count_table(visit_table(), INDEX, "visit"), INDEX, min_count=1)
    released.manifest = {"unit": "visit", "window_days": None}
    write_counts(tmp_path / "c", released)
    items = (tmp_path / "c" / "items.tsv").read_text().splitlines()
    broken = [*items[:3], "diagnosis\tICD9CM:1234\tmany", *items[3:]]
    (tmp_path / "c" / "items.tsv").write_text("\n".join(broken) + "\n")
    with pytest.raises(ValueError, match=r"items.tsv: row 4: expected kind<TAB>item<TAB>count"):
        read_counts(tmp_path / "c")
    (tmp_path / "c" / "items.tsv").write_text("\n".join(items) + "\n")
    pq.write_table(pa.table({"a": [2], "b": [1], "count": [3]}), tmp_path / "c" / "pairs.parquet")
    with pytest.raises(ValueError, match=r"pairs.parquet: row 1: a=2, b=1"):
        read_counts(tmp_path / "c")


@pytest.mark.parametrize("unit", ["patient", "window"])
def test_two_sites_summed_equal_the_counts_of_the_pooled_data(tmp_path, unit):
    # Each site has its own vocabulary (site 2 never saw AF, and lists its codes in another order).
    site_indexes = [INDEX, ItemIndex({"diagnosis": (DM, HTN), "medication": ("B01A", "C07A")}, TERMS.terms)]
    site_rows = [[r for r in VISITS if r[0] == 1], [r for r in VISITS if r[0] == 2]]
    directories = []
    for number, (index, rows) in enumerate(zip(site_indexes, site_rows, strict=True)):
        released, _ = release(count_table(visit_table(rows), index, unit), index, min_count=1)
        released.manifest = {"unit": unit, "window_days": 30, "min_count": 1}
        write_counts(tmp_path / f"site{number}", released)
        directories.append(str(tmp_path / f"site{number}"))
    summed = sum_counts([read_counts(d) for d in directories], directories)
    pooled, _ = release(count_table(visit_table(), INDEX, unit), INDEX, min_count=1)
    assert summed.as_dict() == pooled.as_dict()
    assert summed.units == pooled.units == len(UNITS[unit])


def test_counts_of_different_units_are_not_summed(tmp_path):
    parts = []
    for unit in ("visit", "patient"):
        released, _ = release(count_table(visit_table(), INDEX, unit), INDEX, min_count=1)
        released.manifest = {"unit": unit, "window_days": None}
        parts.append(released)
    with pytest.raises(ValueError, match="b counted unit='patient' but a counted 'visit'"):
        sum_counts(parts, ["a", "b"])


def test_terms_match_whole_words_ignoring_case_and_punctuation_within_one_note(tmp_path):
    matcher = TermMatcher(("htn", "heart failure", "a fib"))
    notes = pa.array(["HTN; congestive Heart-Failure", None, "a fibrillation, htnx", "heart", "failure a-fib htn"])
    rows, terms = matcher(notes)
    assert sorted(zip(rows.tolist(), terms.tolist(), strict=True)) == [(0, 0), (0, 1), (4, 0), (4, 2)]
    (tmp_path / "terms.txt").write_text("Heart failure\n\nheart-failure\nCHF\n")
    listed = read_term_file(tmp_path / "terms.txt")
    assert listed.terms == ("heart failure", "chf") and listed.merged == 1
    (tmp_path / "bad.txt").write_text("CHF\n---\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: term '---' has no letter or digit"):
        read_term_file(tmp_path / "bad.txt")
    (tmp_path / "tsv.txt").write_text("C0018802\tCHF\n")
    with pytest.raises(ValueError, match=r"tsv.txt:1: a tab"):
        read_term_file(tmp_path / "tsv.txt")


def test_shifted_ppmi_by_hand():
    counts = sp.csr_matrix(np.array([[0, 4, 1], [4, 0, 0], [1, 0, 0]]))
    rows = np.array([5.0, 4.0, 1.0])
    pmi = shifted_ppmi(counts, shift=1.0, context_smoothing=1.0).toarray()
    # log(C[a, b] D / (r[a] r[b])), D = 10; negative values and absent pairs are zero.
    expected = np.zeros((3, 3))
    expected[0, 1] = expected[1, 0] = np.log(4 * 10 / (rows[0] * rows[1]))
    expected[0, 2] = expected[2, 0] = np.log(1 * 10 / (rows[0] * rows[2]))
    np.testing.assert_allclose(pmi, np.maximum(expected, 0))
    shifted = shifted_ppmi(counts, shift=2.0, context_smoothing=1.0).toarray()
    np.testing.assert_allclose(shifted, np.maximum(expected - np.log(2), 0))
    with pytest.raises(ValueError, match="shift must be >= 1"):
        shifted_ppmi(counts, shift=0.5)


def test_ppmi_and_svd_recover_a_planted_block_structure():
    # Three groups of items of different sizes: within a group items co-occur often, across groups rarely, so the
    # PPMI is positive within groups and zero across: a rank-3 matrix whose embeddings separate the groups.
    sizes = (5, 7, 9)
    group = np.repeat(np.arange(3), sizes)
    counts = np.where(group[:, None] == group[None, :], 40, 1).astype(float)
    np.fill_diagonal(counts, 0)
    ppmi = shifted_ppmi(sp.csr_matrix(counts), context_smoothing=1.0)
    assert ppmi.nnz == sum(n * (n - 1) for n in sizes)
    vectors, singular = svd_embeddings(ppmi, dim=3, seed=0)
    # Group g's block is c_g (J - I): its leading singular value is c_g (n_g - 1) and its best rank-1 approximation
    # c_g (n_g - 1) / n_g J. Rows are U sqrt(S), so their dot products are that rank-3 approximation.
    c = np.array([ppmi[np.flatnonzero(group == g)[0]].data.mean() for g in range(3)])
    np.testing.assert_allclose(np.sort(singular), np.sort(c * (np.array(sizes) - 1)), rtol=1e-6)
    level = c * (np.array(sizes) - 1) / np.array(sizes)
    expected = np.where(group[:, None] == group[None, :], level[group][:, None], 0)
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    same = group[:, None] == group[None, :]
    assert cosines[same].min() > 0.999 and np.abs(cosines[~same]).max() < 1e-3
    with pytest.raises(ValueError, match="dim must be between 1 and the number of items - 1 \\(20\\)"):
        svd_embeddings(ppmi, dim=21)


def test_icd9_categories_and_random_pairs():
    assert icd9_category("ICD9CM:4019") == icd9_category("4011") == "401"
    assert icd9_category("ICD9CM:E8497") == "E849"
    assert icd9_category("ICD10CM:I10") is None and icd9_category("N02B") is None
    related = [(("d", "a"), ("m", "x")), (("d", "b"), ("m", "y"))]
    drawn = random_pairs(related, 10, np.random.default_rng(0))
    assert sorted(drawn) == [(("d", "a"), ("m", "y")), (("d", "b"), ("m", "x"))]


def _embeddings(related_close: bool, with_terms: bool) -> Embeddings:
    """Items of three ICD-9 categories: codes of one category share a direction when ``related_close`` (else each code
    has its own), terms lie on their condition's code, the medication on hypertension's."""
    rng = np.random.default_rng(1)
    codes = ["ICD9CM:4019", "ICD9CM:4011", "ICD9CM:4280", "ICD9CM:4281", "ICD9CM:25000", "ICD9CM:25002"]
    bases = rng.normal(size=(len(codes), 16))
    # Codes come in pairs of one category (4019 4011, 4280 4281, 25000 25002).
    direction = {code: bases[2 * (i // 2) if related_close else i] for i, code in enumerate(codes)}
    kinds, items, vectors = [], [], []
    for code in codes:
        kinds.append("diagnosis")
        items.append(code)
        vectors.append(direction[code] + 0.01 * rng.normal(size=16))
    kinds.append("medication")
    items.append("C07A")
    vectors.append(direction["ICD9CM:4019"])
    if with_terms:
        for term, code in (("hypertension", "ICD9CM:4019"), ("chf", "ICD9CM:4280"), ("diabetes", "ICD9CM:25000")):
            kinds.append("term")
            items.append(term)
            vectors.append(direction[code] + 0.01 * rng.normal(size=16))
    return Embeddings(kinds, items, np.array(vectors, dtype=np.float32))


def test_related_pair_auc_side_by_side_on_shared_pairs(tmp_path):
    write_embeddings(tmp_path / "good", _embeddings(related_close=True, with_terms=True))
    codes_only = _embeddings(related_close=False, with_terms=False)
    scores = evaluate([("good", read_embeddings(tmp_path / "good")), ("codes only", codes_only)])
    by = {(s.embeddings, s.relation): s for s in scores}
    assert by[("good", "icd9_category")].auc == 1.0
    # The same three same-category pairs and the same random pairs for both.
    assert by[("good", "icd9_category")].related_pairs == by[("codes only", "icd9_category")].related_pairs == 3
    assert by[("codes only", "icd9_category")].random_pairs == by[("good", "icd9_category")].random_pairs == 12
    assert by[("codes only", "icd9_category")].auc < 0.9
    # Beta blockers (C07A) treat hypertension (4019) and heart failure (4280) in the catalogue; with one medication
    # every candidate pair is related, so there is no random pair and no AUC.
    drug = by[("good", "drug_condition")]
    assert (drug.related_pairs, drug.random_pairs) == (2, 0) and np.isnan(drug.auc)
    assert ("codes only", "code_term") not in by and by[("good", "code_term")].auc == 1.0
    # hypertension-4019, chf-4280, and diabetes with both of the catalogue's diabetes codes here (25000, 25002).
    assert by[("good", "code_term")].related_pairs == 4
