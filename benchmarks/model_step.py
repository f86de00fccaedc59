"""Forward + backward time and memory of one MedM-PLM pretraining batch, per preset and number of note windows.

    python benchmarks/model_step.py [--presets tiny paper] [--windows 1 2 4] [--batch-size 8] [--text-length 0]
                                    [--codes 61] [--steps 5] [--threads N] [--device cpu]

Batches are full-length (every window of every note full, every code slot filled) random ids, masked
with ``CodeMasker``. A note of K windows is K x L tokens (L: the preset's window, ``text_max_length``: tiny 128, paper
512), each window encoded on its own and all K x L attended by the cross-modal module. Code vocabularies are
ICD-9/ATC-3-shaped codes of MIMIC-III-like sizes (``--diagnosis-codes``, ``--medication-codes``) with their real
ontology paths. Two paths are timed: from token ids (the frozen prefix recomputed every step) and from a cached frozen
prefix (``text_hidden_states``), which is what the pretraining engine can do. Prints one table row per preset, window
count and path: median and min wall seconds per step over ``--steps`` steps after a warm-up, the median process CPU
seconds per step (on a shared machine, CPU time with ``--threads 1`` is the steadier figure: wall time there includes
waiting for other processes), and memory: the activations the forward saves for the backward (the part of a step's
memory that grows with K; counted with ``torch.autograd.graph.saved_tensors_hooks``) and, on CUDA, the peak allocated.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from medmplm.data.masking import CodeMasker
from medmplm.data.vocab import CLS_ID, NUM_SPECIAL_TOKENS
from medmplm.models import MedMPLMConfig, MedMPLMForPretraining
from medmplm.models.text_encoder import bert_text_config
from medmplm.ontology import build_ontology


def synthetic_codes(num_diagnoses: int, num_medications: int) -> dict[str, list[str]]:
    """Distinct, validly shaped ICD-9 diagnosis (5-digit numeric) and ATC-3 codes."""
    diagnoses = [f"{1 + i % 999:03d}{i // 999:02d}" for i in range(num_diagnoses)]
    letters = "ABCDGHJLMNPRSV"
    medications = [
        f"{letters[i % len(letters)]}{i // len(letters) % 100:02d}{'ABCDEFGH'[i // 1400]}"
        for i in range(num_medications)
    ]
    return {"diagnosis": diagnoses, "medication": medications}


def build_model(config: MedMPLMConfig, num_diagnoses: int, num_medications: int) -> MedMPLMForPretraining:
    """A pretraining model over synthetic code vocabularies and an untrained BERT of the preset's size."""
    codes = synthetic_codes(num_diagnoses, num_medications)
    config.vocabularies = {t: list(codes[t]) for t in codes}
    config.ontologies = {
        "diagnosis": build_ontology(codes["diagnosis"], "icd9_diagnosis"),
        "medication": build_ontology(codes["medication"], "atc3"),
    }
    config.text_config = bert_text_config(config, config.text_vocab_size, pad_token_id=0)
    return MedMPLMForPretraining(config)


def random_batch(
    model: MedMPLMForPretraining, batch_size: int, text_length: int, codes: int
) -> dict[str, torch.Tensor]:
    """A full-length featurised batch of random ids (``text_length``: all windows), masked."""
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(
            NUM_SPECIAL_TOKENS + 1, model.config.text_vocab_size, (batch_size, text_length), generator=g
        ),
        "attention_mask": torch.ones(batch_size, text_length, dtype=torch.long),
        "has_note": torch.ones(batch_size, dtype=torch.long),
    }
    for prefix, vocab in (("diag", model.diagnosis_vocab), ("med", model.medication_vocab)):
        ids = torch.randint(NUM_SPECIAL_TOKENS, len(vocab), (batch_size, 1 + codes), generator=g)
        ids[:, 0] = CLS_ID
        batch[f"{prefix}_ids"] = ids
        batch[f"{prefix}_mask"] = torch.ones_like(ids)
    return CodeMasker.from_model(model)(batch, g)


def time_steps(
    model: MedMPLMForPretraining, batch: dict[str, torch.Tensor], steps: int, warmup: int
) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) per forward + backward for ``steps`` steps after ``warmup`` untimed ones."""
    wall, cpu = [], []
    for step in range(warmup + steps):
        if batch["diag_ids"].is_cuda:
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        model(**batch).loss.backward()
        if batch["diag_ids"].is_cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        model.zero_grad(set_to_none=True)
    return wall, cpu


def saved_activation_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors a forward saves for its backward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(storages.values())


def main() -> None:
    """Parse arguments, time each preset and window count, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--windows", nargs="+", type=int, default=[1, 2, 4], help="windows per note (K)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=0, help="tokens per window; 0: each preset's own")
    parser.add_argument("--codes", type=int, default=61, help="codes per type per visit; 0: each preset's max_codes")
    parser.add_argument("--diagnosis-codes", type=int, default=6000)
    parser.add_argument("--medication-codes", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, {args.threads} threads, torch {torch.__version__}; batch {args.batch_size}; "
        f"vocabularies {args.diagnosis_codes} diagnoses / {args.medication_codes} medications"
    )
    print(
        f"{'preset':>6} {'window':>6} {'K':>2} {'path':>20} {'params':>14} {'wall med':>9} {'wall min':>9} "
        f"{'CPU med':>8} {'saved act.':>10} {'CUDA peak':>10}"
    )
    for preset in args.presets:
        for windows in args.windows:
            lengths = {"text_max_length": args.text_length, "max_codes": args.codes}
            note_reading = {"text_long_note": "windows", "text_max_windows": windows}
            config = MedMPLMConfig.from_preset(preset, **{k: v for k, v in lengths.items() if v > 0}, **note_reading)
            torch.manual_seed(0)
            model = build_model(config, args.diagnosis_codes, args.medication_codes).to(device).train()
            length = config.text_max_length
            batch = random_batch(model, args.batch_size, windows * length, config.max_codes)
            batch = {k: v.to(device) for k, v in batch.items()}
            cached = {k: v for k, v in batch.items() if k != "input_ids"}
            cached["text_hidden_states"] = model.text_encoder.frozen_prefix(
                batch["input_ids"], batch["attention_mask"], window_length=length
            )
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            for path, inputs in (("from token ids", batch), ("cached frozen prefix", cached)):
                wall, cpu = time_steps(model, inputs, args.steps, args.warmup)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                saved = saved_activation_bytes(lambda inputs=inputs: model(**inputs).loss)
                peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else "-"
                model.zero_grad(set_to_none=True)
                print(
                    f"{preset:>6} {length:>6} {windows:>2} {path:>20} "
                    f"{f'{total / 1e6:.1f}M/{trainable / 1e6:.1f}M':>14} {statistics.median(wall):>8.3f}s "
                    f"{min(wall):>8.3f}s {statistics.median(cpu):>7.3f}s {saved / 2**20:>6.0f} MiB {peak:>10}"
                )
    print("params: total/trainable; times per forward + backward; saved act.: activations kept for the backward")


if __name__ == "__main__":
    main()
