"""Reading concept-extraction corpora in the 2010 i2b2/VA layout into sentences of tokens with IOB2 tags.

Layout (one instance: ``python -m medmplm.synthetic ner``; the real corpus from n2c2 is another)::

    DIR/txt/<doc>.txt        one sentence per line, tokens separated by whitespace
    DIR/concept/<doc>.con    c="chest pain" 12:3 12:4||t="problem"

A ``.con`` line names the concept's text, its first and last token as ``line:token`` (lines count from 1, tokens from
0, the end inclusive) and its type. Every concept is checked: the line must parse, its offsets must lie on one line
of the document and inside it, the text must equal the tokens at the offsets (case-insensitively, whitespace
normalised) and it must not overlap another concept (IOB2 cannot hold overlapping spans). A concept that fails is an
error naming the file, the line and what was expected, or, with ``on_error="skip"``, a :class:`SkippedConcept` kept in
the corpus with its reason, so that nothing is lost silently.

A corpus that ships its own split (the i2b2 release's training and test folders) is recognised by ``DIR/train`` and
``DIR/test`` folders; documents are found under each by their ``txt`` folders (``concept`` or ``concepts`` beside).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seqeval.metrics.sequence_labeling import get_entities

OUTSIDE = "O"
SHIPPED_SPLITS = ("train", "test")
CONCEPT_DIRS = ("concept", "concepts")

_CONCEPT_LINE = re.compile(
    r'^c="(?P<text>.*)" (?P<start_line>\d+):(?P<start>\d+) (?P<end_line>\d+):(?P<end>\d+)\|\|t="(?P<type>[^"]+)"$'
)
EXPECTED_SYNTAX = 'c="<text>" <line>:<token> <line>:<token>||t="<type>"'


class CorpusError(ValueError):
    """A corpus file that does not follow the i2b2-2010 layout: the message names the file, the line and what was
    expected."""


@dataclass(frozen=True)
class SkippedConcept:
    """A ``.con`` line left out under ``on_error="skip"``.

    Attributes:
        path: the ``.con`` file.
        line: its 1-based line number.
        reason: ``syntax``, ``out_of_range``, ``multi_line``, ``text_mismatch`` or ``overlap``.
        message: the error it would have raised.
    """

    path: str
    line: int
    reason: str
    message: str


@dataclass
class Document:
    """One document: its non-empty lines as token lists with their IOB2 tags.

    Attributes:
        name: the file stem (``record-0001``).
        sentences: tokens of each non-empty line, in file order.
        tags: IOB2 tag of each token (``B-problem``, ``I-problem``, ``O``).
        concepts: concepts read (not skipped).
    """

    name: str
    sentences: list[list[str]]
    tags: list[list[str]]
    concepts: int = 0


@dataclass
class Corpus:
    """Documents of a corpus, by shipped split when it has one.

    Attributes:
        documents: split -> documents; the single key ``all`` when the corpus ships no split.
        skipped: concepts left out under ``on_error="skip"``.
    """

    documents: dict[str, list[Document]]
    skipped: list[SkippedConcept] = field(default_factory=list)

    def skipped_counts(self) -> dict[str, int]:
        """Skipped concepts by reason."""
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))

    def concept_types(self) -> list[str]:
        """Every concept type the documents' tags hold, sorted."""
        tags = {tag for documents in self.documents.values() for d in documents for line in d.tags for tag in line}
        return sorted({tag[2:] for tag in tags - {OUTSIDE}})


def spans_to_iob2(length: int, spans: list[tuple[int, int, str]]) -> list[str]:
    """IOB2 tags of a sentence of ``length`` tokens holding ``spans`` (``(start, end inclusive, type)``, disjoint).

    Hand-written: seqeval reads tags into spans (:func:`iob2_to_spans`) but writes none.

    Raises:
        ValueError: when a span lies outside the sentence or overlaps another.
    """
    tags = [OUTSIDE] * length
    for start, end, kind in spans:
        if not 0 <= start <= end < length:
            raise ValueError(f"span {start}:{end} lies outside a sentence of {length} tokens")
        if any(tag != OUTSIDE for tag in tags[start : end + 1]):
            raise ValueError(f"span {start}:{end} overlaps another span")
        tags[start] = f"B-{kind}"
        tags[start + 1 : end + 1] = [f"I-{kind}"] * (end - start)
    return tags


