"""``python -m medmplm.embeddings``: co-occurrence counts -> SPPMI-SVD embeddings -> related-pair AUC.

Examples::

    python -m medmplm.embeddings cooccur --prepared runs/data/prepared --out runs/emb/counts
    python -m medmplm.embeddings cooccur --prepared site-b/prepared --out runs/emb/counts-b --unit window
    python -m medmplm.embeddings embed --counts runs/emb/counts runs/emb/counts-b --dim 300 --out runs/emb/sppmi
    python -m medmplm.embeddings export --model runs/contrastive/export --space joint --out runs/emb/contrastive
    python -m medmplm.embeddings evaluate --embeddings runs/emb/sppmi runs/emb/contrastive --out runs/emb/auc.csv

``RAY_ADDRESS`` (set by ``ray job submit``) makes ``cooccur`` join a cluster. Output names counts and identifiers only,
never note text.
"""

from __future__ import annotations

import argparse
import sys

from medmplm.console import configure_output, start_ray


def _parser() -> argparse.ArgumentParser:
    from medmplm.embeddings.cooccur import DEFAULT_MIN_COUNT, DEFAULT_WINDOW_DAYS, UNITS
    from medmplm.embeddings.evaluate import DEFAULT_RANDOM_PER_RELATED
    from medmplm.embeddings.sppmi import DEFAULT_CONTEXT_SMOOTHING, DEFAULT_DIM

    parser = argparse.ArgumentParser(
        prog="python -m medmplm.embeddings",
        description="Code and note-term embeddings from co-occurrence counts (shifted positive PMI + truncated SVD), "
        "and their evaluation beside a model's code embeddings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    cooccur = commands.add_parser("cooccur", help="count co-occurrences of a prepared directory (Ray Data)")
    cooccur.add_argument("--prepared", required=True, help="a local prepared directory (python -m medmplm.prepare)")
    cooccur.add_argument("--out", required=True, help="the count directory to write")
    cooccur.add_argument("--unit", choices=UNITS, default="patient", help="what co-occurring means (default: patient)")
    cooccur.add_argument("--window-days", type=int, default=DEFAULT_WINDOW_DAYS, help="window length for --unit window")
    cooccur.add_argument(
        "--min-count", type=int, default=DEFAULT_MIN_COUNT, help="smallest count released (1: none withheld)"
    )
    cooccur.add_argument("--splits", default="train", help="comma-separated splits to count (default: train)")
    cooccur.add_argument(
        "--code-types", default="diagnosis,procedure,medication", help="comma-separated code vocabularies to count"
    )
    cooccur.add_argument(
        "--terms", default="catalogue", help="note terms: catalogue (the synthetic catalogue's vocabulary), none, or a "
        "text file with one term per line"
    )
    cooccur.add_argument("--batch-size", type=int, default=1024, help="visits per Ray Data batch")
    cooccur.add_argument("--overwrite", action="store_true", help="replace counts already in --out")
    cooccur.add_argument("--verbose", action="store_true", help="show Ray's output")

    embed = commands.add_parser("embed", help="SPPMI + truncated SVD of one or more count directories (summed)")
    embed.add_argument("--counts", required=True, nargs="+", help="count directories; several are summed (sites)")
    embed.add_argument("--out", required=True, help="the embedding directory to write")
    embed.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"embedding width (default {DEFAULT_DIM})")
    embed.add_argument("--shift", type=float, default=1.0, help="PMI shift k: log k is subtracted (default 1: none)")
    embed.add_argument(
        "--context-smoothing", type=float, default=DEFAULT_CONTEXT_SMOOTHING, help="context distribution exponent"
    )
    embed.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD")
    embed.add_argument("--overwrite", action="store_true", help="replace embeddings already in --out")

    export = commands.add_parser("export", help="a medmplm or contrastive export's code (and term) vectors")
    export.add_argument("--model", required=True, help="an export directory (python -m medmplm.pretrain)")
    export.add_argument("--out", required=True, help="the embedding directory to write")
    export.add_argument("--space", choices=("input", "joint"), default="input", help="input code embeddings, or the "
                        "contrastive model's shared code-note space (default: input)")
    export.add_argument("--terms", default="catalogue", help="terms embedded in the joint space (catalogue or a file)")
    export.add_argument("--overwrite", action="store_true", help="replace embeddings already in --out")

    evaluate = commands.add_parser("evaluate", help="related-pair AUC of one or more embedding directories")
    evaluate.add_argument("--embeddings", required=True, nargs="+", help="embedding directories, scored side by side")
    evaluate.add_argument(
        "--random-per-related", type=int, default=DEFAULT_RANDOM_PER_RELATED, help="random pairs per related pair"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the random pairs")
    evaluate.add_argument("--out", help="also write the results as CSV")
    return parser


def _cooccur(args: argparse.Namespace) -> None:
    import ray

    from medmplm.embeddings.cooccur import CountingOptions, cooccur
    from medmplm.embeddings.terms import load_terms
    from medmplm.tasks.data_source import check_prepared_dir, is_synthetic, synthetic_notice

    options = CountingOptions(
        unit=args.unit,
        window_days=args.window_days,
        min_count=args.min_count,
        code_types=tuple(t for t in args.code_types.split(",") if t),
    )
    terms = load_terms(args.terms)
    check_prepared_dir(args.prepared, "--prepared")
    if is_synthetic(args.prepared):
        print(synthetic_notice(args.prepared), flush=True)
    splits = tuple(s for s in args.splits.split(",") if s)
    print(f"Counting co-occurrences per {args.unit} in {args.prepared} ({', '.join(splits)}) -> {args.out}", flush=True)
    start_ray(args.verbose)
    try:
        manifest = cooccur(args.prepared, args.out, options, terms, splits, args.batch_size, args.overwrite)
    finally:
        ray.shutdown()
    print(
        f"Counted {manifest['units']} units ({manifest['visits']} visits) in {manifest['counting_seconds']} s; "
        f"{len(terms.terms)} terms ({terms.merged} entries merged into an earlier term)"
    )
    print(
        f"Released {manifest['items']} items and {manifest['pairs']} pairs with counts >= {options.min_count}; "
        f"withheld {manifest['suppressed_items']} items and {manifest['suppressed_pairs']} pairs below it; "
        f"{manifest['unseen_items']} vocabulary items never seen; {manifest['codes_outside_vocabulary']} codes outside "
        "the vocabularies"
    )
    print(f"Next:\n  python -m medmplm.embeddings embed --counts {args.out} --dim 300 --out EMBEDDINGS_DIR")


def _embed(args: argparse.Namespace) -> None:
    from medmplm.embeddings.sppmi import embed

    manifest = embed(args.counts, args.out, args.dim, args.shift, args.context_smoothing, args.seed, args.overwrite)
    print(
        f"Embedded {manifest['items']} items in {manifest['dim']} dimensions from {manifest['units']} units "
        f"({len(args.counts)} count director{'y' if len(args.counts) == 1 else 'ies'}); "
        f"{manifest['items_without_positive_pmi']} items without a positive PMI have the zero vector -> {args.out}"
    )
    print(f"Next:\n  python -m medmplm.embeddings evaluate --embeddings {args.out}")


def _export(args: argparse.Namespace) -> None:
    from medmplm.embeddings.model_vectors import export_model_vectors
    from medmplm.embeddings.terms import load_terms

    manifest = export_model_vectors(args.model, args.out, args.space, load_terms(args.terms), args.overwrite)
    print(f"Wrote {manifest['items']} vectors of {manifest['dim']} dimensions ({manifest['method']}) -> {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from medmplm.embeddings.evaluate import evaluate
    from medmplm.embeddings.sppmi import read_embeddings

    scores = evaluate([(d, read_embeddings(d)) for d in args.embeddings], args.random_per_related, args.seed)
    if not scores:
        raise ValueError("no relation could be scored: the embeddings share no related pair (see --embeddings)")
    header = ("relation", "embeddings", "AUC", "related", "random", "related left out")
    rows = [
        (s.relation, s.embeddings, f"{s.auc:.3f}", s.related_pairs, s.random_pairs, s.related_pairs_left_out)
        for s in scores
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)))
    if args.out:
        import pandas as pd

        pd.DataFrame([s.as_row() for s in scores]).to_csv(args.out, index=False)
        print(f"results: {args.out}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    configure_output(getattr(args, "verbose", False))
    commands = {"cooccur": _cooccur, "embed": _embed, "export": _export, "evaluate": _evaluate}
    from medmplm.tasks.data_source import DataSourceError

    try:
        commands[args.command](args)
    except (DataSourceError, FileExistsError, FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
