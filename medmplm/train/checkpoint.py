"""Checkpoints that load without unpickling anything.

DeepSpeed's own ``save_checkpoint``/``load_checkpoint`` pickle whole Python objects (optimizer wrappers' state dicts
with loss scalers, enums, dataclasses; the ``args`` namespace) and ``load_checkpoint`` reads them back with
``torch.load(weights_only=False)`` (``deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py``, DeepSpeed
0.19.8), which runs arbitrary code from a tampered file. So the training state is written here in formats that carry
only tensors and JSON:

``<checkpoint>/``
  ``model/``                           ``save_pretrained`` of the full fp32 weights (rank 0): also a usable export
  ``optimizer_rank<R>.safetensors``    rank R's fp32 master partition(s) and AdamW moments and step (every rank)
  ``optimizer_rank<R>.json``           rank R's partition sizes and param-group hyper-parameters
  ``trainer_state.json``               step/epoch counters, early-stopping state, scheduler state (rank 0)
  ``pretrain_config.yaml``             the resolved run configuration (rank 0)

Every rank takes part in a save: gathering the full fp32 weights from ZeRO partitions is a collective, and each rank
writes the optimizer partition only it holds. Ray Train merges the ranks' files into one checkpoint directory.

The optimizer files are per rank, so a run resumes with the same number of workers and ZeRO stage it was saved with
(Ray Train restarts with the same worker count); the model directory is independent of both.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MODEL_DIR = "model"
TRAINER_STATE_FILE = "trainer_state.json"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the engine it is being loaded into (world size, ZeRO stage, parameter sizes)."""


@dataclass
class TrainerState:
    """Loop counters and early-stopping state, saved as JSON with every checkpoint.

    Attributes:
        global_step: optimizer steps done.
        epoch: epochs completed.
        step_in_epoch: optimizer steps done in the current, unfinished epoch (a mid-epoch checkpoint resumes there).
        samples_seen: training visits consumed by optimizer steps, over all workers.
        best_score: best validation score so far (``None`` before the first validation).
        best_epoch: the epoch (1-based) that scored ``best_score``.
        epochs_without_improvement: validations since the best one.
        stopped_early: early stopping ended the run.
        world_size: workers the optimizer partitions were saved with.
        zero_stage: ZeRO stage the optimizer partitions were saved with.
        scheduler: the learning-rate scheduler's ``state_dict`` (numbers and lists only).
    """

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    samples_seen: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    world_size: int = 1
    zero_stage: int = 0
    scheduler: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically."""
        _atomic_write_text(Path(path), json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainerState:
        """Read a state written by :meth:`save`.

        Raises:
            CheckpointMismatchError: naming the file when it has unknown or missing fields.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) - known:
            raise CheckpointMismatchError(f"{path}: unexpected trainer state fields {sorted(set(data) - known)}")
        return cls(**data)


def master_partitions(engine: Any) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """The torch optimizer inside the engine and the fp32 master tensors it steps, on this rank.

    DeepSpeed keeps them under a different attribute per optimizer wrapper: ZeRO-3
    (``fp32_partitioned_groups_flat``), ZeRO-1/2 (``single_partition_of_fp32_groups``), bf16 without ZeRO
    (``fp32_groups_flat_partition``); without ZeRO in fp32 the engine steps the model parameters directly.
    """
    wrapper = engine.optimizer
    base = getattr(wrapper, "optimizer", wrapper)
    for attribute in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups", "fp32_groups_flat_partition"):
        flats = getattr(wrapper, attribute, None)
        if flats is not None:
            return base, list(flats)
    if wrapper is base and isinstance(base, torch.optim.Optimizer):
        return base, [p for group in base.param_groups for p in group["params"]]
    raise TypeError(f"unsupported DeepSpeed optimizer wrapper {type(wrapper).__name__}: cannot locate its fp32 masters")


def optimizer_file(rank: int) -> str:
    """File name of rank ``rank``'s optimizer partition."""
    return f"optimizer_rank{rank}.safetensors"


