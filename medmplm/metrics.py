"""Evaluation metrics for the fine-tuning tasks, with their definitions in one place.

Every metric takes ``y_true`` (0/1 labels) and ``y_score`` (probabilities, after the sigmoid) as numpy arrays and
returns plain floats. Binary tasks use 1-D arrays ``[N]``; multi-label tasks use 2-D arrays ``[N, K]``. Hard
predictions are ``y_score >= threshold``.

Definitions (scikit-learn unless marked *hand-written*):

Medication recommendation (``medrec_metrics``), computed per visit and averaged over visits, as G-BERT and GAMENet
report them:

- ``jaccard``: ``|pred & true| / |pred | true|`` per visit (``jaccard_score(average="samples")``).
- ``f1``: per-visit F1 (``f1_score(average="samples")``), 0 for a visit with no predicted code.
- ``prauc``: per-visit average precision of the ranking of all codes (``average_precision_score(average="samples")``).
- ``auc_micro``: ROC AUC over all (visit, code) pairs pooled (``roc_auc_score(average="micro")``).
- ``accuracy``: exact-set-match (subset) accuracy (``accuracy_score`` on the indicator matrix).
- ``hamming_accuracy``: fraction of (visit, code) pairs predicted right, ``1 - hamming_loss``.
- ``ddi_rate`` (*hand-written*, only with an interaction table): GAMENet's rate, the number of predicted code pairs that
  interact divided by the number of predicted code pairs, pooled over visits.

30-day readmission (``binary_metrics``):

- ``auroc`` (``roc_auc_score``), ``auprc`` (``average_precision_score``), ``f1`` and ``accuracy`` at the threshold.
- ``rp80`` (*hand-written* on ``precision_recall_curve``): the highest recall at which precision is at least 0.8, as
  ClinicalBERT reports it; 0 when precision never reaches 0.8.

ICD coding (``icd_metrics``):

- ``f1_micro`` / ``f1_macro`` (``f1_score``; a code never true and never predicted counts as F1 0 in the macro
  average, scikit-learn's ``zero_division=0``); ``auc_micro`` / ``auc_macro`` (``roc_auc_score``; the macro average runs
  over the codes that have both a positive and a negative in ``y_true``, because the AUC of a code with one class is
  undefined: ``auc_macro_codes`` says how many codes entered it).
- ``p_at_5`` / ``p_at_8`` (*hand-written*): for each visit the fraction of its ``k`` highest-scored codes that are true,
  averaged over visits (the definition of CAML, Mullenbach et al. 2018).
- ``accuracy`` (subset) and ``hamming_accuracy`` as above.

Next-visit diagnosis categories (``next_dx_metrics``): every ICD-coding metric above over the categories, and

- ``prauc``: per-visit average precision of the ranking of all categories, as for medication recommendation.
- ``ap_micro``: average precision over all (visit, category) pairs pooled
  (``average_precision_score(average="micro")``), the average precision BEHRT reports for next-visit prediction.

Concept extraction (``ner_metrics``), from seqeval in strict mode with the IOB2 scheme (a predicted concept counts only
when its type and both boundaries equal a true concept's, as the i2b2/VA challenge's exact match):

- ``precision``, ``recall``, ``f1``: micro averages over all concepts (the paper's strict F1 is ``f1``).
- ``precision_<type>``, ``recall_<type>``, ``f1_<type>``: the same over one concept type (``f1_problem``, ...).
- ``concepts`` (a count): the true concepts scored.

A metric that is undefined on the given data (an AUC when ``y_true`` holds one class only) is ``nan``, never an
exception, so one degenerate evaluation split does not lose a whole run's record.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    jaccard_score,
    precision_recall_curve,
    roc_auc_score,
)

# Entries of the metric dicts that count something rather than measure it (printed as integers).
COUNT_METRICS = frozenset({"auc_macro_codes", "concepts"})

DEFAULT_MEDREC_THRESHOLD = 0.3
DEFAULT_BINARY_THRESHOLD = 0.5
DEFAULT_ICD_THRESHOLD = 0.5
DEFAULT_NEXT_DX_THRESHOLD = 0.5


def _check_shapes(y_true: np.ndarray, y_score: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_score has shape {y_score.shape}")
    if y_true.ndim != ndim:
        raise ValueError(f"expected {ndim}-D arrays, got shape {y_true.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score holds NaN or infinite values")
    return y_true.astype(np.int64), y_score


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(y.min() == 0 and y.max() == 1)


def recall_at_precision(y_true: np.ndarray, y_score: np.ndarray, precision: float = 0.8) -> float:
    """Highest recall reached at a precision of at least ``precision`` (binary labels).

    Hand-written because scikit-learn has no such metric; it reads the curve from ``precision_recall_curve``.
    """
    y_true, y_score = _check_shapes(y_true, y_score, ndim=1)
    if y_true.sum() == 0:
        return float("nan")
    precisions, recalls, _ = precision_recall_curve(y_true, y_score)
    reached = precisions >= precision
    return float(recalls[reached].max()) if reached.any() else 0.0


def precision_at_k(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    """Mean over examples of the fraction of the ``k`` highest-scored labels that are true (multi-label).

    Hand-written because scikit-learn's ``top_k_accuracy_score`` is for single-label multiclass problems.
    Ties in ``y_score`` are broken by label index (stable sort), so the value is deterministic.
    """
    y_true, y_score = _check_shapes(y_true, y_score, ndim=2)
    if not 1 <= k <= y_true.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of labels ({y_true.shape[1]})")
    top = np.argsort(-y_score, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(y_true, top, axis=1).sum(axis=1).mean() / k)


def read_ddi_pairs(path: str | os.PathLike) -> set[frozenset[str]]:
    """Read a drug-drug interaction table: a CSV with a header and two columns of ATC-3 codes, one pair per row.

    Raises:
        ValueError: naming the file and line when a row does not have two non-empty codes.
    """
    path = Path(path)
    pairs: set[frozenset[str]] = set()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != 2:
            raise ValueError(f"{path}:1: expected a header with two columns (two ATC-3 codes), got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}:{line_no}: expected two non-empty ATC-3 codes, got {row!r}")
            a, b = row[0].strip(), row[1].strip()
            if a != b:
                pairs.add(frozenset((a, b)))
    return pairs


def ddi_rate(predicted_sets: Iterable[Sequence[str]], ddi_pairs: set[frozenset[str]]) -> float:
    """GAMENet's DDI rate: interacting pairs among all pairs of co-predicted codes, pooled over visits.

    Hand-written because it is a domain definition with no library equivalent. ``nan`` when no visit has two codes.
    """
    interacting = 0
    total = 0
    for codes in predicted_sets:
        unique = sorted(set(codes))
        for i, a in enumerate(unique):
            for b in unique[i + 1 :]:
                total += 1
                interacting += frozenset((a, b)) in ddi_pairs
    return interacting / total if total else float("nan")


def _subset_and_hamming(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_accuracy": float(1.0 - hamming_loss(y_true, y_pred)),
    }


def medrec_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float = DEFAULT_MEDREC_THRESHOLD,
    label_codes: Sequence[str] | None = None,
    ddi_pairs: set[frozenset[str]] | None = None,
) -> dict[str, float]:
    """Medication-recommendation metrics for ``[N, K]`` arrays (definitions in the module docstring).

    Args:
        threshold: probability at or above which a code is recommended.
        label_codes: the ATC-3 code of each of the K columns; needed only with ``ddi_pairs``.
        ddi_pairs: interaction table from :func:`read_ddi_pairs`; adds ``ddi_rate``.
    """
    y_true, y_score = _check_shapes(y_true, y_score, ndim=2)
    y_pred = (y_score >= threshold).astype(np.int64)
    metrics = {
        "jaccard": float(jaccard_score(y_true, y_pred, average="samples", zero_division=0.0)),
        "f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0.0)),
        "prauc": _samples_average_precision(y_true, y_score),
        "auc_micro": float(roc_auc_score(y_true, y_score, average="micro"))
        if _has_both_classes(y_true)
        else float("nan"),
        **_subset_and_hamming(y_true, y_pred),
    }
    if ddi_pairs is not None:
        if label_codes is None or len(label_codes) != y_true.shape[1]:
            raise ValueError(f"ddi_rate needs label_codes naming each of the {y_true.shape[1]} columns")
        codes = np.asarray(label_codes)
        metrics["ddi_rate"] = ddi_rate((codes[row.astype(bool)] for row in y_pred), ddi_pairs)
    return metrics


def _samples_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    # Average precision of a visit with no true code is undefined; such visits are left out of the mean
    # (the medrec task never builds one: a target visit needs at least one medication).
    has_positive = y_true.sum(axis=1) > 0
    if not has_positive.any():
        return float("nan")
    return float(average_precision_score(y_true[has_positive], y_score[has_positive], average="samples"))


def binary_metrics(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float = DEFAULT_BINARY_THRESHOLD
) -> dict[str, float]:
    """Binary-classification metrics for ``[N]`` arrays (definitions in the module docstring)."""
    y_true, y_score = _check_shapes(y_true, y_score, ndim=1)
    y_pred = (y_score >= threshold).astype(np.int64)
    both = _has_both_classes(y_true)
    return {
        "auroc": float(roc_auc_score(y_true, y_score)) if both else float("nan"),
        "auprc": float(average_precision_score(y_true, y_score)) if y_true.any() else float("nan"),
        "f1": float(f1_score(y_true, y_pred, zero_division=0.0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "rp80": recall_at_precision(y_true, y_score, 0.8),
    }


def icd_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float = DEFAULT_ICD_THRESHOLD) -> dict[str, float]:
    """ICD-coding metrics for ``[N, K]`` arrays (definitions in the module docstring)."""
    y_true, y_score = _check_shapes(y_true, y_score, ndim=2)
    y_pred = (y_score >= threshold).astype(np.int64)
    per_code = y_true.sum(axis=0)
    both = (per_code > 0) & (per_code < y_true.shape[0])
    metrics = {
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0.0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0.0)),
        "auc_micro": float(roc_auc_score(y_true, y_score, average="micro"))
        if _has_both_classes(y_true)
        else float("nan"),
        "auc_macro": (
            float(roc_auc_score(y_true[:, both], y_score[:, both], average="macro")) if both.any() else float("nan")
        ),
        "auc_macro_codes": float(both.sum()),
        **_subset_and_hamming(y_true, y_pred),
    }
    for k in (5, 8):
        metrics[f"p_at_{k}"] = precision_at_k(y_true, y_score, k) if k <= y_true.shape[1] else float("nan")
    return metrics


def next_dx_metrics(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float = DEFAULT_NEXT_DX_THRESHOLD
) -> dict[str, float]:
    """Next-visit diagnosis metrics for ``[N, K]`` arrays (definitions in the module docstring)."""
    metrics = icd_metrics(y_true, y_score, threshold=threshold)
    y_true, y_score = _check_shapes(y_true, y_score, ndim=2)
    metrics["prauc"] = _samples_average_precision(y_true, y_score)
    pooled = float(average_precision_score(y_true, y_score, average="micro")) if y_true.any() else float("nan")
    metrics["ap_micro"] = pooled
    return metrics


def ner_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Strict concept-extraction metrics of IOB2 tag sequences (one list of tags per sentence; definitions in the
    module docstring). A type never true and never predicted is absent; precision of no prediction is 0.

    Raises:
        ValueError: when the sentences or their lengths differ.
    """
    from seqeval.metrics.v1 import precision_recall_fscore_support
    from seqeval.scheme import IOB2, Entities

    if len(y_true) != len(y_pred) or any(len(t) != len(p) for t, p in zip(y_true, y_pred)):
        raise ValueError("y_true and y_pred must hold the same sentences, of the same lengths")
    if not y_true:
        raise ValueError("no sentences to evaluate")
    y_true, y_pred = [list(t) for t in y_true], [list(p) for p in y_pred]
    options = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average="micro", **options)
    metrics = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "concepts": float(support)}
    # The types of both sides, in the order seqeval's per-type arrays use (sorted).
    types = sorted(Entities(y_true, IOB2).unique_tags | Entities(y_pred, IOB2).unique_tags)
    if types:
        per_type = precision_recall_fscore_support(y_true, y_pred, average=None, **options)
        for kind, p, r, f in zip(types, *per_type[:3]):
            metrics.update({f"precision_{kind}": float(p), f"recall_{kind}": float(r), f"f1_{kind}": float(f)})
    return metrics


def format_metric(name: str, value: float) -> str:
    """``name=value`` for people: counts as integers, measures with 4 decimals."""
    if name in COUNT_METRICS and np.isfinite(value):
        return f"{name}={int(value)}"
    return f"{name}={value:.4f}"
