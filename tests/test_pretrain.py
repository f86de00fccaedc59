"""End-to-end pretraining on Ray Train + DeepSpeed with 2 CPU workers, on synthetic MIMIC-III prepared by the real
pipeline, with the real ``tiny`` model (all ``slow``: each starts Ray Train workers).

What is checked: ZeRO-2 and ZeRO-3 training where the loss goes down, checkpoints are written and the exported model
loads; a run resumed by name after its driver was stopped; recovery from a killed worker process without repeating
any step the checkpoint covered; two simulated nodes; cached and uncached frozen-prefix losses through Ray Data.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from medmplm.config import PretrainConfig, load_config
from medmplm.models import MedMPLMForPretraining
from medmplm.pretraining.medmplm import build_medmplm

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = "checkpoint_manager_snapshot.json"


def small_run(prepared: Path, storage: Path, name: str, *extra: str) -> list[str]:
    """Overrides for a short 2-worker run: 16 visits per step, a checkpoint every 4 steps, every step logged."""
    return [
        f"data.prepared_dir={prepared}",
        f"run.storage_path={storage}",
        f"run.name={name}",
        "scaling.num_workers=2",
        "train.global_batch_size=16",
        "train.micro_batch_size=8",
        "train.lr=3e-3",
        "train.checkpoint_every_steps=4",
        "train.log_every_steps=1",
        "train.early_stopping_patience=null",
        "logging.progress_bar=false",
        # MedM-PLM alone, on its random text encoder: the text stage of the embedded default is tested elsewhere.
        "model.pretrain_text_first=false",
        "model.allow_random_frozen=true",
        *extra,
    ]


def scalars_by_attempt(tensorboard_dir: Path) -> list[dict[str, list[tuple[int, float]]]]:
    """Scalars of each event file (one per worker-group attempt, oldest first): tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(tensorboard_dir.glob("events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3]))
    attempts = []
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        attempts.append({tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]})
    return attempts


def latest_registered_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint Ray Train has registered (from its run snapshot), if any."""
    try:
        snapshot = json.loads((run_dir / SNAPSHOT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    latest = snapshot.get("latest_checkpoint_result")
    return None if latest is None else int(latest["metrics"]["global_step"])


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode} while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_completed(run_dir: Path, epochs: int, last_logged_step: int) -> None:
    """The run's latest checkpoint closes its last epoch, at the last step the run logged."""
    step = latest_registered_step(run_dir)
    state = json.loads((run_dir / f"checkpoint_step{step:09d}" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (epochs, 0)
    assert state["global_step"] == last_logged_step == step


def assert_loss_went_down(attempts: list[dict[str, list[tuple[int, float]]]]) -> None:
    losses = sorted({step: value for attempt in attempts for step, value in attempt.get("train/loss", [])}.items())
    assert len(losses) >= 8, losses
    first = sum(v for _, v in losses[:3]) / 3
    last = sum(v for _, v in losses[-3:]) / 3
    assert last < first * 0.97, f"train loss did not go down: first steps {losses[:3]}, last steps {losses[-3:]}"


def assert_export_loads_trained_weights(export_dir: Path, initial_dir: Path) -> None:
    exported = MedMPLMForPretraining.from_pretrained(export_dir)
    initial = MedMPLMForPretraining.from_pretrained(initial_dir)
    changed = [
        name
        for name, parameter in exported.named_parameters()
        if parameter.requires_grad and not torch.equal(parameter, dict(initial.named_parameters())[name])
    ]
    frozen_same = all(
        torch.equal(parameter, dict(initial.named_parameters())[name])
        for name, parameter in exported.named_parameters()
        if not parameter.requires_grad
    )
    assert changed, "the exported model equals the initial model"
    assert frozen_same, "frozen parameters changed"
    assert (export_dir / "pretrain_config.yaml").is_file()
    assert json.loads((export_dir / "export_info.json").read_text())["global_step"] > 0


@pytest.mark.timeout(1800)
def test_zero2_end_to_end_and_resume_by_run_name(ray_local, synthetic_prepared, tmp_path):
    """Driver stopped after the first checkpoint; the same command resumes the run by name and completes it."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "medmplm.pretrain", *small_run(synthetic_prepared, tmp_path, "resume-me", "train.epochs=3", "deepspeed.zero_stage=2")]
    run_dir = tmp_path / "resume-me"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            stopped_after = wait_for(lambda: latest_registered_step(run_dir), 900, "the first checkpoint", first)
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=120)
    assert first.returncode != 0, "the first driver finished before it could be stopped"

    second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    output = second.stdout + second.stderr
    (tmp_path / "second.log").write_text(output)
    assert second.returncode == 0, output[-4000:]
    assert "run resume-me exists: resuming with its initial model" in output
    assert "Pretraining finished: medmplm, run resume-me" in output

    attempts = scalars_by_attempt(run_dir / "tensorboard")
    resumed = attempts[-1]
    resumed_from = int(resumed["run/resumed_from_step"][0][1])
    assert resumed_from >= stopped_after > 0
    steps = [step for step, _ in resumed["train/loss"]]
    assert steps == list(range(resumed_from + 1, steps[-1] + 1)), "the resumed run skipped or repeated steps"
    assert_completed(run_dir, epochs=3, last_logged_step=steps[-1])
    assert_loss_went_down(attempts)
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_step*"))
    assert checkpoints and all((run_dir / c / "model" / "config.json").is_file() for c in checkpoints)
    assert all((run_dir / c / "pretrain_config.yaml").is_file() for c in checkpoints)
    assert_export_loads_trained_weights(run_dir / "export", run_dir / "initial_model")


@pytest.mark.timeout(1800)
def test_zero3_recovers_from_a_killed_worker_without_repeating_checkpointed_steps(ray_local, synthetic_prepared, tmp_path):
    from medmplm.pretrain import run

    config = load_config(
        PretrainConfig,
        overrides=small_run(synthetic_prepared, tmp_path, "fault", "train.epochs=2", "deepspeed.zero_stage=3"),
    )
    run_dir = tmp_path / "fault"
    started = time.time()
    killed: dict[str, int] = {}

    def kill_a_worker() -> None:
        def workers():
            found = []
            for process in psutil.Process().children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(process.cmdline()) and process.create_time() >= started:
                        found.append(process)
                except psutil.NoSuchProcess:
                    continue
            return found

        killed["checkpoint"] = wait_for(lambda: latest_registered_step(run_dir), 900, "the first checkpoint")
        victim = wait_for(workers, 60, "the training worker processes")[0]
        killed["pid"] = victim.pid
        victim.kill()

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    where = run(config, progress_bar=False)
    killer.join(timeout=5)
    assert "pid" in killed, "no worker was killed"

    attempts = scalars_by_attempt(run_dir / "tensorboard")
    assert len(attempts) == 2, "expected exactly one restart of the worker group"
    before, after = attempts
    resumed_from = int(after["run/resumed_from_step"][0][1])
    # Resumed from the checkpoint that was the latest when the worker died (or a later one it had already saved).
    assert resumed_from >= killed["checkpoint"] > 0
    assert max(step for step, _ in before["train/loss"]) >= resumed_from
    steps = [step for step, _ in after["train/loss"]]
    assert steps == list(range(resumed_from + 1, steps[-1] + 1)), "steps after the restart skip or repeat"
    assert_completed(run_dir, epochs=2, last_logged_step=steps[-1])
    assert_loss_went_down(attempts)
    assert_export_loads_trained_weights(Path(where["export_dir"]), run_dir / "initial_model")


@contextlib.contextmanager
def keep_default_ray_address():
    """Undo ``ray.cluster_utils.Cluster`` publishing its address as this machine's default Ray
    (``/tmp/ray/ray_current_cluster``), which would make other local ``ray.init()`` calls join the test cluster."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    before = path.read_text() if path.is_file() else None

    def restore() -> None:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)

    try:
        yield restore
    finally:
        restore()


@pytest.mark.timeout(1800)
def test_two_nodes_get_one_worker_each_with_cached_text_prefix(synthetic_prepared, tmp_path):
    """Two simulated nodes with one CPU each; the frozen text prefix is cached in Ray Data before training."""
    import ray
    from conftest import free_port
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from medmplm.pretrain import run

    ray.shutdown()
    with keep_default_ray_address() as restore:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port()},
        )
        restore()
        try:
            _train_on_two_nodes(cluster, synthetic_prepared, tmp_path, run, list_actors)
        finally:
            ray.shutdown()
            cluster.shutdown()


