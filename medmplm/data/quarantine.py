"""Bookkeeping for rows prepare does not use: quarantined (bad input) and dropped (by a documented rule).

* Quarantined rows are malformed or inconsistent input: they are written to
  ``quarantine/<TABLE>.parquet`` (every input column as a string, plus ``reason``) and counted.
* Dropped rows are well-formed rows a documented rule leaves out (exact duplicates, note
  categories not asked for, ``ISERROR`` notes, events without an admission id, medications
  outside the chosen vocabulary; MEDS events outside every admission, without a time, or with a
  code no configured prefix takes): counted by reason, not copied.

Both counts land in the manifest, per table and reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

REASON_COLUMN = "reason"

# Quarantine reasons.
INVALID_SUBJECT_ID = "invalid_subject_id"
INVALID_HADM_ID = "invalid_hadm_id"
INVALID_ADMITTIME = "invalid_admittime"
INVALID_DISCHTIME = "invalid_dischtime"
INVALID_DEATHTIME = "invalid_deathtime"
INVALID_HOSPITAL_EXPIRE_FLAG = "invalid_hospital_expire_flag"
DISCHTIME_BEFORE_ADMITTIME = "dischtime_before_admittime"
CONFLICTING_HADM_ID = "conflicting_hadm_id"
UNKNOWN_ADMISSION = "unknown_admission"
MISSING_ICD9_CODE = "missing_icd9_code"
MISSING_ICD_CODE = "missing_icd_code"
INVALID_ICD9_CODE = "invalid_icd9_code"
INVALID_ICD10CM_CODE = "invalid_icd10cm_code"
INVALID_ICD10PCS_CODE = "invalid_icd10pcs_code"
MISSING_ICD_VERSION = "missing_icd_version"
INVALID_ICD_VERSION = "invalid_icd_version"
INVALID_SEQ_NUM = "invalid_seq_num"
INVALID_STARTDATE = "invalid_startdate"
INVALID_MEDICATION_CODE = "invalid_medication_code"
INVALID_ITEMID = "invalid_itemid"
INVALID_CHARTTIME = "invalid_charttime"
INVALID_VALUENUM = "invalid_valuenum"
INVALID_CHARTDATE = "invalid_chartdate"
INVALID_ISERROR = "invalid_iserror"
MISSING_TEXT = "missing_text"
UNKNOWN_ITEMID = "unknown_itemid"
CONFLICTING_SUBJECT_ID = "conflicting_subject_id"
INVALID_DOB = "invalid_dob"
INVALID_ANCHOR_AGE = "invalid_anchor_age"
INVALID_ANCHOR_YEAR = "invalid_anchor_year"
# MEDS events.
INVALID_CODE = "invalid_code"
ADMISSION_WITHOUT_DISCHARGE = "admission_without_discharge"
DISCHARGE_WITHOUT_ADMISSION = "discharge_without_admission"

# Drop reasons.
DUPLICATE_ROW = "duplicate_row"
NO_HADM_ID = "no_hadm_id"
NOTE_CATEGORY = "note_category_not_selected"
NOTE_ISERROR = "note_iserror"
NDC_MISSING = "ndc_missing_or_zero"
NDC_UNMAPPED = "ndc_unmapped"
DRUG_MISSING = "drug_missing"
NOT_IN_AN_ADMISSION = "not_in_an_admission"
NO_TIME = "no_time"
CODE_NOT_USED = "code_not_used"


def quarantine_schema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """Schema of ``quarantine/<TABLE>.parquet`` for a table with these (canonical) input columns."""
    return pa.schema([pa.field(name, pa.string()) for name in columns] + [pa.field(REASON_COLUMN, pa.string())])


@dataclass
class RowLedger:
    """Quarantined rows and drop/quarantine counts collected while building one unit of visits.

    Attributes:
        raw_columns: per table, the input columns (all strings) copied into quarantine rows.
        quarantined: per table, the quarantined rows gathered so far.
        counts: ``(kind, table, reason) -> rows`` with kind ``"quarantined"`` or ``"dropped"``.
    """

    raw_columns: dict[str, list[str]]
    quarantined: dict[str, list[pa.Table]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def reject(
        self, table_name: str, rows: pa.Table, mask: pa.ChunkedArray | pa.Array, reason: str, *, quarantine: bool
    ) -> pa.Table:
        """Take the rows where ``mask`` is true out of ``rows``, counting them (and quarantining them if asked).

        Null mask entries count as false. Returns the rows that remain.
        """
        mask = pc.fill_null(mask, False)
        rejected = pc.sum(mask).as_py() or 0
        if not rejected:
            return rows
        kind = "quarantined" if quarantine else "dropped"
        self.counts[(kind, table_name, reason)] += rejected
        if quarantine:
            bad = rows.filter(mask).select(self.raw_columns[table_name])
            bad = bad.append_column(REASON_COLUMN, pa.array([reason] * bad.num_rows, pa.string()))
            self.quarantined.setdefault(table_name, []).append(bad)
        return rows.filter(pc.invert(mask))

    def quarantined_table(self, table_name: str) -> pa.Table:
        """All rows quarantined for ``table_name`` (possibly none), in the order they were rejected."""
        schema = quarantine_schema(self.raw_columns[table_name])
        parts = self.quarantined.get(table_name, [])
        return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
