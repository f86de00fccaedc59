"""Fine-tuning examples on the data the user meant: nested training ratios, visits without a note."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medmplm.data.schema import SPLITS, VISITS_DIR
from medmplm.data.splits import nested_train_patients
from medmplm.tasks import NoExamplesError, Readmission, build_task, read_visits
from medmplm.tasks.runner import build_example_sets
from medmplm.tasks.testing_utils import write_finetune_prepared_dir


def _train_hadm_ids(task, prepared, ratio: float, seed: int = 0) -> set[int]:
    return set(build_example_sets(task, str(prepared), ratio, seed)[1]["train"].examples.column("hadm_id").to_pylist())


def test_readmission_training_examples_are_nested_across_ratios(tmp_path):
    prepared = write_finetune_prepared_dir(tmp_path, patients=(300, 8, 8))
    task = Readmission(subsample_negatives=True)
    by_ratio = {ratio: _train_hadm_ids(task, prepared, ratio) for ratio in (0.1, 0.2, 0.5, 1.0)}
    assert by_ratio[0.1] and by_ratio[0.1] < by_ratio[0.2] < by_ratio[0.5] < by_ratio[1.0]

    # Every training visit of the 10% patients is an example or excluded with its reason, never both.
    _, sets = build_example_sets(task, str(prepared), 0.1, seed=0)
    train = sets["train"]
    assert train.exclusion_counts()["negative_subsampled"] > 0
    visits = read_visits(prepared, "train")
    patients = pa.array(nested_train_patients(visits.column("subject_id").to_numpy(), 0.1, seed=0))
    accounted = train.examples.column("hadm_id").to_pylist() + train.excluded.column("hadm_id").to_pylist()
    assert sorted(accounted) == sorted(
        visits.filter(pc.is_in(visits.column("subject_id"), value_set=patients)).column("hadm_id").to_pylist()
    )


@pytest.fixture(scope="module")
def prepared_without_notes(tmp_path_factory):
    prepared = write_finetune_prepared_dir(tmp_path_factory.mktemp("prepared"))
    for split in SPLITS:
        path = prepared / VISITS_DIR / split / "part-00000.parquet"
        table = pq.read_table(path)
        notes = table.schema.get_field_index("note_text")
        pq.write_table(table.set_column(notes, "note_text", pa.nulls(table.num_rows, pa.string())), path)
    return prepared


@pytest.mark.parametrize("task_name", ["readmission", "icd", "medrec"])
def test_visits_without_a_note_are_examples_by_default(prepared_without_notes, task_name):
    _, sets = build_example_sets(build_task(task_name), str(prepared_without_notes), 1.0, seed=0)
    for split, examples in sets.items():
        assert len(examples) > 0, split
        assert "no_note" not in examples.exclusion_counts()


@pytest.mark.parametrize("task_name", ["readmission", "icd"])
def test_require_note_on_note_less_data_is_a_one_line_error(prepared_without_notes, task_name):
    task = build_task(task_name, require_note=True)
    with pytest.raises(NoExamplesError) as raised:
        build_example_sets(task, str(prepared_without_notes), 1.0, seed=0)
    message = str(raised.value)
    assert "\n" not in message
    assert str(prepared_without_notes) in message and f"the train split has no {task_name} examples" in message
    assert "no_note" in message and "require_note=false" in message
    assert raised.value.exclusion_counts["no_note"] > 0 and raised.value.split == "train"
