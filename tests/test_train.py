"""Unit tests of the training library (no Ray cluster): engine config, safe checkpoints with exact resume, storage,
bundles, run naming, metrics, the pretraining task and the frozen-prefix cache stage, on the real ``tiny`` model."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port

from medmplm.config import DeepSpeedSection, TrainSection, batch_plan
from medmplm.data.features import VisitFeaturizer
from medmplm.data.masking import CodeMasker
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
from medmplm.models.testing_utils import read_split_batch, write_tiny_prepared_dir
from medmplm.pretraining.medmplm import MedMPLMPretrainingTask, build_medmplm
from medmplm.train import storage
from medmplm.train.bundle import ModelBundle
from medmplm.train.checkpoint import (
    CheckpointMismatchError,
    TrainerState,
    gather_trainable_fp32,
    load_optimizer_shard,
    save_optimizer_shard,
)
from medmplm.train.data import TEXT_HIDDEN_STATES, FrozenPrefixEncoder
from medmplm.train.engine import deepspeed_config, optimizer_parameter_groups
from medmplm.train.loop import seed_dropout
from medmplm.train.metrics import WeightedSums
from medmplm.train.trainer import DatasetTooSmallError, export_checkpoint, steps_per_epoch


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_prepared_dir(tmp_path_factory.mktemp("prepared"), num_visits=24)


def build_model(prepared: Path) -> MedMPLMForPretraining:
    torch.manual_seed(0)
    config = MedMPLMConfig.from_preset("tiny", text_max_length=48, max_codes=8)
    return build_medmplm(MedMPLMForPretraining, prepared, config)


@pytest.fixture(scope="module")
def saved_model(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    build_model(prepared).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def features(saved_model: Path, prepared: Path) -> dict[str, torch.Tensor]:
    model = MedMPLMForPretraining.from_pretrained(saved_model)
    arrays = VisitFeaturizer.from_model(model)(read_split_batch(prepared))
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group, as DeepSpeed needs one even for a single rank."""
    import torch.distributed as dist

    os.environ["DS_ACCELERATOR"] = "cpu"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


# --- engine configuration ---------------------------------------------------------------------------------------


def test_deepspeed_config_batch_sizes_come_from_the_plan():
    plan = batch_plan(64, 8, 2)
    config = deepspeed_config(TrainSection(grad_clip=0.5), DeepSpeedSection(zero_stage=3), plan, precision="bf16")
    assert config["train_batch_size"] == 64
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 4
    assert config["zero_optimization"] == {"stage": 3}
    assert config["bf16"] == {"enabled": True}
    assert config["gradient_clipping"] == 0.5
    assert deepspeed_config(TrainSection(), DeepSpeedSection(), plan)["bf16"] == {"enabled": False}


@pytest.mark.parametrize(
    ("precision", "stage", "device", "bf16_supported", "expected"),
    [
        ("auto", 2, "cuda", True, "bf16"),
        ("auto", 2, "cuda", False, "fp32"),  # a GPU older than Ampere
        ("auto", 0, "cuda", True, "fp32"),  # bf16's fp32 master weights live in the ZeRO optimizer
        ("auto", 2, "cpu", False, "fp32"),
        ("bf16", 2, "cpu", False, "bf16"),  # asked for explicitly: kept (DeepSpeed's CPU accelerator runs it)
        ("fp32", 2, "cuda", True, "fp32"),
    ],
)
def test_precision_resolution(precision, stage, device, bf16_supported, expected):
    from medmplm.train.engine import resolve_precision

    section = DeepSpeedSection(zero_stage=stage, precision=precision)
    assert resolve_precision(section, torch.device(device), bf16_supported) == expected


@pytest.mark.parametrize(
    ("stage", "world_size", "precision", "expected"),
    [
        (2, 1, "auto", 0),  # one fp32 worker: nothing to partition
        (3, 1, "fp32", 0),
        (2, 2, "auto", 2),
        (3, 2, "auto", 3),
        (2, 1, "bf16", 2),  # bf16's fp32 master weights live in the ZeRO optimizer
    ],
)
def test_a_single_fp32_worker_runs_zero_stage_0(stage, world_size, precision, expected):
    from medmplm.train.engine import for_world_size

    section = DeepSpeedSection(zero_stage=stage, precision=precision)
    resolved = for_world_size(section, world_size, torch.device("cpu"))
    assert resolved.zero_stage == expected
    assert resolved.precision == precision and section.zero_stage == stage