def save_optimizer_shard(engine: Any, directory: str | os.PathLike, rank: int, world_size: int, zero_stage: int) -> None:
    """Write this rank's fp32 masters, AdamW state and param-group hyper-parameters (tensors and JSON only)."""
    base, masters = master_partitions(engine)
    tensors: dict[str, torch.Tensor] = {}
    for index, master in enumerate(masters):
        tensors[f"master.{index}"] = master.detach().float().cpu().contiguous()
        for key, value in base.state.get(master, {}).items():
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {key!r} is a {type(value).__name__}, expected a tensor")
            tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
    groups = [
        {key: (list(value) if isinstance(value, tuple) else value) for key, value in group.items() if key != "params"}
        for group in base.param_groups
    ]
    meta = {
        "rank": rank,
        "world_size": world_size,
        "zero_stage": zero_stage,
        "numels": [int(m.numel()) for m in masters],
        "param_groups": groups,
    }
    directory = Path(directory)
    _atomic_save_safetensors(tensors, directory / optimizer_file(rank))
    _atomic_write_text(directory / f"optimizer_rank{rank}.json", json.dumps(meta, indent=2) + "\n")


def load_optimizer_shard(engine: Any, directory: str | os.PathLike, rank: int, world_size: int, zero_stage: int) -> None:
    """Restore this rank's fp32 masters, AdamW state and learning rates into a freshly initialised engine.

    The model weights must already hold the checkpoint's ``model/`` weights (loaded before ``deepspeed.initialize``)
    so that the engine's low-precision copies agree with the masters.

    Raises:
        CheckpointMismatchError: when the checkpoint was saved with another world size, ZeRO stage or model.
    """
    directory = Path(directory)
    meta_path = directory / f"optimizer_rank{rank}.json"
    if not meta_path.is_file():
        raise CheckpointMismatchError(
            f"{meta_path}: missing; the checkpoint has no optimizer partition for rank {rank} "
            f"(it was saved with fewer workers than the {world_size} now running)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta["world_size"] != world_size or meta["zero_stage"] != zero_stage:
        raise CheckpointMismatchError(
            f"{directory}: saved with {meta['world_size']} workers and ZeRO stage {meta['zero_stage']}, now "
            f"{world_size} workers and ZeRO stage {zero_stage}; resume with scaling.num_workers={meta['world_size']} "
            f"deepspeed.zero_stage={meta['zero_stage']}, or start a new run from the checkpoint's model/ directory "
            "(model.init_from=...)"
        )
    base, masters = master_partitions(engine)
    if meta["numels"] != [int(m.numel()) for m in masters]:
        raise CheckpointMismatchError(
            f"{meta_path}: partition sizes {meta['numels']} do not match this model's "
            f"{[int(m.numel()) for m in masters]}; the checkpoint belongs to another model configuration"
        )
    tensors = load_file(directory / optimizer_file(rank), device="cpu")
    for index, master in enumerate(masters):
        master.data.copy_(tensors[f"master.{index}"].to(master.device, master.dtype))
        prefix = f"state.{index}."
        state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        if state:
            base.state[master] = {
                key: value.to(master.device) if value.ndim > 0 else value for key, value in state.items()
            }
    if len(meta["param_groups"]) != len(base.param_groups):
        raise CheckpointMismatchError(
            f"{meta_path}: {len(meta['param_groups'])} parameter groups, the optimizer has {len(base.param_groups)}"
        )
    for saved, group in zip(meta["param_groups"], base.param_groups, strict=True):
        for key in ("lr", "initial_lr"):
            if key in saved:
                group[key] = saved[key]


def gather_trainable_fp32(engine: Any) -> dict[str, torch.Tensor]:
    """Full fp32 values of the trainable parameters, by name, assembled from every rank's partition.

    A collective: every rank must call it, in the same order. Frozen parameters are left out: they never change, so
    their values are those of the model the run started from.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    state: dict[str, torch.Tensor] = {}
    for name, parameter in engine.module.named_parameters():
        if not parameter.requires_grad:
            continue
        full = safe_get_full_fp32_param(parameter)
        # Without ZeRO or bf16 the engine steps the module's own fp32 parameters: they are the masters.
        value = parameter.detach() if full is None else full
        state[name] = value.detach().float().cpu().clone()
    return state


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        save_file(tensors, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
