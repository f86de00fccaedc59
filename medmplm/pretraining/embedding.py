"""One embedding per visit from an exported model of any family, by Ray Data batch inference.

This is how users take the learned representations to their own models. The export is loaded with
``transformers.AutoModel`` (every family is registered), and each visit gets the vector its family's fine-tuning reads:

===============  ==================================================================================================
family           visit vector
===============  ==================================================================================================
``medmplm``      ``visit_embedding``: the fused [CLS] states of the note, the diagnoses and the medications [3 H_code]
``contrastive``  ``visit_embedding``: the note's window [CLS] states (mean), and the diagnosis and medication [CLS]
                 states, unfused [H_text + 2 H_code]
``gbert``        ``visit_embedding``: the diagnosis and medication [CLS] states [2 H]
``medbert``      ``encode_visits``: the [CLS] state of the visit as a one-visit sequence [H]
BERT             the [CLS] state of the note's first ``max_length`` tokens [H] (``bert-mlm`` exports, any local BERT);
                 a visit without a note has no vector (null), and is counted
===============  ==================================================================================================

Output: ``<out>/<split>/*.parquet`` with ``subject_id``, ``hadm_id`` and ``embedding`` (a fixed-size list of float32),
and ``<out>/embeddings.json`` (model, family, width, rows per split). Everything is written under a temporary name and
renamed into place, so an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

VISIT_COLUMNS = ("subject_id", "hadm_id", "note_text", "diagnoses", "medications")
MANIFEST_FILE = "embeddings.json"
# Families whose visit vector comes from the codes (a BERT's from the note).
CODE_MODEL_TYPES = ("medmplm", "contrastive", "gbert", "medbert")


class VisitEmbedder:
    """Ray Data actor stage: visit records -> ``subject_id``, ``hadm_id``, ``embedding`` (null for a text model's
    visit without a note).

    Args:
        bundle: a :class:`~medmplm.train.bundle.ModelBundle` of the export (or an object reference to one).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, bundle: Any, device: str = "cpu") -> None:
        import ray
        import torch
        from transformers import AutoModel

        import medmplm.models  # noqa: F401  registers every family with the Auto classes

        bundle = ray.get(bundle) if isinstance(bundle, ray.ObjectRef) else bundle
        self._directory = tempfile.mkdtemp(prefix="medmplm-embed-")
        bundle.write_to(self._directory)
        self.model = AutoModel.from_pretrained(self._directory, local_files_only=True).eval().to(device)
        self.device = torch.device(device)
        self.model_type = self.model.config.model_type
        self._featurize = self._featurizer()

    def _featurizer(self) -> Any:
        from medmplm.data.features import VisitFeaturizer
        from medmplm.data.vocab import CodeVocab
        from medmplm.pretraining.gbert import CodeFeaturizer

        config = self.model.config
        if self.model_type in ("medmplm", "contrastive"):
            return VisitFeaturizer.from_model(self.model)
        if self.model_type in ("gbert", "medbert"):
            vocabs = [CodeVocab(t, config.vocabularies[t]) for t in ("diagnosis", "medication")]
            max_codes = config.max_codes if self.model_type == "gbert" else (config.max_length - 1) // 2
            return CodeFeaturizer(*vocabs, max_codes=max_codes)
        return NoteFeaturizer(self._directory, getattr(config, "max_position_embeddings", 512))

    def vectors(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """[B, width] float32 visit vectors of featurised visits."""
        import torch

        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(features[name])).to(self.device)

        with torch.no_grad():
            codes = (
                {name: tensor(name) for name in ("diag_ids", "diag_mask", "med_ids", "med_mask")}
                if (self.model_type in CODE_MODEL_TYPES)
                else {}
            )
            if self.model_type == "medmplm":
                text = {name: tensor(name) for name in ("input_ids", "attention_mask", "has_note")}
                vectors = self.model(**codes, **text).visit_embedding
            elif self.model_type == "contrastive":
                text = {name: tensor(name) for name in ("input_ids", "attention_mask")}
                vectors = self.model(**codes, **text).visit_embedding
            elif self.model_type == "gbert":
                vectors = self.model(**codes).visit_embedding
            elif self.model_type == "medbert":
                vectors = self.model.encode_visits(**codes)
            else:
                vectors = self.model(input_ids=tensor("input_ids"), attention_mask=tensor("attention_mask"))
                vectors = vectors.last_hidden_state[:, 0]
        return vectors.float().cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        features = self._featurize(batch)
        vectors = self.vectors(features)
        present = np.ones(len(vectors), dtype=bool)
        if self.model_type not in CODE_MODEL_TYPES:
            present = features["has_note"].astype(bool)
        # A plain Arrow list column (not Ray's tensor extension type), so that any Parquet reader takes the file.
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1], mask=pa.array(~present)
        )
        return pa.table(
            {
                "subject_id": pa.array(np.asarray(batch["subject_id"], dtype=np.int64)),
                "hadm_id": pa.array(np.asarray(batch["hadm_id"], dtype=np.int64)),
                "embedding": embedding,
            }
        )


