"""Reading and writing vocabulary files: ``code<TAB>count``, a header line, most frequent first.

These are the files under ``vocab/`` of a prepared directory (see ``medmplm.data.schema``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

VOCAB_HEADER = ("code", "count")


class VocabFormatError(ValueError):
    """A vocabulary file or entry does not have the ``code<TAB>count`` shape."""


def _check_code(code: str, where: str) -> None:
    if not isinstance(code, str) or not code:
        raise VocabFormatError(f"{where}: code must be a non-empty string, got {code!r}")
    if any(ch in code for ch in "\t\n\r"):
        raise VocabFormatError(f"{where}: code {code!r} contains a tab or newline")


def write_vocab(path: str | os.PathLike, counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
    """Write a vocabulary file, most frequent first (ties broken by code, so the output is deterministic).

    The file is written under a temporary name and renamed, so a crash never leaves a partial file.

    Args:
        path: destination ``.tsv`` file; its parent directory must exist.
        counts: code -> count, as a mapping or as ``(code, count)`` pairs (codes must be unique).
    """
    path = Path(path)
    items = list(counts.items()) if isinstance(counts, Mapping) else list(counts)
    seen: set[str] = set()
    for code, count in items:
        _check_code(code, str(path))
        if code in seen:
            raise VocabFormatError(f"{path}: code {code!r} appears twice")
        seen.add(code)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise VocabFormatError(f"{path}: count for {code!r} must be a non-negative int, got {count!r}")
    items.sort(key=lambda item: (-item[1], item[0]))
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(VOCAB_HEADER) + "\n")
        for code, count in items:
            f.write(f"{code}\t{count}\n")
    os.replace(tmp, path)


def read_vocab(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Read a vocabulary file written by :func:`write_vocab`.

    Returns:
        ``(code, count)`` pairs in file order (most frequent first).

    Raises:
        VocabFormatError: naming the file and line when the header or a line is malformed.
    """
    path = Path(path)
    entries: list[tuple[str, int]] = []
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n")
        if tuple(header.split("\t")) != VOCAB_HEADER:
            raise VocabFormatError(f"{path}:1: expected header 'code<TAB>count', got {header!r}")
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            fields = line.split("\t")
            if len(fields) != 2:
                raise VocabFormatError(f"{path}:{line_no}: expected 'code<TAB>count', got {len(fields)} field(s)")
            code, count = fields
            _check_code(code, f"{path}:{line_no}")
            try:
                entries.append((code, int(count)))
            except ValueError:
                raise VocabFormatError(f"{path}:{line_no}: count {count!r} is not an integer") from None
    return entries
