"""Co-occurrence counts of codes and note terms: the summary statistics the embeddings are learned from.

**Items.** The codes of the prepared directory's vocabularies (``vocab/<type>.tsv``; by default diagnoses, procedures
and medications, each code keyed by its type) and the terms of a :class:`~medmplm.embeddings.terms.TermList`. Codes of
the visits that the vocabularies lack (a split the vocabularies were not counted on) are counted and reported, not
used.

**Units.** Two items co-occur when they occur in one unit: a ``visit`` (one admission: its codes and the terms its note
mentions), a ``patient`` (all of a patient's admissions in the counted splits), or a time ``window``: a patient's
admissions binned into consecutive windows of ``window_days`` days from their first admission (admission times; bins do
not overlap, so every admission is in exactly one unit and counts from different units add up).

**Counts.** For every pair of items: the number of units holding both (code-code and code-term pairs; term-term pairs
are not counted); for every item: the number of units holding it. An item occurring twice in a unit counts once.

**Aggregation.** A Ray Data pipeline: visits -> their item ids (:class:`VisitItems`, the only stage that reads notes)
-> units (:func:`unit_items`; patients and windows grouped with ``groupby("subject_id").map_groups``) -> one sparse
count matrix (:class:`CooccurrenceAggregate`, a Ray Data ``AggregateFnV2``: a matrix per block, summed). Only that
matrix leaves the aggregation; it is written after small-cell suppression (:func:`release`): counts below ``min_count``
(default 11, as MIMIC's data use agreement asks of published counts) are withheld, items and pairs alike, and the
number withheld is reported. The same functions run without Ray on one Arrow table (:func:`count_table`).

**Several sites.** Count directories from several sites sum exactly (:func:`sum_counts`): a unit never spans sites, so
the pooled counts are the sum of the sites' counts. Suppression is applied per site, so a pair below the threshold at
every site is missing from the sum even when the pooled count would reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from ray.data.aggregate import AggregateFnV2

from medmplm.embeddings.terms import TermList, TermMatcher

UNITS = ("visit", "patient", "window")
# Code type -> the visit column holding its codes.
CODE_COLUMNS = {"diagnosis": "diagnoses", "procedure": "procedures", "medication": "medications"}
TERM = "term"
DEFAULT_MIN_COUNT = 11
DEFAULT_WINDOW_DAYS = 30
FORMAT = "medmplm.cooccurrence/1"
ITEMS_FILE = "items.tsv"
PAIRS_FILE = "pairs.parquet"
MANIFEST_FILE = "manifest.json"
ITEMS_HEADER = ("kind", "item", "count")
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class CountingOptions:
    """What counts as a co-occurrence and what is released.

    Attributes:
        unit: ``visit``, ``patient`` or ``window``.
        window_days: the length of a window (``unit=window``).
        min_count: the smallest count released; smaller ones are suppressed (1: none).
        code_types: the vocabularies whose codes are items.
    """

    unit: str = "patient"
    window_days: int = DEFAULT_WINDOW_DAYS
    min_count: int = DEFAULT_MIN_COUNT
    code_types: tuple[str, ...] = tuple(CODE_COLUMNS)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {list(UNITS)}, got {self.unit!r}")
        if self.window_days < 1:
            raise ValueError(f"window_days must be >= 1, got {self.window_days}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1 (1: no suppression), got {self.min_count}")
        unknown = sorted(set(self.code_types) - set(CODE_COLUMNS))
        if unknown or not self.code_types:
            raise ValueError(f"code_types must be some of {list(CODE_COLUMNS)}, got {list(self.code_types)}")


@dataclass(frozen=True)
class ItemIndex:
    """Every item's index: the codes of each type in vocabulary order, then the terms.

    Attributes:
        codes: code type -> its codes (the types in counting order).
        terms: the term keys.
    """

    codes: dict[str, tuple[str, ...]]
    terms: tuple[str, ...]

    @classmethod
    def from_prepared(cls, prepared_dir: str | os.PathLike, code_types: Sequence[str], terms: TermList) -> ItemIndex:
        """The codes of a prepared directory's ``vocab/<type>.tsv`` files, and ``terms``."""
        from medmplm.data.schema import VOCAB_DIR
        from medmplm.data.vocab_io import read_vocab

        vocab_dir = Path(prepared_dir) / VOCAB_DIR
        return cls({t: tuple(code for code, _ in read_vocab(vocab_dir / f"{t}.tsv")) for t in code_types}, terms.terms)

    @property
    def num_codes(self) -> int:
        return sum(len(codes) for codes in self.codes.values())

    def __len__(self) -> int:
        return self.num_codes + len(self.terms)

    def offset(self, code_type: str) -> int:
        """The index of the first code of ``code_type``."""
        offset = 0
        for name, codes in self.codes.items():
            if name == code_type:
                return offset
            offset += len(codes)
        raise KeyError(code_type)

    def kinds_and_items(self) -> tuple[list[str], list[str]]:
        """Each index's kind (a code type, or ``term``) and item, in index order."""
        kinds = [t for t, codes in self.codes.items() for _ in codes] + [TERM] * len(self.terms)
        return kinds, [c for codes in self.codes.values() for c in codes] + list(self.terms)


