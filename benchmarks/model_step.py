"""Forward + backward time of one MedM-PLM pretraining batch, per preset.

    python benchmarks/model_step.py [--presets tiny paper] [--batch-size 8] [--text-length 512]
                                    [--codes 61] [--steps 5] [--threads N] [--device cpu]

Batches are full-length (every text token real, every code slot filled) random ids, masked
with ``CodeMasker``. Code vocabularies are ICD-9/ATC-3-shaped codes of MIMIC-III-like sizes
(``--diagnosis-codes``, ``--medication-codes``) with their real ontology paths. Two paths are
timed: from token ids (the frozen prefix recomputed every step) and from a cached frozen prefix
(``text_hidden_states``), which is what the pretraining engine can do. Prints one line per
preset and path: median and min wall seconds per step over ``--steps`` steps after a warm-up,
and the median process CPU seconds per step (on a shared machine, CPU time with ``--threads 1``
is the steadier figure: wall time there includes waiting for other processes).
"""

from __future__ import annotations

import argparse
import statistics
import time

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
    """A full-length featurised batch of random ids, masked."""
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


def main() -> None:
    """Parse arguments, time each preset, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=512, help="0: each preset's own text_max_length")
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
    for preset in args.presets:
        lengths = {"text_max_length": args.text_length, "max_codes": args.codes}
        config = MedMPLMConfig.from_preset(preset, **{k: v for k, v in lengths.items() if v > 0})
        torch.manual_seed(0)
        model = build_model(config, args.diagnosis_codes, args.medication_codes).to(device).train()
        batch = random_batch(model, args.batch_size, config.text_max_length, config.max_codes)
        batch = {k: v.to(device) for k, v in batch.items()}
        cached = {k: v for k, v in batch.items() if k != "input_ids"}
        cached["text_hidden_states"] = model.text_encoder.frozen_prefix(batch["input_ids"], batch["attention_mask"])
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for path, inputs in (("from token ids", batch), ("cached frozen prefix", cached)):
            wall, cpu = time_steps(model, inputs, args.steps, args.warmup)
            print(
                f"{preset:>6} (text {config.text_max_length}, codes {config.max_codes}; "
                f"{total / 1e6:.1f}M params, {trainable / 1e6:.1f}M trainable), {path:>20}: "
                f"wall median {statistics.median(wall):.3f} s, min {min(wall):.3f} s; "
                f"CPU median {statistics.median(cpu):.3f} s per forward+backward ({args.steps} steps)"
            )


if __name__ == "__main__":
    main()
