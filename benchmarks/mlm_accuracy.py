"""Masked-token accuracy of ``bert-mlm`` models on one split's notes: before and after pretraining.

Pass several model directories (e.g. a run's ``initial_model/`` and its ``export/``): every one is scored on the same
windows with the same masks (the loop's validation seeding: one generator per batch), in this process, without Ray.
Prints one line per model: windows, masked tokens, masked-token accuracy and the MLM loss. Asserts nothing.

Example::

    python benchmarks/mlm_accuracy.py --prepared runs/grid/prepared \\
        runs/grid/runs/bert-mlm/initial_model runs/grid/runs/bert-mlm/export
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from medmplm.console import configure_output
from medmplm.data.schema import VISITS_DIR
from medmplm.models.tokenization import load_tokenizer
from medmplm.pretraining.bert_mlm import MaskedLanguageModelingTask, NoteWindowFeaturizer, recorded_options


def score(model_dir: Path, windows: dict[str, np.ndarray], batch_size: int) -> tuple[int, float, float]:
    """(masked tokens, accuracy, mean loss per masked token) of the model in ``model_dir`` on ``windows``."""
    options = recorded_options(model_dir)
    task = MaskedLanguageModelingTask(
        tokenizer=load_tokenizer(model_dir),
        mlm_probability=options["mlm_probability"],
        whole_word_mask=options["whole_word_mask"],
    )
    model = task.load_model(model_dir).eval()
    hits = masked = loss = 0.0
    rows = len(windows["input_ids"])
    with torch.no_grad():
        for index, start in enumerate(range(0, rows, batch_size)):
            batch = {
                key: torch.from_numpy(np.ascontiguousarray(value[start : start + batch_size]))
                for key, value in windows.items()
            }
            inputs = task.model_inputs(batch, torch.Generator().manual_seed(index), training=False)
            output = model(**inputs)
            stats = task.batch_statistics(output, inputs)
            total, weight = stats["masked_token_accuracy"]
            hits += float(total)
            masked += float(weight)
            loss += float(stats["loss_mlm"][0])
    return int(masked), hits / masked, loss / masked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="bert-mlm model directories (initial_model/, export/, a BERT)")
    parser.add_argument("--prepared", required=True, help="prepared directory")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    configure_output(False)
    torch.set_num_threads(1)
    notes = pq.read_table(Path(args.prepared) / VISITS_DIR / args.split, columns=["note_text"]).to_pydict()
    first = Path(args.models[0])
    featurize = NoteWindowFeaturizer(load_tokenizer(first), recorded_options(first)["window_stride"])
    windows = featurize({"note_text": np.array(notes["note_text"], dtype=object)})
    windows = {key: windows[key] for key in featurize.model_columns}
    print(f"{args.split}: {len(notes['note_text'])} visits -> {len(windows['input_ids'])} windows")
    for model_dir in args.models:
        masked, accuracy, loss = score(Path(model_dir), windows, args.batch_size)
        print(f"{model_dir}: {masked} masked tokens, masked-token accuracy {accuracy:.4f}, MLM loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
