"""``python -m medmplm.embed``: one embedding per visit from an exported model of any family (Ray Data inference).

Writes ``<out>/<split>/*.parquet`` (``subject_id``, ``hadm_id``, ``embedding``) and ``<out>/embeddings.json``; see
:mod:`medmplm.pretraining.embedding` for the vector each family gives. ``RAY_ADDRESS`` (set by ``ray job submit``)
joins a cluster.

Examples::

    python -m medmplm.embed --model runs/<pretrain-run>/export --prepared runs/data/prepared-p300-s0 --out runs/emb
    python -m medmplm.embed --model runs/<bert-mlm-run>/export --prepared DIR --out DIR --splits train
"""

from __future__ import annotations

import argparse
import sys

from medmplm.console import configure_output, start_ray


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.embed",
        description="Embed every visit of a prepared directory with an exported model (medmplm, gbert, medbert, "
        "bert-mlm or any local BERT).",
    )
    parser.add_argument("--model", required=True, help="an export directory (python -m medmplm.pretrain)")
    parser.add_argument("--prepared", required=True, help="a prepared directory (python -m medmplm.prepare)")
    parser.add_argument("--out", required=True, help="where the embeddings go (must not hold embeddings already)")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated splits (default: all three)")
    parser.add_argument("--batch-size", type=int, default=64, help="visits per inference batch")
    parser.add_argument("--concurrency", type=int, default=1, help="model replicas (Ray Data actors)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per replica")
    parser.add_argument("--verbose", action="store_true", help="show Ray's output")
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    from medmplm.tasks.data_source import (
        DataSourceError,
        check_model_dir,
        check_prepared_dir,
        is_synthetic,
        synthetic_notice,
    )

    try:
        check_model_dir(args.model, "--model")
        check_prepared_dir(args.prepared, "--prepared")
    except DataSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_synthetic(args.prepared):
        print(synthetic_notice(args.prepared), flush=True)
    print(f"Embedding visits of {args.prepared} with {args.model} -> {args.out}", flush=True)

    import ray

    from medmplm.pretraining.embedding import MANIFEST_FILE, embed_visits

    start_ray(args.verbose)
    try:
        manifest = embed_visits(
            args.model,
            args.prepared,
            args.out,
            tuple(s for s in args.splits.split(",") if s),
            args.batch_size,
            args.concurrency,
            args.use_gpu,
        )
    except (FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    print(f"Embedded with a {manifest['model_type']} model, {manifest['width']} dimensions:")
    for split, counts in manifest["splits"].items():
        print(f"  {split}: {counts['visits']} visits, {counts['without_embedding']} without a vector")
    print(f"  manifest: {args.out}/{MANIFEST_FILE}")
    print("Next:")
    print(f"  python -c \"import pandas as pd; print(pd.read_parquet('{args.out}/train').head())\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
