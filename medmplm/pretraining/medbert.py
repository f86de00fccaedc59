"""The ``medbert`` pretraining family: Med-BERT (Rasmy et al. 2021) on patient code sequences, codes only.

* Model: :class:`~medmplm.models.medbert.MedBertForPretraining`, its vocabularies built from the prepared directory's
  ``vocab/diagnosis.tsv`` and ``vocab/medication.tsv`` (or continued from ``model.init_from``); no tokenizer.
* Rows: one per patient (:class:`PatientSequenceFeaturizer`): ``[CLS]`` + the codes of the patient's visits in
  admission order, each visit's diagnoses (SEQ_NUM order) then medications, deduplicated within the visit; sequences
  longer than ``max_length`` lose their oldest visits.
* Objective (:class:`MedBertPretrainingTask`): masked code modelling (15% of codes: 80% [MASK], 10% a random code of
  the same type, 10% kept) and prolonged length of stay (patient-level: any stay longer than ``los_days``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medmplm.data import schema
from medmplm.data.vocab import CLS_ID, PAD_ID, UNK_ID
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

if TYPE_CHECKING:
    import torch

    from medmplm.config import ModelSection, PretrainConfig
    from medmplm.models.medbert import MedBertConfig, MedBertForPretraining

logger = logging.getLogger("medmplm.pretraining.medbert")

# VISIT_SCHEMA columns the featuriser reads.
VISIT_COLUMNS = ("subject_id", "hadm_id", "admittime", "dischtime", "diagnoses", "medications")

# Featuriser outputs the pretraining forward takes (after masking).
MODEL_COLUMNS = ("input_ids", "attention_mask", "visit_ids", "serialization_ids", "los_label")

# Featuriser outputs counted once for the run log, then dropped.
COUNT_COLUMNS = ("num_codes", "codes_dropped", "visits_dropped", "unknown_codes", "serialization_shared")

PRESETS: dict[str, dict[str, Any]] = {
    # Small enough that a step of 16 patients takes well under a second on a laptop CPU.
    "tiny": {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "max_length": 128,
        "max_visits": 16,
        "max_codes_per_visit": 33,
    },
    # Med-BERT's released config.json: hidden 192, 6 layers x 6 heads, intermediate 64, 512 positions (here the
    # serialization table) and 1000 segments (here the visit table); sequences of 512 tokens.
    "paper": {
        "hidden_size": 192,
        "num_layers": 6,
        "num_heads": 6,
        "intermediate_size": 64,
        "max_length": 512,
        "max_visits": 1000,
        "max_codes_per_visit": 512,
    },
}


class PatientSequenceFeaturizer:
    """Visit records -> one fixed-shape row per patient (picklable; a ``map_groups`` function over ``subject_id``).

    A batch may hold several patients (rows are grouped by ``subject_id`` here), so that a patient is whole however
    the visits arrive. Visits are ordered by ``admittime`` (then ``hadm_id``); a visit's tokens are its diagnoses in
    record (SEQ_NUM) order then its medications, each code once per visit, mapped into the shared token space of
    :class:`~medmplm.models.medbert.MedBertConfig` (codes outside the vocabulary become [UNK]). A visit without codes
    is not part of the sequence. When the codes exceed ``max_length - 1`` tokens or the visits ``max_visits - 1``,
    whole visits are dropped from the oldest end; a most recent visit longer than the sequence on its own keeps its
    first codes.

    Output, ``P`` patients in ``subject_id`` order, ``L = max_length``:

    ========================  ======  ====================================================================
    ``input_ids``             [P, L]  [CLS] + codes, padded with [PAD]
    ``attention_mask``        [P, L]  1 on [CLS] and codes
    ``visit_ids``             [P, L]  1, 2, ... from the oldest kept visit; 0 on [CLS] and padding
    ``serialization_ids``     [P, L]  1, 2, ... within each visit; 0 on [CLS] and padding
    ``los_label``             [P]     1 when a kept visit lasted more than ``los_days`` days
    ``subject_id``            [P]
    ``num_codes``             [P]     codes in the sequence; 0: the patient has no code (a row the recipe drops)
    ``codes_dropped``         [P]     codes of the dropped oldest visits (or of a cut most recent visit)
    ``visits_dropped``        [P]     visits (with codes) dropped
    ``unknown_codes``         [P]     [UNK] tokens in the sequence
    ``serialization_shared``  [P]     codes beyond ``max_codes_per_visit - 1`` in their visit (they share
                                      the last serialization embedding)
    ========================  ======  ====================================================================

    Args:
        config: the model's configuration: its token space, ``max_length``, ``max_visits``, ``max_codes_per_visit``
            and ``los_days``.
    """

    def __init__(self, config: MedBertConfig) -> None:
        from medmplm.models.medbert.configuration_medbert import CODE_TYPES

        self.token_ids: dict[str, dict[str, int]] = {}
        for code_type in CODE_TYPES:
            start, _ = config.token_range(code_type)
            self.token_ids[code_type] = {code: start + i for i, code in enumerate(config.vocabularies[code_type])}
        self.max_length = config.max_length
        self.max_visits = config.max_visits
        self.max_codes_per_visit = config.max_codes_per_visit
        self.los = np.timedelta64(int(round(config.los_days * 86400)), "s")

    def _visit_tokens(self, diagnoses: Any, medications: Any, hadm_id: int) -> list[int]:
        tokens: list[int] = []
        for code_type, codes, column in (
            ("diagnosis", diagnoses, "diagnoses"),
            ("medication", medications, "medications"),
        ):
            if codes is None or isinstance(codes, str | bytes):
                raise ValueError(
                    f"column {column!r}, hadm_id {hadm_id}: expected a list of code strings, got {type(codes).__name__}"
                )
            ids = self.token_ids[code_type]
            tokens.extend(ids.get(code, UNK_ID) for code in dict.fromkeys(codes))
        return tokens

    def _patient(self, rows: dict[str, np.ndarray], out: dict[str, np.ndarray], index: int) -> None:
        """Write one patient's row ``index`` of ``out`` from that patient's visit ``rows``."""
        order = np.lexsort((rows["hadm_id"], rows["admittime"]))
        visits: list[tuple[list[int], bool]] = []
        for i in order:
            tokens = self._visit_tokens(rows["diagnoses"][i], rows["medications"][i], int(rows["hadm_id"][i]))
            if tokens:
                stay = (rows["dischtime"][i] - rows["admittime"][i]).astype("timedelta64[s]")
                visits.append((tokens, bool(stay > self.los)))

        # The most recent visits that fit, whole.
        budget, kept = self.max_length - 1, []
        for tokens, prolonged in reversed(visits):
            if len(kept) == self.max_visits - 1 or len(tokens) > budget:
                break
            kept.append((tokens, prolonged))
            budget -= len(tokens)
        if visits and not kept:
            tokens, prolonged = visits[-1]
            kept = [(tokens[: self.max_length - 1], prolonged)]
        kept.reverse()

        position = 1
        for visit, (tokens, _) in enumerate(kept, start=1):
            end = position + len(tokens)
            out["input_ids"][index, position:end] = tokens
            out["visit_ids"][index, position:end] = visit
            out["serialization_ids"][index, position:end] = np.arange(1, len(tokens) + 1)
            position = end
        out["attention_mask"][index, :position] = 1
        out["input_ids"][index, 0] = CLS_ID
        out["los_label"][index] = int(any(prolonged for _, prolonged in kept))
        out["num_codes"][index] = position - 1
        out["codes_dropped"][index] = sum(len(tokens) for tokens, _ in visits) - (position - 1)
        out["visits_dropped"][index] = len(visits) - len(kept)
        out["unknown_codes"][index] = int((out["input_ids"][index, 1:position] == UNK_ID).sum())
        out["serialization_shared"][index] = sum(max(0, len(t) - (self.max_codes_per_visit - 1)) for t, _ in kept)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurise the visits of one or more patients (VISIT_SCHEMA columns; extra columns are ignored)."""
        missing = [c for c in VISIT_COLUMNS if c not in batch]
        if missing:
            raise KeyError(
                f"visit batch lacks column(s) {missing}; expected VISIT_SCHEMA columns {list(VISIT_COLUMNS)}"
            )
        subject_ids = np.asarray(batch["subject_id"], dtype=np.int64)
        patients, patient_of_row = np.unique(subject_ids, return_inverse=True)
        size = len(patients)
        out = {
            name: np.zeros((size, self.max_length), dtype=np.int64)
            for name in ("input_ids", "attention_mask", "visit_ids", "serialization_ids")
        }
        out["input_ids"][:] = PAD_ID
        for name in ("los_label", *COUNT_COLUMNS):
            out[name] = np.zeros(size, dtype=np.int64)
        out["subject_id"] = patients
        for index in range(size):
            rows = np.flatnonzero(patient_of_row == index)
            self._patient({column: np.asarray(batch[column])[rows] for column in VISIT_COLUMNS}, out, index)
        return out


