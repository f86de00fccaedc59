"""Patient-level fine-tuning (M-BEHRT): each task example read as the patient's whole history.

A visit task's example (``medmplm.tasks.base``) holds a few visits' notes, diagnoses and medications, the target visit
last, as the task shows it. A patient-level model reads more: every earlier visit of the patient, with its procedures,
lab events, age and times. :func:`patient_examples` rebuilds each example from the split's visit records:

* the patient's visits before the target visit (admission order), whole;
* then the target visit as the task shows it: its note, diagnoses and medications as the example has them (blank
  where the task hides them), its age and times; its procedures and lab events (which visit examples never carry)
  only when the example shows the target's note, diagnoses and medications as recorded (readmission hides nothing),
  not when the task hides some (medication recommendation its medications and note, ICD coding its diagnoses); a
  target visit the task shows nothing of (``next_dx``) is left out, so the input ends before it.

:class:`PatientExampleFeaturizer` turns those rows into the model's arrays with the pretraining featuriser
(``medmplm.pretraining.mbehrt.PatientSequenceBuilder``: truncation from the oldest end, counted and logged per split).
The fine-tuning model is :class:`~medmplm.tasks.modeling.PatientFineTuningModel` over :class:`MBehrtPatientEncoder`.

The M-BEHRT models of the comparison grid (``--model``, ``medmplm.tasks.encoders``), by what they read:

===================  ==============================  =========================================================
name                 reads                           weights from
===================  ==============================  =========================================================
``mbehrt-early``     codes, labs + notes, early      ``--init-code``: an ``mbehrt`` export of that layout
``mbehrt-late``      the same, late fusion           (none: the ``model.preset`` M-BEHRT freshly built, its
``mbehrt-shared``    the same, shared attention      text encoder ``model.text_checkpoint`` or random)
``mbehrt-tabular``   codes and labs
``mbehrt-text``      notes                           ``--init-text``: a ``bert-mlm`` export or BERT checkpoint
                                                     (text-only M-BEHRT has no pretraining objective)
===================  ==============================  =========================================================
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from medmplm.config import ConfigError
from medmplm.data.schema import LAB_EVENT_TYPE
from medmplm.pretraining.mbehrt import (
    PatientSequenceBuilder,
    as_visit,
    describe_counts,
    read_visit_table,
)
from medmplm.tasks.base import ExampleSet, sort_visits, task_options
from medmplm.tasks.encoding import PatientEncoding
from medmplm.tasks.featurize import encode_labels

if TYPE_CHECKING:
    from medmplm.models.mbehrt import MBehrtModel
    from medmplm.tasks.base import Task
    from medmplm.tasks.config import FinetuneConfig

logger = logging.getLogger(__name__)

# --model name -> (modalities, fusion) of its M-BEHRT.
MBEHRT_LAYOUTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "mbehrt-early": (("tabular", "text"), "early"),
    "mbehrt-late": (("tabular", "text"), "late"),
    "mbehrt-shared": (("tabular", "text"), "shared_attention"),
    "mbehrt-tabular": (("tabular",), None),
    "mbehrt-text": (("text",), None),
}

PATIENT_VISIT_TYPE = pa.struct(
    [
        pa.field("hadm_id", pa.int64()),
        pa.field("admittime", pa.timestamp("s")),
        pa.field("dischtime", pa.timestamp("s")),
        pa.field("age", pa.float32()),
        pa.field("diagnoses", pa.list_(pa.string())),
        pa.field("procedures", pa.list_(pa.string())),
        pa.field("medications", pa.list_(pa.string())),
        pa.field("labs", pa.list_(LAB_EVENT_TYPE)),
        pa.field("note_text", pa.string()),
    ]
)
_PATIENT_FIELDS = [
    pa.field("subject_id", pa.int64(), nullable=False),
    # The target visit.
    pa.field("hadm_id", pa.int64(), nullable=False),
    pa.field("gender", pa.string()),
    pa.field("visits", pa.list_(PATIENT_VISIT_TYPE), nullable=False),
]
PATIENT_BINARY_SCHEMA = pa.schema([*_PATIENT_FIELDS, pa.field("label", pa.int8(), nullable=False)])
PATIENT_MULTILABEL_SCHEMA = pa.schema(
    [*_PATIENT_FIELDS, pa.field("label_codes", pa.list_(pa.string()), nullable=False)]
)

# MBehrtConfig fields that shape the featurised arrays (the rest shape only weights).
FEATURIZER_FIELDS = (
    "vocabularies",
    "modalities",
    "max_length",
    "max_visits",
    "max_age",
    "max_lab_events_per_visit",
    "lab_value_embedding",
    "lab_value_bins",
    "lab_value_edges",
    "lab_value_means",
    "lab_value_stds",
    "lab_value_clip",
    "text_max_length",
    "text_long_note",
    "text_max_windows",
    "text_window_stride",
)


def patient_examples(examples: pa.Table, visits: pa.Table) -> pa.Table:
    """A task's examples of one split as patient histories (see the module docstring).

    Args:
        examples: the task's examples (``MULTILABEL_EXAMPLE_SCHEMA`` or ``BINARY_EXAMPLE_SCHEMA``).
        visits: the split's visit records, :data:`~medmplm.pretraining.mbehrt.VISIT_COLUMNS`.

    Returns:
        ``PATIENT_MULTILABEL_SCHEMA`` or ``PATIENT_BINARY_SCHEMA`` rows, in the order of ``examples``.

    Raises:
        ValueError: naming an example's target ``hadm_id`` that is not a visit of ``visits``, or of another patient.
    """
    multilabel = "label_codes" in examples.column_names
    schema = PATIENT_MULTILABEL_SCHEMA if multilabel else PATIENT_BINARY_SCHEMA
    histories: dict[int, list[dict]] = {}
    place: dict[int, tuple[int, int]] = {}
    for subject_id, rows in itertools.groupby(sort_visits(visits).to_pylist(), key=lambda row: row["subject_id"]):
        histories[subject_id] = list(rows)
        place.update({row["hadm_id"]: (subject_id, index) for index, row in enumerate(histories[subject_id])})
    fields = PATIENT_VISIT_TYPE.names
    columns: dict[str, list] = {name: [] for name in schema.names}
    for example in examples.to_pylist():
        if place.get(example["hadm_id"], (None,))[0] != example["subject_id"]:
            raise ValueError(
                f"example of subject_id {example['subject_id']}: its target hadm_id {example['hadm_id']} is not one of "
                "that patient's visits in the split's visit records"
            )
        subject_id, index = place[example["hadm_id"]]
        patient = histories[subject_id]
        shown = [{name: visit[name] for name in fields} for visit in patient[:index]]
        target = {name: patient[index][name] for name in fields}
        shown_fields = {name: example[name][-1] for name in ("note_text", "diagnoses", "medications")}
        if any(target[name] != value for name, value in shown_fields.items()):
            target.update(procedures=[], labs=[])
        target.update(shown_fields)
        if any(target[name] for name in ("note_text", "diagnoses", "medications", "procedures", "labs")):
            shown.append(target)
        genders = [visit["gender"] for visit in patient if visit["gender"] is not None]
        columns["subject_id"].append(subject_id)
        columns["hadm_id"].append(example["hadm_id"])
        columns["gender"].append(genders[0] if genders else None)
        columns["visits"].append(shown)
        label = "label_codes" if multilabel else "label"
        columns[label].append(example[label])
    return pa.table(columns, schema=schema)


def histories_of(table: pa.Table) -> list[tuple[list, str | None]]:
    """``(visits, gender)`` of each row of a :func:`patient_examples` table, as the builder reads them."""
    return [
        ([as_visit(visit) for visit in visits], gender)
        for visits, gender in zip(table.column("visits").to_pylist(), table.column("gender").to_pylist())
    ]


def with_patient_histories(
    sets: dict[str, ExampleSet], prepared_dir: str, task: Task, builder: PatientSequenceBuilder
) -> dict[str, ExampleSet]:
    """Each split's examples as patient histories (:func:`patient_examples`); logs, per split, what the builder will
    keep and drop of them (notes not read to their end are not counted here)."""
    out = {}
    for split, examples in sets.items():
        table = patient_examples(examples.examples, read_visit_table(prepared_dir, split))
        counts = builder.count(histories_of(table))
        logger.info(
            "%s %s: patient histories of %d examples: %s", task.name, split, table.num_rows, describe_counts(counts)
        )
        out[split] = ExampleSet(table, examples.excluded, examples.dropped_label_codes)
    return out


class PatientExampleFeaturizer:
    """Picklable featuriser of :func:`patient_examples` rows: the builder's model columns and ``labels`` (``[B]``
    0/1, or ``[B, K]`` multi-hot over the label space).

    Args:
        builder: the model's patient-sequence builder.
        label_space: codes of the K outputs of a multi-label task; ``None`` for a binary task.
    """

    def __init__(self, builder: PatientSequenceBuilder, label_space: Sequence[str] | None) -> None:
        if label_space is not None and len(label_space) == 0:
            raise ValueError("a multi-label task needs a non-empty label space")
        self.builder = builder
        self._label_index = None if label_space is None else {code: i for i, code in enumerate(label_space)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise a batch of patient examples (numpy columns, as Ray Data hands them to ``map_batches``)."""
        histories = [
            ([as_visit(visit) for visit in visits], gender if isinstance(gender, str) else None)
            for visits, gender in zip(batch["visits"], batch["gender"])
        ]
        rows = self.builder.build(histories)
        out = {name: rows[name] for name in self.builder.model_columns}
        out["labels"] = encode_labels(batch, self._label_index)
        return out


