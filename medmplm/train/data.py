"""Ray Data stages that feed the training workers: read prepared visits, featurise, cache the frozen text prefix.

Tokenisation and code mapping happen here, upstream of the loop, in ``map_batches``; the workers only receive
fixed-shape arrays through ``get_dataset_shard(...).iter_torch_batches``.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from medmplm.data import schema

# Columns of VISIT_SCHEMA the featuriser reads (hadm_id only names rows in error messages).
VISIT_COLUMNS = ("hadm_id", "note_text", "diagnoses", "medications")

# Featuriser outputs the pretraining forward takes.
MODEL_COLUMNS = ("input_ids", "attention_mask", "has_note", "diag_ids", "diag_mask", "med_ids", "med_mask")

# Featuriser outputs counted once for the run log (truncations, unknown codes), then dropped.
COUNT_COLUMNS = ("text_truncated", "diag_truncated", "med_truncated", "diag_unknown", "med_unknown")

TEXT_HIDDEN_STATES = "text_hidden_states"
# How the frozen-prefix cache stores hidden states, and the file written last when a cache is complete.
CACHE_DTYPES = ("float32", "float16", "bfloat16")
CACHE_MARKER = "_cache_complete.json"
# Where a run keeps its frozen-prefix cache, one directory per split: <storage_path>/<run name>/text_cache/<split>/.
TEXT_CACHE_DIR = "text_cache"


def keep_row_order() -> None:
    """Make this process's Ray Data keep row order (``preserve_order``), so that featurising and materialising a split
    gives the same row order in every run. Call it before building the datasets of a training run: the loop's seeded
    shuffle and the workers' shards are only reproducible on a reproducible input order."""
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True


def read_visits(prepared_dir: str, split: str) -> Any:
    """A Ray Dataset of one split's visit records (only the columns the featuriser reads).

    Raises:
        FileNotFoundError: naming the directory when the split is missing.
    """
    import ray.data

    from medmplm.train import storage

    if split not in schema.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {schema.SPLITS}")
    location = storage.join(prepared_dir, schema.VISITS_DIR, split)
    if not storage.exists(location):
        raise FileNotFoundError(
            f"{location}: missing; {prepared_dir} is not a prepared directory (run python -m medmplm.prepare)"
        )
    return ray.data.read_parquet(location, columns=list(VISIT_COLUMNS))


def featurize(dataset: Any, featurizer: Any, batch_size: int) -> Any:
    """Tokenise notes and map codes to ids with ``featurizer`` (a picklable ``VisitFeaturizer``) in ``map_batches``."""
    return dataset.map_batches(featurizer, batch_format="numpy", batch_size=batch_size)


def feature_counts(dataset: Any) -> dict[str, int]:
    """Sums of the featuriser's count columns (notes truncated, codes beyond the limit, unknown codes) and rows.

    Meant for a materialised dataset: its blocks are read on the driver, only the count columns summed.
    """
    import pyarrow.compute as pc

    counts = {name: 0 for name in COUNT_COLUMNS}
    counts["visits"] = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        counts["visits"] += batch.num_rows
        for name in COUNT_COLUMNS:
            if name in batch.column_names:
                counts[name] += int(pc.sum(batch.column(name)).as_py() or 0)
    return counts


def select_model_columns(dataset: Any, cached: bool) -> Any:
    """Keep only what the model takes (hidden states instead of token ids when the prefix is cached)."""
    columns = [c for c in MODEL_COLUMNS if not (cached and c == "input_ids")]
    return dataset.select_columns(columns + ([TEXT_HIDDEN_STATES] if cached else []))


