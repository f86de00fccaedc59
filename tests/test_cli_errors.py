"""User errors at the command line: one line naming the path and the fix, exit code 2, before Ray starts (and, for
pretraining, before torch loads); ``--help`` loads neither torch nor Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medmplm.data.schema import SPLITS, VISITS_DIR
from medmplm.tasks.testing_utils import write_finetune_prepared_dir

HEAVY = ("torch", "ray", "deepspeed")


def run_main(module: str, argv: list[str], cwd) -> subprocess.CompletedProcess:
    """``module.main(argv)`` in a fresh interpreter; its last stdout line lists the heavy modules it imported."""
    code = textwrap.dedent(
        f"""
        import sys
        from {module} import main
        try:
            status = main({argv!r})
        except SystemExit as exit:
            status = exit.code
        print(sorted(name for name in {HEAVY!r} if name in sys.modules))
        sys.exit(status)
        """
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def heavy_imports(result: subprocess.CompletedProcess) -> list[str]:
    return ast.literal_eval(result.stdout.splitlines()[-1])


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("module", ["medmplm.pretrain", "medmplm.finetune"])
def test_help_loads_neither_torch_nor_ray(module, tmp_path):
    result = run_main(module, ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m {module}" in result.stdout
    assert heavy_imports(result) == []


def test_pretrain_on_a_missing_prepared_dir(tmp_path):
    result = run_main("medmplm.pretrain", ["data.prepared_dir=nosuch"], tmp_path)
    line = one_error_line(result)
    assert "data.prepared_dir: nosuch does not exist" in line and "python -m medmplm.prepare" in line
    assert heavy_imports(result) == []


@pytest.mark.parametrize("table", ["ADMISSIONS.csv.gz", "admissions.csv"])
def test_pretrain_on_raw_mimic_tables_says_to_prepare_them(table, tmp_path):
    raw = tmp_path / "mimic"
    raw.mkdir()
    (raw / table).write_text("")
    result = run_main("medmplm.pretrain", [f"data.prepared_dir={raw}"], tmp_path)
    line = one_error_line(result)
    assert f"{raw} holds raw MIMIC tables" in line
    assert f"python -m medmplm.prepare --mimic {raw} --out DIR" in line
    assert heavy_imports(result) == []


@pytest.fixture
def finetune_main(monkeypatch, tmp_path):
    """``medmplm.finetune.main`` in this process (torch is loaded here already), run in ``tmp_path``; starting Ray
    fails the test."""
    import ray

    from medmplm.finetune import main

    def no_ray(*args, **kwargs):
        raise AssertionError("the error should come before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.chdir(tmp_path)
    return main


def test_finetune_from_a_missing_export(finetune_main, capsys):
    assert finetune_main(["--init", "runs/nosuch/export"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "error: model.init_from: runs/nosuch/export does not exist; "
        "pass the export directory of a pretraining run (runs/<run>/export)"
    )


def test_finetune_on_raw_mimic_tables_says_to_prepare_them(finetune_main, capsys, tmp_path):
    (tmp_path / "ADMISSIONS.csv").write_text("")
    assert finetune_main([f"data.prepared_dir={tmp_path}"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"python -m medmplm.prepare --mimic {tmp_path} --out DIR" in line


def test_finetune_with_no_examples_is_one_line_not_a_traceback(finetune_main, capsys, tmp_path):
    prepared = write_finetune_prepared_dir(tmp_path / "prepared", patients=(6, 3, 3))
    for split in SPLITS:
        path = prepared / VISITS_DIR / split / "part-00000.parquet"
        visits = pq.read_table(path)
        column = visits.schema.get_field_index("note_text")
        pq.write_table(visits.set_column(column, "note_text", pa.nulls(visits.num_rows, pa.string())), path)
    argv = [
        "--task",
        "readmission",
        "--model",
        "logreg",
        f"data.prepared_dir={prepared}",
        "finetune.task_options.require_note=true",
        f"finetune.results_dir={tmp_path / 'results'}",
    ]
    assert finetune_main(argv) == 2
    err = capsys.readouterr().err
    # The run's header may come before it; the error itself is one line, with no traceback.
    line = err.splitlines()[-1]
    assert "Traceback" not in err
    assert line.startswith(f"error: {prepared}: the train split has no readmission examples")
    assert "no_note" in line


def test_synthetic_into_an_existing_directory(tmp_path):
    out = tmp_path / "mimic"
    out.mkdir()
    (out / "ADMISSIONS.csv").write_text("keep me")
    result = run_main("medmplm.synthetic.__main__", ["--out", str(out), "--patients", "2"], tmp_path)
    line = one_error_line(result)
    assert str(out) in line and "--overwrite" in line
    assert (out / "ADMISSIONS.csv").read_text() == "keep me"