def model_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's columns of the patients that have codes (``map_batches`` after :class:`PatientSequenceFeaturizer`)."""
    keep = batch["num_codes"] > 0
    return {name: batch[name][keep] for name in MODEL_COLUMNS}


def read_patient_visits(prepared_dir: str, split: str, columns: tuple[str, ...] = VISIT_COLUMNS) -> Any:
    """A Ray Dataset of one split's visit records, only ``columns`` (by default those this featuriser reads; the
    ``mbehrt`` family reads more).

    Raises:
        FileNotFoundError: naming the directory when the split is missing.
    """
    import ray.data

    from medmplm.train import storage

    location = storage.join(prepared_dir, schema.VISITS_DIR, split)
    if not storage.exists(location):
        raise FileNotFoundError(
            f"{location}: missing; {prepared_dir} is not a prepared directory (run python -m medmplm.prepare)"
        )
    return ray.data.read_parquet(location, columns=list(columns))


def patient_sequences(visits: Any, featurizer: Any, num_partitions: int) -> Any:
    """One row per patient, in ``subject_id`` order (``featurizer``: a :class:`PatientSequenceFeaturizer`, or another
    family's patient featuriser with its ``subject_id`` column): a patient's visits may lie in several blocks, so rows
    are grouped by ``subject_id`` first, into ``num_partitions`` hash partitions (Ray's default of 200 makes as many
    aggregators and tiny blocks; a patient row is small, 4 x max_length int64)."""
    grouped = visits.groupby("subject_id", num_partitions=num_partitions)
    return grouped.map_groups(_featurize_patient, batch_format="numpy", fn_args=(featurizer,)).sort("subject_id")