def test_single_worker_stage_0_skips_the_all_reduce_and_steps_as_plain_adamw(saved_model, features, process_group):
    """Without the all-reduce over one rank, DeepSpeed's update must still be AdamW with clipping, step for step."""
    from medmplm.train.engine import build_optimizer, initialize_engine

    # Attention key biases get gradients that are zero up to rounding noise, which varies with the threads' summation
    # order; with Adam's default epsilon that noise alone would move them by up to lr per step, in either direction.
    train = TrainSection(lr=1e-2, adam_eps=1e-3, grad_clip=0.5, micro_batch_size=4, global_batch_size=4)
    masker = CodeMasker.from_model(MedMPLMForPretraining.from_pretrained(saved_model))
    batches = list(_batches(features, masker, 3))
    plain = MedMPLMForPretraining.from_pretrained(saved_model)

    def engine_at(stage: int):
        model = MedMPLMForPretraining.from_pretrained(saved_model)
        plan = batch_plan(4, 4, 1)
        section = DeepSpeedSection(zero_stage=stage)
        return initialize_engine(model, train, section, plan, 10, "gloo", torch.device("cpu"))[0]

    engine = engine_at(0)
    assert engine.enable_backward_allreduce is False
    optimizer = build_optimizer(plain, train, torch.device("cpu"))
    for batch in batches:
        torch.manual_seed(0)
        output = engine(**batch)
        engine.backward(output.loss)
        engine.step()
        torch.manual_seed(0)
        plain(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    trained = dict(engine.module.named_parameters())
    for name, parameter in plain.named_parameters():
        torch.testing.assert_close(trained[name], parameter, rtol=1e-4, atol=1e-6, msg=name)
    initial = dict(MedMPLMForPretraining.from_pretrained(saved_model).named_parameters())
    assert any(not torch.equal(initial[name], p) for name, p in plain.named_parameters() if p.requires_grad)

    assert engine_at(2).enable_backward_allreduce, "ZeRO >= 1 reduces its gradient partitions through this path"


def test_adamw_is_fused_on_cuda_only():
    from medmplm.train.engine import adamw_options, build_optimizer

    assert adamw_options(torch.device("cuda")) == {"fused": True}
    assert adamw_options(torch.device("cpu")) == {}
    optimizer = build_optimizer(torch.nn.Linear(2, 2), TrainSection(), torch.device("cpu"))
    assert not optimizer.defaults.get("fused")


def test_optimizer_skips_frozen_parameters_and_decays_only_matrices(saved_model: Path):
    model = MedMPLMForPretraining.from_pretrained(saved_model)
    groups = optimizer_parameter_groups(model, weight_decay=0.01)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert any(not p.requires_grad for p in model.parameters())
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.01 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])


# --- checkpoints: exact resume at every ZeRO stage -----------------------------------------------------------------


def _batches(features: dict[str, torch.Tensor], masker: CodeMasker, count: int, size: int = 4):
    for index in range(count):
        rows = slice(index * size % 20, index * size % 20 + size)
        yield masker({k: v[rows] for k, v in features.items()}, torch.Generator().manual_seed(index))


