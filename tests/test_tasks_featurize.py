"""Task examples -> arrays: visit alignment, labels, blank slots, and no label in the input."""

from __future__ import annotations

import numpy as np
import pytest

from medmplm.data.features import VisitFeaturizer
from medmplm.models import MedMPLMConfig, MedMPLMModel
from medmplm.pretraining.medmplm import build_medmplm
from medmplm.tasks import build_task, read_visits
from medmplm.tasks.featurize import VISIT_ARRAY_KEYS, ExampleFeaturizer
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    prepared = write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"))
    backbone = build_medmplm(MedMPLMModel, prepared, MedMPLMConfig.from_preset("tiny"))
    return prepared, VisitFeaturizer.from_model(backbone), backbone


def _columns(table):
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def test_medrec_arrays(setup):
    prepared, visit_featurizer, backbone = setup
    task = build_task("medrec", max_history=3)
    train = read_visits(prepared, "train")
    space = task.label_space(train)
    examples = task.build_examples(train, space).examples
    featurize = ExampleFeaturizer(visit_featurizer, task.max_visits, space)
    arrays = featurize(_columns(examples))
    n = examples.num_rows
    assert arrays["input_ids"].shape == (n, 4, visit_featurizer.num_windows * backbone.config.text_max_length)
    assert arrays["diag_ids"].shape == (n, 4, 1 + backbone.config.max_codes)
    assert arrays["labels"].shape == (n, len(space)) and arrays["labels"].dtype == np.float32

    rows = examples.to_pylist()
    med_vocab = backbone.medication_vocab
    for i, row in enumerate(rows):
        num_visits = len(row["diagnoses"])
        # Right-aligned: the target visit is the last slot, earlier visits just before it.
        assert arrays["visit_mask"][i].tolist() == [0] * (4 - num_visits) + [1] * num_visits
        # The target visit shows no medication and no note; its diagnoses are there.
        assert arrays["med_mask"][i, -1, 1:].sum() == 0 and arrays["has_note"][i, -1] == 0
        assert arrays["diag_mask"][i, -1, 1:].sum() == len(row["diagnoses"][-1])
        # The slot before the target holds the previous visit's medications.
        previous = med_vocab.encode(row["medications"][-2])
        assert arrays["med_ids"][i, -2, 1 : 1 + len(previous)].tolist() == previous
        assert sorted(np.array(space)[arrays["labels"][i] == 1].tolist()) == sorted(row["label_codes"])
    # Empty slots equal the featuriser's blank visit.
    blank_rows = np.argwhere(arrays["visit_mask"] == 0)
    assert len(blank_rows) > 0
    i, v = blank_rows[0]
    for key in VISIT_ARRAY_KEYS:
        assert np.array_equal(arrays[key][i, v], featurize._blank[key])


def test_icd_input_never_has_diagnoses(setup):
    prepared, visit_featurizer, _ = setup
    task = build_task("icd", top_k=5)
    train = read_visits(prepared, "train")
    space = task.label_space(train)
    examples = task.build_examples(train, space).examples
    arrays = ExampleFeaturizer(visit_featurizer, task.max_visits, space)(_columns(examples))
    assert arrays["diag_mask"][:, :, 1:].sum() == 0
    assert arrays["med_mask"][:, :, 1:].sum() > 0
    # Visits without a note are examples too (require_note is off by default); the model masks their text out.
    noted = [notes[0] is not None for notes in examples.column("note_text").to_pylist()]
    assert arrays["has_note"][:, 0].tolist() == noted and not all(noted)
    assert arrays["labels"].sum(axis=1).min() >= 1


def test_binary_labels_and_errors(setup):
    prepared, visit_featurizer, _ = setup
    task = build_task("readmission")
    examples = task.build_examples(read_visits(prepared, "train"), [])
    arrays = ExampleFeaturizer(visit_featurizer, 1, None)(_columns(examples.examples))
    assert arrays["labels"].tolist() == examples.examples.column("label").to_pylist()
    assert arrays["input_ids"].shape[:2] == (examples.examples.num_rows, 1)

    with pytest.raises(ValueError, match="expected 1..1 visits"):
        ExampleFeaturizer(visit_featurizer, 1, None)(
            {
                "subject_id": np.array([7]),
                "note_text": [[None, None]],
                "diagnoses": [[[], []]],
                "medications": [[[], []]],
                "label": np.array([0]),
            }
        )
    with pytest.raises(ValueError, match="outside the task's label space"):
        ExampleFeaturizer(visit_featurizer, 1, ["4019"])(
            {"note_text": [[None]], "diagnoses": [[[]]], "medications": [[[]]], "label_codes": [["9999"]]}
        )
    with pytest.raises(ValueError, match="non-empty label space"):
        ExampleFeaturizer(visit_featurizer, 1, [])