def _train_on_two_nodes(cluster, synthetic_prepared: Path, tmp_path: Path, run, list_actors) -> None:
    import ray

    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    config = load_config(
        PretrainConfig,
        overrides=small_run(synthetic_prepared, tmp_path, "two-nodes", "train.epochs=1", "data.text_cache=true"),
    )
    where = run(config, progress_bar=False)
    workers = list_actors(address=cluster.address, filters=[("class_name", "=", "RayTrainWorker")], detail=True)
    assert len(workers) == 2
    assert {actor.node_id for actor in workers} == {node.node_id for node in nodes}
    assert json.loads(Path(where["export_dir"], "export_info.json").read_text())["global_step"] > 0


def test_cached_and_uncached_losses_match_through_ray_data(ray_local, synthetic_prepared, tmp_path):
    import ray

    from medmplm.data.features import VisitFeaturizer
    from medmplm.data.masking import CodeMasker
    from medmplm.models import MedMPLMConfig
    from medmplm.train.bundle import ModelBundle
    from medmplm.train.data import CACHE_MARKER, cache_frozen_prefix, featurize, read_visits

    torch.manual_seed(0)
    model = build_medmplm(MedMPLMForPretraining, synthetic_prepared, MedMPLMConfig.from_preset("tiny"))
    model.save_pretrained(tmp_path / "model")
    model.eval()
    featurized = featurize(read_visits(str(synthetic_prepared), "val"), VisitFeaturizer.from_model(model), 16).materialize()
    location = str(tmp_path / "text_cache" / "val")
    cached, summary = cache_frozen_prefix(
        featurized,
        ray.put(ModelBundle.from_directory(tmp_path / "model")),
        location,
        dtype="float32",
        batch_size=8,
        concurrency=1,
        use_gpu=False,
    )
    # The cache is sharded Parquet on the storage path, marked complete last, and read back as it is when complete.
    assert summary["rows"] == featurized.count() and summary["bytes"] > 0
    assert list(Path(location).glob("*.parquet")) and (Path(location) / CACHE_MARKER).is_file()
    again, _ = cache_frozen_prefix(
        featurized, None, location, dtype="float32", batch_size=8, concurrency=1, use_gpu=False
    )
    assert again.count() == summary["rows"]
    rows = featurized.count()
    plain = featurized.take_batch(rows, batch_format="numpy")
    with_prefix = cached.take_batch(rows, batch_format="numpy")
    # Ray Data does not promise the same row order for two datasets: align the visits by id.
    plain = {k: v[plain["hadm_id"].argsort()] for k, v in plain.items()}
    with_prefix = {k: v[with_prefix["hadm_id"].argsort()] for k, v in with_prefix.items()}
    assert (plain["hadm_id"] == with_prefix["hadm_id"]).all() and rows >= 8
    masker = CodeMasker.from_model(model)
    uncached_inputs = masker({k: torch.from_numpy(v) for k, v in plain.items()}, torch.Generator().manual_seed(1))
    cached_inputs = masker({k: torch.from_numpy(v) for k, v in with_prefix.items()}, torch.Generator().manual_seed(1))
    with torch.no_grad():
        uncached_loss = model(**uncached_inputs).loss.item()
        cached_loss = model(**cached_inputs).loss.item()
    assert cached_loss == pytest.approx(uncached_loss, rel=1e-5)