def patient_featurizer_key(task: Task, label_space: Sequence[str], model: MBehrtModel) -> str:
    """What a task's featurised patient examples depend on, hashed: the task and its options, the label space, the
    model's :data:`FEATURIZER_FIELDS` and its tokenizer. Runs with the same key featurise every example identically."""
    config = model.config.to_dict()
    identity = {
        "level": "patient",
        "task": task.name,
        "options": task_options(task),
        "label_space": list(label_space),
        "model": {name: config[name] for name in FEATURIZER_FIELDS},
        "tokenizer": None if model.tokenizer is None else model.tokenizer.backend_tokenizer.to_str(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def patient_featurizer(task: Task, label_space: Sequence[str], model: MBehrtModel) -> PatientExampleFeaturizer:
    """The featuriser of a task's patient examples for ``model`` (its vocabularies, statistics and tokenizer)."""
    builder = PatientSequenceBuilder(model.config, model.tokenizer)
    return PatientExampleFeaturizer(builder, label_space if task.multilabel else None)


def patient_backbone(config: FinetuneConfig, prepared_dir: str) -> tuple[MBehrtModel, str | None]:
    """The M-BEHRT of ``--model`` and the export its weights came from (``None``: freshly built).

    ``mbehrt-text`` is built from ``model.preset`` with ``finetune.init_text`` (a ``bert-mlm`` export or BERT
    checkpoint) as its text encoder; the others load ``finetune.init_code`` (an ``mbehrt`` export of their layout)
    or, without one, are built from ``model.preset`` with ``model.text_checkpoint`` as their text encoder
    (``model.overrides`` are MedM-PLM's and do not reach them).

    Raises:
        ConfigError: naming the key that holds a model the ``--model`` does not read.
    """
    from medmplm.models.mbehrt import MBehrtModel
    from medmplm.pretraining.mbehrt import PRESETS, build_mbehrt, saved_model_type

    section, finetune = config.model, config.finetune
    name = finetune.model
    modalities, fusion = MBEHRT_LAYOUTS[name]
    if section.init_from is not None:
        raise ConfigError(f"model.init_from: --model {name} reads no MedM-PLM; its export goes in finetune.init_code")
    reads_bert = name == "mbehrt-text"
    if reads_bert:
        init_key, other_key = "finetune.init_text", "finetune.init_code"
        init, other = finetune.init_text, finetune.init_code
    else:
        init_key, other_key = "finetune.init_code", "finetune.init_text"
        init, other = finetune.init_code, finetune.init_text
    if other is not None:
        raise ConfigError(f"{other_key}: --model {name} takes its pretrained weights from {init_key} only")
    if init is not None and not reads_bert:
        found = saved_model_type(init)
        if found != "mbehrt":
            raise ConfigError(f"{init_key}: {init} holds a {found!r} model; --model {name} reads an mbehrt export")
        model = MBehrtModel.from_pretrained(init)
        layout = (tuple(model.config.modalities), model.config.fusion if model.config.fused else None)
        if layout != (modalities, fusion):
            raise ConfigError(
                f"{init_key}: {init} holds an M-BEHRT of modalities {list(layout[0])}"
                f"{' and ' + layout[1] + ' fusion' if layout[1] else ''}; --model {name} reads modalities "
                f"{list(modalities)}{' and ' + fusion + ' fusion' if fusion else ''}"
            )
        return model, init
    preset = section.preset or "tiny"
    if preset not in PRESETS:
        raise ConfigError(f"model.preset: M-BEHRT has no preset {preset!r}; known: {sorted(PRESETS)}")
    text_checkpoint = init if reads_bert else section.text_checkpoint
    values = {**PRESETS[preset], "modalities": list(modalities), **({"fusion": fusion} if fusion else {})}
    frozen = values.get("text_num_frozen_layers", 0)
    if "text" in modalities and text_checkpoint is None and frozen > 0 and not section.allow_random_frozen:
        raise ConfigError(
            f"{init_key if reads_bert else 'model.text_checkpoint'}: none given, so the text encoder starts "
            f"from random weights, and {frozen} of its layers would stay frozen; give a bert-mlm export, or set "
            "model.allow_random_frozen=true"
        )
    try:
        model = build_mbehrt(MBehrtModel, prepared_dir, values, section.tokenizer_dir, text_checkpoint)
    except ValueError as error:
        raise ConfigError(f"model.preset: {error}") from error
    return model, init


class MBehrtPatientEncoder(nn.Module):
    """An M-BEHRT as the patient-level encoder of :class:`~medmplm.tasks.modeling.PatientFineTuningModel`: its patient
    vector, and its visit alignment loss (weighted as in its configuration) as the auxiliary loss.

    Attributes:
        modalities: ``codes`` when it reads the tabular modality, ``text`` when it reads notes.
        patient_size: width of the patient vector.
    """

    def __init__(self, backbone: MBehrtModel) -> None:
        super().__init__()
        self.mbehrt = backbone
        config = backbone.config
        self.modalities = frozenset(
            modality for modality, read in (("codes", "tabular"), ("text", "text")) if read in config.modalities
        )
        self.patient_size = backbone.patient_embedding_size
        self.alignment_weight = float(config.loss_weights["alignment"])

    def forward(self, **inputs: torch.Tensor) -> PatientEncoding:
        """The patient featuriser's columns -> ``patient [B, patient_size]`` and the auxiliary loss."""
        output = self.mbehrt(**inputs)
        auxiliary = None
        if output.visit_alignment_loss is not None:
            auxiliary = self.alignment_weight * output.visit_alignment_loss
        return PatientEncoding(patient=output.patient_embedding, auxiliary_loss=auxiliary)

