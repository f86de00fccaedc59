"""CodeVocab, note cleaning and VisitFeaturizer."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from medmplm.data.features import VisitFeaturizer, clean_note_text
from medmplm.data.vocab import CLS_ID, PAD_ID, UNK_ID, CodeVocab, VocabMismatchError
from medmplm.data.vocab_io import write_vocab
from medmplm.models.testing_utils import read_split_batch, write_tiny_prepared_dir
from medmplm.models.tokenization import iter_split_notes, train_wordpiece_tokenizer

TEXT_LEN, MAX_CODES = 24, 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("prepared"), num_visits=12)


@pytest.fixture(scope="module")
def featurizer(prepared: Path) -> VisitFeaturizer:
    tokenizer = train_wordpiece_tokenizer(iter_split_notes(prepared), vocab_size=300, model_max_length=TEXT_LEN)
    vocabs = {t: CodeVocab.from_tsv(prepared / "vocab" / f"{t}.tsv", t) for t in ("diagnosis", "medication")}
    return VisitFeaturizer(
        tokenizer, vocabs["diagnosis"], vocabs["medication"], text_max_length=TEXT_LEN, max_codes=MAX_CODES
    )


def test_code_vocab_from_tsv_puts_special_tokens_first(tmp_path: Path) -> None:
    write_vocab(tmp_path / "d.tsv", {"4019": 10, "4280": 5, "25000": 1})
    vocab = CodeVocab.from_tsv(tmp_path / "d.tsv", "diagnosis")
    assert vocab.tokens == ["[PAD]", "[CLS]", "[MASK]", "[UNK]", "4019", "4280", "25000"]
    assert vocab.encode(["4280", "9999", "4019"]) == [5, UNK_ID, 4]
    assert vocab.decode([4, 1]) == ["4019", "[CLS]"]
    assert CodeVocab.from_tsv(tmp_path / "d.tsv", "diagnosis", min_count=5).codes == ["4019", "4280"]
    with pytest.raises(ValueError, match="would be empty"):
        CodeVocab.from_tsv(tmp_path / "d.tsv", "diagnosis", min_count=100)


def test_code_vocab_save_load_round_trip_and_type_check(tmp_path: Path) -> None:
    vocab = CodeVocab("medication", ["N02B", "B01A"])
    vocab.save(tmp_path / "m.json")
    loaded = CodeVocab.load(tmp_path / "m.json", code_type="medication")
    assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    assert CodeVocab("medication", ["B01A", "N02B"]).fingerprint() != vocab.fingerprint()
    with pytest.raises(VocabMismatchError, match="expected 'diagnosis'"):
        CodeVocab.load(tmp_path / "m.json", code_type="diagnosis")
    with pytest.raises(ValueError, match="appears twice"):
        CodeVocab("medication", ["N02B", "N02B"])


def test_clean_note_text_lowercases_and_removes_line_breaks() -> None:
    assert (
        clean_note_text("Admission Date:\r\n  [**2101-1-1**]\nHTN\tand  CHF\n")
        == "admission date: [**2101-1-1**] htn and chf"
    )


def test_featurizer_shapes_and_code_encoding(prepared: Path, featurizer: VisitFeaturizer) -> None:
    batch = read_split_batch(prepared)
    out = featurizer(batch)
    n = len(batch["hadm_id"])
    assert out["input_ids"].shape == out["attention_mask"].shape == (n, TEXT_LEN)
    for key in ("diag_ids", "diag_mask", "med_ids", "med_mask"):
        assert out[key].shape == (n, 1 + MAX_CODES)
    assert all(v.dtype == np.int64 for v in out.values())
    assert np.array_equal(out["hadm_id"], batch["hadm_id"])
    assert (out["diag_ids"][:, 0] == CLS_ID).all() and (out["med_mask"][:, 0] == 1).all()
    for row in range(n):
        codes = list(dict.fromkeys(batch["diagnoses"][row]))
        kept = codes[:MAX_CODES]
        assert list(out["diag_ids"][row, 1 : 1 + len(kept)]) == featurizer.diagnosis_vocab.encode(kept)
        assert out["diag_mask"][row].sum() == 1 + len(kept)
        assert (out["diag_ids"][row, 1 + len(kept) :] == PAD_ID).all()
        assert out["diag_truncated"][row] == len(codes) - len(kept)
        assert out["has_note"][row] == (batch["note_text"][row] is not None)
    assert out["diag_truncated"].sum() > 0  # the fixture has visits with more than MAX_CODES diagnoses


def test_visit_without_note_gets_special_tokens_only(prepared: Path, featurizer: VisitFeaturizer) -> None:
    batch = read_split_batch(prepared)
    out = featurizer(batch)
    no_note = out["has_note"] == 0
    assert no_note.any()
    assert (out["attention_mask"][no_note].sum(axis=1) == 2).all()  # [CLS] [SEP]
    assert (out["attention_mask"][~no_note].sum(axis=1) > 2).all()


def test_long_notes_and_unknown_codes_are_counted(featurizer: VisitFeaturizer) -> None:
    batch = {
        "hadm_id": np.array([1, 2]),
        "note_text": np.array(["word " * 500, "short"], dtype=object),
        "diagnoses": np.array([np.array(["4019", "NOTACODE"], dtype=object), np.array([], dtype=object)], dtype=object),
        "medications": np.array([[], ["ZZZZ"]], dtype=object),
    }
    out = featurizer(batch)
    assert list(out["text_truncated"]) == [1, 0]
    assert out["attention_mask"][0].sum() == TEXT_LEN
    assert list(out["diag_unknown"]) == [1, 0]
    assert list(out["med_unknown"]) == [0, 1]
    assert out["diag_ids"][0, 2] == UNK_ID


def test_code_repeated_in_a_visit_is_encoded_once(featurizer: VisitFeaturizer) -> None:
    # A second copy of a code would stay visible when masking hides the first.
    vocab = featurizer.diagnosis_vocab
    first, second = vocab.codes[:2]
    batch = {
        "note_text": np.array([None], dtype=object),
        "diagnoses": np.array([np.array([first, second, first, first], dtype=object)], dtype=object),
        "medications": np.array([np.array(["ZZZZ", "ZZZZ"], dtype=object)], dtype=object),
    }
    out = featurizer(batch)
    assert list(out["diag_ids"][0]) == [CLS_ID, *vocab.encode([first, second]), PAD_ID, PAD_ID]
    assert list(out["med_ids"][0]) == [CLS_ID, UNK_ID, PAD_ID, PAD_ID, PAD_ID]
    assert out["diag_truncated"][0] == 0 and out["med_unknown"][0] == 1


def test_featurizer_is_deterministic_and_picklable(prepared: Path, featurizer: VisitFeaturizer) -> None:
    batch = read_split_batch(prepared)
    first = featurizer(batch)
    clone = pickle.loads(pickle.dumps(featurizer))
    for outputs in (featurizer(batch), clone(batch)):
        assert set(outputs) == set(first)
        for key in first:
            assert np.array_equal(outputs[key], first[key]), key


def test_bad_input_names_the_column_and_visit(featurizer: VisitFeaturizer) -> None:
    with pytest.raises(KeyError, match="medications"):
        featurizer({"note_text": np.array([None]), "diagnoses": np.array([[]], dtype=object)})
    batch = {
        "hadm_id": np.array([7, 8]),
        "note_text": np.array([None, None], dtype=object),
        "diagnoses": np.array([["4019"], None], dtype=object),
        "medications": np.array([[], []], dtype=object),
    }
    with pytest.raises(ValueError, match=r"'diagnoses', hadm_id 8"):
        featurizer(batch)


# --- long notes: head, head_tail, windows ------------------------------------------------------------------------

WINDOW = 8  # [CLS] + 6 note tokens + [SEP]


def _note_batch(*notes: str | None) -> dict[str, np.ndarray]:
    return {
        "note_text": np.array(list(notes), dtype=object),
        "diagnoses": np.array([[] for _ in notes] + [None], dtype=object)[:-1],
        "medications": np.array([[] for _ in notes] + [None], dtype=object)[:-1],
    }


def _words(featurizer: VisitFeaturizer, count: int) -> list[str]:
    """``count`` words of the tokenizer's vocabulary that are one token each, so a note of n of them is n tokens."""
    vocab = featurizer.text_tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and len(_note_ids(featurizer, w)) == 1)
    assert len(words) >= count
    return words[:count]


