"""Nested train-ratio subsets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from medmplm.data.splits import nested_train_patients, patient_rank_keys, subset_train_visits

PATIENTS = np.arange(1000, 1997, dtype=np.int64)  # 997 patients: ratios do not divide it evenly


def test_subsets_are_nested_for_a_seed():
    ratios = [0.01, 0.1, 0.2, 0.5, 0.9, 1.0]
    subsets = [set(nested_train_patients(PATIENTS, r, seed=3).tolist()) for r in ratios]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert smaller < larger
    assert [len(s) for s in subsets] == [10, 100, 200, 499, 898, 997]
    assert subsets[-1] == set(PATIENTS.tolist())


def test_subset_depends_on_seed_not_on_input_order():
    a = nested_train_patients(PATIENTS, 0.1, seed=0)
    shuffled = np.random.default_rng(1).permutation(PATIENTS)
    assert np.array_equal(a, nested_train_patients(np.concatenate([shuffled, shuffled[:50]]), 0.1, seed=0))
    b = nested_train_patients(PATIENTS, 0.1, seed=1)
    assert len(set(a.tolist()) & set(b.tolist())) < 50


def test_adding_patients_keeps_the_existing_ranking():
    # The 50 patients kept among the first 500 are the 50 of those 500 that rank first among all 997.
    keys = dict(zip(PATIENTS.tolist(), patient_rank_keys(PATIENTS, seed=0).tolist()))
    first_500 = sorted(PATIENTS[:500].tolist(), key=lambda p: keys[p])
    assert nested_train_patients(PATIENTS[:500], 0.1, seed=0).tolist() == sorted(first_500[:50])


def test_subset_train_visits_keeps_whole_patients():
    subject = np.repeat(PATIENTS[:100], 3)
    visits = pa.table({"subject_id": subject, "hadm_id": np.arange(subject.size)})
    kept = subset_train_visits(visits, 0.2, seed=5)
    counts = np.unique(kept.column("subject_id").to_numpy(), return_counts=True)[1]
    assert len(counts) == 20 and (counts == 3).all()
    assert kept.column("hadm_id").to_pylist() == sorted(kept.column("hadm_id").to_pylist())
    assert subset_train_visits(visits, 1.0, seed=5) is visits


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_bad_ratio_is_an_error(ratio):
    with pytest.raises(ValueError, match="train ratio must be in"):
        nested_train_patients(PATIENTS, ratio, seed=0)