class VisitItems:
    """Ray Data stage: visit records -> each visit's items (sorted item ids), the note's text not passed on.

    Output columns: ``subject_id``, ``hadm_id``, ``admittime`` (seconds since the epoch), ``items`` (list<int32>),
    ``outside_vocabulary`` (codes of the visit that no vocabulary holds).
    """

    def __init__(self, index: ItemIndex) -> None:
        self.columns = {t: CODE_COLUMNS[t] for t in index.codes}
        self.codes = {t: pa.array(codes, pa.string()) for t, codes in index.codes.items()}
        self.offsets = {t: index.offset(t) for t in index.codes}
        self.matcher = TermMatcher(index.terms)
        self.term_offset = index.num_codes

    @property
    def input_columns(self) -> list[str]:
        return ["subject_id", "hadm_id", "admittime", *self.columns.values(), "note_text"]

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in self.input_columns if c not in batch.column_names]
        if missing:
            raise KeyError(f"visit batch lacks column(s) {missing}; expected the prepared visit columns")
        hadm_ids = np.asarray(batch["hadm_id"], dtype=np.int64)
        visits, items = [], []
        outside = np.zeros(batch.num_rows, dtype=np.int64)
        for code_type, column in self.columns.items():
            lists = batch[column].combine_chunks()
            flat = pc.list_flatten(lists)
            parents = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
            if flat.null_count:
                row = parents[np.asarray(pc.is_null(flat), dtype=bool)][0]
                raise ValueError(f"column {column!r}, hadm_id {hadm_ids[row]}: a null code; expected code strings")
            positions = pc.index_in(flat, value_set=self.codes[code_type])
            known = ~np.asarray(pc.is_null(positions), dtype=bool)
            outside += np.bincount(parents[~known], minlength=batch.num_rows)
            visits.append(parents[known])
            items.append(np.asarray(positions.filter(pa.array(known)), dtype=np.int64) + self.offsets[code_type])
        note_rows, terms = self.matcher(batch["note_text"])
        visits.append(note_rows)
        items.append(terms + self.term_offset)
        width = self.term_offset + self.matcher.num_terms
        keys = np.unique(np.concatenate(visits) * width + np.concatenate(items))
        return pa.table(
            {
                "subject_id": batch["subject_id"],
                "hadm_id": batch["hadm_id"],
                "admittime": seconds(batch["admittime"]),
                "items": grouped_lists(keys // width, keys % width, batch.num_rows),
                "outside_vocabulary": outside,
            }
        )


def seconds(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps (any unit) as int64 seconds since the epoch; nulls stay null."""
    return pc.cast(pc.cast(times, pa.timestamp("s"), safe=False), pa.int64())


def grouped_lists(groups: np.ndarray, values: np.ndarray, num_groups: int) -> pa.ListArray:
    """A list<int32> of ``num_groups`` rows: row ``g`` holds the ``values`` whose ``groups`` is ``g`` (``groups``
    sorted)."""
    offsets = np.searchsorted(groups, np.arange(num_groups + 1)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32)))


def unit_items(batch: pa.Table, unit: str, window_days: int = DEFAULT_WINDOW_DAYS) -> pa.Table:
    """Ray Data stage: visits' items -> units' items (a visit, a patient, or a patient's time window).

    Takes :class:`VisitItems` rows of whole patients (``map_groups`` gives one patient; any number works). Output
    columns: ``items`` (list<int32>, sorted, each item once), ``visits`` and ``outside_vocabulary`` (sums over the
    unit's visits). A function, not a callable object: ``map_groups`` takes only functions.

    Raises:
        ValueError: naming the admission without a time, for ``window`` units.
    """
    if unit == "visit" or batch.num_rows == 0:
        return pa.table(
            {
                "items": batch["items"],
                "visits": np.ones(batch.num_rows, np.int64),
                "outside_vocabulary": batch["outside_vocabulary"],
            }
        )
    _, subject = np.unique(np.asarray(batch["subject_id"], dtype=np.int64), return_inverse=True)
    unit_of_visit = subject
    if unit == "window":
        times = batch["admittime"]
        if times.null_count:
            row = np.flatnonzero(np.asarray(pc.is_null(times), dtype=bool))[0]
            raise ValueError(
                f"column 'admittime', hadm_id {batch['hadm_id'][int(row)].as_py()}: null; time windows need "
                "every admission's time"
            )
        times = np.asarray(times, dtype=np.int64)
        first = np.full(subject.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, subject, times)
        window = (times - first[subject]) // (window_days * SECONDS_PER_DAY)
        _, unit_of_visit = np.unique(np.stack([subject, window], axis=1), axis=0, return_inverse=True)
        unit_of_visit = unit_of_visit.reshape(-1)
    num_units = int(unit_of_visit.max()) + 1
    lists = batch["items"].combine_chunks()
    flat = np.asarray(pc.list_flatten(lists), dtype=np.int64)
    parents = np.asarray(pc.list_parent_indices(lists), dtype=np.int64)
    width = int(flat.max()) + 1 if len(flat) else 1
    keys = np.unique(unit_of_visit[parents] * width + flat)
    return pa.table(
        {
            "items": grouped_lists(keys // width, keys % width, num_units),
            "visits": np.bincount(unit_of_visit, minlength=num_units).astype(np.int64),
            "outside_vocabulary": np.bincount(
                unit_of_visit, weights=np.asarray(batch["outside_vocabulary"]), minlength=num_units
            ).astype(np.int64),
        }
    )


def within_unit_pairs(offsets: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions ``i < j`` inside each unit (rows ``offsets[u]:offsets[u + 1]`` of ``items``), as
    ``(items[i], items[j])``. Vectorised: a unit of k items gives k (k - 1) / 2 pairs."""
    sizes = np.diff(offsets)
    position = np.arange(len(items)) - np.repeat(offsets[:-1], sizes)
    later = np.repeat(sizes, sizes) - position - 1
    left = np.repeat(np.arange(len(items)), later)
    right = left + 1 + np.arange(len(left)) - np.repeat(np.cumsum(later) - later, later)
    return items[left], items[right]


@dataclass
class CountMatrix:
    """The aggregation's accumulator: counts over some units.

    Attributes:
        matrix: [V, V] CSR, upper triangle: ``[a, b]`` (a < b) the units holding both items, ``[a, a]`` the units
            holding item a.
        units, visits: how many were counted.
        outside_vocabulary: codes of those visits that no vocabulary holds.
    """

    matrix: sp.csr_matrix
    units: int = 0
    visits: int = 0
    outside_vocabulary: int = 0

    def __add__(self, other: CountMatrix) -> CountMatrix:
        return CountMatrix(
            self.matrix + other.matrix,
            self.units + other.units,
            self.visits + other.visits,
            self.outside_vocabulary + other.outside_vocabulary,
        )


class CooccurrenceAggregate(AggregateFnV2):
    """Ray Data aggregation over :func:`unit_items` rows: one :class:`CountMatrix` per block, summed.

    Args:
        num_items: V. num_codes: items below this index are codes (the rest terms, which pair only with codes).
    """

    NAME = "cooccurrence"

    def __init__(self, num_items: int, num_codes: int) -> None:
        self.num_items = num_items
        self.num_codes = num_codes
        super().__init__(self.NAME, zero_factory=self.zero, on=None, ignore_nulls=False)

    def zero(self) -> CountMatrix:
        return CountMatrix(sp.csr_matrix((self.num_items, self.num_items), dtype=np.int64))

    def aggregate_block(self, block: Any) -> CountMatrix:
        from ray.data.block import BlockAccessor

        table = BlockAccessor.for_block(block).to_arrow()
        lists = table["items"].combine_chunks()
        items = np.asarray(lists.flatten(), dtype=np.int64)
        offsets = np.asarray(lists.offsets, dtype=np.int64) - lists.offsets[0].as_py()
        left, right = within_unit_pairs(offsets, items)
        # Items are sorted within a unit and codes come first, so a pair holds a code exactly when its left item is one.
        keep = left < self.num_codes
        rows = np.concatenate([left[keep], items])
        columns = np.concatenate([right[keep], items])
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.int64), (rows, columns)), shape=(self.num_items, self.num_items)
        )
        return CountMatrix(
            matrix,
            units=table.num_rows,
            visits=int(pc.sum(table["visits"]).as_py() or 0),
            outside_vocabulary=int(pc.sum(table["outside_vocabulary"]).as_py() or 0),
        )

    def combine(self, current_accumulator: CountMatrix, new: CountMatrix) -> CountMatrix:
        return current_accumulator + new


def count_table(table: pa.Table, index: ItemIndex, unit: str, window_days: int = DEFAULT_WINDOW_DAYS) -> CountMatrix:
    """The counts of one table of visit records (whole patients), in process: the stages of the Ray pipeline, in
    order."""
    units = unit_items(VisitItems(index)(table), unit, window_days)
    return CooccurrenceAggregate(len(index), index.num_codes).aggregate_block(units)


def count_prepared(
    prepared_dir: str, splits: Sequence[str], index: ItemIndex, unit: str, window_days: int, batch_size: int
) -> CountMatrix:
    """The counts of a prepared directory's splits, aggregated by Ray Data (Ray initialised by the caller).

    Raises:
        FileNotFoundError: naming a split directory that is missing.
    """
    import ray.data

    from medmplm.data.schema import VISITS_DIR
    from medmplm.train import storage

    locations = [storage.join(prepared_dir, VISITS_DIR, split) for split in splits]
    for location in locations:
        if not storage.exists(location):
            raise FileNotFoundError(f"{location}: missing; expected a split of a prepared directory")
    visit_items = VisitItems(index)
    dataset = ray.data.read_parquet(locations, columns=visit_items.input_columns).map_batches(
        visit_items, batch_format="pyarrow", batch_size=batch_size
    )
    unit_options = {"unit": unit, "window_days": window_days}
    if unit == "visit":
        dataset = dataset.map_batches(unit_items, batch_format="pyarrow", batch_size=batch_size, fn_kwargs=unit_options)
    else:
        dataset = dataset.groupby("subject_id").map_groups(unit_items, batch_format="pyarrow", fn_kwargs=unit_options)
    return dataset.aggregate(CooccurrenceAggregate(len(index), index.num_codes))[CooccurrenceAggregate.NAME]


@dataclass
class Cooccurrence:
    """Released co-occurrence counts: what a count directory holds.

    Attributes:
        kinds, items: each item's kind (a code type or ``term``) and name; item ``i`` is row ``i``.
        item_counts: [V] the units holding each item.
        rows, columns, counts: the pairs (``rows < columns``, item indices) and the units holding both.
        units: the units counted.
        manifest: how they were counted (unit, window, threshold, what was suppressed, sources).
    """

    kinds: list[str]
    items: list[str]
    item_counts: np.ndarray
    rows: np.ndarray
    columns: np.ndarray
    counts: np.ndarray
    units: int
    manifest: dict[str, Any] = field(default_factory=dict)

    def pair_matrix(self) -> sp.csr_matrix:
        """[V, V] symmetric CSR of the pair counts (zero diagonal)."""
        size = len(self.items)
        upper = sp.csr_matrix((self.counts, (self.rows, self.columns)), shape=(size, size), dtype=np.int64)
        return (upper + upper.T).tocsr()

    def as_dict(self) -> dict[tuple[str, str, str, str], int]:
        """``(kind, item, kind, item) -> count`` for every pair, each pair once in name order, and
        ``(kind, item, kind, item)`` of an item with itself -> its count: a form independent of item order."""
        names = list(zip(self.kinds, self.items, strict=True))
        found = {(*names[i], *names[i]): int(n) for i, n in enumerate(self.item_counts)}
        for a, b, n in zip(self.rows, self.columns, self.counts, strict=True):
            first, second = sorted((names[a], names[b]))
            found[(*first, *second)] = int(n)
        return found


def release(counted: CountMatrix, index: ItemIndex, min_count: int) -> tuple[Cooccurrence, dict[str, int]]:
    """The counts at or above ``min_count``, and what was withheld.

    Returns:
        ``(counts, report)``: ``report`` has ``suppressed_items`` (items held by 1 to ``min_count - 1`` units),
        ``suppressed_pairs`` (pairs held by 1 to ``min_count - 1`` units), ``unseen_items`` (vocabulary items no
        unit holds).
    """
    kinds, items = index.kinds_and_items()
    item_counts = counted.matrix.diagonal()
    upper = sp.triu(counted.matrix, k=1).tocoo()
    kept_items = np.flatnonzero(item_counts >= min_count)
    kept_pairs = upper.data >= min_count
    new_index = np.full(len(items), -1, dtype=np.int64)
    new_index[kept_items] = np.arange(len(kept_items))
    report = {
        "suppressed_items": int(((item_counts > 0) & (item_counts < min_count)).sum()),
        "suppressed_pairs": int(((upper.data > 0) & ~kept_pairs).sum()),
        "unseen_items": int((item_counts == 0).sum()),
    }
    released = Cooccurrence(
        kinds=[kinds[i] for i in kept_items],
        items=[items[i] for i in kept_items],
        item_counts=item_counts[kept_items].astype(np.int64),
        rows=new_index[upper.row[kept_pairs]],
        columns=new_index[upper.col[kept_pairs]],
        counts=upper.data[kept_pairs].astype(np.int64),
        units=counted.units,
    )
    return released, report


def write_counts(directory: str | os.PathLike, counts: Cooccurrence, overwrite: bool = False) -> None:
    """Write a count directory (``items.tsv``, ``pairs.parquet``, ``manifest.json``), all or nothing: written under a
    temporary name and renamed.

    Raises:
        FileExistsError: ``directory`` holds counts and ``overwrite`` is false.
    """
    target = Path(directory)
    if (target / MANIFEST_FILE).exists() and not overwrite:
        raise FileExistsError(f"{target}: holds co-occurrence counts already; pass --overwrite to replace them")
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with open(staging / ITEMS_FILE, "w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(ITEMS_HEADER) + "\n")
        for kind, item, count in zip(counts.kinds, counts.items, counts.item_counts, strict=True):
            out.write(f"{kind}\t{item}\t{int(count)}\n")
    pq.write_table(
        pa.table(
            {
                "a": pa.array(counts.rows, pa.int32()),
                "b": pa.array(counts.columns, pa.int32()),
                "count": pa.array(counts.counts, pa.int64()),
            }
        ),
        staging / PAIRS_FILE,
    )
    manifest = {
        "format": FORMAT,
        **counts.manifest,
        "units": counts.units,
        "items": len(counts.items),
        "pairs": len(counts.counts),
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def read_counts(directory: str | os.PathLike) -> Cooccurrence:
    """A count directory written by :func:`write_counts`.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the file, row and column that do not have the expected form.
    """
    root = Path(directory)
    for name in (MANIFEST_FILE, ITEMS_FILE, PAIRS_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name}: missing; expected a count directory (python -m medmplm.embeddings cooccur)"
            )
    manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{root / MANIFEST_FILE}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    lines = (root / ITEMS_FILE).read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != ITEMS_HEADER:
        raise ValueError(f"{root / ITEMS_FILE}: row 1 must be the header {'<TAB>'.join(ITEMS_HEADER)}")
    kinds, items, item_counts = [], [], []
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0] or not fields[1] or not fields[2].isdigit():
            raise ValueError(
                f"{root / ITEMS_FILE}: row {number}: expected kind<TAB>item<TAB>count (count a whole number)"
            )
        if (fields[0], fields[1]) in seen:
            raise ValueError(f"{root / ITEMS_FILE}: row {number}: {fields[0]} {fields[1]!r} appears twice")
        seen.add((fields[0], fields[1]))
        kinds.append(fields[0])
        items.append(fields[1])
        item_counts.append(int(fields[2]))
    pairs = pq.read_table(root / PAIRS_FILE)
    for column in ("a", "b", "count"):
        if column not in pairs.column_names:
            raise ValueError(f"{root / PAIRS_FILE}: no column {column!r}; expected a, b, count")
    rows, columns, counts = (np.asarray(pairs[c], dtype=np.int64) for c in ("a", "b", "count"))
    bad = np.flatnonzero((rows < 0) | (rows >= columns) | (columns >= len(items)) | (counts < 1))
    if len(bad):
        raise ValueError(
            f"{root / PAIRS_FILE}: row {int(bad[0]) + 1}: a={rows[bad[0]]}, b={columns[bad[0]]}, "
            f"count={counts[bad[0]]}; "
            f"expected 0 <= a < b < {len(items)} (rows of {ITEMS_FILE}) and count >= 1"
        )
    return Cooccurrence(
        kinds, items, np.array(item_counts, np.int64), rows, columns, counts, int(manifest["units"]), manifest
    )


def sum_counts(parts: Sequence[Cooccurrence], names: Sequence[str]) -> Cooccurrence:
    """The sum of count directories (sites): items matched by kind and name, counts added.

    Args:
        parts: the counts. names: where each came from, for messages and the manifest.

    Raises:
        ValueError: naming the directories when they counted different units (visit, patient, window and its days).
    """
    first = parts[0].manifest
    for part, name in zip(parts[1:], names[1:], strict=True):
        for key in ("unit", "window_days"):
            if part.manifest.get(key) != first.get(key):
                raise ValueError(
                    f"{name} counted {key}={part.manifest.get(key)!r} but {names[0]} counted {first.get(key)!r}; "
                    "counts of different units do not add up"
                )
    positions: dict[tuple[str, str], int] = {}
    for part in parts:
        for key in zip(part.kinds, part.items, strict=True):
            positions.setdefault(key, len(positions))
    size = len(positions)
    item_counts = np.zeros(size, dtype=np.int64)
    total = sp.csr_matrix((size, size), dtype=np.int64)
    for part in parts:
        remap = np.array([positions[key] for key in zip(part.kinds, part.items, strict=True)], dtype=np.int64)
        np.add.at(item_counts, remap, part.item_counts)
        a, b = remap[part.rows], remap[part.columns]
        total = total + sp.csr_matrix(
            (part.counts, (np.minimum(a, b), np.maximum(a, b))), shape=(size, size), dtype=np.int64
        )
    upper = total.tocoo()
    keys = list(positions)
    return Cooccurrence(
        kinds=[kind for kind, _ in keys],
        items=[item for _, item in keys],
        item_counts=item_counts,
        rows=upper.row.astype(np.int64),
        columns=upper.col.astype(np.int64),
        counts=upper.data.astype(np.int64),
        units=sum(part.units for part in parts),
        manifest={
            "unit": first.get("unit"),
            "window_days": first.get("window_days"),
            "sources": [
                {"counts": name, "min_count": part.manifest.get("min_count")}
                for part, name in zip(parts, names, strict=True)
            ],
        },
    )


def counting_manifest(
    options: CountingOptions,
    terms: TermList,
    prepared_dir: str,
    splits: Sequence[str],
    counted: CountMatrix,
    report: dict[str, int],
    seconds_taken: float,
) -> dict[str, Any]:
    """What a count directory's ``manifest.json`` says about how it was counted."""
    return {
        "unit": options.unit,
        "window_days": options.window_days if options.unit == "window" else None,
        "min_count": options.min_count,
        "code_types": list(options.code_types),
        "terms": {"source": terms.source, "count": len(terms.terms), "merged": terms.merged, "sha256": terms.digest},
        "prepared_dir": prepared_dir,
        "splits": list(splits),
        "visits": counted.visits,
        "codes_outside_vocabulary": counted.outside_vocabulary,
        **report,
        "counting_seconds": round(seconds_taken, 1),
    }


def cooccur(
    prepared_dir: str,
    out: str,
    options: CountingOptions,
    terms: TermList,
    splits: Sequence[str] = ("train",),
    batch_size: int = 1024,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Count a prepared directory's co-occurrences with Ray Data (Ray initialised), suppress small cells, write the
    count directory; returns its manifest."""
    if (Path(out) / MANIFEST_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out}: holds co-occurrence counts already; pass --overwrite to replace them")
    index = ItemIndex.from_prepared(prepared_dir, options.code_types, terms)
    start = time.perf_counter()
    counted = count_prepared(prepared_dir, splits, index, options.unit, options.window_days, batch_size)
    elapsed = time.perf_counter() - start
    released, report = release(counted, index, options.min_count)
    released.manifest = counting_manifest(options, terms, prepared_dir, splits, counted, report, elapsed)
    write_counts(out, released, overwrite)
    return json.loads((Path(out) / MANIFEST_FILE).read_text(encoding="utf-8"))


__all__ = [
    "CODE_COLUMNS",
    "DEFAULT_MIN_COUNT",
    "DEFAULT_WINDOW_DAYS",
    "TERM",
    "UNITS",
    "CooccurrenceAggregate",
    "Cooccurrence",
    "CountMatrix",
    "CountingOptions",
    "ItemIndex",
    "VisitItems",
    "cooccur",
    "count_prepared",
    "count_table",
    "read_counts",
    "release",
    "sum_counts",
    "unit_items",
    "within_unit_pairs",
]