def _windowed(featurizer: VisitFeaturizer, **options) -> VisitFeaturizer:
    return VisitFeaturizer(
        featurizer.text_tokenizer,
        featurizer.diagnosis_vocab,
        featurizer.medication_vocab,
        text_max_length=WINDOW,
        max_codes=MAX_CODES,
        pad_token_id=PAD_ID,
        **options,
    )


def _note_ids(featurizer: VisitFeaturizer, note: str) -> list[int]:
    """The note's token ids, whole (no special tokens)."""
    whole = tokenizers.Tokenizer.from_str(featurizer.text_tokenizer.to_str())
    whole.no_truncation()
    whole.no_padding()
    return whole.encode(clean_note_text(note), add_special_tokens=False).ids


def test_windows_overlap_by_the_stride_and_the_last_window_holds_the_notes_end(featurizer: VisitFeaturizer) -> None:
    windows = _windowed(featurizer, long_note="windows", max_windows=4, stride=4)
    note = " ".join(_words(featurizer, 13))  # two windows of 6 starting 4 apart (0 and 4) cannot hold it; three can
    ids = _note_ids(windows, note)
    assert len(ids) == 13
    out = windows(_note_batch(note))
    laid_out = out["input_ids"][0].reshape(4, WINDOW)
    mask = out["attention_mask"][0].reshape(4, WINDOW)
    cls, sep = laid_out[0, 0], laid_out[0, WINDOW - 1]
    for k in range(3):
        content = laid_out[k][mask[k] == 1][1:-1].tolist()
        assert content == ids[4 * k : 4 * k + 6]  # overlapping by 6 - 4 = 2 tokens
        assert laid_out[k][mask[k] == 1][0] == cls and laid_out[k][mask[k] == 1][-1] == sep
    # The third window ends with the note's last token; the fourth is absent: all padding, all masked out.
    assert laid_out[2][mask[2] == 1][-2] == ids[-1]
    assert mask[3].sum() == 0 and (laid_out[3] == PAD_ID).all()
    assert out["text_windows"][0] == 3 and out["text_truncated"][0] == 0


