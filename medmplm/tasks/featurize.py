"""Example batches -> fixed-shape arrays: the visit featuriser applied to every visit of every example.

:class:`ExampleFeaturizer` wraps the model's :class:`~medmplm.data.features.VisitFeaturizer` so that fine-tuning uses
exactly the tokenisation and code ids of pretraining. It is picklable and is what the fine-tuning loop passes to
Ray Data's ``map_batches``. Output (``V`` = the task's ``max_visits``; the target visit is always the last slot,
earlier visits are right-aligned before it and unused slots are blank visits with ``visit_mask = 0``):

==================  ==============  ====================================================
key                 shape           meaning
==================  ==============  ====================================================
``input_ids``       [B, V, L_text]  note token ids (``VisitFeaturizer``)
``attention_mask``  [B, V, L_text]
``has_note``        [B, V]          1 when that visit shows a note
``diag_ids``        [B, V, 1 + C]   [CLS] + diagnosis code ids
``diag_mask``       [B, V, 1 + C]
``med_ids``         [B, V, 1 + C]   [CLS] + medication code ids
``med_mask``        [B, V, 1 + C]
``visit_mask``      [B, V]          1 on real visits
``labels``          [B, K] / [B]    float32 multi-hot over the label space, or the 0/1 label
==================  ==============  ====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

VISIT_ARRAY_KEYS = ("input_ids", "attention_mask", "has_note", "diag_ids", "diag_mask", "med_ids", "med_mask")


def _as_list(value) -> list:
    return [] if value is None else list(value)


class ExampleFeaturizer:
    """Picklable featuriser of task examples (see the module docstring for the output).

    Args:
        visit_featurizer: maps a batch of visit columns (``note_text``, ``diagnoses``, ``medications``) to
            per-visit arrays including :data:`VISIT_ARRAY_KEYS` (``medmplm.data.features.VisitFeaturizer``).
        max_visits: the task's ``max_visits`` (V).
        label_space: codes of the K outputs of a multi-label task; ``None`` for a binary task.
    """

    def __init__(
        self,
        visit_featurizer: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
        max_visits: int,
        label_space: Sequence[str] | None,
    ) -> None:
        if max_visits < 1:
            raise ValueError(f"max_visits must be >= 1, got {max_visits}")
        if label_space is not None and len(label_space) == 0:
            raise ValueError("a multi-label task needs a non-empty label space")
        self.visit_featurizer = visit_featurizer
        self.max_visits = max_visits
        self.label_space = None if label_space is None else list(label_space)
        self._label_index = None if label_space is None else {code: i for i, code in enumerate(label_space)}
        # Unused visit slots hold what the featuriser makes of a visit with nothing in it.
        blank = visit_featurizer(
            {"note_text": _object_array([None]), "diagnoses": _object_array([[]]), "medications": _object_array([[]])}
        )
        self._blank = {key: np.asarray(blank[key])[0] for key in VISIT_ARRAY_KEYS}

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise a batch of examples (columns of the task's example schema)."""
        notes, diagnoses, medications = batch["note_text"], batch["diagnoses"], batch["medications"]
        batch_size = len(notes)
        flat_notes: list = []
        flat_diagnoses: list = []
        flat_medications: list = []
        slots: list[tuple[int, int]] = []
        for row in range(batch_size):
            visits_notes = _as_list(notes[row])
            visits_diagnoses = _as_list(diagnoses[row])
            visits_medications = _as_list(medications[row])
            n = len(visits_notes)
            if not 1 <= n <= self.max_visits or len(visits_diagnoses) != n or len(visits_medications) != n:
                where = f"subject_id {batch['subject_id'][row]}" if "subject_id" in batch else f"row {row}"
                raise ValueError(
                    f"example {where}: expected 1..{self.max_visits} visits with one note, diagnosis list and "
                    f"medication list each, got {n}, {len(visits_diagnoses)}, {len(visits_medications)}"
                )
            for i in range(n):
                flat_notes.append(visits_notes[i])
                flat_diagnoses.append(_as_list(visits_diagnoses[i]))
                flat_medications.append(_as_list(visits_medications[i]))
                slots.append((row, self.max_visits - n + i))

        visits = self.visit_featurizer(
            {
                "note_text": _object_array(flat_notes),
                "diagnoses": _object_array(flat_diagnoses),
                "medications": _object_array(flat_medications),
            }
        )
        rows, cols = (np.array(index, dtype=np.int64) for index in zip(*slots))
        out: dict[str, np.ndarray] = {}
        for key in VISIT_ARRAY_KEYS:
            blank = self._blank[key]
            array = np.broadcast_to(blank, (batch_size, self.max_visits, *blank.shape)).copy()
            array[rows, cols] = np.asarray(visits[key])
            out[key] = array.astype(np.int64)
        visit_mask = np.zeros((batch_size, self.max_visits), dtype=np.int64)
        visit_mask[rows, cols] = 1
        out["visit_mask"] = visit_mask
        out["labels"] = encode_labels(batch, self._label_index)
        return out


def encode_labels(batch: Mapping[str, np.ndarray], label_index: Mapping[str, int] | None) -> np.ndarray:
    """The ``labels`` array of a batch of examples: ``[B]`` float32 0/1 from ``label`` (``label_index`` ``None``: a
    binary task), or ``[B, K]`` float32 multi-hot of ``label_codes`` over the label space (code -> column).

    Raises:
        ValueError: a binary label that is not 0/1, or a label code outside the label space.
    """
    if label_index is None:
        labels = np.asarray(batch["label"], dtype=np.float32)
        if labels.ndim != 1 or not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError(f"binary labels must be one 0/1 value per example, got shape {labels.shape}")
        return labels
    codes_per_row = batch["label_codes"]
    labels = np.zeros((len(codes_per_row), len(label_index)), dtype=np.float32)
    for row, codes in enumerate(codes_per_row):
        for code in _as_list(codes):
            if code not in label_index:
                raise ValueError(f"row {row}: label code {code!r} is outside the task's label space")
            labels[row, label_index[code]] = 1.0
    return labels


def _object_array(items: list) -> np.ndarray:
    # np.array on a list of equal-length lists would build a 2-D array; the featuriser expects one object per visit.
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