def _featurize_patient(visits: dict[str, np.ndarray], featurizer: Any) -> dict[str, np.ndarray]:
    # A function, not the featuriser itself: map_groups names its stage after the function's __name__.
    return featurizer(visits)


def sequence_counts(dataset: Any) -> dict[str, int]:
    """Patients and the featuriser's counts over a (materialised) dataset of :func:`patient_sequences` rows."""
    counts = {"patients": 0, "without_codes": 0, "truncated": 0, "prolonged_los": 0}
    counts.update({name: 0 for name in COUNT_COLUMNS})
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        counts["patients"] += len(batch["num_codes"])
        counts["without_codes"] += int((batch["num_codes"] == 0).sum())
        counts["truncated"] += int((batch["codes_dropped"] > 0).sum())
        counts["prolonged_los"] += int(batch["los_label"][batch["num_codes"] > 0].sum())
        for name in COUNT_COLUMNS:
            counts[name] += int(batch[name].sum())
    return counts


def load_pretraining_model(directory: Path) -> MedBertForPretraining:
    """The :class:`~medmplm.models.medbert.MedBertForPretraining` saved in ``directory``, in training mode."""
    from medmplm.models.medbert import MedBertForPretraining

    model = MedBertForPretraining.from_pretrained(directory)
    model.train()
    return model


