"""MedM-PLM pretraining step on one GPU at the ``paper`` preset: samples/s, tokens/s, peak GPU memory and MFU.

    python benchmarks/gpu_pretrain.py [--batch-size 16] [--windows 1 4] [--steps 10] [--warmup 3]

Runs the ``paper`` preset's training step (BERT-base text encoder with 10 of 12 layers frozen, G-BERT code encoder,
cross-modal module, both objectives; AdamW with torch's fused CUDA kernel) on full-length random batches: every window
of every note full, 61 codes of each type per visit, MIMIC-III-sized code vocabularies. Each step is timed two ways:
from token ids (the frozen prefix recomputed every step) and from the cached frozen prefix (``data.text_cache``), and
the one-off cost of computing the cache is timed too. Precision: bf16 autocast over fp32 weights (what DeepSpeed's
bf16 mode computes in, without its distributed machinery), attention through ``scaled_dot_product_attention``.

MFU is the step's FLOPs (counted by ``torch.utils.flop_counter.FlopCounterMode``) x steps/s over the GPU's dense bf16
peak: from a table of known GPUs when the name matches, else (and always, as a second figure) a measured 8192^3 bf16
matmul. On a machine without a CUDA GPU it prints that and exits 0. It runs in well under 5 minutes on an A10G or
better.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from model_step import build_model, random_batch  # noqa: E402  (a script beside this one)

from medmplm.models import MedMPLMConfig  # noqa: E402
from medmplm.train.engine import adamw_options  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets; the first name found in
# torch.cuda.get_device_name() wins.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 0.0,  # no bf16 tensor cores
}


def table_peak(name: str) -> float | None:
    """The data-sheet bf16 peak (FLOP/s) of a GPU by name, ``None`` when unknown or without bf16 tensor cores."""
    if "H100" in name and "PCIe" in name:
        return 756e12
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12 or None
    return None


def measured_peak(size: int = 8192, repeats: int = 10) -> float:
    """Best bf16 matmul rate (FLOP/s) of two ``size`` x ``size`` matrices on the current GPU."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    torch.matmul(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--windows", nargs="+", type=int, default=[1, 4], help="windows of 512 tokens per note")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--diagnosis-codes", type=int, default=6000)
    parser.add_argument("--medication-codes", type=int, default=300)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_pretrain: no CUDA GPU on this machine; skipped (run it where `nvidia-smi` shows one)")
        return 0

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    sheet, measured = table_peak(name), measured_peak()
    print(
        f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}; bf16 peak: "
        f"{f'{sheet / 1e12:.0f} TFLOP/s (data sheet), ' if sheet else ''}{measured / 1e12:.0f} TFLOP/s (measured matmul)"
    )
    print(
        f"{'K':>2} {'path':>20} {'samples/s':>10} {'tokens/s':>10} {'step ms':>8} {'TFLOP/step':>10} "
        f"{'MFU sheet':>9} {'MFU meas.':>9} {'peak mem':>9}"
    )
    for windows in args.windows:
        config = MedMPLMConfig.from_preset("paper", max_codes=61, text_long_note="windows", text_max_windows=windows)
        torch.manual_seed(0)
        model = build_model(config, args.diagnosis_codes, args.medication_codes).to(device).train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=5e-4, **adamw_options(device)
        )
        length = config.text_max_length
        batch = {
            k: v.to(device) for k, v in random_batch(model, args.batch_size, windows * length, config.max_codes).items()
        }
        tokens = int(batch["attention_mask"].sum())
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            prefix = model.text_encoder.frozen_prefix(batch["input_ids"], batch["attention_mask"], window_length=length)
        torch.cuda.synchronize()
        cache_seconds = time.perf_counter() - start
        cached = {k: v for k, v in batch.items() if k != "input_ids"} | {"text_hidden_states": prefix.to(torch.bfloat16)}

        for path, inputs in (("from token ids", batch), ("cached frozen prefix", cached)):

            def step(inputs: dict[str, torch.Tensor] = inputs) -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(**inputs).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            for _ in range(args.warmup):
                step()
            counter = FlopCounterMode(display=False)
            with counter:
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            flops = counter.get_total_flops()
            mfu_sheet = f"{flops / seconds / sheet:.1%}" if sheet else "-"
            print(
                f"{windows:>2} {path:>20} {args.batch_size / seconds:>10.1f} {tokens / seconds:>10.0f} "
                f"{seconds * 1e3:>8.1f} {flops / 1e12:>10.2f} {mfu_sheet:>9} {flops / seconds / measured:>9.1%} "
                f"{torch.cuda.max_memory_allocated(device) / 2**30:>7.1f} GiB"
            )
        print(f"{windows:>2} {'building the cache':>20}: {cache_seconds * 1e3:.1f} ms for {args.batch_size} notes (once per note)")
        del model, optimizer, batch, cached, prefix
        torch.cuda.empty_cache()
    print(f"batch {args.batch_size} visits; K windows of 512 tokens per note; median of {args.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