class FrozenPrefixEncoder:
    """Ray Data actor stage: ``input_ids`` -> ``text_hidden_states`` through the text encoder's frozen prefix.

    The embeddings and the first ``num_frozen_layers`` layers never change during training, so their output for a
    note is computed once here instead of at every step. A note read in K windows gives [K * L, H] states, zero over
    the windows it does not reach.

    Args:
        model: a :class:`~medmplm.train.bundle.ModelBundle` (or an object reference to one) of the model the run
            starts from.
        dtype: storage of the hidden states: ``float32``, ``float16``, or ``bfloat16`` (stored as int16 bit patterns,
            as numpy and Arrow have no bfloat16; the text encoder reads them back as bfloat16).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, model: Any, dtype: str = "bfloat16", device: str = "cpu") -> None:
        import ray
        import torch

        from medmplm.models import MedMPLMModel

        bundle = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        with tempfile.TemporaryDirectory(prefix="medmplm-prefix-") as directory:
            bundle.write_to(directory)
            loaded = MedMPLMModel.from_pretrained(directory)
        encoder = loaded.text_encoder
        if encoder.num_frozen_layers == 0:
            raise ValueError("text_cache needs a text encoder with frozen layers (num_frozen_layers > 0)")
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"text_cache_dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
        self.encoder = encoder.eval().to(device)
        self.window_length = loaded.config.text_max_length
        self.device = torch.device(device)
        self.dtype = dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        input_ids = torch.from_numpy(np.ascontiguousarray(batch["input_ids"])).to(self.device)
        attention_mask = torch.from_numpy(np.ascontiguousarray(batch["attention_mask"])).to(self.device)
        hidden = self.encoder.frozen_prefix(input_ids, attention_mask, window_length=self.window_length)
        if self.dtype == "bfloat16":
            stored = hidden.to(torch.bfloat16).view(torch.int16)
        else:
            stored = hidden.to(getattr(torch, self.dtype))
        out = {key: value for key, value in batch.items() if key != "input_ids"}
        out[TEXT_HIDDEN_STATES] = stored.cpu().numpy()
        return out


def cache_frozen_prefix(
    dataset: Any,
    model: Any,
    location: str,
    *,
    dtype: str,
    batch_size: int,
    concurrency: int,
    use_gpu: bool,
    cpus_per_actor: float = 1.0,
) -> tuple[Any, dict[str, Any]]:
    """The dataset with ``text_hidden_states`` instead of ``input_ids``, cached as Parquet shards at ``location`` (a
    local path or URI under the run's directory).

    The shards are written by :class:`FrozenPrefixEncoder` actors (zstd-compressed), then the marker file
    (:data:`CACHE_MARKER`, with the rows, the dtype and the bytes on storage) last, so a cache whose writing was cut
    short is never read: the next run (a resume) writes it again over whatever was left. A complete cache at
    ``location`` is read back as it is: the frozen prefix never changes within a run.

    Returns:
        (the cached dataset, the marker's contents).
    """
    import json

    import ray.data

    from medmplm.train import storage

    marker = storage.join(location, CACHE_MARKER)
    if not storage.exists(marker):
        encoded = dataset.map_batches(
            FrozenPrefixEncoder,
            fn_constructor_kwargs={"model": model, "dtype": dtype, "device": "cuda" if use_gpu else "cpu"},
            batch_format="numpy",
            batch_size=batch_size,
            concurrency=concurrency,
            num_cpus=cpus_per_actor,
            num_gpus=1 if use_gpu else 0,
        )
        encoded.write_parquet(location, compression="zstd", mode=ray.data.SaveMode.OVERWRITE)
        written = ray.data.read_parquet(location)
        summary = {"rows": written.count(), "dtype": dtype, "bytes": _parquet_bytes(location)}
        storage.write_text(marker, json.dumps(summary, indent=1))
    summary = json.loads(storage.read_text(marker))
    return ray.data.read_parquet(location), summary


def _parquet_bytes(location: str) -> int:
    """Bytes on storage of the Parquet files under ``location`` (an absolute local path or a URI)."""
    import pyarrow.fs as pafs

    filesystem, base = pafs.FileSystem.from_uri(location)
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    return sum(info.size for info in infos if info.type == pafs.FileType.File and info.path.endswith(".parquet"))