class NoteFeaturizer:
    """Visit notes -> ``input_ids``, ``attention_mask`` [B, max_length] and ``has_note`` [B], with the tokenizer saved
    beside a BERT export (the note cleaned as every featuriser of the project cleans it)."""

    def __init__(self, directory: str, max_length: int) -> None:
        from medmplm.models.tokenization import load_tokenizer

        self.tokenizer = load_tokenizer(directory)
        self.max_length = min(max_length, self.tokenizer.model_max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medmplm.data.features import clean_note_text

        texts = [clean_note_text(note) if isinstance(note, str) else "" for note in batch["note_text"]]
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="np"
        )
        return {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
            "has_note": np.array([1 if text else 0 for text in texts], dtype=np.int64),
        }


def embed_visits(
    model_dir: str,
    prepared_dir: str,
    out_dir: str,
    splits: tuple[str, ...],
    batch_size: int,
    concurrency: int,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Embed every visit of ``splits`` with the export ``model_dir`` and write them under ``out_dir`` (see the module
    docstring); Ray must be initialised. Returns the manifest written.

    Raises:
        FileExistsError: when ``out_dir`` already holds embeddings.
        FileNotFoundError: naming the split directory that is missing.
    """
    import ray
    import ray.data

    from medmplm.data.schema import VISITS_DIR
    from medmplm.train.bundle import ModelBundle

    out = Path(out_dir)
    if (out / MANIFEST_FILE).exists():
        raise FileExistsError(f"{out}: holds embeddings already ({MANIFEST_FILE}); choose another --out or remove it")
    bundle_ref = ray.put(ModelBundle.from_directory(model_dir))
    model_config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".embedding-", dir=out))
    counts: dict[str, dict[str, int]] = {}
    width = None
    try:
        for split in splits:
            location = Path(prepared_dir) / VISITS_DIR / split
            if not location.is_dir():
                raise FileNotFoundError(f"{location}: missing; {prepared_dir} is not a prepared directory")
            embedded = ray.data.read_parquet(str(location), columns=list(VISIT_COLUMNS)).map_batches(
                VisitEmbedder,
                fn_constructor_kwargs={"bundle": bundle_ref, "device": "cuda" if use_gpu else "cpu"},
                batch_format="numpy",
                batch_size=batch_size,
                concurrency=concurrency,
                num_gpus=1 if use_gpu else 0,
            )
            embedded = embedded.materialize()
            rows = embedded.count()
            missing = sum(
                int(batch.column("embedding").null_count) for batch in embedded.iter_batches(batch_format="pyarrow")
            )
            if rows:
                first = embedded.take(1)[0]["embedding"]
                width = width or (len(first) if first is not None else None)
            embedded.write_parquet(str(staging / split))
            counts[split] = {"visits": rows, "without_embedding": missing}
            logger.info("%s: %d visits embedded, %d without a vector (no note for a text model)", split, rows, missing)
        manifest = {
            "model": str(Path(model_dir).resolve()),
            "model_type": model_config.get("model_type"),
            "prepared_dir": str(prepared_dir),
            "width": width,
            "splits": counts,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for split in splits:
            target = out / split
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / split, target)
        os.replace(staging / MANIFEST_FILE, out / MANIFEST_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
