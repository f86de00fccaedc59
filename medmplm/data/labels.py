"""Admission-level labels: 30-day readmission (all / non-elective) and in-hospital death.

Definitions (recorded in the manifest too):

* The *next admission* of an admission A is the patient's earliest kept admission whose
  ADMITTIME is strictly later than A's ADMITTIME, among non-NEWBORN admissions (for the
  non-elective label: among EMERGENCY and URGENT admissions). A second admission with exactly the
  same ADMITTIME is not "next"; quarantined admissions (e.g. DISCHTIME before ADMITTIME) are not
  kept and so never "next".
* ``readmission_30d`` = 1 when the next admission starts no later than 30 * 24 hours after A's
  DISCHTIME (exactly 30 days counts; 30 days and 1 minute does not). A next admission that
  starts before A's discharge (overlapping stays, e.g. transfers) counts as a readmission. 0 when
  there is no next admission (A is the last one) or it starts later.
* Null when the label is undefined: A ended in hospital death, or A is a NEWBORN admission.
* ``hospital_death`` = HOSPITAL_EXPIRE_FLAG is 1.

MIMIC-IV has no NEWBORN admissions, and other admission types: its non-elective types are the emergency and urgent
ones (``MIMIC4_NON_ELECTIVE_TYPES``). Readmission studies on MIMIC-IV also leave out index admissions that end where
a readmission cannot be seen or means something else (transfer to another acute hospital, discharge against medical
advice, hospice; the CMS readmission measures' exclusions): ``excluded`` admissions get null labels too, and the
prepare option ``--readmission-exclude-discharge`` chooses them by DISCHARGE_LOCATION (``MIMIC4_EXCLUDED_DISCHARGE``
is the list the README suggests). They can still be another admission's next admission.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

READMISSION_WINDOW = pd.Timedelta(days=30)
NEWBORN = "NEWBORN"
NON_ELECTIVE_TYPES = ("EMERGENCY", "URGENT")
# MIMIC-IV's emergency and urgent admission types (EW: emergency ward, EU: emergency unit).
MIMIC4_NON_ELECTIVE_TYPES = ("EW EMER.", "DIRECT EMER.", "EU OBSERVATION", "URGENT")
MIMIC4_EXCLUDED_DISCHARGE = ("DIED", "AGAINST ADVICE", "ACUTE HOSPITAL", "HOSPICE")


def _next_admittime(visits: pd.DataFrame, candidates: pd.DataFrame) -> pd.Series:
    """For each visit, the earliest candidate admittime of the same subject strictly after its admittime."""
    left = visits[["subject_id", "admittime"]].reset_index(names="row").sort_values("admittime", kind="stable")
    right = candidates[["subject_id", "admittime"]].rename(columns={"admittime": "next_admittime"})
    right = right.sort_values("next_admittime", kind="stable")
    merged = pd.merge_asof(
        left,
        right,
        left_on="admittime",
        right_on="next_admittime",
        by="subject_id",
        direction="forward",
        allow_exact_matches=False,
    )
    return merged.set_index("row")["next_admittime"].sort_index()


def readmission_labels(
    subject_id: pa.Array,
    admittime: pa.Array,
    dischtime: pa.Array,
    admission_type: pa.Array,
    hospital_death: pa.Array,
    *,
    non_elective_types: tuple[str, ...] = NON_ELECTIVE_TYPES,
    excluded: pa.Array | None = None,
) -> tuple[pa.Array, pa.Array]:
    """30-day readmission labels for a set of admissions holding *all* kept admissions of their patients.

    Args:
        subject_id: int64, one per admission.
        admittime, dischtime: ``timestamp[s]``, not null.
        admission_type: strings (compared trimmed and upper-cased).
        hospital_death: booleans, not null.
        non_elective_types: the admission types the non-elective label counts as a next admission.
        excluded: booleans (null counts as false): admissions whose own labels are null (e.g. by discharge location).

    Returns:
        ``(readmission_30d, readmission_30d_nonelective)``: int8 arrays aligned with the inputs,
        null where the label is undefined (see the module docstring).
    """
    kind = pc.utf8_upper(pc.utf8_trim_whitespace(admission_type))
    newborn = pc.fill_null(pc.equal(kind, NEWBORN), False).to_numpy(zero_copy_only=False)
    non_elective = pc.fill_null(pc.is_in(kind, pa.array(non_elective_types, pa.string())), False).to_numpy(
        zero_copy_only=False
    )
    undefined = newborn | hospital_death.to_numpy(zero_copy_only=False)
    if excluded is not None:
        undefined = undefined | pc.fill_null(excluded, False).to_numpy(zero_copy_only=False)
    visits = pd.DataFrame(
        {
            "subject_id": subject_id.to_numpy(zero_copy_only=False),
            "admittime": admittime.to_numpy(zero_copy_only=False),
            "dischtime": dischtime.to_numpy(zero_copy_only=False),
        }
    )
    deadline = visits["dischtime"] + READMISSION_WINDOW

    labels = []
    for candidate_mask in (~newborn, non_elective):
        next_admit = _next_admittime(visits, visits[candidate_mask])
        readmitted = (next_admit <= deadline).to_numpy(dtype=np.int8)
        labels.append(pa.array(readmitted, pa.int8(), mask=undefined))
    return labels[0], labels[1]