def iob2_to_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """``(start, end inclusive, type)`` of each concept in IOB2 ``tags`` (seqeval's reading), in order."""
    return [(start, end, kind) for kind, start, end in get_entities(list(tags))]


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def read_document(
    txt_path: str | os.PathLike, con_path: str | os.PathLike, on_error: Literal["error", "skip"] = "error"
) -> tuple[Document, list[SkippedConcept]]:
    """One document from its ``.txt`` and ``.con`` files.

    Returns:
        The document (empty lines left out) and the concepts skipped (always empty with ``on_error="error"``).

    Raises:
        CorpusError: with ``on_error="error"``, at the first concept line that does not parse, lies outside the
            document, spans two lines, differs from the tokens at its offsets, or overlaps an earlier concept.
    """
    txt_path, con_path = Path(txt_path), Path(con_path)
    # Lines end at "\n" only: str.splitlines also breaks at form feeds and other separators, which would shift the
    # line numbers the concepts point at.
    text = txt_path.read_text(encoding="utf-8").removesuffix("\n")
    lines = [line.split() for line in text.split("\n")] if text else []
    spans: dict[int, list[tuple[int, int, str]]] = {}
    skipped: list[SkippedConcept] = []

    def fail(number: int, reason: str, message: str) -> None:
        message = f"{con_path}:{number}: {message}"
        if on_error == "error":
            raise CorpusError(message)
        skipped.append(SkippedConcept(str(con_path), number, reason, message))

    for number, raw in enumerate(con_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        match = _CONCEPT_LINE.match(raw.strip())
        if match is None:
            fail(number, "syntax", f"expected a concept line {EXPECTED_SYNTAX}")
            continue
        start_line, end_line = int(match["start_line"]), int(match["end_line"])
        start, end = int(match["start"]), int(match["end"])
        if start_line != end_line:
            fail(
                number,
                "multi_line",
                f"the concept starts on line {start_line} and ends on line {end_line}; i2b2 concepts lie on one line",
            )
            continue
        if not 1 <= start_line <= len(lines):
            fail(number, "out_of_range", f"line {start_line} is not in {txt_path.name} (lines 1 to {len(lines)})")
            continue
        tokens = lines[start_line - 1]
        if not 0 <= start <= end < len(tokens):
            fail(
                number,
                "out_of_range",
                f"tokens {start} to {end} are not on line {start_line} of {txt_path.name} "
                f"(tokens 0 to {len(tokens) - 1}, start <= end)",
            )
            continue
        if _normalised(match["text"]) != _normalised(" ".join(tokens[start : end + 1])):
            # The text is the corpus's, not the patient's: the message says where, not what.
            fail(
                number,
                "text_mismatch",
                f"the concept text ({len(match['text'].split())} tokens) differs from tokens {start} to {end} of line "
                f"{start_line} of {txt_path.name} (compared case-insensitively)",
            )
            continue
        line_spans = spans.setdefault(start_line, [])
        if any(start <= other_end and other_start <= end for other_start, other_end, _ in line_spans):
            fail(number, "overlap", f"tokens {start} to {end} of line {start_line} overlap an earlier concept")
            continue
        line_spans.append((start, end, match["type"]))
    sentences, tags = [], []
    for number, tokens in enumerate(lines, start=1):
        if tokens:
            sentences.append(tokens)
            tags.append(spans_to_iob2(len(tokens), spans.get(number, [])))
    concepts = sum(len(s) for s in spans.values())
    return Document(txt_path.stem, sentences, tags, concepts), skipped


def _document_pairs(root: Path) -> list[tuple[Path, Path]]:
    """``(txt, con)`` of every document under ``root``: each ``txt`` folder with a concept folder beside it."""
    pairs = []
    txt_dirs = sorted(p for p in [root / "txt", *root.rglob("txt")] if p.is_dir())
    for txt_dir in dict.fromkeys(txt_dirs):
        concept_dir = next((txt_dir.parent / name for name in CONCEPT_DIRS if (txt_dir.parent / name).is_dir()), None)
        if concept_dir is None:
            raise CorpusError(f"{txt_dir}: no concept folder beside it (expected one of {', '.join(CONCEPT_DIRS)})")
        texts = {p.stem: p for p in txt_dir.glob("*.txt")}
        concepts = {p.stem: p for p in concept_dir.glob("*.con")}
        for stem in sorted(texts.keys() ^ concepts.keys()):
            have, lack = (texts[stem], concept_dir) if stem in texts else (concepts[stem], txt_dir)
            raise CorpusError(f"{have}: no matching {'.con' if stem in texts else '.txt'} file in {lack}")
        pairs += [(texts[stem], concepts[stem]) for stem in sorted(texts)]
    return pairs


def read_corpus(directory: str | os.PathLike, on_error: Literal["error", "skip"] = "error") -> Corpus:
    """Every document of a corpus directory (see the module docstring for the layout and the shipped split).

    Raises:
        CorpusError: a missing folder or file, a concept that fails a check (``on_error="error"``), or no document.
    """
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error must be 'error' or 'skip', got {on_error!r}")
    root = Path(directory)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory (expected an i2b2-2010 corpus: txt/ and concept/ folders)")
    shipped = all((root / split).is_dir() for split in SHIPPED_SPLITS)
    roots = {split: root / split for split in SHIPPED_SPLITS} if shipped else {"all": root}
    corpus = Corpus({})
    for split, split_root in roots.items():
        pairs = _document_pairs(split_root)
        if not pairs:
            raise CorpusError(f"{split_root}: no documents (expected txt/*.txt with concept/*.con beside)")
        documents = []
        for txt_path, con_path in pairs:
            document, skipped = read_document(txt_path, con_path, on_error)
            documents.append(document)
            corpus.skipped += skipped
        names = Counter(d.name for d in documents)
        repeated = sorted(name for name, count in names.items() if count > 1)
        if repeated:
            raise CorpusError(f"{split_root}: document names repeated in several txt folders: {repeated[:5]}")
        corpus.documents[split] = documents
    return corpus
