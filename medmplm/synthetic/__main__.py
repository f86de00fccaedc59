"""Command line: ``python -m medmplm.synthetic [--layout mimic3|mimic4]`` (MIMIC tables) or ``python -m
medmplm.synthetic ner``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from medmplm.synthetic.generate import generate_mimic3
from medmplm.synthetic.mimic4 import generate_mimic4
from medmplm.synthetic.ner import generate_ner_corpus


def _mimic_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.synthetic",
        description="Write a synthetic MIMIC-III v1.4 release, or MIMIC-IV's hosp/ and note/ layout (use the 'ner' "
        "subcommand for an i2b2-style NER corpus).",
    )
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty unless --overwrite)")
    parser.add_argument(
        "--layout",
        choices=("mimic3", "mimic4"),
        default="mimic3",
        help="mimic3 (default): MIMIC-III v1.4 tables; mimic4: MIMIC-IV v3 hosp/ + note/ (.csv.gz, ICD-9 and ICD-10 "
        "eras, adults only)",
    )
    parser.add_argument(
        "--patients", type=int, default=1000, help="number of patients (default 1000; 46520 is MIMIC-III size)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz files (mimic4 always does, as its release)")
    parser.add_argument(
        "--column-case",
        choices=("upper", "lower"),
        default=None,
        help="mimic3 only: header case and quoting: 'upper' as the full release (default), 'lower' as the public demo",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    return parser


def _ner_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.synthetic ner", description="Write an i2b2-2010-style NER corpus."
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--documents", type=int, default=200, help="number of documents (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and generate; prints the row counts as JSON."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "ner":
            args = _ner_parser().parse_args(argv[1:])
            counts = generate_ner_corpus(args.out, documents=args.documents, seed=args.seed, overwrite=args.overwrite)
        else:
            parser = _mimic_parser()
            args = parser.parse_args(argv)
            if args.layout == "mimic4":
                if args.column_case is not None:
                    parser.error("--column-case is for --layout mimic3; MIMIC-IV's names are lower case")
                counts = generate_mimic4(args.out, patients=args.patients, seed=args.seed, overwrite=args.overwrite)
            else:
                counts = generate_mimic3(
                    args.out,
                    patients=args.patients,
                    seed=args.seed,
                    gzip=args.gzip,
                    column_case=args.column_case or "upper",
                    overwrite=args.overwrite,
                )
    except (FileExistsError, NotADirectoryError) as error:
        # The output directory is the user's to fix; its message names it and --overwrite.
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
