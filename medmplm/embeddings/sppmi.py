"""Embeddings from co-occurrence counts: shifted positive PMI, then a truncated SVD (Levy and Goldberg 2014; Cai et
al. show that contrastive learning of code and note embeddings amounts to factorising such a PMI matrix).

With ``C`` the symmetric pair counts, ``r = C 1`` their row sums and ``D = sum(r)``::

    PMI(a, b)   = log( C[a, b] / ( r[a] * P_alpha(b) ) ),   P_alpha(b) = r[b]^alpha / sum_c r[c]^alpha
    SPPMI(a, b) = max( PMI(a, b) - log(shift), 0 )           (only where C[a, b] > 0; zero elsewhere)

``alpha`` < 1 smooths the context distribution (Levy, Goldberg and Dagan 2015: 0.75), which keeps rare items from
getting large PMIs; ``alpha = 1`` is the plain PMI, ``log(C[a, b] D / (r[a] r[b]))``. ``shift`` is word2vec's number of
negative samples k (1: no shift). The embedding of item a is row a of ``U_d sqrt(S_d)`` from the randomized truncated
SVD of SPPMI (scikit-learn's ``randomized_svd``), so that dot products of embeddings approximate SPPMI.

An embedding directory holds ``embeddings.safetensors`` (tensor ``embeddings``, [V, d] float32), ``vocabulary.tsv``
(``kind``, ``item``; row i is embedding i) and ``manifest.json``; :mod:`medmplm.embeddings.model_vectors` writes the
same layout for a model's code embeddings, so :mod:`medmplm.embeddings.evaluate` reads both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from medmplm.embeddings.cooccur import Cooccurrence, read_counts, sum_counts

EMBEDDINGS_FILE = "embeddings.safetensors"
EMBEDDINGS_TENSOR = "embeddings"
VOCABULARY_FILE = "vocabulary.tsv"
MANIFEST_FILE = "manifest.json"
VOCABULARY_HEADER = ("kind", "item")
FORMAT = "medmplm.embeddings/1"
DEFAULT_DIM = 300
DEFAULT_CONTEXT_SMOOTHING = 0.75


def shifted_ppmi(
    counts: sp.spmatrix, shift: float = 1.0, context_smoothing: float = DEFAULT_CONTEXT_SMOOTHING
) -> sp.csr_matrix:
    """SPPMI of a symmetric count matrix (see the module docstring); rows without counts stay zero.

    Raises:
        ValueError: ``shift`` < 1 or ``context_smoothing`` outside (0, 1], or a negative count.
    """
    if shift < 1:
        raise ValueError(f"shift must be >= 1 (the number of negative samples k; 1: no shift), got {shift}")
    if not 0 < context_smoothing <= 1:
        raise ValueError(f"context_smoothing must be in (0, 1], got {context_smoothing}")
    matrix = sp.csr_matrix(counts, dtype=np.float64)
    if matrix.nnz and matrix.data.min() < 0:
        raise ValueError("counts must be >= 0")
    matrix.eliminate_zeros()
    rows = np.asarray(matrix.sum(axis=1)).ravel()
    smoothed = rows**context_smoothing
    context = smoothed / smoothed.sum() if smoothed.sum() > 0 else smoothed
    coo = matrix.tocoo()
    pmi = np.log(coo.data) - np.log(rows[coo.row]) - np.log(context[coo.col]) - np.log(shift)
    positive = pmi > 0
    return sp.csr_matrix((pmi[positive], (coo.row[positive], coo.col[positive])), shape=matrix.shape)


def svd_embeddings(matrix: sp.spmatrix, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(U_d sqrt(S_d), S_d)``: rows are the items' embeddings, from scikit-learn's randomized truncated SVD.

    Raises:
        ValueError: naming ``dim`` when it is not below the number of items.
    """
    from sklearn.utils.extmath import randomized_svd

    if not 1 <= dim < min(matrix.shape):
        raise ValueError(f"dim must be between 1 and the number of items - 1 ({min(matrix.shape) - 1}), got {dim}")
    left, singular, _ = randomized_svd(sp.csr_matrix(matrix), n_components=dim, random_state=seed)
    return (left * np.sqrt(singular)).astype(np.float32), singular


@dataclass
class Embeddings:
    """Vectors of items: row i of ``vectors`` is ``(kinds[i], items[i])``."""

    kinds: list[str]
    items: list[str]
    vectors: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)


