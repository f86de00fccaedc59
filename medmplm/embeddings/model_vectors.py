"""A trained model's code (and term) vectors as an embedding directory, so that :mod:`medmplm.embeddings.evaluate`
scores them beside the SPPMI-SVD embeddings.

Two spaces:

* ``input`` (a ``medmplm`` or ``contrastive`` export): each diagnosis and medication code's vector as the code encoder
  reads it: its ontology embedding plus the code-type embedding, layer-normalised (``CodeEmbeddings`` without
  dropout). These are "the model's code embeddings"; they have no terms.
* ``joint`` (a ``contrastive`` export): the shared space the InfoNCE was learned in. A code is encoded as a visit
  holding that code alone (code encoder, [CLS] states, code projection); a term as a note holding that term alone
  (text encoder, window pooling, text projection). Codes and terms are then comparable, so ``code_term`` is scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmplm.embeddings.sppmi import Embeddings, write_embeddings
from medmplm.embeddings.terms import TermList

SPACES = ("input", "joint")
CODE_TYPES = ("diagnosis", "medication")
BATCH_SIZE = 256


def _model_type(model_dir: str) -> str:
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing; expected an export (python -m medmplm.pretrain)")
    return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")


def input_vectors(code_encoder: Any, vocabularies: dict[str, list[str]]) -> tuple[list[str], list[str], np.ndarray]:
    """``(kinds, items, vectors)`` of every code as the code encoder reads it (in eval mode: no dropout)."""
    from medmplm.data.vocab import NUM_SPECIAL_TOKENS

    kinds, items, parts = [], [], []
    with torch.no_grad():
        for code_type in CODE_TYPES:
            ids = torch.arange(NUM_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS + len(vocabularies[code_type]))
            parts.append(code_encoder.embeddings(ids[None, :], code_type)[0].float().numpy())
            kinds += [code_type] * len(ids)
            items += list(vocabularies[code_type])
    return kinds, items, np.concatenate(parts)


def joint_vectors(model: Any, terms: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
    """``(kinds, items, vectors)`` of every code (a one-code visit) and every term (a one-term note) in a contrastive
    model's shared space."""
    from medmplm.data.vocab import CLS_ID, NUM_SPECIAL_TOKENS
    from medmplm.models.text_encoder import window_starts

    config = model.config
    kinds, items, parts = [], [], []
    with torch.no_grad():
        for code_type in CODE_TYPES:
            codes = config.vocabularies[code_type]
            for start in range(0, len(codes), BATCH_SIZE):
                ids = torch.arange(NUM_SPECIAL_TOKENS + start, NUM_SPECIAL_TOKENS + min(start + BATCH_SIZE, len(codes)))
                with_code = torch.stack([torch.full_like(ids, CLS_ID), ids], dim=1)
                alone = torch.full((len(ids), 1), CLS_ID)
                diag, med = (with_code, alone) if code_type == "diagnosis" else (alone, with_code)
                diagnoses, medications = model.medmplm.code_encoder(
                    diag, torch.ones_like(diag), med, torch.ones_like(med)
                )
                vector = torch.cat([diagnoses[:, 0], medications[:, 0]], dim=-1)
                parts.append(model.alignment.embed_codes(vector).float().numpy())
            kinds += [code_type] * len(codes)
            items += list(codes)
        window, windows = config.text_max_length, config.text_max_windows
        for start in range(0, len(terms), BATCH_SIZE):
            batch = list(terms[start : start + BATCH_SIZE])
            encoded = model.tokenizer(
                batch, padding="max_length", truncation=True, max_length=window, return_tensors="pt"
            )
            # A term is a note of one window; the windows it does not reach are absent (all-zero mask).
            absent = (0, (windows - 1) * window)
            input_ids = torch.nn.functional.pad(encoded["input_ids"], absent, value=model.tokenizer.pad_token_id)
            attention_mask = torch.nn.functional.pad(encoded["attention_mask"], absent)
            states = model.medmplm.text_encoder(input_ids, attention_mask, window_length=window)
            parts.append(model.alignment.embed_text(*window_starts(states, attention_mask, window)).float().numpy())
        kinds += ["term"] * len(terms)
        items += list(terms)
    return kinds, items, np.concatenate(parts)


def export_model_vectors(
    model_dir: str, out: str, space: str, terms: TermList, overwrite: bool = False
) -> dict[str, Any]:
    """Write ``model_dir``'s vectors (``space``: ``input`` or ``joint``) as an embedding directory; returns its
    manifest.

    Raises:
        ValueError: naming the model type when it has no such space.
    """
    import medmplm.models.contrastive  # noqa: F401  registers MedM-PLM and the contrastive family with the Auto classes

    if space not in SPACES:
        raise ValueError(f"space must be one of {list(SPACES)}, got {space!r}")
    model_type = _model_type(model_dir)
    if model_type not in ("medmplm", "contrastive") or (space == "joint" and model_type != "contrastive"):
        allowed = "input or joint" if model_type == "contrastive" else "input" if model_type == "medmplm" else "none"
        raise ValueError(
            f"{model_dir} is a {model_type!r} model; its spaces: {allowed} (medmplm: input; contrastive: both)"
        )
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(model_dir).eval()
    vocabularies = model.config.vocabularies
    if space == "input":
        kinds, items, vectors = input_vectors(model.medmplm.code_encoder, vocabularies)
    else:
        kinds, items, vectors = joint_vectors(model, terms.terms)
    manifest = {
        "method": f"{model_type} {space}",
        "model": model_dir,
        "space": space,
        "terms": {"source": terms.source, "count": len(terms.terms)} if space == "joint" else None,
    }
    write_embeddings(out, Embeddings(kinds, items, vectors, manifest), overwrite)
    return json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))


__all__ = ["SPACES", "export_model_vectors", "input_vectors", "joint_vectors"]
