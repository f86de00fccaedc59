"""Prepare MIMIC-III for MedM-PLM: ``python -m medmplm.prepare --mimic DIR --out DIR``.

Starts a local Ray (or joins the cluster named by ``RAY_ADDRESS``), runs
:func:`medmplm.data.pipeline.prepare`, and prints where the output went and what was left out.
"""

from __future__ import annotations

import argparse
import os
import sys

from medmplm.console import configure_output, start_ray
from medmplm.data.pipeline import MEDICATION_VOCABS, VOCAB_SPLITS, PrepareOptions, check_output_dir, prepare
from medmplm.data.tables import PrepareInputError

DEFAULTS = PrepareOptions()


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated ratios like 0.8,0.1,0.1, got {text!r}")
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated ratios like 0.8,0.1,0.1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medmplm.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--mimic", required=True, help="directory with the MIMIC-III CSV(.gz) tables")
    parser.add_argument("--out", required=True, help="output directory (layout: medmplm/data/schema.py)")
    parser.add_argument(
        "--ndc-map",
        default=None,
        help="directory with ndc2rxnorm_mapping.txt and ndc2atc_level4.csv (default: --mimic)",
    )
    parser.add_argument(
        "--note-categories",
        default=",".join(DEFAULTS.note_categories),
        help="comma-separated NOTEEVENTS categories to keep (default: %(default)s)",
    )
    parser.add_argument(
        "--split", type=_ratios, default=DEFAULTS.split, help="train,val,test ratios (default 0.8,0.1,0.1)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="salt of the patient split hash")
    parser.add_argument(
        "--medication-vocab",
        choices=MEDICATION_VOCABS,
        default=DEFAULTS.medication_vocab,
        help="atc3 (needs the NDC map), ndc, or drug (the DRUG column)",
    )
    parser.add_argument("--num-shards-per-split", type=int, default=DEFAULTS.num_shards_per_split)
    parser.add_argument(
        "--admissions-per-bucket",
        type=int,
        default=DEFAULTS.admissions_per_bucket,
        help="admissions per work unit; lower it to use less memory per task",
    )
    parser.add_argument(
        "--vocab-split",
        choices=VOCAB_SPLITS,
        default=DEFAULTS.vocab_split,
        help="count vocabularies on the train split only (default) or on all splits",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing prepared output directory")
    parser.add_argument("--verbose", action="store_true", help="show Ray's output and per-stage timings")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    parser.add_argument(
        "--object-store-memory",
        type=int,
        default=1 << 30,
        help="object store bytes for a local Ray (default 1 GiB; prepare passes little through it)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_output(args.verbose)
    try:
        options = PrepareOptions(
            ndc_map_dir=args.ndc_map,
            note_categories=tuple(c.strip() for c in args.note_categories.split(",") if c.strip()),
            split=args.split,
            seed=args.seed,
            medication_vocab=args.medication_vocab,
            num_shards_per_split=args.num_shards_per_split,
            admissions_per_bucket=args.admissions_per_bucket,
            vocab_split=args.vocab_split,
            overwrite=args.overwrite,
        )
        check_output_dir(args.out, args.overwrite)
    except PrepareInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import ray

    # address="local": never attach to some other `ray start` cluster on this machine by accident.
    start_ray(
        args.verbose,
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=args.object_store_memory,
        include_dashboard=False,
    )
    try:
        manifest = prepare(args.mimic, args.out, options)
    except PrepareInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    for split, info in manifest.splits.items():
        print(f"{split}: {info['admissions']} admissions, {info['patients']} patients")
    print(f"quarantined rows by reason: {manifest.quarantined or 'none'}")
    print(f"dropped rows by reason: {manifest.dropped or 'none'}")
    print(f"unmapped NDC rows: {manifest.medications['unmapped_ndc_rows']}")
    print(f"prepared data in {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
