"""What a person sees from ``python -m medmplm.pretrain`` (``slow``: each test runs a short pretraining).

Without a terminal (the embedded default: a bert-mlm stage, then MedM-PLM): a short header, one line per interval and
per validation, and the summary, under 45 lines for both stages, with none of Ray's or DeepSpeed's own output. In a pseudo-terminal:
one progress bar.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def command(prepared: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medmplm.pretrain",
        f"data.prepared_dir={prepared}",
        f"run.storage_path={storage}",
        f"run.name={name}",
        "scaling.num_workers=1",
        "train.epochs=2",
        "train.micro_batch_size=16",
        "train.global_batch_size=16",
        *extra,
    ]


def ray_env() -> dict[str, str]:
    """This environment with the test's Ray, and without DS_ACCELERATOR, which other tests in the process may set:
    a user's shell does not have it."""
    import ray

    env = {name: value for name, value in os.environ.items() if name != "DS_ACCELERATOR"}
    return {**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}


@pytest.mark.timeout(900)
def test_default_output_without_a_terminal_is_short_and_medmplm_only(ray_local, synthetic_prepared, tmp_path):
    done = subprocess.run(
        command(synthetic_prepared, tmp_path, "quiet"),
        env=ray_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=800,
    )
    output = done.stdout + done.stderr
    (tmp_path / "output.txt").write_text(output)
    assert done.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert len(lines) < 45, f"{len(lines)} lines:\n{output}"
    assert "LOAD REPORT" not in output, "loading the text stage's export is not a surprise worth a report"
    for noise in ("RayTrainWorker", "TrainingReport", "Execution plan", "DeepSpeed", "Warning", "WARNING", "\x1b["):
        assert noise not in output, f"{noise!r} in the default output:\n{output}"
    assert lines[0].startswith("SYNTHETIC DATA"), "a run on synthetic data must say so first"
    # The embedded default: a bert-mlm text encoder on the notes first, then MedM-PLM from it; both exported.
    assert sum(line.startswith("epoch ") for line in lines) == 4, "one line per validation, 2 epochs x 2 stages"
    assert "Stage 1 of 2" in output and "Stage 2 of 2" in output
    assert "Pretraining finished: bert-mlm, run quiet-text" in output
    assert "Pretraining finished: medmplm, run quiet" in output
    assert (tmp_path / "quiet-text" / "export" / "config.json").is_file()
    assert (tmp_path / "quiet" / "export" / "config.json").is_file()
    recorded = yaml.safe_load((tmp_path / "quiet" / "pretrain_config.yaml").read_text())
    assert recorded["model"]["text_checkpoint"] == str(tmp_path / "quiet-text" / "export")


@pytest.mark.timeout(900)
def test_a_terminal_gets_one_progress_bar(ray_local, synthetic_prepared, tmp_path):
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 x 0; give it a window's size, as a terminal emulator does.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command(
            synthetic_prepared,
            tmp_path,
            "terminal",
            "model.pretrain_text_first=false",
            "model.allow_random_frozen=true",
        ),
        env=ray_env(),
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    output = b"".join(chunks).decode(errors="replace")
    (tmp_path / "terminal.txt").write_text(output)
    assert re.search(r"pretrain: +\d+%\|", output), f"no progress bar in:\n{output[-3000:]}"
    assert re.search(r"\d+/\d+ \[", output) and "samples/s" in output
