"""Result records: one file per run, gathered into one tidy table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmplm.results import SCRATCH, ResultRecord, gather_results, new_run_id, summary_table, write_result


def _record(model: str, init: str, seed: int, auroc: float, ratio: float = 0.1) -> ResultRecord:
    return ResultRecord(
        run_id=new_run_id("readmission", model),
        task="readmission",
        model=model,
        init=init,
        train_ratio=ratio,
        seed=seed,
        lr=5e-4,
        epochs=3,
        num_train=120,
        metrics={"val": {"auroc": auroc + 0.01, "f1": 0.2}, "test": {"auroc": auroc, "f1": 0.1}},
        num_examples={"val": 40, "test": 41},
        details={"threshold": 0.5},
    )


def test_write_and_gather(tmp_path):
    records = [
        _record("medmplm", "/ckpt", 0, 0.70),
        _record("medmplm", "/ckpt", 1, 0.74),
        _record("logreg", SCRATCH, 0, 0.6),
    ]
    for record in records:
        write_result(tmp_path, record)
    assert not list(tmp_path.glob(".*")), "no temporary file may be left behind"
    df = gather_results(tmp_path)
    assert len(df) == 3 * 2 * 2
    row = df[(df.run_id == records[1].run_id) & (df.split == "test") & (df.metric == "auroc")].iloc[0]
    assert row.value == pytest.approx(0.74) and row.pretrained and row.num_examples == 41 and row.seed == 1
    assert not df[df.model == "logreg"].pretrained.any()

    table = summary_table(df, split="test", metrics=["auroc"])
    assert table.loc[("readmission", "medmplm", True, 0.1), "auroc"] == "0.720 ± 0.028 (2)"
    assert table.loc[("readmission", "logreg", False, 0.1), "auroc"] == "0.600 (1)"


def test_run_ids_are_unique_and_never_overwritten(tmp_path):
    record = _record("medmplm-code+medmplm-text", SCRATCH, 0, 0.5)
    assert "medmplm-code_medmplm-text" in record.run_id
    assert new_run_id("icd", "logreg") != new_run_id("icd", "logreg")
    write_result(tmp_path, record)
    with pytest.raises(FileExistsError, match=record.run_id):
        write_result(tmp_path, record)


def test_gather_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result files"):
        gather_results(tmp_path)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "stray.parquet")
    with pytest.raises(ValueError, match="stray.parquet"):
        gather_results(tmp_path)


def test_metrics_without_example_count_is_an_error():
    record = _record("logreg", SCRATCH, 0, 0.5)
    record.num_examples = {"val": 3}
    with pytest.raises(ValueError, match="split 'test'"):
        record.to_table()
