"""The ``next_dx`` task and patient-level fine-tuning (M-BEHRT): diagnosis categories, examples and exclusions, no
leakage of the target visit, what a patient example shows of its target for each task, the backbones and featuriser the
runner picks, and the fine-tuning model's short training and save/load round trip."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import average_precision_score

from medmplm.config import ConfigError, ModelSection, load_config
from medmplm.metrics import next_dx_metrics
from medmplm.models.mbehrt.testing_utils import write_patient_prepared_dir
from medmplm.pretraining import get_family
from medmplm.pretraining.mbehrt import PatientSequenceBuilder, read_visit_table
from medmplm.tasks import build_task, read_visits
from medmplm.tasks.base import VISIT_COLUMNS
from medmplm.tasks.config import FinetuneConfig
from medmplm.tasks.modeling import FineTuningModel, PatientFineTuningModel, build_finetuning_model, head_config_for
from medmplm.tasks.next_dx import diagnosis_category
from medmplm.tasks.patient import histories_of, patient_examples, with_patient_histories
from medmplm.tasks.runner import build_backbones, example_featurizer, featurizer_key


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a shared CPU they can make each step many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_patient_prepared_dir(tmp_path_factory.mktemp("prepared"))


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("ICD9CM:40391", "ICD9CM:403"),
        ("ICD9CM:042", "ICD9CM:042"),
        ("ICD9CM:V4581", "ICD9CM:V45"),
        ("ICD9CM:E8809", "ICD9CM:E880"),
        ("ICD10CM:I2510", "ICD10CM:I25"),
        ("ICD10CM:E119", "ICD10CM:E11"),
        ("4019", "401"),
    ],
)
def test_diagnosis_categories(code, category):
    assert diagnosis_category(code) == category


def test_a_code_without_a_diagnosis_category_is_named():
    with pytest.raises(ValueError, match="'ICD9Proc:3893' is not a diagnosis code"):
        diagnosis_category("ICD9Proc:3893")
    task = build_task("next_dx")
    visits = pa.table({"hadm_id": [5], "diagnoses": [["N02B"]]})
    with pytest.raises(ValueError, match="'diagnoses', hadm_id 5: 'N02B' is neither"):
        task.label_space(visits)


def visits_table(rows: list[tuple[int, int, str, list[str]]]) -> pa.Table:
    """``(subject_id, hadm_id, admission date, diagnoses)`` rows with the other task columns filled in."""
    columns = {name: [] for name in VISIT_COLUMNS}
    for subject_id, hadm_id, admit, diagnoses in rows:
        columns["subject_id"].append(subject_id)
        columns["hadm_id"].append(hadm_id)
        columns["admittime"].append(datetime.fromisoformat(admit))
        columns["diagnoses"].append(diagnoses)
        columns["medications"].append(["N02B"])
        columns["note_text"].append(f"note {hadm_id}")
        columns["readmission_30d"].append(0)
        columns["readmission_30d_nonelective"].append(0)
    return pa.table(columns)


def test_next_visit_examples_labels_and_exclusions():
    visits = visits_table(
        [
            (1, 13, "2100-03-01", ["ICD9CM:4280", "ICD9CM:42731", "ICD9CM:4281"]),
            (1, 11, "2100-01-01", ["ICD9CM:4019"]),
            (1, 12, "2100-02-01", ["ICD9CM:25000", "ICD9CM:4019"]),
            (2, 21, "2100-01-01", ["ICD9CM:4280"]),
            (3, 31, "2100-01-01", ["ICD9CM:4019"]),
            (3, 32, "2100-02-01", []),
            (3, 33, "2100-03-01", ["ICD9CM:5990"]),
        ]
    )
    task = build_task("next_dx", top_k=3, max_history=1)
    # Categories by the visits listing them (ties by name): 401 (3 visits), 428 (2), then 250 and 427 and 599 (1).
    space = task.label_space(visits)
    assert space == ["ICD9CM:401", "ICD9CM:428", "ICD9CM:250"]
    examples = task.build_examples(visits, space)
    rows = examples.examples.to_pylist()
    assert [row["hadm_id"] for row in rows] == [12, 13]
    assert rows[0]["label_codes"] == ["ICD9CM:250", "ICD9CM:401"]
    # 428 once, though two of the visit's codes fall in it; 427 is outside the label space (counted).
    assert rows[1]["label_codes"] == ["ICD9CM:428"]
    assert examples.dropped_label_codes == 1 + 1
    # Visit 13's input: the one earlier visit max_history keeps, then a blank slot where the target visit stands.
    assert rows[1]["note_text"] == ["note 12", None]
    assert rows[1]["diagnoses"] == [["ICD9CM:25000", "ICD9CM:4019"], []]
    assert rows[1]["medications"] == [["N02B"], []]
    assert examples.exclusion_counts() == {
        "first_visit": 2,
        "no_diagnoses": 1,
        "no_diagnosis_in_label_space": 1,
        "single_visit_patient": 1,
    }


def test_next_dx_metrics():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    y_score = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1], [0.7, 0.4, 0.5], [0.2, 0.1, 0.3]])
    metrics = next_dx_metrics(y_true, y_score)
    assert metrics["ap_micro"] == pytest.approx(average_precision_score(y_true, y_score, average="micro"))
    assert {"auc_micro", "auc_macro", "prauc", "f1_micro", "p_at_5", "hamming_accuracy"} <= set(metrics)


# --- patient examples ------------------------------------------------------------------------------------------------


def split_examples(prepared, task_name: str, **options):
    task = build_task(task_name, **options)
    train = read_visits(prepared, "train")
    space = task.label_space(train)
    return task, space, task.build_examples(train, space)


def test_next_dx_input_ends_before_the_target_visit(prepared):
    task, _, examples = split_examples(prepared, "next_dx", max_history=1)
    visits = read_visit_table(prepared, "train")
    table = patient_examples(examples.examples, visits)
    admitted = dict(zip(visits.column("hadm_id").to_pylist(), visits.column("admittime").to_pylist()))
    patient_visits = {}
    for subject_id, hadm_id in zip(visits.column("subject_id").to_pylist(), visits.column("hadm_id").to_pylist()):
        patient_visits.setdefault(subject_id, []).append(hadm_id)
    assert table.num_rows == len(examples) > 5
    for row in table.to_pylist():
        shown = [visit["hadm_id"] for visit in row["visits"]]
        # Every earlier visit of the patient (not only max_history of them), and nothing from the target on.
        earlier = [h for h in patient_visits[row["subject_id"]] if admitted[h] < admitted[row["hadm_id"]]]
        assert shown == earlier and row["hadm_id"] not in shown

    # The featurised history ends before the target too: as many visits as came before it, no note slot beyond.
    model = get_family("mbehrt").build_model(
        str(prepared), ModelSection(family="mbehrt", overrides={"text_num_frozen_layers": 0, "max_visits": 8})
    ).model
    rows = PatientSequenceBuilder(model.config, model.tokenizer).build(histories_of(table))
    expected_visits = [len(row["visits"]) for row in table.to_pylist()]
    assert rows["num_visits"].tolist() == expected_visits
    assert rows["visit_ids"].max(axis=1).tolist() == expected_visits
    assert (rows["note_visit_ids"].max(axis=1) <= np.array(expected_visits)).all()


@pytest.mark.parametrize(
    ("task_name", "shown"),
    [
        # Readmission shows all of its target visit: labs and procedures too.
        ("readmission", {"note_text", "diagnoses", "medications", "procedures", "labs"}),
        # Medication recommendation shows its target's diagnoses, ICD coding its note and medications: nothing else.
        ("medrec", {"diagnoses"}),
        ("icd", {"note_text", "medications"}),
    ],
)
def test_a_patient_example_shows_what_the_task_shows_of_its_target(prepared, task_name, shown):
    task, _, examples = split_examples(prepared, task_name)
    visits = read_visit_table(prepared, "train")
    records = {row["hadm_id"]: row for row in visits.to_pylist()}
    table = patient_examples(examples.examples, visits)
    fields = ("note_text", "diagnoses", "medications", "procedures", "labs")
    seen = set()
    for row in table.to_pylist():
        target = row["visits"][-1]
        assert target["hadm_id"] == row["hadm_id"]
        record = records[row["hadm_id"]]
        for field in fields:
            if field in shown:
                assert target[field] == record[field], (task_name, field)
                if record[field]:
                    seen.add(field)
            else:
                assert not target[field], (task_name, field)
        # Earlier visits are whole.
        for visit in row["visits"][:-1]:
            assert all(visit[field] == records[visit["hadm_id"]][field] for field in fields)
    assert seen == shown, "the fixture lacks a field, so the test would not see it blanked or kept"


def test_an_example_whose_target_is_not_in_the_visits_is_named(prepared):
    task, _, examples = split_examples(prepared, "readmission")
    visits = read_visit_table(prepared, "train")
    other = visits.filter(pa.compute.not_equal(visits.column("hadm_id"), examples.examples.column("hadm_id")[0]))
    with pytest.raises(ValueError, match=f"target hadm_id {examples.examples.column('hadm_id')[0]} is not one"):
        patient_examples(examples.examples, other)


# --- the fine-tuning model -------------------------------------------------------------------------------------------


def finetune_config(**overrides) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, {"train.seed": 0, **overrides})


@pytest.mark.parametrize(("model_name", "task_name"), [("mbehrt-shared", "next_dx"), ("mbehrt-text", "readmission")])
def test_patient_level_model_trains_and_round_trips(prepared, tmp_path, model_name, task_name):
    config = finetune_config(
        **{"finetune.model": model_name, "finetune.task": task_name, "model.allow_random_frozen": True}
    )
    task, space, examples = split_examples(prepared, task_name)
    backbones = build_backbones(config, str(prepared))
    assert backbones.vocabularies is None and backbones.code is backbones.text
    assert backbones.code.config.modalities == (["text"] if model_name == "mbehrt-text" else ["tabular", "text"])
    featurizer = example_featurizer(task, space, backbones)
    sets = with_patient_histories({"train": examples}, str(prepared), task, featurizer.builder)
    batch_table = sets["train"].examples.slice(0, 8)
    columns = dict(zip(batch_table.column_names, batch_table.columns))
    arrays = featurizer({name: column.to_numpy(zero_copy_only=False) for name, column in columns.items()})
    batch = {name: torch.from_numpy(value) for name, value in arrays.items()}
    assert batch["labels"].shape == ((8, len(space)) if task.multilabel else (8,))

    torch.manual_seed(0)
    head = head_config_for(task, len(space) if task.multilabel else 1)
    model = build_finetuning_model(model_name, head, backbones.code)
    assert type(model) is PatientFineTuningModel and not model.no_history
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        assert model(**batch).loss.item() < before

    model.save_pretrained(tmp_path / "saved")
    loaded = FineTuningModel.from_pretrained(tmp_path / "saved")
    assert type(loaded) is PatientFineTuningModel and loaded.model_name == model_name
    assert (tmp_path / "saved" / "backbone" / "config.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, logits, rtol=1e-6, atol=1e-7)


def test_featurizer_keys_tell_models_and_tasks_apart(prepared):
    keys = {}
    for model_name in ("mbehrt-tabular", "medmplm"):
        config = finetune_config(**{"finetune.model": model_name, "model.allow_random_frozen": True})
        backbones = build_backbones(config, str(prepared))
        for task_name in ("readmission", "next_dx"):
            task, space, _ = split_examples(prepared, task_name)
            keys[model_name, task_name] = featurizer_key(task, space, backbones)
    assert len(set(keys.values())) == 4


def test_backbone_errors_name_the_key(prepared, tmp_path):
    tabular = get_family("mbehrt").build_model(
        str(prepared), ModelSection(family="mbehrt", overrides={"modalities": ["tabular"]})
    ).model
    tabular.save_pretrained(tmp_path / "tabular")
    export = str(tmp_path / "tabular")
    cases = [
        ("mbehrt-early", "finetune.init_code", "finetune.init_code: .* modalities \\['tabular'\\]"),
        ("mbehrt-early", "finetune.init_text", "finetune.init_text: --model mbehrt-early"),
        ("mbehrt-text", "finetune.init_code", "finetune.init_code: --model mbehrt-text"),
        ("mbehrt-tabular", "model.init_from", "model.init_from: --model mbehrt-tabular"),
    ]
    for model_name, key, message in cases:
        with pytest.raises(ConfigError, match=f"^{message}"):
            build_backbones(finetune_config(**{"finetune.model": model_name, key: export}), str(prepared))
    with pytest.raises(ConfigError, match="^model.text_checkpoint: none given"):
        build_backbones(finetune_config(**{"finetune.model": "mbehrt-late"}), str(prepared))
    # The export of the right layout loads, and is recorded as where the weights came from.
    backbones = build_backbones(
        finetune_config(**{"finetune.model": "mbehrt-tabular", "finetune.init_code": str(tmp_path / "tabular")}),
        str(prepared),
    )
    assert backbones.code_init == str(tmp_path / "tabular") and backbones.text_init is None
