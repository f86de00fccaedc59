"""Print MedM-PLM parameter counts per part (total and trainable).

    python -m medmplm.models.summary --preset paper [--prepared DIR] [--set key=value ...]

With ``--prepared`` the code vocabularies and ontologies come from that prepared directory;
without it, from the small built-in example (``medmplm.models.testing_utils``), which
understates the code-embedding part. The text encoder is a fresh BERT of the preset's size with
``text_vocab_size`` WordPiece tokens (no tokenizer is trained).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from medmplm.data.schema import ONTOLOGY_DIR, VOCAB_DIR
from medmplm.data.vocab import CodeVocab
from medmplm.models.configuration_medmplm import PRESETS, MedMPLMConfig
from medmplm.models.modeling_medmplm import CODE_TYPES, MedMPLMForPretraining
from medmplm.models.testing_utils import write_tiny_prepared_dir
from medmplm.models.text_encoder import bert_text_config
from medmplm.ontology import read_ontology


def build_for_summary(config: MedMPLMConfig, prepared_dir: str | Path) -> MedMPLMForPretraining:
    """A pretraining model with the prepared directory's codes and an untrained-tokenizer text encoder."""
    prepared = Path(prepared_dir)
    config.vocabularies = {
        t: CodeVocab.from_tsv(prepared / VOCAB_DIR / f"{t}.tsv", t, min_count=config.code_min_count).codes
        for t in CODE_TYPES
    }
    config.ontologies = {t: read_ontology(prepared / ONTOLOGY_DIR / f"{t}.tsv") for t in CODE_TYPES}
    config.text_config = bert_text_config(config, config.text_vocab_size, pad_token_id=0)
    return MedMPLMForPretraining(config)


def parameter_table(model: MedMPLMForPretraining) -> list[tuple[str, int, int]]:
    """(part, total parameters, trainable parameters) per model part, then the whole model."""
    text = model.medmplm.text_encoder
    code = model.medmplm.code_encoder
    parts: list[tuple[str, list[nn.Module]]] = [
        ("text embeddings", [text.backbone.embeddings]),
        (
            f"text layers 1-{text.num_frozen_layers} (frozen)",
            list(text.backbone.encoder.layer[: text.num_frozen_layers]),
        ),
        (
            f"text layers {text.num_frozen_layers + 1}-{len(text.backbone.encoder.layer)}",
            list(text.backbone.encoder.layer[text.num_frozen_layers :]),
        ),
        ("code ontology embedding (diagnosis)", [code.embeddings.ontology["diagnosis"]]),
        ("code ontology embedding (medication)", [code.embeddings.ontology["medication"]]),
        (
            "code special/type embeddings + norm",
            [code.embeddings.special_tokens, code.embeddings.code_type, code.embeddings.layer_norm],
        ),
        ("code transformer", [code.encoder]),
        ("cross-modal module", [model.medmplm.cross_modal]),
        ("T2C heads", [model.t2c_heads]),
        ("C2C heads", [model.c2c_heads]),
    ]
    rows = []
    for name, modules in parts:
        params = [p for m in modules for p in m.parameters()]
        rows.append((name, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    counted = sum(r[1] for r in rows)
    total = sum(p.numel() for p in model.parameters())
    if counted != total:
        raise AssertionError(f"parts cover {counted} of {total} parameters; parameter_table is missing a part")
    rows.append(("total", total, sum(p.numel() for p in model.parameters() if p.requires_grad)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: parse arguments, build the model, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--prepared", help="prepared directory whose vocabularies/ontologies to use")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (JSON value)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    config = MedMPLMConfig.from_preset(args.preset, **overrides)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = args.prepared or write_tiny_prepared_dir(Path(scratch) / "example")
        model = build_for_summary(config, prepared)
    source = args.prepared or "built-in example (pass --prepared for real vocabularies)"
    print(f"MedM-PLM preset {args.preset!r}; codes from {source}")
    sizes = f"{len(model.diagnosis_vocab)} diagnosis / {len(model.medication_vocab)} medication"
    print(f"code vocabularies: {sizes} tokens (special tokens included)")
    rows = parameter_table(model)
    width = max(len(r[0]) for r in rows)
    print(f"{'part':<{width}}  {'total':>13}  {'trainable':>13}")
    for name, total, trainable in rows:
        print(f"{name:<{width}}  {total:>13,}  {trainable:>13,}")


if __name__ == "__main__":
    main(sys.argv[1:])