@dataclass
class MedBertPretrainingTask:
    """Masked code modelling and prolonged length of stay (:class:`~medmplm.models.medbert.MedBertForPretraining`).

    Masking, per position, with the loop's generator only: every code (not [PAD], [CLS], [MASK] or [UNK]) is a target
    with probability ``mask_prob``; of the targets, ``mask_token_prob`` become [MASK], ``random_token_prob`` a random
    code of the same type (drawn from ``code_ranges``), the rest stay.

    Args:
        code_ranges: ``[start, end)`` of each code type in the token space.
        mask_prob, mask_token_prob, random_token_prob: as ``MedBertConfig``.
    """

    code_ranges: tuple[tuple[int, int], ...]
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    name: str = "medbert"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    @classmethod
    def from_config(cls, config: MedBertConfig) -> MedBertPretrainingTask:
        """The task for a Med-BERT model: its code types' token ranges and its masking rates."""
        return cls(
            code_ranges=tuple(config.token_range(code_type) for code_type in ("diagnosis", "medication")),
            mask_prob=config.mask_prob,
            mask_token_prob=config.mask_token_prob,
            random_token_prob=config.random_token_prob,
        )

    def load_model(self, directory: Path) -> MedBertForPretraining:
        """The pretraining model saved in ``directory``, in training mode."""
        return load_pretraining_model(directory)

    def mask_codes(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids -> (masked ids, labels: the original id at targets, -100 elsewhere)."""
        from medmplm.data.masking import mask_sequence_tokens

        return mask_sequence_tokens(
            input_ids,
            attention_mask,
            generator,
            self.code_ranges,
            self.mask_prob,
            self.mask_token_prob,
            self.random_token_prob,
        )

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask the codes and add the labels; validation batches are masked too (its loss is the score)."""
        missing = [c for c in MODEL_COLUMNS if c not in batch]
        if missing:
            raise KeyError(
                f"batch lacks {missing}; expected the medbert patient-sequence columns {list(MODEL_COLUMNS)}"
            )
        input_ids, labels = self.mask_codes(batch["input_ids"], batch["attention_mask"], generator)
        return {
            "input_ids": input_ids,
            "attention_mask": batch["attention_mask"],
            "visit_ids": batch["visit_ids"],
            "serialization_ids": batch["serialization_ids"],
            "labels": labels,
            "los_label": batch["los_label"],
        }

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Masked-code loss and accuracy weighted by masked codes; prolonged-LOS loss and accuracy by patients."""
        masked = output.target_counts["mlm"].detach().float()
        patients = output.target_counts["prolonged_los"].detach().float()
        return {
            "loss_mlm": (output.losses["mlm"].detach().float() * masked, masked),
            "masked_code_accuracy": (output.masked_code_accuracy.detach().float() * masked, masked),
            "loss_prolonged_los": (output.losses["prolonged_los"].detach().float() * patients, patients),
            "prolonged_los_accuracy": (output.prolonged_los_accuracy.detach().float() * patients, patients),
        }


class MedBertFamily:
    """The ``medbert`` family of the pretraining recipe (see :class:`~medmplm.pretraining.family.PretrainingFamily`)."""

    name = "medbert"
    summary = "Med-BERT on patient code sequences: masked codes + prolonged length of stay, no text"
    presets = PRESETS
    default_preset = "tiny"
    # code_min_count: codes seen fewer times in the training split are left out of the vocabulary ([UNK]).
    options: dict[str, Any] = {"code_min_count": 1}

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        """A preset Med-BERT with the prepared directory's diagnosis and medication vocabularies, or the medbert
        model of ``model.init_from``.

        Raises:
            ConfigError: naming ``model.text_checkpoint`` / ``model.tokenizer_dir`` (Med-BERT reads no text),
                ``model.preset``, ``model.overrides``, ``model.options`` or ``model.init_from`` when wrong.
        """
        from huggingface_hub.errors import StrictDataclassError

        from medmplm.config import ConfigError
        from medmplm.data.vocab import CodeVocab
        from medmplm.models.medbert import MedBertConfig, MedBertForPretraining

        for key in ("text_checkpoint", "tokenizer_dir"):
            if getattr(model, key) is not None:
                raise ConfigError(f"model.{key}: the medbert family reads codes only and has no text encoder; unset it")
        options = resolve_options(self, model.options)
        if model.init_from is not None:
            if model.overrides:
                raise ConfigError(
                    f"model.overrides: {sorted(model.overrides)} cannot change a model continued from model.init_from"
                )
            model_type = _saved_model_type(model.init_from)
            if model_type != MedBertConfig.model_type:
                raise ConfigError(
                    f"model.init_from: {model.init_from} holds a {model_type!r} model, expected a medbert export"
                )
            pretrained = MedBertForPretraining.from_pretrained(model.init_from)
            return BuiltModel(pretrained, description=f"continued from {model.init_from}")

        values = preset_values(self, model)
        unknown = sorted(set(model.overrides) - _settable_fields())
        if unknown:
            raise ConfigError(
                f"model.overrides.{unknown[0]}: not a MedBertConfig field; known: {sorted(_settable_fields())}"
            )
        vocabularies = {
            code_type: CodeVocab.from_tsv(
                Path(prepared_dir) / schema.VOCAB_DIR / f"{code_type}.tsv",
                code_type,
                min_count=options["code_min_count"],
            ).codes
            for code_type in ("diagnosis", "medication")
        }
        try:
            config = MedBertConfig(vocabularies=vocabularies, **values)
        except (StrictDataclassError, TypeError, ValueError) as error:
            key = "model.overrides" if model.overrides else "model.preset"
            raise ConfigError(f"{key}: {error}") from error
        preset = model.preset or self.default_preset
        return BuiltModel(
            MedBertForPretraining(config),
            description=(
                f"{preset} preset, {len(vocabularies['diagnosis'])} diagnosis and "
                f"{len(vocabularies['medication'])} medication codes"
            ),
        )

    def load_model(self, directory: Path) -> MedBertForPretraining:
        """The pretraining model saved in ``directory``, in training mode, on the CPU."""
        return load_pretraining_model(directory)

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """``train`` and ``val`` Ray Datasets of patient sequences (:data:`MODEL_COLUMNS`), counts logged.

        Raises:
            ConfigError: naming ``data.text_cache`` (there are no notes to cache).
        """
        from medmplm.config import ConfigError
        from medmplm.models.medbert import MedBertConfig

        if config.data.text_cache:
            raise ConfigError("data.text_cache: the medbert family reads no notes; set data.text_cache=false")
        featurizer = PatientSequenceFeaturizer(MedBertConfig.from_pretrained(model_dir))
        datasets = {}
        for split in ("train", "val"):
            # One partition per training worker: the parallelism the run has, whatever the data size.
            visits = read_patient_visits(prepared_dir, split)
            dataset = patient_sequences(visits, featurizer, num_partitions=max(1, config.scaling.num_workers))
            if config.data.materialize:
                dataset = dataset.materialize()
                counts = sequence_counts(dataset)
                logger.info(
                    "%s: %d patient sequences (%d patients without codes dropped); truncated to the most recent "
                    "visits: %d patients, %d codes in %d visits dropped; codes not in the vocabulary: %d; codes "
                    "sharing the last serialization position: %d; prolonged stay: %d patients",
                    split,
                    counts["patients"] - counts["without_codes"],
                    counts["without_codes"],
                    counts["truncated"],
                    counts["codes_dropped"],
                    counts["visits_dropped"],
                    counts["unknown_codes"],
                    counts["serialization_shared"],
                    counts["prolonged_los"],
                )
            dataset = dataset.map_batches(model_rows, batch_format="numpy")
            # Materialised after the projection too: the training workers then hold every CPU, and a lazy projection
            # would wait for one forever.
            datasets[split] = dataset.materialize() if config.data.materialize else dataset
        return datasets

    def task(self, model_dir: Path) -> MedBertPretrainingTask:
        """The masking / statistics task for the model in ``model_dir``."""
        from medmplm.models.medbert import MedBertConfig

        return MedBertPretrainingTask.from_config(MedBertConfig.from_pretrained(model_dir))


def _settable_fields() -> set[str]:
    """``MedBertConfig``'s own fields that a preset or ``model.overrides`` may set (vocabularies come from the data)."""
    from medmplm.models.medbert import MedBertConfig

    return set(MedBertConfig.__annotations__) - {"vocabularies"}


def _saved_model_type(directory: str) -> str | None:
    """``model_type`` of the ``config.json`` in a ``save_pretrained`` directory."""
    import json

    return json.loads((Path(directory) / "config.json").read_text(encoding="utf-8")).get("model_type")


FAMILY = MedBertFamily()
