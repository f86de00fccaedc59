"""The i2b2-2010 reader on hand-written files: spans to IOB2 tags, the shipped split, every malformed case."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmplm.data.i2b2 import CorpusError, iob2_to_spans, read_corpus, read_document, spans_to_iob2

TEXT = """The patient was admitted with chest pain .

CT scan of the head showed no bleed
Started on aspirin aspirin
"""
# Line 1: a multi-token problem; line 3: a multi-token test, then a problem on the last token of the line; line 4:
# adjacent concepts of different types (no O between them), the second on the last token.
CONCEPTS = """c="chest pain" 1:5 1:6||t="problem"
c="ct scan of the head" 3:0 3:4||t="test"
c="bleed" 3:7 3:7||t="problem"
c="aspirin" 4:2 4:2||t="treatment"
c="aspirin" 4:3 4:3||t="problem"
"""


def write_document(root: Path, name: str, text: str, concepts: str) -> tuple[Path, Path]:
    (root / "txt").mkdir(parents=True, exist_ok=True)
    (root / "concept").mkdir(parents=True, exist_ok=True)
    txt, con = root / "txt" / f"{name}.txt", root / "concept" / f"{name}.con"
    txt.write_text(text, encoding="utf-8")
    con.write_text(concepts, encoding="utf-8")
    return txt, con


def test_concepts_become_iob2_tags_of_their_sentences(tmp_path):
    document, skipped = read_document(*write_document(tmp_path, "d1", TEXT, CONCEPTS))
    assert skipped == [] and document.concepts == 5
    # The empty line 2 is no sentence; line numbers still count it.
    assert len(document.sentences) == 3
    assert document.tags[0] == ["O", "O", "O", "O", "O", "B-problem", "I-problem", "O"]
    assert document.tags[1] == ["B-test", "I-test", "I-test", "I-test", "I-test", "O", "O", "B-problem"]
    assert document.tags[2] == ["O", "O", "B-treatment", "B-problem"]


def test_only_newlines_end_lines(tmp_path):
    # A form feed inside a line (seen in clinical text) does not start a new line the offsets would miss.
    files = write_document(tmp_path, "d", "Page\x0c 2\nchest pain\n", 'c="chest pain" 2:0 2:1||t="problem"\n')
    document, _ = read_document(*files)
    assert document.tags == [["O", "O"], ["B-problem", "I-problem"]]


def test_concept_text_is_compared_case_insensitively(tmp_path):
    files = write_document(tmp_path, "d", "Chest PAIN today\n", 'c="chest pain" 1:0 1:1||t="problem"\n')
    document, _ = read_document(*files)
    assert document.tags == [["B-problem", "I-problem", "O"]]


@pytest.mark.parametrize(
    ("line", "reason", "expected"),
    [
        ('c="chest pain" 1:5||t="problem"', "syntax", 'expected a concept line c="<text>"'),
        ('c="chest pain" 1:5 1:6 t="problem"', "syntax", "expected a concept line"),
        ('c="chest pain" 9:5 9:6||t="problem"', "out_of_range", "line 9 is not in d.txt (lines 1 to 4)"),
        ('c="chest pain ." 1:5 1:8||t="problem"', "out_of_range", "tokens 5 to 8 are not on line 1 of d.txt"),
        ('c="pain chest" 1:6 1:5||t="problem"', "out_of_range", "start <= end"),
        ('c="chest" 1:5 3:0||t="problem"', "multi_line", "starts on line 1 and ends on line 3"),
        ('c="chest ache" 1:5 1:6||t="problem"', "text_mismatch", "differs from tokens 5 to 6 of line 1"),
        ('c="pain" 1:6 1:6||t="problem"', "overlap", "overlap an earlier concept"),
    ],
)
def test_malformed_concept_lines_are_errors_naming_file_and_line_or_are_counted_and_skipped(
    tmp_path, line, reason, expected
):
    concepts = 'c="chest pain" 1:5 1:6||t="problem"\n' + line + "\n"
    txt, con = write_document(tmp_path, "d", TEXT, concepts)
    with pytest.raises(CorpusError) as error:
        read_document(txt, con)
    assert str(error.value).startswith(f"{con}:2: ") and expected in str(error.value)

    document, skipped = read_document(txt, con, on_error="skip")
    assert [(s.line, s.reason) for s in skipped] == [(2, reason)] and expected in skipped[0].message
    assert document.concepts == 1 and document.tags[0][5:7] == ["B-problem", "I-problem"]


def test_the_error_message_never_quotes_the_text(tmp_path):
    txt, con = write_document(tmp_path, "d", "no such words\n", 'c="secret name" 1:0 1:1||t="problem"\n')
    with pytest.raises(CorpusError) as error:
        read_document(txt, con)
    assert "secret" not in str(error.value) and "no such" not in str(error.value)


def test_a_corpus_counts_what_it_skipped_and_finds_shipped_splits(tmp_path):
    write_document(tmp_path / "train" / "beth", "a", TEXT, CONCEPTS + "garbage\n")
    write_document(tmp_path / "train" / "partners", "b", TEXT, CONCEPTS)
    write_document(tmp_path / "test", "c", TEXT, CONCEPTS)
    with pytest.raises(CorpusError, match=r"a\.con:6: expected a concept line"):
        read_corpus(tmp_path)
    corpus = read_corpus(tmp_path, on_error="skip")
    assert sorted(corpus.documents) == ["test", "train"]
    assert [d.name for d in corpus.documents["train"]] == ["a", "b"] and len(corpus.documents["test"]) == 1
    assert corpus.skipped_counts() == {"syntax": 1}
    assert corpus.concept_types() == ["problem", "test", "treatment"]


def test_a_corpus_without_a_split_and_missing_files(tmp_path):
    write_document(tmp_path, "a", TEXT, CONCEPTS)
    assert list(read_corpus(tmp_path).documents) == ["all"]
    (tmp_path / "txt" / "b.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"b\.txt: no matching \.con file"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="not a directory"):
        read_corpus(tmp_path / "absent")
    (tmp_path / "empty" / "txt").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no concept folder"):
        read_corpus(tmp_path / "empty")


def test_iob2_round_trip():
    spans = [(0, 0, "test"), (1, 3, "problem"), (4, 4, "problem"), (6, 7, "treatment")]
    tags = spans_to_iob2(8, spans)
    assert tags == ["B-test", "B-problem", "I-problem", "I-problem", "B-problem", "O", "B-treatment", "I-treatment"]
    assert iob2_to_spans(tags) == spans
    assert iob2_to_spans(spans_to_iob2(3, [])) == []
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_iob2(4, [(0, 2, "a"), (2, 3, "b")])
    with pytest.raises(ValueError, match="outside"):
        spans_to_iob2(2, [(1, 2, "a")])


def test_the_synthetic_generator_output_reads_without_error(tmp_path):
    from medmplm.synthetic.ner import generate_ner_corpus

    counts = generate_ner_corpus(tmp_path / "corpus", documents=5, seed=3)
    corpus = read_corpus(tmp_path / "corpus")
    documents = corpus.documents["all"]
    assert sum(d.concepts for d in documents) == counts["concepts"] and not corpus.skipped
    assert sum(tag.startswith("B-") for d in documents for tags in d.tags for tag in tags) == counts["concepts"]
