"""Note terms: the words and phrases whose mentions in notes are counted beside the codes.

A term is matched as a whole sequence of words, ignoring case and punctuation: text is lower-cased, every run of
characters other than ``a-z`` and ``0-9`` is a word boundary, and a term matches where its words appear consecutively
(``"A-Fib"``, ``"a fib"`` and ``"a-fib"`` are the term ``a fib``). A term's key is its words joined by one space.

Two sources: the synthetic catalogue's vocabulary (:func:`catalogue_terms`: every name the generator's notes use for a
condition, a history or a drug), or a file of the user's terms, one per line (:func:`read_term_file`, e.g. UMLS concept
strings). Entries that normalise to a term already listed are merged into it and counted.

Matching runs on Arrow arrays (``pyarrow.compute``: lower-casing, splitting, joining n-grams and hash look-ups are all
vectorised), because a term list has hundreds of entries and a full note set millions of words: a regular expression per
term would scan every note once per term.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CATALOGUE = "catalogue"
NONE = "none"
_BOUNDARY = re.compile(r"[^a-z0-9]+")


def normalise_term(text: str) -> str:
    """A term's key: lower-cased words of ``a-z0-9``, joined by one space (``"Alzheimer's"`` -> ``"alzheimer s"``)."""
    return " ".join(word for word in _BOUNDARY.split(text.lower()) if word)


@dataclass(frozen=True)
class TermList:
    """Terms to count, by key, in a fixed order (a term's index is its position).

    Attributes:
        terms: the distinct term keys.
        source: ``catalogue``, ``none``, or the file they were read from.
        merged: entries of the source that normalised to a term listed before them.
        digest: sha256 of the keys, one per line, so that count directories can say whether they counted the same terms.
    """

    terms: tuple[str, ...]
    source: str
    merged: int = 0

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.terms).encode("utf-8")).hexdigest()

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, str]], source: str) -> TermList:
        """Terms from ``(where, text)`` entries, where ``where`` names the entry in errors (``file:line``).

        Raises:
            ValueError: naming the entry when it has no word of ``a-z0-9``.
        """
        keys: dict[str, None] = {}
        merged = 0
        for where, text in entries:
            key = normalise_term(text)
            if not key:
                raise ValueError(f"{where}: term {text!r} has no letter or digit; expected a word or phrase")
            if key in keys:
                merged += 1
            keys[key] = None
        return cls(tuple(keys), source, merged)


def catalogue_terms() -> TermList:
    """Every name the synthetic generator's notes give a condition (chronic, reason for admission, complication,
    minor condition, history) or a drug, from :mod:`medmplm.synthetic.catalogue`."""
    from medmplm.synthetic.catalogue import conditions, drugs

    entries: list[tuple[str, str]] = []
    for group in (
        conditions.CHRONIC_CONDITIONS,
        conditions.ADMISSION_REASONS,
        conditions.COMPLICATIONS,
        conditions.MINOR_CONDITIONS,
        conditions.HISTORIES,
    ):
        entries += [(f"catalogue {item.key}", phrase) for item in group for phrase in item.phrases]
    entries += [(f"catalogue drug {drug.key}", name) for drug in drugs.DRUGS for name in drug.note_names]
    return TermList.from_entries(entries, CATALOGUE)


def read_term_file(path: str | os.PathLike) -> TermList:
    """Terms from a UTF-8 text file, one per line; blank lines are skipped.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming ``file:line`` of a line with a tab (one term per line, no columns) or without a word.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: term list not found; expected a text file with one term per line")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if "\t" in line:
            raise ValueError(f"{path}:{number}: a tab; expected one term per line, without columns")
        if line.strip():
            entries.append((f"{path}:{number}", line))
    if not entries:
        raise ValueError(f"{path}: no terms; expected one term per line")
    return TermList.from_entries(entries, str(path))


def load_terms(spec: str) -> TermList:
    """``catalogue`` (the synthetic catalogue's vocabulary), ``none`` (codes only), or a term file's path."""
    if spec == CATALOGUE:
        return catalogue_terms()
    if spec == NONE:
        return TermList((), NONE)
    return read_term_file(spec)


class TermMatcher:
    """Which terms each note mentions (presence, not frequency).

    Args:
        terms: the term keys; term ``i`` is reported as ``i``.
    """

    def __init__(self, terms: tuple[str, ...]) -> None:
        self.num_terms = len(terms)
        by_length: dict[int, list[int]] = {}
        for index, term in enumerate(terms):
            by_length.setdefault(term.count(" ") + 1, []).append(index)
        # Per phrase length n: the terms of n words (as an Arrow array for hash look-ups) and their indices.
        self._lengths = {
            n: (pa.array([terms[i] for i in indices], pa.string()), np.array(indices, dtype=np.int64))
            for n, indices in sorted(by_length.items())
        }

    def __call__(self, notes: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """``(note index, term index)`` of every term a note mentions, each pair once; null notes mention nothing."""
        if not self._lengths:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if isinstance(notes, pa.ChunkedArray):
            notes = notes.combine_chunks()
        words = pc.utf8_split_whitespace(
            pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(notes), _BOUNDARY.pattern, " "))
        )
        flat = pc.list_flatten(words)
        note_of_word = np.asarray(pc.list_parent_indices(words), dtype=np.int64)
        found_notes, found_terms = [], []
        for n, (keys, indices) in self._lengths.items():
            count = len(flat) - n + 1
            if count <= 0:
                continue
            parts = [flat.slice(offset, count) for offset in range(n)]
            phrases = parts[0] if n == 1 else pc.binary_join_element_wise(*parts, " ")
            # A phrase counts only when its words lie in one note.
            same_note = note_of_word[:count] == note_of_word[n - 1 : n - 1 + count]
            positions = pc.index_in(phrases, value_set=keys)
            hit = ~np.asarray(pc.is_null(positions), dtype=bool) & same_note
            found_notes.append(note_of_word[:count][hit])
            found_terms.append(indices[np.asarray(positions.filter(pa.array(hit)), dtype=np.int64)])
        pairs = np.unique(np.concatenate(found_notes) * self.num_terms + np.concatenate(found_terms))
        return pairs // self.num_terms, pairs % self.num_terms


__all__ = [
    "CATALOGUE",
    "NONE",
    "TermList",
    "TermMatcher",
    "catalogue_terms",
    "load_terms",
    "normalise_term",
    "read_term_file",
]
