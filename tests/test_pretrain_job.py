"""``ray job submit`` from the repository root against a loopback ``ray start --head`` (slow: starts its own Ray).

Runs exactly the command of ``docs/ray_job_submit.md`` (address, working directory upload with ``.gitignore`` and
``.rayignore`` in place, token authentication on) and stops only the Ray instance it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from medmplm.models import MedMPLMForPretraining

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"ray start exited with {head.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # 401 without a token: the dashboard is up
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the dashboard at {url} did not come up in {timeout:.0f} s")


def submit_job(dashboard: str, env: dict[str, str], log: Path, entrypoint: list[str]) -> str:
    """``ray job submit --working-dir . -- <entrypoint>`` from the repository root; its output, asserted successful."""
    submission_id = f"medmplm-test-{os.getpid()}-{time.time_ns()}"
    command = [RAY, "job", "submit", "--address", dashboard, "--submission-id", submission_id, "--working-dir", ".",
               "--", *entrypoint]  # fmt: skip
    # Right after `ray start` the job agent may not have registered yet: Ray answers "No available agent to
    # submit job, please try again later" without accepting the job, so trying again is safe.
    for _ in range(12):
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        output = result.stdout + result.stderr
        if "No available agent to submit job" not in output:
            break
        time.sleep(10)
    if result.returncode != 0 and "Connection aborted" in output:
        # A loaded machine can drop the CLI's connection to the dashboard after the job was accepted: follow the
        # job by its id instead (`ray job logs --follow` returns when the job ends) and read its final status.
        follow = [RAY, "job", "logs", "--address", dashboard, "--follow", submission_id]
        logs = subprocess.run(follow, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        status = subprocess.run(
            [RAY, "job", "status", "--address", dashboard, submission_id],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        output += logs.stdout + logs.stderr
        log.write_text(output)
        assert "SUCCEEDED" in status.stdout + status.stderr, (status.stdout + status.stderr + output)[-4000:]
    else:
        log.write_text(output)
        assert result.returncode == 0, output[-4000:]
        assert "succeeded" in output
    return output


@pytest.mark.timeout(2400)
def test_ray_job_submit_from_the_repository_root(tmp_path):
    """The job generates and prepares its own synthetic data (the defaults' path), then pretrains and exports; a
    second job sweeps fine-tuning from that export."""
    assert (REPO / ".gitignore").is_file() and (REPO / ".rayignore").is_file()
    dashboard = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # The job's `python` must be this environment's (it has the project's dependencies).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    head_log = open(tmp_path / "head.log", "w")
    # Its own temp dir (short: Unix socket paths are limited to ~107 characters): `ray start` publishes its address
    # as the machine's default Ray in <temp dir>/ray_current_cluster, which must not capture other local ray.init().
    temp_dir = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")
    head = subprocess.Popen(
        [
            RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}",
            "--node-ip-address=127.0.0.1", f"--port={free_port()}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
            "--num-cpus=2", "--include-dashboard=true",
            # Fixed default ports (the job agent's 52365 above all) may be held by other Ray instances on this
            # machine; the job agent then never registers and every submission is refused.
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--ray-client-server-port={free_port()}",
        ],
        env=env, stdout=head_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_dashboard(dashboard, head, timeout=300)
        submit_env = {**env, "RAY_AUTH_MODE": "token"}
        output = submit_job(
            dashboard,
            submit_env,
            tmp_path / "job.log",
            [
                "python", "-m", "medmplm.pretrain",
                f"data.data_root={tmp_path / 'data'}", "data.synthetic_patients=120",
                f"run.storage_path={tmp_path / 'runs'}", "run.name=job",
                "train.epochs=1", "train.global_batch_size=16", "train.micro_batch_size=8",
                # What is under test is the submission, not the training: a few steps of each stage.
                "model.text_stage_epochs=1", "train.max_steps=6",
            ],
        )  # fmt: skip
        # The embedded default: a bert-mlm text encoder first, then MedM-PLM from it.
        assert "Pretraining finished: bert-mlm, run job-text" in output
        assert "Pretraining finished: medmplm, run job" in output
        assert "generating a synthetic MIMIC-III (120 patients, seed 0)" in output
        model = MedMPLMForPretraining.from_pretrained(tmp_path / "runs" / "job" / "export")
        assert model.config.text_pretrained == str(tmp_path / "runs" / "job-text" / "export")

        # A sweep is submitted the same way: one MedM-PLM trial from that export, its record in the sweep directory.
        prepared = next((tmp_path / "data").rglob("manifest.json")).parent
        output = submit_job(
            dashboard,
            submit_env,
            tmp_path / "sweep.log",
            [
                "python", "-m", "tuning.sweep", "--config", "small", f"prepared_dir={prepared}",
                f"exports.medmplm={tmp_path / 'runs' / 'job' / 'export'}", f"storage_path={tmp_path / 'sweeps'}",
                "name=job", "tasks=[readmission]", "models=[medmplm]", "train_ratios=[1.0]", "seeds=[0]",
                "learning_rates.readmission=[1.0e-3]", "finetune.train.epochs=1",
                # 120 patients leave too few readmissions for a validation AUC: rank checkpoints by the loss.
                "finetune.finetune.score_metric=val_loss", "finetune.finetune.score_mode=min",
            ],
        )  # fmt: skip
        assert "1 trials (0 errored, 0 unfinished)" in output
        assert len(list((tmp_path / "sweeps" / "job" / "results").glob("readmission-medmplm-r1-*.parquet"))) == 1
    finally:
        # Only the instance started above: SIGTERM makes `ray start --block` stop the processes it started.
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=120)
        head_log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