@pytest.mark.parametrize(
    "zero_stage", [pytest.param(0, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow)]
)
def test_checkpoint_resume_reproduces_the_uninterrupted_run(zero_stage, saved_model, features, process_group, tmp_path):
    from medmplm.train.engine import initialize_engine

    train = TrainSection(lr=1e-2, lr_schedule="linear", warmup_steps=2, micro_batch_size=4, global_batch_size=4)
    deepspeed_section = DeepSpeedSection(zero_stage=zero_stage)
    plan = batch_plan(4, 4, 1)
    masker = CodeMasker.from_model(MedMPLMForPretraining.from_pretrained(saved_model))
    batches = list(_batches(features, masker, 4))

    def step(engine, batch):
        torch.manual_seed(0)
        output = engine(**batch)
        engine.backward(output.loss)
        engine.step()
        return output.loss.item()

    def fresh_model():
        model = MedMPLMForPretraining.from_pretrained(saved_model)
        model.train()
        return model

    engine, scheduler = initialize_engine(fresh_model(), train, deepspeed_section, plan, 10, "gloo", torch.device("cpu"))
    for batch in batches[:2]:
        step(engine, batch)
    save_optimizer_shard(engine, tmp_path, rank=0, world_size=1, zero_stage=zero_stage)
    weights = gather_trainable_fp32(engine)
    state = TrainerState(global_step=2, scheduler=scheduler.state_dict(), zero_stage=zero_stage)
    state.save(tmp_path / "trainer_state.json")
    uninterrupted = [step(engine, batch) for batch in batches[2:]]

    model = fresh_model()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    buffers = {n for n, _ in model.named_buffers()}
    assert not unexpected and all(not dict(model.named_parameters())[n].requires_grad for n in set(missing) - buffers)
    resumed_engine, resumed_scheduler = initialize_engine(model, train, deepspeed_section, plan, 10, "gloo", torch.device("cpu"))
    load_optimizer_shard(resumed_engine, tmp_path, rank=0, world_size=1, zero_stage=zero_stage)
    resumed_scheduler.load_state_dict(TrainerState.load(tmp_path / "trainer_state.json").scheduler)
    resumed = [step(resumed_engine, batch) for batch in batches[2:]]

    assert resumed == pytest.approx(uninterrupted, rel=1e-6, abs=1e-7)
    assert uninterrupted[0] != pytest.approx(step(engine, batches[0]), rel=1e-3)  # the steps did change the model
    # Only tensors and JSON were written: nothing a loader would unpickle.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "optimizer_rank0.json",
        "optimizer_rank0.safetensors",
        "trainer_state.json",
    ]


def test_checkpoint_from_another_world_size_or_stage_is_refused(saved_model, process_group, tmp_path):
    from medmplm.train.engine import initialize_engine

    train = TrainSection(micro_batch_size=4, global_batch_size=4)
    plan = batch_plan(4, 4, 1)
    engine, _ = initialize_engine(
        MedMPLMForPretraining.from_pretrained(saved_model),
        train,
        DeepSpeedSection(zero_stage=2),
        plan,
        10,
        "gloo",
        torch.device("cpu"),
    )
    save_optimizer_shard(engine, tmp_path, rank=0, world_size=1, zero_stage=2)
    with pytest.raises(CheckpointMismatchError, match="resume with scaling.num_workers=1 deepspeed.zero_stage=2"):
        load_optimizer_shard(engine, tmp_path, rank=0, world_size=1, zero_stage=3)
    with pytest.raises(CheckpointMismatchError, match="no optimizer partition for rank 1"):
        load_optimizer_shard(engine, tmp_path, rank=1, world_size=2, zero_stage=2)


def test_trainer_state_round_trip_and_unknown_fields(tmp_path):
    state = TrainerState(global_step=7, epoch=1, step_in_epoch=2, best_score=1.5, scheduler={"last_epoch": 7})
    state.save(tmp_path / "s.json")
    assert TrainerState.load(tmp_path / "s.json") == state
    (tmp_path / "bad.json").write_text(json.dumps({"global_step": 1, "surprise": 2}))
    with pytest.raises(CheckpointMismatchError, match="bad.json: unexpected trainer state fields \\['surprise'\\]"):
        TrainerState.load(tmp_path / "bad.json")


# --- data and run plumbing -------------------------------------------------------------------------------------------


def test_seed_dropout_on_cpu_draws_as_torch_manual_seed_does():
    dropout = torch.nn.Dropout(0.5)
    torch.manual_seed(1234)
    expected = dropout(torch.ones(64))
    torch.manual_seed(99)
    seed_dropout(1234, torch.device("cpu"))
    assert torch.equal(dropout(torch.ones(64)), expected)
    seed_dropout(1235, torch.device("cpu"))
    assert not torch.equal(dropout(torch.ones(64)), expected)


def test_steps_per_epoch_follows_the_equal_split_and_drops_partial_batches():
    # 2 workers x 50 rows; 6 micro-batches of 8 each; 3 accumulation cycles of 2.
    assert steps_per_epoch(101, batch_plan(32, 8, 2)) == 3
    with pytest.raises(DatasetTooSmallError, match="the training split has 20 visits: fewer than one global batch of 32"):
        steps_per_epoch(20, batch_plan(32, 8, 2))


def test_run_names_are_unique_and_timestamped():
    names = {storage.new_run_name("pretrain") for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"pretrain-\d{8}-\d{6}-[0-9a-f]{6}", n) for n in names)


def test_storage_paths_resolve_and_uris_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve_storage_path("runs") == str(tmp_path / "runs")
    assert storage.resolve_storage_path("s3://bucket/runs") == "s3://bucket/runs"
    assert storage.join("s3://bucket/runs/", "a", "b") == "s3://bucket/runs/a/b"


