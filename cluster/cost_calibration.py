"""Calibrate the FLOP model behind the cost table in docs/scale_out.md, and print the table.

There is no GPU where this project is developed, so GPU time for full-MIMIC-III pretraining is
estimated from a FLOP count and an assumed model-FLOP utilisation (MFU). This script checks that
FLOP count three ways on the local CPU:

1. analytic: the transformer FLOP formula in :func:`bert_step_flops`;
2. counted: ``torch.utils.flop_counter.FlopCounterMode`` over one real forward+backward of a
   BERT-base (12 x 768, seq 512) with the bottom 10 layers and the embeddings frozen;
3. timed: the same step's FLOP rate against this CPU's fp32 matmul rate, measured just before.

If (1) and (2) agree and (3) lands near 1, the FLOP count describes the real step, and the GPU
projection reduces to "FLOPs / (peak x MFU)". It prints figures only; nothing is written.

Run::

    python cluster/cost_calibration.py               # ~1 minute on 2 cores
    python cluster/cost_calibration.py --epochs 40 --mfu 0.2
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

# MIMIC-III v1.4 NOTEEVENTS rows with CATEGORY = 'Discharge summary'.
MIMIC_III_DISCHARGE_SUMMARIES = 59_652


@dataclass(frozen=True)
class GpuOffer:
    """One cloud GPU node type: dense bf16 peak, RAM and on-demand price (all assumptions)."""

    instance: str
    gpus: int
    peak_tflops_per_gpu: float
    ram_gib: int
    usd_per_hour: float


# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA datasheets; AWS us-east-1 Linux
# on-demand prices as of 2026-11 (after the June 2025 P4/P5 price cut). Re-check both before
# relying on the dollar figures.
GPU_OFFERS = (
    GpuOffer("g5.2xlarge (1x A10G)", 1, 125.0, 32, 1.212),
    GpuOffer("g6.2xlarge (1x L4)", 1, 121.0, 32, 0.978),
    GpuOffer("p4d.24xlarge (8x A100 40GB)", 8, 312.0, 1152, 21.96),
    GpuOffer("p5.48xlarge (8x H100)", 8, 989.0, 2048, 55.04),
)
# Ray's default object store: 30% of a node's RAM. The text cache lives there.
OBJECT_STORE_FRACTION = 0.3

def bert_step_flops(
    *,
    batch: int,
    seq: int,
    hidden: int,
    intermediate: int,
    layers: int,
    trainable_layers: int,
) -> int:
    """Matmul FLOPs of one forward+backward of a BERT encoder whose top layers alone train.

    The embeddings are frozen. Per layer and token, the forward multiplies through Q, K, V and
    the output projection (4 h^2 MACs), the feed-forward (2 h i MACs) and attention scores and
    mixing (2 s h MACs); a MAC is 2 FLOPs. Backward through a trainable layer costs twice its
    forward (gradients for the inputs and for the weights), except that the lowest trainable
    layer's input needs no gradient, so its Q, K and V projections skip their input-gradient
    matmuls (3 h^2 MACs). Frozen layers below need no backward at all.
    """
    tokens = seq * batch
    macs_per_token_layer = 4 * hidden * hidden + 2 * hidden * intermediate + 2 * seq * hidden
    forward_macs = macs_per_token_layer * tokens * layers
    backward_macs = 2 * macs_per_token_layer * tokens * trainable_layers
    if trainable_layers:
        backward_macs -= 3 * hidden * hidden * tokens
    return 2 * (forward_macs + backward_macs)


def measure_matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` fp32 GEMM throughput of this machine, in GFLOP/s."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def build_partly_frozen_bert(config: BertConfig, trainable_layers: int) -> BertModel:
    """Randomly initialised BERT encoder (nothing is downloaded): embeddings and bottom frozen."""
    model = BertModel(config, add_pooling_layer=False)
    model.embeddings.requires_grad_(False)
    for layer in model.encoder.layer[: config.num_hidden_layers - trainable_layers]:
        layer.requires_grad_(False)
    return model


def train_step(model: BertModel, input_ids: torch.Tensor) -> None:
    """One forward+backward with a scalar surrogate loss (the objective does not change FLOPs)."""
    hidden = model(input_ids=input_ids).last_hidden_state
    hidden.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--notes", type=int, default=MIMIC_III_DISCHARGE_SUMMARIES)
    parser.add_argument("--epochs", type=int, default=200, help="medmplm/configs/cluster_pretrain.yaml: up to 200")
    parser.add_argument("--mfu", type=float, default=0.3, help="assumed GPU model-FLOP utilisation")
    args = parser.parse_args()

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    matmul_gflops = measure_matmul_gflops()

    config = BertConfig(
        hidden_size=768,
        num_hidden_layers=args.layers,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=args.seq,
    )
    model = build_partly_frozen_bert(config, args.trainable_layers)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq))

    analytic = bert_step_flops(
        batch=args.batch,
        seq=args.seq,
        hidden=model.config.hidden_size,
        intermediate=model.config.intermediate_size,
        layers=args.layers,
        trainable_layers=args.trainable_layers,
    )
    with FlopCounterMode(display=False) as counter:
        train_step(model, input_ids)
    counted = counter.get_total_flops()

    # The machine may be shared: pair every timed step with a matmul measurement taken just
    # before it, so the ratio compares like with like even when the load drifts.
    seconds, ratios = [], []
    for _ in range(args.repeats):
        matmul_now = measure_matmul_gflops(repeats=3)
        start = time.perf_counter()
        train_step(model, input_ids)
        seconds.append(time.perf_counter() - start)
        ratios.append(analytic / seconds[-1] / 1e9 / matmul_now)
    step_s = statistics.median(seconds)
    achieved_gflops = analytic / step_s / 1e9

    print(f"cpu threads                       {threads}")
    print(f"fp32 matmul throughput            {matmul_gflops:8.1f} GFLOP/s (best of 10, 2048^3)")
    print(
        f"step: batch {args.batch} x seq {args.seq}, {args.layers} layers, "
        f"top {args.trainable_layers} trainable"
    )
    print(f"  analytic FLOPs                  {analytic / 1e9:8.1f} GFLOP")
    print(f"  FlopCounterMode FLOPs           {counted / 1e9:8.1f} GFLOP  (ratio {counted / analytic:.3f})")
    print(f"  wall time (median of {args.repeats})          {step_s:8.2f} s  {[round(s, 2) for s in seconds]}")
    print(f"  achieved                        {achieved_gflops:8.1f} GFLOP/s")
    per_step = [round(r, 2) for r in ratios]
    print(f"  step rate / matmul rate         {statistics.median(ratios):8.2f}  (per step: {per_step})")

    hidden, intermediate = model.config.hidden_size, model.config.intermediate_size
    frozen = args.layers - args.trainable_layers

    def per_note(layers: int, trainable_layers: int) -> float:
        return bert_step_flops(
            batch=1, seq=args.seq, hidden=hidden, intermediate=intermediate, layers=layers,
            trainable_layers=trainable_layers,
        )

    uncached_epoch = per_note(args.layers, args.trainable_layers) * args.notes
    featurize_once = per_note(frozen, 0) * args.notes
    cached_epoch = per_note(args.trainable_layers, args.trainable_layers) * args.notes
    cache_gb = args.notes * args.seq * hidden * 2 / 1e9
    print()
    print(f"{args.notes} notes x {args.seq} tokens, text encoder only:")
    print(f"  no text cache: {uncached_epoch / 1e15:6.2f} PFLOP per epoch "
          f"(CPU here: {uncached_epoch / (achieved_gflops * 1e9) / 3600:.0f} h per epoch)")
    print(f"  text cache:    {featurize_once / 1e15:6.2f} PFLOP once for the frozen prefix, then "
          f"{cached_epoch / 1e15:.2f} PFLOP per epoch; cache {cache_gb:.0f} GB in bf16")
    print()
    print(f"GPU projection, text cache, MFU {args.mfu:.0%}, {args.epochs} epochs (compute only):")
    print(f"{'node':30s} {'featurize s':>11s} {'s/epoch':>8s} {'h total':>8s} {'USD':>8s} {'object store':>13s}")
    for offer in GPU_OFFERS:
        flops_per_s = offer.gpus * offer.peak_tflops_per_gpu * 1e12 * args.mfu
        total_h = (featurize_once + cached_epoch * args.epochs) / flops_per_s / 3600
        store_gb = offer.ram_gib * 2**30 * OBJECT_STORE_FRACTION / 1e9
        fits = "fits" if store_gb >= cache_gb else "SPILLS"
        print(
            f"{offer.instance:30s} {featurize_once / flops_per_s:11.1f} {cached_epoch / flops_per_s:8.1f} "
            f"{total_h:8.2f} {total_h * offer.usd_per_hour:8.2f} {store_gb:6.0f} GB {fits}"
        )

if __name__ == "__main__":
    main()
