"""Build visit records (``VISIT_SCHEMA``) from the raw string rows of a group of patients: MIMIC-III here, and the
table-level steps MIMIC-IV shares (``medmplm.data.sources.mimic4``).

Everything here is plain pyarrow compute on one bucket of patients at a time (a few thousand
admissions); ``medmplm.data.pipeline`` runs it over buckets with Ray. Rows that do not parse go
to the :class:`~medmplm.data.quarantine.RowLedger`; nothing is dropped without being counted.

Per-admission list ordering:

* diagnoses and procedures: SEQ_NUM (null last), then ROW_ID; each code prefixed with its system
  (``ICD9CM:4019``; ``medmplm.ontology``), the system chosen by ICD_VERSION where the table has one (MIMIC-IV),
  and its shape checked for that system;
* medications: order of first prescription (STARTDATE, null last, then ROW_ID), unique;
* labs: CHARTTIME, then ITEMID, then ROW_ID; ``hours_since_admit`` may be negative or exceed the stay;
* notes: CHARTDATE, CHARTTIME (null last), ROW_ID; texts joined with a blank line.

Exact duplicate rows are rows equal in every input column but ROW_ID (MIMIC-IV's LABEVENT_ID for labs); the
lowest one is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.data import demographics
from medmplm.data import quarantine as q
from medmplm.data.labels import NON_ELECTIVE_TYPES, readmission_labels
from medmplm.data.quarantine import RowLedger
from medmplm.data.schema import LAB_EVENT_TYPE, VISIT_SCHEMA
from medmplm.data.tables import (
    ADMISSIONS,
    DIAGNOSES_ICD,
    LABEVENTS,
    NOTEEVENTS,
    PATIENTS,
    PRESCRIPTIONS,
    PROCEDURES_ICD,
    REQUIRED_COLUMNS,
    ROW_ID,
)
from medmplm.ontology import (
    DIAGNOSIS_SYSTEMS,
    ICD9CM,
    ICD9PROC,
    ICD10CM,
    ICD10PCS,
    PROCEDURE_SYSTEMS,
    SYSTEM_PATTERNS,
    SYSTEM_SEPARATOR,
)

MEDICATION_VOCABS = ("atc3", "ndc", "drug")
NOTE_SEPARATOR = "\n\n"
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
INVALID_CODE_REASONS = {
    ICD9CM: q.INVALID_ICD9_CODE,
    ICD9PROC: q.INVALID_ICD9_CODE,
    ICD10CM: q.INVALID_ICD10CM_CODE,
    ICD10PCS: q.INVALID_ICD10PCS_CODE,
}
# Counted in the ledger (kind, table, key) beside quarantined and dropped rows; summed into the manifest.
GEM_COUNT = "icd10_to_icd9"

_INT_PATTERN = r"^[+-]?[0-9]{1,18}$"
_FLOAT_PATTERN = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
# Medication codes end up in tab-separated vocabulary and '|'-separated ontology files.
_MEDICATION_CODE_FORBIDDEN = r"[\t\r\n|]"

# Working columns added next to the raw string columns; never part of quarantine output.
_SUBJECT = "__subject_id"
_HADM = "__hadm_id"
ADM_INDEX = "__adm_index"
_ROW = "__row_id"
_ORDER = "__order"


@dataclass(frozen=True)
class VisitOptions:
    """What to keep when building visits.

    Attributes:
        note_categories: NOTEEVENTS categories (MIMIC-IV: note files) to keep, compared trimmed and
            case-insensitively.
        medication_vocab: ``"atc3"`` (NDC -> RXCUI -> ATC-3), ``"ndc"`` or ``"drug"`` (the DRUG column).
        readmission_exclude_discharge: DISCHARGE_LOCATION values (trimmed, case-insensitive) whose admissions get
            null readmission labels (``medmplm.data.labels``); empty: none.
    """

    note_categories: tuple[str, ...] = ("Discharge summary",)
    medication_vocab: str = "atc3"
    readmission_exclude_discharge: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.medication_vocab not in MEDICATION_VOCABS:
            raise ValueError(f"medication_vocab must be one of {MEDICATION_VOCABS}, got {self.medication_vocab!r}")

    @property
    def note_categories_normalized(self) -> pa.Array:
        return pa.array(sorted({c.strip().lower() for c in self.note_categories}), pa.string())

    def excluded_discharge(self, discharge_location: pa.Array) -> pa.Array | None:
        """Which admissions the discharge-location filter leaves without readmission labels (None: no filter)."""
        if not self.readmission_exclude_discharge:
            return None
        excluded = pa.array(sorted({c.strip().upper() for c in self.readmission_exclude_discharge}), pa.string())
        return pc.is_in(pc.utf8_upper(_trim(discharge_location)), value_set=excluded)


# --- typed parsing of string columns -------------------------------------------------------------


def _trim(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(column)


def parse_int(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Parse integer strings. Returns ``(values, invalid)``: invalid = non-null but not an integer."""
    text = _trim(column)
    ok = pc.match_substring_regex(text, _INT_PATTERN)
    values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.int64())
    return values, pc.and_kleene(pc.is_valid(text), pc.invert(pc.fill_null(ok, False)))


