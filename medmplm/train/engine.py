"""DeepSpeed engine setup from the config: ZeRO stage, precision, batch plan, optimizer, learning-rate schedule.

The same code serves CPU workers (``DS_ACCELERATOR=cpu``, gloo collectives) and GPU workers (NCCL). The optimizer is
``torch.optim.AdamW`` on both, with torch's fused CUDA kernel on GPUs: DeepSpeed's own fused Adam needs a CUDA
extension build the CPU install does not have, and ZeRO partitions a torch optimizer all the same.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from medmplm.config import BatchPlan, DeepSpeedSection, TrainSection

# DeepSpeed prints its own progress every `steps_per_print` steps; the loop logs its own metrics instead.
_NEVER = 2**62


def select_accelerator(use_gpu: bool) -> None:
    """Point DeepSpeed at the CPU accelerator when not training on GPUs.

    Must run before ``deepspeed`` is first imported in the process: DeepSpeed picks its accelerator at import.
    """
    if not use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"


def resolve_backend(deepspeed_section: DeepSpeedSection, use_gpu: bool) -> str:
    """The torch.distributed backend: NCCL with GPUs, gloo on CPU, unless set explicitly."""
    if deepspeed_section.backend != "auto":
        return deepspeed_section.backend
    return "nccl" if use_gpu else "gloo"


def resolve_precision(deepspeed_section: DeepSpeedSection, device: torch.device, bf16_supported: bool) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 on a GPU that supports it (with ZeRO >= 1, which keeps the fp32 master
    weights), fp32 otherwise."""
    if deepspeed_section.precision != "auto":
        return deepspeed_section.precision
    return "bf16" if device.type == "cuda" and bf16_supported and deepspeed_section.zero_stage >= 1 else "fp32"


def bf16_supported_on(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def for_world_size(deepspeed_section: DeepSpeedSection, world_size: int, device: torch.device) -> DeepSpeedSection:
    """The engine settings a run with ``world_size`` workers uses: the configured ones, except that a single fp32
    worker runs ZeRO stage 0.

    ZeRO partitions the optimizer state, gradients and weights over the workers; with one worker there is nothing to
    partition, and its machinery (a hook per parameter, a flat gradient copy, a reduction over one rank, the masters
    copied back) cost 6.3% of a ``tiny`` training step on CPU, against 0.1% for stage 0 without the all-reduce
    (same process, alternating blocks). bf16 keeps the configured stage: its fp32 master weights live in the ZeRO
    optimizer.
    """
    precision = resolve_precision(deepspeed_section, device, bf16_supported_on(device))
    if world_size == 1 and precision == "fp32" and deepspeed_section.zero_stage != 0:
        return dataclasses.replace(deepspeed_section, zero_stage=0)
    return deepspeed_section


def deepspeed_config(
    train: TrainSection, deepspeed_section: DeepSpeedSection, plan: BatchPlan, precision: str = "fp32"
) -> dict[str, Any]:
    """The DeepSpeed JSON config for this run; batch sizes all come from ``plan``; ``precision`` is resolved
    (:func:`resolve_precision`)."""
    return {
        "train_batch_size": plan.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.accumulation_steps,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": {"stage": deepspeed_section.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }


def optimizer_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: with weight decay, and without (biases, LayerNorm weights, 1-d tensors).

    Frozen parameters (``requires_grad=False``, e.g. the text encoder's frozen prefix) are left out entirely, so
    neither AdamW nor ZeRO keeps state for them.
    """
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def adamw_options(device: torch.device) -> dict[str, Any]:
    """Keyword arguments of AdamW for parameters on ``device``: torch's fused kernel on CUDA (one kernel for all
    parameters instead of several per tensor), its default implementation elsewhere."""
    return {"fused": True} if device.type == "cuda" else {}


def build_optimizer(model: nn.Module, train: TrainSection, device: torch.device) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` over the trainable parameters, which live (or will live) on ``device``."""
    groups = optimizer_parameter_groups(model, train.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), eps=train.adam_eps, **adamw_options(device))


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSection, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule (transformers' warm-up schedules), stepped once per optimizer step."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[train.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=max(total_steps, 1))


def initialize_engine(
    model: nn.Module,
    train: TrainSection,
    deepspeed_section: DeepSpeedSection,
    plan: BatchPlan,
    total_steps: int,
    backend: str,
    device: torch.device,
) -> tuple[Any, torch.optim.lr_scheduler.LambdaLR]:
    """``deepspeed.initialize`` on an already initialised process group (Ray Train sets it up), with the model on
    ``device``; ``train.compile`` compiles it.

    Returns:
        (engine, scheduler): the engine steps the scheduler at every optimizer step.
    """
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend)
    model.to(device)
    precision = resolve_precision(deepspeed_section, device, bf16_supported_on(device))
    optimizer = build_optimizer(model, train, device)
    scheduler = build_scheduler(optimizer, train, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(train, deepspeed_section, plan, precision),
    )
    if deepspeed_section.zero_stage == 0 and engine.dp_world_size == 1:
        # An all-reduce over one rank is the identity, but DeepSpeed still flattens every gradient, reduces it and
        # copies it back: 8% of a ``tiny`` step on CPU.
        engine.enable_backward_allreduce = False
    if train.compile:
        engine.compile()
    return engine, scheduler


def engine_dtype(engine: Any) -> torch.dtype:
    """The floating dtype the engine's module computes in (bf16 under ``precision: bf16``)."""
    return torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