def test_a_note_shorter_than_one_window_and_an_empty_note_fill_the_first_window_only(featurizer: VisitFeaturizer) -> None:
    windows = _windowed(featurizer, long_note="windows", max_windows=3)
    out = windows(_note_batch(_words(featurizer, 1)[0], "", None))
    mask = out["attention_mask"].reshape(3, 3, WINDOW)
    assert mask[0, 0].sum() == 3 and mask[1, 0].sum() == 2 and mask[2, 0].sum() == 2  # [CLS] fever [SEP]; [CLS] [SEP]
    assert mask[:, 1:].sum() == 0
    assert out["has_note"].tolist() == [1, 0, 0] and out["text_windows"].tolist() == [1, 1, 1]
    assert out["text_truncated"].sum() == 0


def test_more_windows_than_max_windows_are_counted_as_truncated(featurizer: VisitFeaturizer) -> None:
    windows = _windowed(featurizer, long_note="windows", max_windows=2, stride=6)
    note = " ".join(_words(featurizer, 20))
    out = windows(_note_batch(note))
    assert out["input_ids"].shape == (1, 2 * WINDOW)
    assert out["attention_mask"].sum() == 2 * WINDOW
    assert out["text_truncated"][0] == 1 and out["text_windows"][0] == 4  # 20 tokens in windows of 6, none shared


def test_head_tail_keeps_a_quarter_from_the_start_and_the_rest_from_the_end(featurizer: VisitFeaturizer) -> None:
    words = _words(featurizer, 18)
    note = " ".join(words)
    ids = _note_ids(featurizer, note)
    head_tail = _windowed(featurizer, long_note="head_tail")
    head = _windowed(featurizer, long_note="head")
    out, first = head_tail(_note_batch(note, words[0])), head(_note_batch(note, words[0]))
    assert out["input_ids"].shape == (2, WINDOW)
    # 6 note tokens: 6 // 4 = 1 from the start, 5 from the end.
    assert out["input_ids"][0, 1:-1].tolist() == ids[:1] + ids[-5:]
    assert first["input_ids"][0, 1:-1].tolist() == ids[:6]
    # A note that fits is read whole either way.
    assert out["input_ids"][1].tolist() == first["input_ids"][1].tolist()
    assert out["text_truncated"].tolist() == first["text_truncated"].tolist() == [1, 0]


def test_long_note_settings_out_of_range_are_errors(featurizer: VisitFeaturizer) -> None:
    with pytest.raises(ValueError, match="long_note must be one of"):
        _windowed(featurizer, long_note="middle")
    with pytest.raises(ValueError, match="max_windows"):
        _windowed(featurizer, long_note="head", max_windows=2)
    with pytest.raises(ValueError, match=r"stride must be in \[1, 6\]"):
        _windowed(featurizer, long_note="windows", max_windows=2, stride=7)
