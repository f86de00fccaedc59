"""Demographics at admission: ``gender`` and ``age`` of every visit, from MIMIC's PATIENTS table (or MEDS's birth
and gender events).

Ages are years at ADMITTIME, as float32:

* MIMIC-III: (ADMITTIME - DOB) / 365.2425 days. MIMIC-III shifts the DOB of patients older than 89 so that they
  appear about 300 years old; any age over 89 is reported as ``AGE_OVER_89`` (90.0, the lower bound of HIPAA's
  "90 or older" group: the true age is hidden). Newborns admitted before their recorded birth time come out a few
  hours below zero; they are kept as computed.
* MIMIC-IV: ANCHOR_AGE + (year of ADMITTIME - ANCHOR_YEAR), whole years (MIMIC-IV gives only the age in the anchor
  year). MIMIC-IV writes 91 for every anchor age over 89; those patients, and any age that comes out over 89, are
  ``AGE_OVER_89``.
* MEDS: (admission time - MEDS_BIRTH time) / 365.2425 days, over 89 likewise.

An admission whose patient has no (valid) record gets null gender and age. PATIENTS rows that do not parse, or a
SUBJECT_ID on two rows that differ, are quarantined.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data import quarantine as q
from medmplm.data.quarantine import RowLedger

AGE_OVER_89 = 90.0
_OLDEST_SHOWN = 89.0
_DAYS_PER_YEAR = 365.2425
_SECONDS_PER_YEAR = _DAYS_PER_YEAR * 24 * 3600


def cap_ages(ages: np.ndarray) -> pa.Array:
    """Ages (float, NaN for unknown) with every age over 89 set to ``AGE_OVER_89``, as float32 with nulls."""
    ages = np.where(ages > _OLDEST_SHOWN, AGE_OVER_89, ages)
    return pa.array(ages.astype(np.float32), pa.float32(), mask=np.isnan(ages))


def ages_from_birth(admittime: pa.Array, birth: pa.Array) -> pa.Array:
    """Years between ``birth`` and ``admittime`` (timestamps; null birth gives a null age), capped at 89."""
    seconds = pc.cast(pc.subtract(pc.cast(admittime, pa.timestamp("s")), pc.cast(birth, pa.timestamp("s"))), pa.int64())
    years = pc.divide(pc.cast(seconds, pa.float64()), _SECONDS_PER_YEAR)
    return cap_ages(pc.fill_null(years, np.nan).to_numpy(zero_copy_only=False))


def ages_from_anchor(admittime: pa.Array, anchor_age: pa.Array, anchor_year: pa.Array) -> pa.Array:
    """MIMIC-IV ages: anchor age plus the years from the anchor year to the admission's year, capped at 89."""
    years = pc.add(
        pc.cast(anchor_age, pa.float64()), pc.cast(pc.subtract(pc.year(admittime), anchor_year), pa.float64())
    )
    ages = pc.fill_null(years, np.nan).to_numpy(zero_copy_only=False)
    hidden = pc.fill_null(pc.greater(anchor_age, _OLDEST_SHOWN), False).to_numpy(zero_copy_only=False)
    return cap_ages(np.where(hidden, AGE_OVER_89, ages))


def unique_patients(rows: pa.Table, table_name: str, ledger: RowLedger, subject: pa.Array) -> pa.Table:
    """``rows`` (with the parsed ``subject`` id appended as ``__subject_id``) less those whose SUBJECT_ID is on more
    than one row (exact duplicates must be dropped before): those are quarantined as conflicting."""
    rows = rows.append_column("__subject_id", subject)
    counts = rows.group_by("__subject_id", use_threads=False).aggregate([("__subject_id", "count")])
    repeated = counts.filter(pc.greater(counts["__subject_id_count"], 1))["__subject_id"]
    conflicting = pc.is_in(rows["__subject_id"], value_set=repeated.combine_chunks())
    rows = ledger.reject(table_name, rows, conflicting, q.CONFLICTING_SUBJECT_ID, quarantine=True)
    return ledger.reject(table_name, rows, pc.is_null(rows["__subject_id"]), q.INVALID_SUBJECT_ID, quarantine=True)


def per_admission(admission_subjects: pa.Array, patient_subjects: pa.Array, values: pa.Array) -> pa.Array:
    """``values`` (one per patient) looked up for each admission's subject; null where the patient is missing."""
    position = pc.index_in(admission_subjects, value_set=patient_subjects)
    return pc.take(values, position)


def gender_values(column: pa.Array) -> pa.Array:
    """Genders trimmed and upper-cased; empty ones null."""
    text = pc.utf8_upper(pc.utf8_trim_whitespace(column))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
