"""Tests of the synthetic i2b2-2010-style NER corpus."""

from __future__ import annotations

import re

import pytest

from medmplm.synthetic import generate_ner_corpus
from medmplm.synthetic.__main__ import main

CON_LINE = re.compile(r'^c="(?P<text>[^"]+)" (?P<l1>\d+):(?P<s>\d+) (?P<l2>\d+):(?P<e>\d+)\|\|t="(?P<type>[a-z]+)"$')


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("ner") / "corpus"
    counts = generate_ner_corpus(out, documents=25, seed=3)
    return out, counts


def test_layout_and_counts(corpus):
    out, counts = corpus
    texts = sorted(path.stem for path in (out / "txt").glob("*.txt"))
    concepts = sorted(path.stem for path in (out / "concept").glob("*.con"))
    assert texts == concepts and len(texts) == counts["documents"] == 25
    assert counts["concepts"] > 25 * 10
    assert sum(len((out / "txt" / f"{name}.txt").read_text().splitlines()) for name in texts) == counts["lines"]
    # The synthetic-data marker a generated MIMIC release carries: runs on this corpus record synthetic data.
    from medmplm.data.manifest import is_synthetic_release

    assert is_synthetic_release(out)


def test_offsets_point_at_the_concept_tokens(corpus):
    out, _ = corpus
    types = set()
    for con_path in (out / "concept").glob("*.con"):
        lines = (out / "txt" / f"{con_path.stem}.txt").read_text(encoding="utf-8").split("\n")
        for line in con_path.read_text(encoding="utf-8").splitlines():
            match = CON_LINE.match(line)
            assert match, line
            assert match["l1"] == match["l2"]
            tokens = lines[int(match["l1"]) - 1].split(" ")
            start, end = int(match["s"]), int(match["e"])
            assert 0 <= start <= end < len(tokens)
            assert " ".join(tokens[start : end + 1]).lower() == match["text"]
            assert match["text"] == match["text"].lower()
            types.add(match["type"])
    assert types == {"problem", "test", "treatment"}


def test_tokens_are_single_space_separated(corpus):
    out, _ = corpus
    for path in (out / "txt").glob("*.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert line and "  " not in line and line == line.strip()


def test_deterministic_per_seed(tmp_path):
    generate_ner_corpus(tmp_path / "a", documents=4, seed=9)
    main(["ner", "--out", str(tmp_path / "b"), "--documents", "4", "--seed", "9"])
    generate_ner_corpus(tmp_path / "c", documents=4, seed=10)
    for sub in ("txt", "concept"):
        for path in (tmp_path / "a" / sub).iterdir():
            assert path.read_bytes() == (tmp_path / "b" / sub / path.name).read_bytes()
    assert (tmp_path / "a" / "txt" / "record-0001.txt").read_bytes() != (
        tmp_path / "c" / "txt" / "record-0001.txt"
    ).read_bytes()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="documents"):
        generate_ner_corpus(tmp_path / "x", documents=0)
    generate_ner_corpus(tmp_path / "y", documents=1)
    with pytest.raises(FileExistsError):
        generate_ner_corpus(tmp_path / "y", documents=1)
