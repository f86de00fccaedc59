"""``python -m medmplm.report.attention``: the code-to-text weights of one visit, its figure, and what it never prints."""

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from medmplm.data.features import VisitFeaturizer, clean_note_text
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining, MedMPLMModel
from medmplm.models.testing_utils import DIAGNOSES, MEDICATIONS, read_split_batch, write_tiny_prepared_dir
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.report.attention import (
    AttentionMap,
    _one_visit_batch,
    attention_map,
    check_visit,
    dotted_icd9,
    draw_attention_map,
    find_visit,
    main,
)

# write_tiny_prepared_dir's training visit i has no note when i % 6 == 0, no diagnoses when i % 6 == 1 and no
# medications when i % 6 == 2; hadm_ids count from 100001.
NO_NOTE_HADM_ID = 100001
NO_MEDICATIONS_HADM_ID = 100003
FULL_HADM_ID = 100004


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("prepared"), num_visits=12)


@pytest.fixture(scope="module")
def export(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining model's save directory: the command loads the encoder out of it, as from a pretraining export."""
    torch.manual_seed(0)
    config = MedMPLMConfig.from_preset("tiny", text_max_length=48, max_codes=8)
    directory = tmp_path_factory.mktemp("export")
    build_medmplm(MedMPLMForPretraining, prepared, config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model(export: Path) -> MedMPLMModel:
    return MedMPLMModel.from_pretrained(export)


def run(export: Path, prepared: Path, hadm_id: int, out: Path, *options: str) -> int:
    argv = ["--model", str(export), "--prepared", str(prepared), "--hadm-id", str(hadm_id), "--out", str(out)]
    return main([*argv, *options])


def test_weights_are_each_codes_softmax_over_the_notes_tokens(model: MedMPLMModel, prepared: Path) -> None:
    split, visit = find_visit(prepared, FULL_HADM_ID)
    assert split == "train" and visit["note_text"] and visit["diagnoses"] and visit["medications"]
    attention = attention_map(model, visit)

    batch = read_split_batch(prepared, split)
    row = batch["hadm_id"] == FULL_HADM_ID
    features = VisitFeaturizer.from_model(model)({name: column[row] for name, column in batch.items()})
    num_tokens = int(features["attention_mask"].sum())
    assert num_tokens < features["attention_mask"].shape[1]  # the note is padded
    assert attention.weights.shape == (len(visit["diagnoses"]) + len(visit["medications"]), num_tokens)
    assert len(attention.tokens) == num_tokens and attention.tokens[0] == "[CLS]" and attention.tokens[-1] == "[SEP]"
    assert attention.code_labels == [
        *(f"dx:{dotted_icd9(c)}" for c in visit["diagnoses"]),
        *(f"med:{c}" for c in visit["medications"]),
    ]
    np.testing.assert_allclose(attention.weights.sum(axis=1), 1.0, atol=1e-5)
    assert (attention.weights >= 0).all()

    # The same numbers as the model's own output, whose padding columns get exactly zero weight.
    names = ("input_ids", "attention_mask", "has_note", "diag_ids", "diag_mask", "med_ids", "med_mask")
    inputs = {name: torch.from_numpy(features[name]) for name in names}
    with torch.no_grad():
        raw = model(**inputs, output_attentions=True).code_to_text_attentions[0].numpy()
    code_rows = [1 + i for i in range(len(visit["diagnoses"]))] + [
        features["diag_ids"].shape[1] + 1 + i for i in range(len(visit["medications"]))
    ]
    assert (raw[:, num_tokens:] == 0).all()
    np.testing.assert_array_equal(attention.weights, raw[code_rows, :num_tokens])


def test_a_note_read_in_overlapping_windows_is_one_column_per_note_token(model: MedMPLMModel, prepared: Path) -> None:
    windowed = copy.deepcopy(model)
    windowed.tokenizer = model.tokenizer
    windowed.config.set_note_reading(text_max_length=8, text_long_note="windows", text_max_windows=3, text_window_stride=4)
    _, visit = find_visit(prepared, FULL_HADM_ID)
    attention = attention_map(windowed, visit)

    featurizer = VisitFeaturizer.from_model(windowed)
    windows_filled = int(featurizer(_one_visit_batch(visit))["text_windows"][0])
    assert windows_filled >= 3  # the windows overlap, and the note is longer than the three read
    note = model.tokenizer(clean_note_text(visit["note_text"]), add_special_tokens=False)["input_ids"]
    # Three windows of 6 note tokens, 4 apart, read the note's first 2 * 4 + 6 tokens, each once.
    read = note[: 2 * 4 + 6]
    assert attention.tokens == ["[CLS]", *model.tokenizer.convert_ids_to_tokens(read), "[SEP]"]
    assert attention.special.tolist() == [True] + [False] * len(read) + [True]
    np.testing.assert_allclose(attention.weights.sum(axis=1), 1.0, atol=1e-5)
    assert attention.text_truncated


@pytest.mark.parametrize(
    ("code", "dotted"),
    [
        ("4280", "428.0"),
        ("486", "486"),
        ("V4581", "V45.81"),
        ("E8497", "E849.7"),
        ("x", "x"),
        ("ICD9CM:4280", "428.0"),
        ("ICD10CM:I2510", "I25.10"),
        ("ICD10CM:I10", "I10"),
        ("ICD9Proc:3893", "ICD9Proc:3893"),
    ],
)
def test_icd9_codes_are_dotted(code: str, dotted: str) -> None:
    assert dotted_icd9(code) == dotted


def test_word_pieces_merge_into_words_by_summing() -> None:
    attention = AttentionMap(
        hadm_id=1,
        code_labels=["dx:428.0", "med:C03C"],
        tokens=["[CLS]", "heart", "##fail", "##ure", "diuretic", "heart", "[SEP]"],
        special=np.array([True, False, False, False, False, False, True]),
        weights=np.array([[0.1, 0.2, 0.1, 0.1, 0.1, 0.3, 0.1], [0.5, 0.0, 0.0, 0.1, 0.3, 0.0, 0.1]]),
        text_truncated=False,
    )
    words, weights, special = attention.words()
    assert words == ["[CLS]", "heartfailure", "diuretic", "heart", "[SEP]"]
    np.testing.assert_allclose(weights, [[0.1, 0.4, 0.1, 0.3, 0.1], [0.5, 0.1, 0.3, 0.0, 0.1]])
    assert special.tolist() == [True, False, False, False, True]
    # [CLS] is not ranked, though the second code attends it most.
    assert attention.top_words(2) == [
        [("heartfailure", 0.4), ("heart", 0.3)],
        [("diuretic", 0.3), ("heartfailure", 0.1)],
    ]


def test_a_long_note_shows_its_most_attended_words(model: MedMPLMModel, prepared: Path) -> None:
    attention = attention_map(model, find_visit(prepared, FULL_HADM_ID)[1])
    words, weights, _ = attention.words()
    figure = draw_attention_map(attention, top_words=2, max_words=3)
    heatmap = figure.axes[0].images[0].get_array()
    assert heatmap.shape == (len(attention.code_labels), 3)
    strongest = np.sort(np.argsort(-weights.max(axis=0), kind="stable")[:3])
    np.testing.assert_array_equal(heatmap, weights[:, strongest])
    assert "3 most attended words shown" in figure.get_suptitle()


def test_command_draws_the_figure_without_printing_the_note(
    export: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from matplotlib.image import imread

    out = tmp_path / "attention.png"
    with caplog.at_level("DEBUG"):
        assert run(export, prepared, FULL_HADM_ID, out, "--top-words", "3") == 0
    printed = capsys.readouterr()
    assert str(out) in printed.out.splitlines()[-1]
    assert "protected health information" in printed.err
    pixels = imread(out)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 1
    assert [p.name for p in tmp_path.iterdir()] == ["attention.png"]  # no temporary file left beside it

    note = find_visit(prepared, FULL_HADM_ID)[1]["note_text"]
    note_words = [w for w in {*DIAGNOSES.values(), *MEDICATIONS.values()} if w in note.lower()]
    assert note_words
    for text in (printed.out, printed.err, caplog.text):
        assert note not in text
        assert not [w for w in note_words if w in text.lower()]


def test_a_visit_without_medications_still_draws(export: Path, prepared: Path, tmp_path: Path) -> None:
    assert run(export, prepared, NO_MEDICATIONS_HADM_ID, tmp_path / "attention.png") == 0


@pytest.mark.parametrize(
    ("hadm_id", "message"),
    [(999999, "hadm_id 999999 is in no split of"), (NO_NOTE_HADM_ID, f"hadm_id {NO_NOTE_HADM_ID} (train split of")],
)
def test_a_visit_it_cannot_draw_is_one_line_and_exit_code_2(
    export: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], hadm_id: int, message: str
) -> None:
    out = tmp_path / "attention.png"
    assert run(export, prepared, hadm_id, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and str(prepared) in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_a_visit_without_codes_is_refused() -> None:
    with pytest.raises(ValueError, match="hadm_id 7 has no diagnosis or medication code"):
        check_visit({"hadm_id": 7, "note_text": "Stable.", "diagnoses": [], "medications": []})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "missing"}, "--model: "),
        ({"prepared": "missing"}, "--prepared: "),
        ({"out": "missing/attention.png"}, "--out: "),
        ({"out": "attention.txt"}, "--out: "),
    ],
)
def test_bad_paths_are_one_line_and_exit_code_2(
    export: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    paths = {"model": export, "prepared": prepared, "out": tmp_path / "attention.png"}
    paths.update({name: tmp_path / value for name, value in change.items()})
    assert run(paths["model"], paths["prepared"], FULL_HADM_ID, paths["out"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1
