"""Code-only baseline: scikit-learn logistic regression over multi-hot code vectors.

It is not a torch module and needs no training loop: it reads the same featurised arrays as every other model
(``medmplm.tasks.featurize.ExampleFeaturizer``), so it sees exactly the inputs the task shows, and is fitted in
process. Features: for each code type, the multi-hot vector of the target visit and, when the examples carry earlier
visits, the mean of their multi-hot vectors. Multi-label tasks fit one binary classifier per label (one-vs-rest).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

logger = logging.getLogger(__name__)


def multi_hot(ids: np.ndarray, mask: np.ndarray, num_tokens: int) -> sp.csr_matrix:
    """``[N, 1 + C]`` code ids (position 0 is [CLS]) -> ``[N, num_tokens]`` 0/1 sparse matrix."""
    rows, cols = np.nonzero(mask[:, 1:])
    codes = ids[:, 1:][rows, cols]
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, codes)), shape=(ids.shape[0], num_tokens))
    matrix.data[:] = 1.0  # a code listed twice in a visit is still one
    return matrix


class MultiHotLogisticRegression:
    """Logistic regression over multi-hot codes, following the fine-tuning arrays' layout.

    Args:
        num_diagnosis_tokens: size of the diagnosis vocabulary, special tokens included.
        num_medication_tokens: size of the medication vocabulary, special tokens included.
        multilabel: one-vs-rest over ``[N, K]`` labels; otherwise binary ``[N]`` labels.
        c: inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: solver iterations.
        seed: solver seed.
    """

    modalities = frozenset({"codes"})

    def __init__(
        self,
        num_diagnosis_tokens: int,
        num_medication_tokens: int,
        multilabel: bool,
        c: float = 1.0,
        max_iter: int = 1000,
        seed: int = 0,
    ) -> None:
        self.num_tokens = {"diag": num_diagnosis_tokens, "med": num_medication_tokens}
        classifier = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        self.classifier = OneVsRestClassifier(classifier) if multilabel else classifier
        self.multilabel = multilabel

    def features(self, arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
        """Sparse features of featurised examples (``[B, V, ...]`` arrays from ``ExampleFeaturizer``)."""
        visit_mask = arrays["visit_mask"]
        batch_size, num_visits = visit_mask.shape
        blocks = []
        for prefix in ("diag", "med"):
            ids = arrays[f"{prefix}_ids"]
            mask = arrays[f"{prefix}_mask"] * visit_mask[:, :, None]
            per_visit = [multi_hot(ids[:, v], mask[:, v], self.num_tokens[prefix]) for v in range(num_visits)]
            blocks.append(per_visit[-1])
            if num_visits > 1:
                count = np.maximum(visit_mask[:, :-1].sum(axis=1), 1).astype(np.float64)
                history = sum(per_visit[:-1], sp.csr_matrix((batch_size, self.num_tokens[prefix])))
                blocks.append(sp.diags(1.0 / count) @ history)
        return sp.hstack(blocks, format="csr")

    def fit(self, arrays: Mapping[str, np.ndarray]) -> MultiHotLogisticRegression:
        """Fit on featurised training examples (their ``labels``).

        A label that is always (or never) present in training gets a constant prediction (scikit-learn's one-vs-rest
        does that with a warning per label; they are counted and logged once instead).
        """
        labels = arrays["labels"].astype(np.int64)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
            self.classifier.fit(self.features(arrays), labels)
        if self.multilabel:
            constant = int((labels.min(axis=0) == labels.max(axis=0)).sum())
            if constant:
                logger.info(
                    "logreg: %d of %d labels have one class in training and are predicted constant",
                    constant,
                    labels.shape[1],
                )
        return self

    def predict_proba(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``[N, K]`` (multi-label) or ``[N]`` (binary) for featurised examples."""
        probabilities = self.classifier.predict_proba(self.features(arrays))
        return probabilities if self.multilabel else probabilities[:, 1]