def parse_float(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Parse decimal strings. Returns ``(values, invalid)``: invalid = non-null but not a number."""
    text = _trim(column)
    ok = pc.match_substring_regex(text, _FLOAT_PATTERN)
    values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())
    return values, pc.and_kleene(pc.is_valid(text), pc.invert(pc.fill_null(ok, False)))


def parse_timestamp(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Parse MIMIC timestamps (``2101-10-20 19:08:00`` or a bare date) to ``timestamp[s]``.

    Returns ``(values, invalid)``: invalid = non-null but in neither format.
    """
    text = _trim(column)
    parsed = [pc.strptime(text, format=fmt, unit="s", error_is_null=True) for fmt in TIMESTAMP_FORMATS]
    values = pc.coalesce(*parsed)
    return values, pc.and_kleene(pc.is_valid(text), pc.is_null(values))


def _append(table: pa.Table, name: str, values) -> pa.Table:
    return table.append_column(name, values)


# --- row hygiene ---------------------------------------------------------------------------------


def drop_exact_duplicates(
    rows: pa.Table,
    table_name: str,
    raw_columns: list[str],
    ledger: RowLedger,
    narrow_columns: tuple[str, ...],
    row_id: str = ROW_ID,
) -> pa.Table:
    """Drop rows equal in every raw column but ``row_id``, keeping the lowest ``row_id`` (counted as dropped).

    Rows can only be duplicates if they agree on ``narrow_columns`` (the few columns prepare
    reads), so the full-width comparison runs only on rows that repeat on those: grouping on all
    of PRESCRIPTIONS' columns was most of the cost of building a bucket.
    """
    if rows.num_rows == 0:
        return rows
    key_columns = [c for c in raw_columns if c != row_id]
    if row_id in raw_columns:
        row_ids, _ = parse_int(rows[row_id])
        rows = rows.take(pc.sort_indices(pa.table({_ROW: row_ids}), sort_keys=[(_ROW, "ascending")]))
    order = pa.array(np.arange(rows.num_rows))
    narrow = [c for c in narrow_columns if c in key_columns]
    candidates = np.arange(rows.num_rows)
    if len(narrow) < len(key_columns):
        groups = rows.select(narrow).append_column(_ORDER, order).group_by(narrow, use_threads=False)
        members = groups.aggregate([(_ORDER, "list")])[f"{_ORDER}_list"]
        repeated = pc.filter(members, pc.greater(pc.list_value_length(members), 1))
        candidates = np.sort(pc.list_flatten(repeated).to_numpy(zero_copy_only=False))
        if len(candidates) == 0:
            return rows
    numbered = rows.take(candidates).select(key_columns).append_column(_ORDER, pa.array(candidates))
    first = numbered.group_by(key_columns, use_threads=False).aggregate([(_ORDER, "min")])[f"{_ORDER}_min"]
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[candidates] = False
    keep[first.to_numpy()] = True
    return ledger.reject(table_name, rows, pa.array(~keep), q.DUPLICATE_ROW, quarantine=False)


def with_row_id(rows: pa.Table, row_id: str = ROW_ID) -> pa.Table:
    if row_id in rows.column_names:
        values, _ = parse_int(rows[row_id])
    else:
        values = pa.nulls(rows.num_rows, pa.int64())
    return _append(rows, _ROW, values)


def parse_hadm(rows: pa.Table, table_name: str, ledger: RowLedger, *, null_is_dropped: bool) -> pa.Table:
    """Parse SUBJECT_ID and HADM_ID; quarantine bad HADM_IDs; null HADM_IDs quarantined or dropped."""
    subject, _ = parse_int(rows["SUBJECT_ID"])
    hadm, hadm_invalid = parse_int(rows["HADM_ID"])
    rows = _append(_append(rows, _SUBJECT, subject), _HADM, hadm)
    rows = ledger.reject(table_name, rows, hadm_invalid, q.INVALID_HADM_ID, quarantine=True)
    return ledger.reject(
        table_name,
        rows,
        pc.is_null(rows[_HADM]),
        q.NO_HADM_ID if null_is_dropped else q.INVALID_HADM_ID,
        quarantine=not null_is_dropped,
    )


def attach_admissions(rows: pa.Table, table_name: str, admissions: pa.Table, ledger: RowLedger) -> pa.Table:
    """Add each row's admission position; quarantine rows whose (SUBJECT_ID, HADM_ID) is not a kept admission."""
    index = pc.index_in(rows[_HADM], value_set=admissions["hadm_id"])
    subject_of_admission = pc.take(admissions["subject_id"], pc.fill_null(index, 0)) if admissions.num_rows else None
    matched = pc.is_valid(index)
    if subject_of_admission is not None:
        matched = pc.and_kleene(matched, pc.equal(subject_of_admission, rows[_SUBJECT]))
    rows = _append(rows, ADM_INDEX, pc.cast(index, pa.int64()))
    return ledger.reject(
        table_name, rows, pc.invert(pc.fill_null(matched, False)), q.UNKNOWN_ADMISSION, quarantine=True
    )


def list_column(adm_index: pa.ChunkedArray | pa.Array, values: pa.Array, num_admissions: int) -> pa.ListArray:
    """Lists per admission from child rows already sorted by admission position."""
    # Built from offsets rather than a hash_list aggregation: that would drop admissions without
    # rows and does not promise the sorted order of the values.
    counts = np.bincount(np.asarray(adm_index, dtype=np.int64), minlength=num_admissions)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def combined(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# --- tables --------------------------------------------------------------------------------------


def clean_admissions(
    rows: pa.Table, raw_columns: list[str], conflicting_hadm_ids: pa.Array, ledger: RowLedger
) -> pa.Table:
    """Validated admissions sorted by (subject_id, admittime, hadm_id), one row per HADM_ID.

    Quarantines bad ids and times, DISCHTIME before ADMITTIME, and HADM_IDs that appear in more
    than one (non-duplicate) row or under more than one SUBJECT_ID (``conflicting_hadm_ids``).
    """
    rows = drop_exact_duplicates(rows, ADMISSIONS, raw_columns, ledger, REQUIRED_COLUMNS[ADMISSIONS])
    rows = with_row_id(rows)
    rows = parse_hadm(rows, ADMISSIONS, ledger, null_is_dropped=False)
    for column, reason, required in (
        ("ADMITTIME", q.INVALID_ADMITTIME, True),
        ("DISCHTIME", q.INVALID_DISCHTIME, True),
        ("DEATHTIME", q.INVALID_DEATHTIME, False),
    ):
        values, invalid = parse_timestamp(rows[column])
        rows = _append(rows, column.lower(), values)
        bad = pc.or_kleene(invalid, pc.is_null(values)) if required else invalid
        rows = ledger.reject(ADMISSIONS, rows, bad, reason, quarantine=True)
    flag = _trim(rows["HOSPITAL_EXPIRE_FLAG"])
    rows = ledger.reject(
        ADMISSIONS,
        rows,
        pc.invert(pc.fill_null(pc.is_in(flag, pa.array(["0", "1"])), False)),
        q.INVALID_HOSPITAL_EXPIRE_FLAG,
        quarantine=True,
    )
    rows = ledger.reject(
        ADMISSIONS, rows, pc.less(rows["dischtime"], rows["admittime"]), q.DISCHTIME_BEFORE_ADMITTIME, quarantine=True
    )
    repeated = rows.group_by(_HADM, use_threads=False).aggregate([(_HADM, "count")])
    repeated = combined(repeated.filter(pc.greater(repeated[f"{_HADM}_count"], 1))[_HADM])
    conflicting = pc.or_kleene(
        pc.is_in(rows[_HADM], value_set=repeated), pc.is_in(rows[_HADM], value_set=conflicting_hadm_ids)
    )
    rows = ledger.reject(ADMISSIONS, rows, conflicting, q.CONFLICTING_HADM_ID, quarantine=True)
    rows = rows.sort_by([(_SUBJECT, "ascending"), ("admittime", "ascending"), (_HADM, "ascending")])
    discharge_location = (
        rows["DISCHARGE_LOCATION"]
        if "DISCHARGE_LOCATION" in rows.column_names
        else pa.nulls(rows.num_rows, pa.string())
    )
    admissions = pa.table(
        {
            "subject_id": rows[_SUBJECT],
            "hadm_id": rows[_HADM],
            "admittime": rows["admittime"],
            "dischtime": rows["dischtime"],
            "deathtime": rows["deathtime"],
            "admission_type": rows["ADMISSION_TYPE"],
            "hospital_death": pc.equal(_trim(rows["HOSPITAL_EXPIRE_FLAG"]), "1"),
            "discharge_location": discharge_location,
        }
    )
    return pa.table({name: combined(column) for name, column in zip(admissions.column_names, admissions.columns)})


def prefixed_codes(system: pa.ChunkedArray | pa.Array | str, code: pa.ChunkedArray | pa.Array) -> pa.Array:
    return combined(pc.binary_join_element_wise(system, code, SYSTEM_SEPARATOR))


def gem_mapped(
    adm_index: pa.Array, system: pa.Array, code: pa.Array, gem: pa.Table, table_name: str, ledger: RowLedger
) -> tuple[pa.Array, pa.Array]:
    """ICD-10-CM rows replaced by their GEM targets (``medmplm.data.icd_gem``); ``(adm_index, prefixed codes)`` with
    each admission's codes unique, first occurrence kept."""
    is_icd10 = pc.equal(system, ICD10CM)
    targets = pc.take(gem["icd9cm"], pc.index_in(code, value_set=combined(gem["icd10cm"])))
    mapped = pc.and_(is_icd10, pc.fill_null(pc.greater(pc.list_value_length(targets), 0), False))
    mapped_rows = pc.sum(mapped).as_py() or 0
    ledger.counts[(GEM_COUNT, table_name, "mapped_rows")] += mapped_rows
    ledger.counts[(GEM_COUNT, table_name, "unmapped_rows")] += (pc.sum(is_icd10).as_py() or 0) - mapped_rows
    mapped_np = mapped.to_numpy(zero_copy_only=False)
    lengths = np.where(mapped_np, pc.fill_null(pc.list_value_length(targets), 0).to_numpy(zero_copy_only=False), 1)
    row_of_value = np.repeat(np.arange(len(code)), lengths)
    own = prefixed_codes(system, code).to_numpy(zero_copy_only=False)
    target_values = np.array(
        [f"{ICD9CM}{SYSTEM_SEPARATOR}{t}" for t in pc.list_flatten(pc.filter(targets, mapped)).to_pylist()],
        dtype=object,
    )
    values = own[row_of_value]
    values[np.repeat(mapped_np, lengths)] = target_values
    adm = np.asarray(adm_index, dtype=np.int64)[row_of_value]
    # Two ICD-10-CM codes can map to the same ICD-9-CM code: keep each admission's first.
    table = pa.table({"adm": adm, "code": pa.array(values, pa.string()), "order": np.arange(len(values))})
    first = table.group_by(["adm", "code"], use_threads=False).aggregate([("order", "min")])
    keep = np.sort(first["order_min"].to_numpy())
    return pa.array(adm[keep]), pa.array(values[keep], pa.string())


def icd_lists(
    rows: pa.Table,
    table_name: str,
    raw_columns: list[str],
    admissions: pa.Table,
    ledger: RowLedger,
    *,
    systems: dict[int, str],
    code_column: str = "ICD9_CODE",
    version_column: str | None = None,
    narrow_columns: tuple[str, ...] = (),
    gem: pa.Table | None = None,
) -> pa.ListArray:
    """Per-admission system-prefixed ICD code lists (DIAGNOSES_ICD or PROCEDURES_ICD), in SEQ_NUM order.

    Args:
        rows: the table's raw string rows.
        table_name: for the ledger.
        raw_columns: the table's input columns.
        admissions: kept admissions (``clean_admissions``).
        ledger: collects quarantined rows and counts.
        systems: ICD version -> code system (``DIAGNOSIS_SYSTEMS`` or ``PROCEDURE_SYSTEMS``).
        code_column: the code column (MIMIC-III ``ICD9_CODE``, MIMIC-IV ``ICD_CODE``).
        version_column: the column giving each code's ICD version (MIMIC-IV ``ICD_VERSION``); None: every code is
            version 9.
        narrow_columns: the columns duplicates are first looked for on.
        gem: ICD-10-CM -> ICD-9-CM targets (``medmplm.data.icd_gem.load_gem``) to map diagnoses with; None: no map.
    """
    rows = drop_exact_duplicates(rows, table_name, raw_columns, ledger, narrow_columns)
    rows = with_row_id(rows)
    rows = parse_hadm(rows, table_name, ledger, null_is_dropped=False)
    rows = _append(rows, "__code", _trim(rows[code_column]))
    missing_reason = q.MISSING_ICD9_CODE if code_column == "ICD9_CODE" else q.MISSING_ICD_CODE
    rows = ledger.reject(table_name, rows, pc.is_null(rows["__code"]), missing_reason, quarantine=True)
    if version_column is None:
        rows = _append(rows, "__system", pa.array([systems[9]] * rows.num_rows, pa.string()))
    else:
        version = _trim(rows[version_column])
        rows = ledger.reject(table_name, rows, pc.is_null(version), q.MISSING_ICD_VERSION, quarantine=True)
        version = _trim(rows[version_column])
        known = pa.array([str(v) for v in systems], pa.string())
        rows = ledger.reject(
            table_name, rows, pc.invert(pc.is_in(version, value_set=known)), q.INVALID_ICD_VERSION, quarantine=True
        )
        names = pa.array(list(systems.values()), pa.string())
        rows = _append(rows, "__system", pc.take(names, pc.index_in(_trim(rows[version_column]), value_set=known)))
    for system in systems.values():
        of_system = pc.equal(rows["__system"], system)
        bad_shape = pc.and_(of_system, pc.invert(pc.match_substring_regex(rows["__code"], SYSTEM_PATTERNS[system])))
        rows = ledger.reject(table_name, rows, bad_shape, INVALID_CODE_REASONS[system], quarantine=True)
    seq_num, seq_invalid = parse_int(rows["SEQ_NUM"])
    rows = _append(rows, "__seq_num", seq_num)
    rows = ledger.reject(table_name, rows, seq_invalid, q.INVALID_SEQ_NUM, quarantine=True)
    rows = attach_admissions(rows, table_name, admissions, ledger)
    rows = rows.sort_by(
        [(ADM_INDEX, "ascending"), ("__seq_num", "ascending"), (_ROW, "ascending"), ("__code", "ascending")]
    )
    adm_index, system, code = (combined(rows[c]) for c in (ADM_INDEX, "__system", "__code"))
    if gem is not None:
        adm_index, codes = gem_mapped(adm_index, system, code, gem, table_name, ledger)
    else:
        codes = prefixed_codes(system, code)
    return list_column(adm_index, codes, admissions.num_rows)


def medication_lists(
    rows: pa.Table,
    raw_columns: list[str],
    admissions: pa.Table,
    options: VisitOptions,
    ndc_atc3: pa.Table | None,
    ledger: RowLedger,
    start_column: str = "STARTDATE",
) -> tuple[pa.ListArray, pa.Table]:
    """Per-admission medication code lists, unique, in order of first prescription (``start_column``: MIMIC-III's
    STARTDATE, MIMIC-IV's STARTTIME).

    Returns:
        ``(lists, unmapped)``: ``unmapped`` counts prescription rows per NDC that had no ATC-3
        mapping (empty when the vocabulary is not ``atc3``).
    """
    rows = drop_exact_duplicates(
        rows, PRESCRIPTIONS, raw_columns, ledger, ("SUBJECT_ID", "HADM_ID", start_column, "NDC", "DRUG")
    )
    rows = with_row_id(rows)
    rows = parse_hadm(rows, PRESCRIPTIONS, ledger, null_is_dropped=False)
    start, start_invalid = parse_timestamp(rows[start_column])
    rows = _append(rows, "__start", start)
    rows = ledger.reject(PRESCRIPTIONS, rows, start_invalid, q.INVALID_STARTDATE, quarantine=True)
    rows = attach_admissions(rows, PRESCRIPTIONS, admissions, ledger)

    unmapped = pa.table({"ndc": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    if options.medication_vocab == "drug":
        rows = _append(rows, "__code", _trim(rows["DRUG"]))
        rows = ledger.reject(PRESCRIPTIONS, rows, pc.is_null(rows["__code"]), q.DRUG_MISSING, quarantine=False)
    else:
        ndc = _trim(rows["NDC"])
        rows = _append(rows, "__ndc", ndc)
        rows = ledger.reject(
            PRESCRIPTIONS, rows, pc.or_kleene(pc.is_null(ndc), pc.equal(ndc, "0")), q.NDC_MISSING, quarantine=False
        )
        if options.medication_vocab == "ndc":
            rows = _append(rows, "__code", rows["__ndc"])
        else:
            position = pc.index_in(rows["__ndc"], value_set=combined(ndc_atc3["ndc"]))
            rows = _append(rows, "__code", pc.take(combined(ndc_atc3["atc3"]), position))
            missing = pc.is_null(rows["__code"])
            counts = rows.filter(missing).group_by("__ndc", use_threads=False).aggregate([("__ndc", "count")])
            unmapped = pa.table({"ndc": counts["__ndc"], "rows": counts["__ndc_count"]})
            rows = ledger.reject(PRESCRIPTIONS, rows, missing, q.NDC_UNMAPPED, quarantine=False)
    rows = ledger.reject(
        PRESCRIPTIONS,
        rows,
        pc.match_substring_regex(rows["__code"], _MEDICATION_CODE_FORBIDDEN),
        q.INVALID_MEDICATION_CODE,
        quarantine=True,
    )
    rows = rows.sort_by(
        [(ADM_INDEX, "ascending"), ("__start", "ascending"), (_ROW, "ascending"), ("__code", "ascending")]
    )
    numbered = rows.select([ADM_INDEX, "__code"]).append_column(_ORDER, pa.array(np.arange(rows.num_rows)))
    first = numbered.group_by([ADM_INDEX, "__code"], use_threads=False).aggregate([(_ORDER, "min")])
    first = first.sort_by([(ADM_INDEX, "ascending"), (f"{_ORDER}_min", "ascending")])
    lists = list_column(first[ADM_INDEX], combined(first["__code"]), admissions.num_rows)
    return lists, unmapped


def lab_lists(
    rows: pa.Table,
    raw_columns: list[str],
    admissions: pa.Table,
    ledger: RowLedger,
    row_id: str = ROW_ID,
    known_itemids: pa.Array | None = None,
) -> pa.ListArray:
    """Per-admission lab events (LAB_EVENT_TYPE structs) in CHARTTIME order.

    Args:
        row_id: the column that only numbers rows (MIMIC-III ROW_ID, MIMIC-IV LABEVENT_ID).
        known_itemids: the ITEMIDs (int64) of D_LABITEMS; events of other items are quarantined. None: not checked.
    """
    rows = drop_exact_duplicates(rows, LABEVENTS, raw_columns, ledger, REQUIRED_COLUMNS[LABEVENTS], row_id)
    rows = with_row_id(rows, row_id)
    rows = parse_hadm(rows, LABEVENTS, ledger, null_is_dropped=True)
    itemid, itemid_invalid = parse_int(rows["ITEMID"])
    rows = _append(rows, "__itemid", itemid)
    rows = ledger.reject(
        LABEVENTS, rows, pc.or_kleene(itemid_invalid, pc.is_null(itemid)), q.INVALID_ITEMID, quarantine=True
    )
    if known_itemids is not None:
        unknown = pc.invert(pc.is_in(rows["__itemid"], value_set=known_itemids))
        rows = ledger.reject(LABEVENTS, rows, unknown, q.UNKNOWN_ITEMID, quarantine=True)
    charttime, charttime_invalid = parse_timestamp(rows["CHARTTIME"])
    rows = _append(rows, "__charttime", charttime)
    rows = ledger.reject(
        LABEVENTS, rows, pc.or_kleene(charttime_invalid, pc.is_null(charttime)), q.INVALID_CHARTTIME, quarantine=True
    )
    valuenum, valuenum_invalid = parse_float(rows["VALUENUM"])
    rows = _append(rows, "__valuenum", valuenum)
    rows = ledger.reject(LABEVENTS, rows, valuenum_invalid, q.INVALID_VALUENUM, quarantine=True)
    rows = attach_admissions(rows, LABEVENTS, admissions, ledger)
    rows = rows.sort_by(
        [
            (ADM_INDEX, "ascending"),
            ("__charttime", "ascending"),
            ("__itemid", "ascending"),
            (_ROW, "ascending"),
            ("VALUE", "ascending"),
            ("__valuenum", "ascending"),
            ("VALUEUOM", "ascending"),
            ("FLAG", "ascending"),
        ]
    )
    admittime = pc.take(admissions["admittime"], rows[ADM_INDEX])
    seconds = pc.cast(pc.subtract(rows["__charttime"], admittime), pa.int64())
    hours = pc.cast(pc.divide(pc.cast(seconds, pa.float64()), 3600.0), pa.float32())
    events = pa.StructArray.from_arrays(
        [
            combined(pc.cast(rows["__itemid"], pa.string())),
            combined(rows["VALUE"]),
            combined(rows["__valuenum"]),
            combined(rows["VALUEUOM"]),
            combined(rows["FLAG"]),
            combined(hours),
        ],
        fields=list(LAB_EVENT_TYPE),
    )
    return list_column(rows[ADM_INDEX], events, admissions.num_rows)


def note_texts(
    rows: pa.Table, raw_columns: list[str], admissions: pa.Table, options: VisitOptions, ledger: RowLedger
) -> tuple[pa.Array, pa.Array]:
    """Per-admission note text (selected categories, joined in CHARTDATE order) and note counts.

    Returns:
        ``(note_text, num_notes)``: string (null where no note) and int32 arrays, one per admission.
    """
    category = pc.utf8_lower(_trim(rows["CATEGORY"]))
    selected = pc.fill_null(pc.is_in(category, value_set=options.note_categories_normalized), False)
    rows = ledger.reject(NOTEEVENTS, rows, pc.invert(selected), q.NOTE_CATEGORY, quarantine=False)
    rows = drop_exact_duplicates(rows, NOTEEVENTS, raw_columns, ledger, REQUIRED_COLUMNS[NOTEEVENTS])
    iserror = _trim(rows["ISERROR"])
    rows = ledger.reject(NOTEEVENTS, rows, pc.equal(iserror, "1"), q.NOTE_ISERROR, quarantine=False)
    rows = ledger.reject(
        NOTEEVENTS,
        rows,
        pc.invert(pc.fill_null(pc.equal(_trim(rows["ISERROR"]), "0"), True)),
        q.INVALID_ISERROR,
        quarantine=True,
    )
    rows = with_row_id(rows)
    rows = parse_hadm(rows, NOTEEVENTS, ledger, null_is_dropped=True)
    chartdate, chartdate_invalid = parse_timestamp(rows["CHARTDATE"])
    rows = _append(rows, "__chartdate", chartdate)
    rows = ledger.reject(
        NOTEEVENTS, rows, pc.or_kleene(chartdate_invalid, pc.is_null(chartdate)), q.INVALID_CHARTDATE, quarantine=True
    )
    charttime, charttime_invalid = parse_timestamp(rows["CHARTTIME"])
    rows = _append(rows, "__charttime", charttime)
    rows = ledger.reject(NOTEEVENTS, rows, charttime_invalid, q.INVALID_CHARTTIME, quarantine=True)
    rows = ledger.reject(NOTEEVENTS, rows, pc.is_null(rows["TEXT"]), q.MISSING_TEXT, quarantine=True)
    rows = attach_admissions(rows, NOTEEVENTS, admissions, ledger)
    rows = rows.sort_by(
        [
            (ADM_INDEX, "ascending"),
            ("__chartdate", "ascending"),
            ("__charttime", "ascending"),
            (_ROW, "ascending"),
            ("TEXT", "ascending"),
        ]
    )
    notes = list_column(rows[ADM_INDEX], combined(rows["TEXT"]), admissions.num_rows)
    num_notes = pc.cast(pc.list_value_length(notes), pa.int32())
    text = pc.binary_join(notes, NOTE_SEPARATOR)
    return pc.if_else(pc.greater(num_notes, 0), text, pa.scalar(None, pa.string())), num_notes


def _visit_positions(subject_id: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(visit_index, num_visits)`` for admissions sorted by subject."""
    subjects = subject_id.to_numpy(zero_copy_only=False)
    _, first, counts = np.unique(subjects, return_index=True, return_counts=True)
    starts = np.repeat(first, counts)
    return (np.arange(len(subjects)) - starts).astype(np.int32), np.repeat(counts, counts).astype(np.int32)


def mimic3_demographics(rows: pa.Table, raw_columns: list[str], admissions: pa.Table, ledger: RowLedger):
    """``(gender, age)`` of each admission from MIMIC-III's PATIENTS (GENDER, DOB; see ``medmplm.data.demographics``)."""
    rows = drop_exact_duplicates(rows, PATIENTS, raw_columns, ledger, REQUIRED_COLUMNS[PATIENTS])
    subject, _ = parse_int(rows["SUBJECT_ID"])
    rows = demographics.unique_patients(rows, PATIENTS, ledger, subject)
    dob, dob_invalid = parse_timestamp(rows["DOB"])
    rows = _append(rows, "__dob", dob)
    rows = ledger.reject(PATIENTS, rows, dob_invalid, q.INVALID_DOB, quarantine=True)
    subjects = combined(rows["__subject_id"])
    gender = demographics.per_admission(
        admissions["subject_id"], subjects, combined(demographics.gender_values(rows["GENDER"]))
    )
    dob = demographics.per_admission(admissions["subject_id"], subjects, combined(rows["__dob"]))
    return gender, demographics.ages_from_birth(admissions["admittime"], dob)


def visit_table(
    admissions: pa.Table,
    *,
    gender: pa.Array,
    age: pa.Array,
    diagnoses: pa.Array,
    procedures: pa.Array,
    medications: pa.Array,
    labs: pa.Array,
    note_text: pa.Array,
    num_notes: pa.Array,
    options: VisitOptions,
    non_elective_types: tuple[str, ...] = NON_ELECTIVE_TYPES,
) -> pa.Table:
    """The ``VISIT_SCHEMA`` table of cleaned ``admissions`` (``clean_admissions``' columns) and their per-admission
    columns, with visit positions and readmission labels."""
    readmission, readmission_nonelective = readmission_labels(
        admissions["subject_id"],
        admissions["admittime"],
        admissions["dischtime"],
        admissions["admission_type"],
        admissions["hospital_death"],
        non_elective_types=non_elective_types,
        excluded=options.excluded_discharge(admissions["discharge_location"]),
    )
    visit_index, num_visits = _visit_positions(admissions["subject_id"])
    columns = {
        "subject_id": admissions["subject_id"],
        "hadm_id": admissions["hadm_id"],
        "admittime": admissions["admittime"],
        "dischtime": admissions["dischtime"],
        "deathtime": admissions["deathtime"],
        "admission_type": admissions["admission_type"],
        "gender": gender,
        "age": age,
        "visit_index": pa.array(visit_index, pa.int32()),
        "num_visits": pa.array(num_visits, pa.int32()),
        "diagnoses": diagnoses,
        "procedures": procedures,
        "medications": medications,
        "labs": labs,
        "note_text": note_text,
        "num_notes": num_notes,
        "hospital_death": admissions["hospital_death"],
        "readmission_30d": readmission,
        "readmission_30d_nonelective": readmission_nonelective,
    }
    return pa.Table.from_pydict(columns, schema=VISIT_SCHEMA)


def build_visits(
    tables: dict[str, pa.Table],
    raw_columns: dict[str, list[str]],
    options: VisitOptions,
    ndc_atc3: pa.Table | None,
    conflicting_hadm_ids: pa.Array,
    ledger: RowLedger,
) -> tuple[pa.Table, pa.Table]:
    """MIMIC-III visit records for a group of patients holding all rows of those patients.

    Args:
        tables: raw string rows per MIMIC-III table (canonical upper-case columns).
        raw_columns: per table, the input columns (those copied to quarantine).
        options: what to keep.
        ndc_atc3: NDC -> ATC-3 table (``ndc``, ``atc3``); required when ``options.medication_vocab == "atc3"``.
        conflicting_hadm_ids: HADM_IDs (int64) known to occur under more than one SUBJECT_ID.
        ledger: collects quarantined rows and counts.

    Returns:
        ``(visits, unmapped_ndc)``: visits in ``VISIT_SCHEMA``, sorted by (subject_id, admittime,
        hadm_id); unmapped NDCs with their prescription row counts.
    """
    if options.medication_vocab == "atc3" and ndc_atc3 is None:
        raise ValueError("medication_vocab 'atc3' needs the NDC -> ATC-3 table")
    admissions = clean_admissions(tables[ADMISSIONS], raw_columns[ADMISSIONS], conflicting_hadm_ids, ledger)
    icd = {"code_column": "ICD9_CODE", "version_column": None}
    diagnoses = icd_lists(
        tables[DIAGNOSES_ICD],
        DIAGNOSES_ICD,
        raw_columns[DIAGNOSES_ICD],
        admissions,
        ledger,
        systems=DIAGNOSIS_SYSTEMS,
        narrow_columns=REQUIRED_COLUMNS[DIAGNOSES_ICD],
        **icd,
    )
    procedures = icd_lists(
        tables[PROCEDURES_ICD],
        PROCEDURES_ICD,
        raw_columns[PROCEDURES_ICD],
        admissions,
        ledger,
        systems=PROCEDURE_SYSTEMS,
        narrow_columns=REQUIRED_COLUMNS[PROCEDURES_ICD],
        **icd,
    )
    medications, unmapped = medication_lists(
        tables[PRESCRIPTIONS], raw_columns[PRESCRIPTIONS], admissions, options, ndc_atc3, ledger
    )
    labs = lab_lists(tables[LABEVENTS], raw_columns[LABEVENTS], admissions, ledger)
    note_text, num_notes = note_texts(tables[NOTEEVENTS], raw_columns[NOTEEVENTS], admissions, options, ledger)
    gender, age = mimic3_demographics(tables[PATIENTS], raw_columns[PATIENTS], admissions, ledger)
    visits = visit_table(
        admissions,
        gender=gender,
        age=age,
        diagnoses=diagnoses,
        procedures=procedures,
        medications=medications,
        labs=labs,
        note_text=note_text,
        num_notes=num_notes,
        options=options,
    )
    return visits, unmapped
