"""Nested training subsets for the train-ratio experiments.

The train/val/test split itself is made by ``medmplm.prepare`` (patient level, see ``medmplm.data.schema``) and is the
same for every model. Fine-tuning at ``train_ratio=r`` keeps the first ``ceil(r * n)`` training patients of one fixed
ranking, so for a given seed the 10% subset is inside the 20% subset, which is inside the 50% subset, and so on: a model
trained on more data saw everything a model trained on less data saw. Validation and test sets are never subset.

The ranking orders patients by a keyed BLAKE2b hash of their ``subject_id``, so it does not depend on the order rows
are read in, nor on which other patients exist (adding patients never reorders the ones already there).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"train ratio must be in (0, 1], got {ratio}")


def patient_rank_keys(subject_ids: Iterable[int], seed: int) -> np.ndarray:
    """The ranking key of each patient: an unsigned 64-bit hash of ``(seed, subject_id)``; smaller ranks first."""
    key = f"medmplm-train-subset:{int(seed)}".encode()[:64]
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(str(int(sid)).encode(), digest_size=8, key=key).digest(), "big")
            for sid in subject_ids
        ],
        dtype=np.uint64,
    )


def nested_train_patients(subject_ids: Iterable[int], ratio: float, seed: int) -> np.ndarray:
    """The training patients kept at ``ratio``: the first ``ceil(ratio * n)`` of the seeded ranking (at least one).

    Args:
        subject_ids: the training split's patients (duplicates are collapsed).
        ratio: fraction of patients to keep, in (0, 1].
        seed: ranking seed; the same seed gives nested subsets across ratios.

    Returns:
        The kept ``subject_id`` values, sorted ascending (int64).
    """
    _check_ratio(ratio)
    unique = np.unique(np.asarray(list(subject_ids), dtype=np.int64))
    if unique.size == 0:
        return unique
    keep = max(1, math.ceil(ratio * unique.size))
    # Sort by (hash, subject_id) so that a hash collision still gives one deterministic order.
    order = np.lexsort((unique, patient_rank_keys(unique, seed)))
    return np.sort(unique[order[:keep]])


def subset_train_visits(visits: pa.Table, ratio: float, seed: int) -> pa.Table:
    """Keep the visits of the training patients selected by :func:`nested_train_patients` (row order preserved)."""
    _check_ratio(ratio)
    if ratio == 1.0:
        return visits
    kept = nested_train_patients(visits.column("subject_id").to_numpy(), ratio, seed)
    return visits.filter(pc.is_in(visits.column("subject_id"), value_set=pa.array(kept, type=pa.int64())))
