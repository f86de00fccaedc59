"""Size on storage of the frozen-prefix cache (``data.text_cache``) per 1,000 notes and per window, by dtype.

    python benchmarks/text_cache_size.py --prepared DIR [--model EXPORT] [--split val] [--notes 256]
                                         [--dtypes bfloat16 float16 float32]

Runs the real cache stage (``medmplm.train.data.cache_frozen_prefix``: Ray Data actors writing zstd Parquet shards) on
the first ``--notes`` visits of a split, with the model of ``--model`` (a MedM-PLM export) or a fresh ``tiny`` one,
reading notes as its configuration says (``tiny``: up to 4 windows of 128). Prints, per dtype, the bytes written per
1,000 notes and per 1,000 note-windows (windows the notes actually fill), beside the uncompressed size
(windows x window length x hidden size x dtype bytes), so the compression zstd gets is visible.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--model", help="a MedM-PLM export (default: a fresh tiny model)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--notes", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16", "float32"])
    args = parser.parse_args()

    import ray
    import torch

    from medmplm.data.features import VisitFeaturizer
    from medmplm.models import MedMPLMConfig, MedMPLMForPretraining, MedMPLMModel
    from medmplm.pretraining.medmplm import build_medmplm
    from medmplm.train.bundle import ModelBundle
    from medmplm.train.data import cache_frozen_prefix, featurize, keep_row_order, read_visits

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    keep_row_order()
    with tempfile.TemporaryDirectory(prefix="medmplm-cache-size-") as scratch:
        model_dir = Path(scratch) / "model"
        if args.model:
            model = MedMPLMModel.from_pretrained(args.model)
        else:
            torch.manual_seed(0)
            model = build_medmplm(MedMPLMForPretraining, args.prepared, MedMPLMConfig.from_preset("tiny"))
        model.save_pretrained(model_dir)
        config = model.config
        visits = read_visits(args.prepared, args.split).limit(args.notes)
        featurized = featurize(visits, VisitFeaturizer.from_model(model), 64).materialize()
        notes = featurized.count()
        batches = featurized.iter_batches(batch_format="numpy", batch_size=None)
        windows = sum(int(batch["text_windows"].clip(max=config.text_max_windows).sum()) for batch in batches)
        hidden = model.text_encoder.hidden_size
        bundle = ray.put(ModelBundle.from_directory(model_dir))
        print(
            f"{notes} notes of {args.prepared} ({args.split}), {windows} windows filled; windows of "
            f"{config.text_max_length} tokens, up to {config.text_max_windows} per note; hidden size {hidden}"
        )
        print(f"{'dtype':>9} {'MB / 1,000 notes':>17} {'MB / 1,000 windows':>19} {'uncompressed / 1,000 windows':>29}")
        for dtype in args.dtypes:
            location = str(Path(scratch) / f"cache-{dtype}")
            _, summary = cache_frozen_prefix(
                featurized, bundle, location, dtype=dtype, batch_size=16, concurrency=1, use_gpu=False
            )
            raw = config.text_max_length * hidden * np.dtype("float16" if dtype == "bfloat16" else dtype).itemsize
            print(
                f"{dtype:>9} {summary['bytes'] / notes * 1e3 / 1e6:>17.1f} {summary['bytes'] / windows * 1e3 / 1e6:>19.1f} "
                f"{raw * 1e3 / 1e6:>29.1f}"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