def write_embeddings(directory: str | os.PathLike, embeddings: Embeddings, overwrite: bool = False) -> None:
    """Write an embedding directory, all or nothing (written under a temporary name and renamed).

    Raises:
        FileExistsError: ``directory`` holds embeddings and ``overwrite`` is false.
    """
    from safetensors.numpy import save_file

    target = Path(directory)
    if (target / MANIFEST_FILE).exists() and not overwrite:
        raise FileExistsError(f"{target}: holds embeddings already; pass --overwrite to replace them")
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
    save_file({EMBEDDINGS_TENSOR: vectors}, str(staging / EMBEDDINGS_FILE))
    with open(staging / VOCABULARY_FILE, "w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(VOCABULARY_HEADER) + "\n")
        for kind, item in zip(embeddings.kinds, embeddings.items, strict=True):
            out.write(f"{kind}\t{item}\n")
    manifest = {"format": FORMAT, **embeddings.manifest, "items": len(embeddings.items), "dim": int(vectors.shape[1])}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def read_embeddings(directory: str | os.PathLike) -> Embeddings:
    """An embedding directory (this module's or :mod:`medmplm.embeddings.model_vectors`').

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the file and row that do not have the expected form.
    """
    from safetensors.numpy import load_file

    root = Path(directory)
    for name in (MANIFEST_FILE, VOCABULARY_FILE, EMBEDDINGS_FILE):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name}: missing; expected an embedding directory "
                "(python -m medmplm.embeddings embed or export)"
            )
    manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{root / MANIFEST_FILE}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    lines = (root / VOCABULARY_FILE).read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != VOCABULARY_HEADER:
        raise ValueError(f"{root / VOCABULARY_FILE}: row 1 must be the header {'<TAB>'.join(VOCABULARY_HEADER)}")
    kinds, items = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not all(fields):
            raise ValueError(f"{root / VOCABULARY_FILE}: row {number}: expected kind<TAB>item")
        kinds.append(fields[0])
        items.append(fields[1])
    tensors = load_file(str(root / EMBEDDINGS_FILE))
    if EMBEDDINGS_TENSOR not in tensors:
        raise ValueError(f"{root / EMBEDDINGS_FILE}: no tensor {EMBEDDINGS_TENSOR!r}; it holds {sorted(tensors)}")
    vectors = tensors[EMBEDDINGS_TENSOR]
    if vectors.ndim != 2 or vectors.shape[0] != len(items):
        raise ValueError(
            f"{root / EMBEDDINGS_FILE}: tensor {EMBEDDINGS_TENSOR!r} has shape {list(vectors.shape)}, expected "
            f"[{len(items)} (rows of {VOCABULARY_FILE}), dim]"
        )
    return Embeddings(kinds, items, vectors, manifest)


def embed_counts(
    counts: Cooccurrence,
    dim: int,
    shift: float = 1.0,
    context_smoothing: float = DEFAULT_CONTEXT_SMOOTHING,
    seed: int = 0,
) -> Embeddings:
    """SPPMI-SVD embeddings of every item of ``counts`` (items without a positive PMI get the zero vector)."""
    matrix = shifted_ppmi(counts.pair_matrix(), shift, context_smoothing)
    vectors, singular = svd_embeddings(matrix, dim, seed)
    zero_rows = int((np.asarray(abs(matrix).sum(axis=1)).ravel() == 0).sum())
    manifest = {
        "method": "sppmi-svd",
        "shift": shift,
        "context_smoothing": context_smoothing,
        "seed": seed,
        "units": counts.units,
        "unit": counts.manifest.get("unit"),
        "window_days": counts.manifest.get("window_days"),
        "items_without_positive_pmi": zero_rows,
        "singular_values": [round(float(v), 6) for v in singular],
    }
    return Embeddings(list(counts.kinds), list(counts.items), vectors, manifest)


def embed(
    count_dirs: Sequence[str],
    out: str,
    dim: int = DEFAULT_DIM,
    shift: float = 1.0,
    context_smoothing: float = DEFAULT_CONTEXT_SMOOTHING,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Sum the count directories, embed, write the embedding directory; returns its manifest."""
    if (Path(out) / MANIFEST_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out}: holds embeddings already; pass --overwrite to replace them")
    parts = [read_counts(directory) for directory in count_dirs]
    counts = parts[0] if len(parts) == 1 else sum_counts(parts, list(count_dirs))
    embeddings = embed_counts(counts, dim, shift, context_smoothing, seed)
    embeddings.manifest["counts"] = list(count_dirs)
    write_embeddings(out, embeddings, overwrite)
    return json.loads((Path(out) / MANIFEST_FILE).read_text(encoding="utf-8"))


__all__ = [
    "DEFAULT_CONTEXT_SMOOTHING",
    "DEFAULT_DIM",
    "Embeddings",
    "embed",
    "embed_counts",
    "read_embeddings",
    "shifted_ppmi",
    "svd_embeddings",
    "write_embeddings",
]