def test_upload_writes_the_marker_last_and_refuses_incomplete_directories(tmp_path, monkeypatch):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    for name in ("config.json", "a.bin", "sub/b.txt"):
        (source / name).write_text(name)
    written: list[str] = []
    real_filesystem = storage._filesystem

    class Recording:
        """Delegates to the real file system, recording the files opened for writing."""

        def __init__(self, filesystem):
            self._filesystem = filesystem

        def __getattr__(self, name):
            return getattr(self._filesystem, name)

        def open_output_stream(self, path, *args, **kwargs):
            written.append(Path(path).name)
            return self._filesystem.open_output_stream(path, *args, **kwargs)

    monkeypatch.setattr(
        storage, "_filesystem", lambda location: (Recording(real_filesystem(location)[0]), real_filesystem(location)[1])
    )
    storage.upload_directory(source, str(tmp_path / "dst"), marker="config.json")
    assert written[-1] == "config.json" and sorted(written) == ["a.bin", "b.txt", "config.json"]
    copied = storage.download_directory(str(tmp_path / "dst"), tmp_path / "back")
    assert (copied / "sub" / "b.txt").read_text() == "sub/b.txt"
    (source / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json: missing; refusing to upload an incomplete directory"):
        storage.upload_directory(source, str(tmp_path / "dst2"), marker="config.json")


def test_model_bundle_round_trip_loads_the_same_model(saved_model, features, tmp_path):
    bundle = ModelBundle.from_directory(saved_model)
    restored = MedMPLMForPretraining.from_pretrained(bundle.write_to(tmp_path / "copy"))
    original = MedMPLMForPretraining.from_pretrained(saved_model)
    for name, value in original.state_dict().items():
        assert torch.equal(value, restored.state_dict()[name]), name
    assert bundle.size_bytes == sum(p.stat().st_size for p in saved_model.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="points outside the target directory"):
        ModelBundle({"../evil": b"x"}).write_to(tmp_path / "safe")


def test_export_copies_the_model_with_config_and_info(saved_model, tmp_path):
    import ray.train

    checkpoint_dir = tmp_path / "checkpoint"
    ModelBundle.from_directory(saved_model).write_to(checkpoint_dir / "model")
    TrainerState(global_step=12, epoch=3).save(checkpoint_dir / "trainer_state.json")
    export = export_checkpoint(
        ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
        str(tmp_path / "export"),
        "train:\n  lr: 0.1\n",
        "pretrain_config.yaml",
        {"run_name": "r1"},
    )
    loaded = MedMPLMForPretraining.from_pretrained(export)
    assert sum(p.numel() for p in loaded.parameters()) > 0
    info = json.loads((Path(export) / "export_info.json").read_text())
    assert (info["run_name"], info["global_step"], info["epoch"]) == ("r1", 12, 3)
    assert (Path(export) / "pretrain_config.yaml").read_text() == "train:\n  lr: 0.1\n"


def test_weighted_sums_ignore_empty_objectives_and_reset():
    sums = WeightedSums()
    sums.add("accuracy", 3.0, 4.0)
    sums.add("accuracy", math.nan, 0.0)  # a batch without targets
    sums.add("accuracy", 1.0, 4.0)
    totals = sums.reduce_totals()
    assert totals == {"accuracy": (4.0, 8.0)}
    assert sums.reduce_totals() == {}


def test_weighted_sums_discard_forgets_only_the_named_sums():
    sums = WeightedSums()
    sums.add("loss", 2.0, 1.0)
    sums.add("samples", 16.0, 1.0)
    sums.discard("samples", "tokens")  # tokens were never added
    sums.add("samples", 8.0, 1.0)
    assert sums.reduce_totals() == {"loss": (2.0, 1.0), "samples": (8.0, 1.0)}


def test_weighted_sums_accumulate_without_reading_device_values():
    # A meta tensor has no value: float() or .item() on it raises, as a host sync on a GPU tensor would stall.
    sums = WeightedSums(torch.device("meta"))
    loss = torch.ones((), device="meta")
    for _ in range(3):
        sums.add("loss", loss * 8, 8)
        sums.add("tokens", torch.ones(4, device="meta").sum(), 1.0)


# --- the pretraining task and the frozen-prefix cache ---------------------------------------------------------------


def test_pretraining_task_masks_with_the_generator_and_weights_statistics(saved_model, features):
    model = MedMPLMForPretraining.from_pretrained(saved_model)
    task = MedMPLMPretrainingTask(masker=CodeMasker.from_model(model))
    first = task.model_inputs(dict(features), torch.Generator().manual_seed(3), training=True)
    again = task.model_inputs(dict(features), torch.Generator().manual_seed(3), training=True)
    assert all(torch.equal(first[k], again[k]) for k in first)
    output = model(**first)
    stats = task.batch_statistics(output, first)
    assert set(stats) == {f"{kind}_{o}" for kind in ("loss", "accuracy") for o in output.losses}
    for name, loss in output.losses.items():
        total, weight = stats[f"loss_{name}"]
        assert weight == output.target_counts[name]
        assert total.item() == pytest.approx(loss.item() * weight.item())


@pytest.fixture(scope="module")
def short_window_model(saved_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The saved model reading notes in up to 3 windows of 8 tokens, which the fixture's short notes fill several of."""
    model = MedMPLMForPretraining.from_pretrained(saved_model)
    model.config.set_note_reading(text_max_length=8, text_long_note="windows", text_max_windows=3)
    directory = tmp_path_factory.mktemp("short-window-model")
    model.save_pretrained(directory)
    return directory


def test_cached_frozen_prefix_gives_the_same_loss_over_windows(short_window_model, prepared):
    model = MedMPLMForPretraining.from_pretrained(short_window_model)
    features = {k: torch.from_numpy(v) for k, v in VisitFeaturizer.from_model(model)(read_split_batch(prepared)).items()}
    saved_model, windows = short_window_model, model.config.text_max_windows
    # Some notes fill every window, some fewer: both layouts are covered.
    filled = features["attention_mask"].reshape(len(features["attention_mask"]), windows, -1).any(dim=-1)
    assert filled.all(dim=1).any() and (~filled).any()
    masker = CodeMasker.from_model(model)
    stage = FrozenPrefixEncoder(ModelBundle.from_directory(saved_model), dtype="float32")
    cached = stage({k: v.numpy() for k, v in features.items()})
    assert "input_ids" not in cached
    assert cached[TEXT_HIDDEN_STATES].shape == (*features["input_ids"].shape, model.text_encoder.hidden_size)
    states = cached[TEXT_HIDDEN_STATES].reshape(len(filled), windows, model.config.text_max_length, -1)
    assert not states[~filled.numpy()].any()

    uncached_inputs = masker(dict(features), torch.Generator().manual_seed(0))
    cached_inputs = masker({k: torch.from_numpy(v) for k, v in cached.items()}, torch.Generator().manual_seed(0))
    assert "input_ids" in uncached_inputs and TEXT_HIDDEN_STATES in cached_inputs
    with torch.no_grad():
        uncached_output = model(**uncached_inputs)
        cached_output = model(**cached_inputs)
    assert cached_output.loss.item() == pytest.approx(uncached_output.loss.item(), rel=1e-5)
    for name in uncached_output.losses:
        assert cached_output.losses[name].item() == pytest.approx(uncached_output.losses[name].item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compressed_cache_stays_close(saved_model, features, dtype):
    from medmplm.models.text_encoder import as_float_states

    stage32 = FrozenPrefixEncoder(ModelBundle.from_directory(saved_model), dtype="float32")
    stage = FrozenPrefixEncoder(ModelBundle.from_directory(saved_model), dtype=dtype)
    batch = {k: v.numpy() for k, v in features.items()}
    full, stored = stage32(batch)[TEXT_HIDDEN_STATES], stage(batch)[TEXT_HIDDEN_STATES]
    assert stored.dtype == (np.float16 if dtype == "float16" else np.int16)
    assert stored.nbytes * 2 == full.nbytes
    decoded = as_float_states(torch.from_numpy(stored), torch.float32).numpy()
    # bfloat16 keeps 8 bits of mantissa: a relative error of at most 2**-8 after rounding.
    np.testing.assert_allclose(decoded, full, rtol=2**-8, atol=1e-2 if dtype == "float16" else 0)


def test_metric_sink_writes_tensorboard_scalars_and_skips_nan(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medmplm.train.metrics import MetricSink

    sink = MetricSink(str(tmp_path / "tb"))
    sink.log({"train/loss": 2.5, "train/accuracy_t2c_diagnosis": math.nan}, step=3)
    sink.log({"train/loss": 2.0}, step=4)
    sink.close()
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert accumulator.Tags()["scalars"] == ["train/loss"]
    assert [(e.step, e.value) for e in accumulator.Scalars("train/loss")] == [(3, 2.5), (4, 2.0)]


def test_metric_sink_names_the_missing_mlflow_install(tmp_path, monkeypatch):
    import builtins

    from medmplm.train.metrics import MetricSink

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ImportError, match=r"pip install 'medmplm\[mlflow\]' or unset logging.mlflow_tracking_uri"):
        MetricSink(None, mlflow_tracking_uri="http://127.0.0.1:5000")


def test_best_checkpoint_is_the_best_validated_one():
    from types import SimpleNamespace

    from medmplm.train.loop import UNVALIDATED_SCORE
    from medmplm.train.trainer import _best

    task = SimpleNamespace(score_metric="val_loss", score_mode="min")
    result = SimpleNamespace(
        best_checkpoints=[
            ("mid-epoch", {"val_loss": UNVALIDATED_SCORE, "validated": 0, "global_step": 4}),
            ("epoch-1", {"val_loss": 2.0, "validated": 1, "global_step": 10}),
            ("epoch-2", {"val_loss": 1.5, "validated": 1, "global_step": 20}),
            ("epoch-3", {"val_loss": 1.7, "validated": 1, "global_step": 30}),
        ],
        checkpoint="epoch-3",
        metrics={"global_step": 30},
        path="run",
    )
    assert _best(result, task) == ("epoch-2", result.best_checkpoints[2][1])
    task.score_mode, task.score_metric = "max", "val_auroc"
    result.best_checkpoints = [("a", {"val_auroc": 0.7, "validated": 1}), ("b", {"val_auroc": 0.8, "validated": 1})]
    assert _best(result, task)[0] == "b"
    result.best_checkpoints = [("mid", {"val_auroc": -UNVALIDATED_SCORE, "validated": 0})]
    assert _best(result, task) == ("epoch-3", {"global_step": 30})


# --- GPU-path options that CPU can check ---------------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_the_trainable_text_layers_with_the_same_gradients(saved_model, features):
    from medmplm.train.loop import enable_gradient_checkpointing

    masker = CodeMasker.from_model(MedMPLMForPretraining.from_pretrained(saved_model))
    inputs = masker(dict(features), torch.Generator().manual_seed(0))
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MedMPLMForPretraining.from_pretrained(saved_model)
        model.train()
        if checkpointing:
            enable_gradient_checkpointing(model)
        layers = model.text_encoder.backbone.encoder.layer
        assert [layer.gradient_checkpointing for layer in layers] == [checkpointing] * len(layers)
        torch.manual_seed(1)
        model(**inputs).loss.backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_on_a_model_without_transformers_parts_is_an_error():
    from medmplm.train.loop import enable_gradient_checkpointing

    with pytest.raises(ValueError, match="train.gradient_checkpointing: no part of Linear"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_data_wait_counts_only_the_time_spent_waiting_for_batches():
    from medmplm.train.loop import DataWait

    now = [0.0]

    def batches():
        for batch in range(3):
            now[0] += 2.0  # the pipeline takes 2 s to hand over each batch
            yield batch

    wait = DataWait(clock=lambda: now[0])
    received = []
    for batch in wait.timed(batches()):
        received.append(batch)
        now[0] += 5.0  # the training step: not waiting
    assert received == [0, 1, 2]
    assert wait.seconds == 6.0


def test_cpu_wait_reads_the_run_queue_time_of_the_thread_since_its_last_restart(tmp_path):
    from medmplm.train.loop import CpuWait

    schedstat = tmp_path / "schedstat"
    # on a CPU, waiting on a run queue, time slices (nanoseconds, nanoseconds, count)
    schedstat.write_text("9000000000 1500000000 120\n")
    wait = CpuWait(str(schedstat))
    schedstat.write_text("9900000000 1750000000 180\n")
    assert wait.seconds == pytest.approx(0.25)
    wait.restart()
    schedstat.write_text("9950000000 2000000000 185\n")
    assert wait.seconds == pytest.approx(0.25)


def test_cpu_wait_is_nan_where_the_kernel_gives_no_scheduler_statistics(tmp_path):
    from medmplm.train.loop import CpuWait

    assert math.isnan(CpuWait(str(tmp_path / "missing")).seconds)
