"""``model.family=medfuse-lab``: MEDFuse's masked lab-test modelling (arXiv 2407.12309), on one admission's labs.

Model: :class:`medmplm.models.medfuse.MedFuseLabForMaskedModeling`, built from a preset with the lab items and the
standardisation fitted on the prepared directory's training split (both held in its ``config.json``), or continued
from a ``medfuse-lab`` export (``model.init_from``). No notes and no tokenizer.

Lab input per admission (:class:`LabFeaturizer`; every choice the paper leaves open is ours and stated here):

* items: the ``num_lab_items`` ITEMIDs measured (a finite ``valuenum``) in the most training admissions, ties by
  ITEMID; counted here on the training split, so the choice never sees validation or test data whatever the
  prepared directory's ``vocab_split``;
* per item and admission, over its events with a finite ``valuenum`` (text-only results have none): ``last`` (the
  value of the latest ``hours_since_admit``; events without a time count as earliest, ties by record order), ``min``,
  ``max``, ``mean``, ``count`` (as ``log1p(count)``, counts being skewed); ``lab_statistics`` picks and orders them;
* standardised per (item, statistic) by the mean and standard deviation over the training admissions that measured
  the item (a constant statistic gets a standard deviation of 1);
* missingness is its own mask (``lab_observed``): an item without a numeric value in the admission is missing in all
  its statistics, its values are 0 and the model sees a learned "not shown" vector instead (never a 0 it could take
  for an average value).

Events of other items and events without a numeric value are counted per split in the run log, as are admissions
without any observed item, which are dropped from pretraining (nothing to reconstruct).

Objective (:class:`MedFuseLabPretrainingTask`): each observed item is masked with probability ``mask_prob`` (a model
configuration field, ``model.overrides.mask_prob``) with the loop's generator; all of a masked item's statistics are
hidden together (hiding ``mean`` alone would leave it between the ``min`` and ``max`` shown beside it), and the model
reconstructs them: mean squared error on the standardised values. Missing values are never masked and never targets.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from medmplm.config import ConfigError
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

if TYPE_CHECKING:
    import torch

    from medmplm.config import ModelSection, PretrainConfig
    from medmplm.models.medfuse import MedFuseLabConfig, MedFuseLabForMaskedModeling

logger = logging.getLogger(__name__)

# Visit columns the featuriser reads (hadm_id names rows in error messages and joins examples).
VISIT_COLUMNS = ("hadm_id", "labs")
# Featuriser outputs the model takes.
MODEL_COLUMNS = ("lab_values", "lab_observed")
# Featuriser outputs counted once for the run log, then dropped.
COUNT_COLUMNS = ("lab_items_observed", "lab_events_other_items", "lab_events_non_numeric")

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds per step on a laptop CPU with 50 items x 5 statistics.
    "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "num_lab_items": 50},
    # The paper gives no size for its tabular transformer: ours, BERT-mini-like.
    "base": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256, "num_lab_items": 50},
}


class LabDataError(ValueError):
    """The lab events of a prepared split cannot be read as expected."""


@dataclass
class LabAggregates:
    """Per-admission aggregates of the chosen items (:func:`aggregate_labs`).

    Attributes:
        values: ``[N, I, S]`` raw aggregates (``count`` as ``log1p``), 0 where the item is missing.
        observed: ``[N, I]`` the item has a numeric value in the admission.
        events_other_items: ``[N]`` events of items not among the chosen ones (or without an ITEMID).
        events_non_numeric: ``[N]`` events of chosen items without a finite ``valuenum``.
    """

    values: np.ndarray
    observed: np.ndarray
    events_other_items: np.ndarray
    events_non_numeric: np.ndarray


def _lab_events(labs: pa.Array | pa.ChunkedArray) -> pa.Table:
    """One row per lab event: its admission's row, ITEMID, ``valuenum``, ``hours_since_admit`` and record order.

    Raises:
        LabDataError: when ``labs`` is not a list of lab-event structs.
    """
    if isinstance(labs, pa.ChunkedArray):
        labs = labs.combine_chunks()
    if not pa.types.is_list(labs.type) or not pa.types.is_struct(labs.type.value_type):
        raise LabDataError(f"column 'labs': expected a list of lab-event structs (VISIT_SCHEMA), got {labs.type}")
    struct = labs.type.value_type
    missing = [name for name in ("itemid", "valuenum", "hours_since_admit") if struct.get_field_index(name) < 0]
    if missing:
        raise LabDataError(f"column 'labs': lab events lack field(s) {missing}; expected VISIT_SCHEMA's lab events")
    flat = pc.list_flatten(labs)
    return pa.table(
        {
            "row": pc.list_parent_indices(labs),
            "itemid": pc.struct_field(flat, "itemid"),
            "value": pc.struct_field(flat, "valuenum").cast(pa.float64()),
            "hours": pc.struct_field(flat, "hours_since_admit"),
            "order": pa.array(np.arange(len(flat), dtype=np.int64)),
        }
    )


def _numeric(events: pa.Table) -> pa.Array:
    value = events.column("value")
    return pc.and_kleene(pc.is_valid(value), pc.is_finite(value)).fill_null(False)


def item_frequencies(labs: pa.Array | pa.ChunkedArray) -> Counter[str]:
    """ITEMID -> admissions (rows) in which the item has a finite ``valuenum``."""
    events = _lab_events(labs)
    numeric = events.filter(pc.and_(_numeric(events), pc.is_valid(events.column("itemid"))))
    pairs = numeric.group_by(["row", "itemid"], use_threads=False).aggregate([])
    counts = pairs.group_by("itemid", use_threads=False).aggregate([("row", "count")])
    return Counter(dict(zip(counts.column("itemid").to_pylist(), counts.column("row_count").to_pylist())))


def aggregate_labs(labs: pa.Array | pa.ChunkedArray, items: list[str], statistics: list[str]) -> LabAggregates:
    """Aggregate each admission's events of ``items`` (see the module docstring), with pyarrow's grouped aggregation.

    Args:
        labs: one list of lab events per admission (VISIT_SCHEMA's ``labs``).
        items: the ITEMIDs read, in token order.
        statistics: among ``last``, ``min``, ``max``, ``mean``, ``count``, in token order.
    """
    events = _lab_events(labs)
    rows = len(labs)
    item = pc.index_in(events.column("itemid"), value_set=pa.array(items, pa.string()))
    chosen = pc.is_valid(item)
    numeric = _numeric(events)
    row = events.column("row").to_numpy()
    events_other = np.bincount(row[~chosen.to_numpy(zero_copy_only=False)], minlength=rows)
    non_numeric = pc.and_(chosen, pc.invert(numeric)).to_numpy(zero_copy_only=False)
    events_non_numeric = np.bincount(row[non_numeric], minlength=rows)

    kept = events.append_column("item", item).filter(pc.and_(chosen, numeric))
    # Ordered so that each group's last value is its latest event: untimed events first, then by time, then as
    # recorded; group_by without threads keeps this order within groups.
    kept = kept.sort_by(
        [("row", "ascending"), ("item", "ascending"), ("hours", "ascending", "at_start"), ("order", "ascending")]
    )
    grouped = kept.group_by(["row", "item"], use_threads=False).aggregate(
        [("value", "last"), ("value", "min"), ("value", "max"), ("value", "mean"), ("value", "count")]
    )
    group_rows = grouped.column("row").to_numpy()
    group_items = grouped.column("item").to_numpy()
    values = np.zeros((rows, len(items), len(statistics)), dtype=np.float64)
    for index, statistic in enumerate(statistics):
        column = grouped.column(f"value_{statistic}").to_numpy().astype(np.float64)
        values[group_rows, group_items, index] = np.log1p(column) if statistic == "count" else column
    observed = np.zeros((rows, len(items)), dtype=bool)
    observed[group_rows, group_items] = True
    return LabAggregates(values, observed, events_other, events_non_numeric)


def read_lab_split(prepared_dir: str, split: str, columns: tuple[str, ...] = VISIT_COLUMNS) -> pa.Table:
    """``columns`` of one split's visits (a local path or URI), read on this process.

    Raises:
        FileNotFoundError: naming the directory when the split is missing.
    """
    import pyarrow.dataset as ds

    from medmplm.data.schema import VISITS_DIR
    from medmplm.train import storage

    location = storage.join(prepared_dir, VISITS_DIR, split)
    if not storage.exists(location):
        raise FileNotFoundError(
            f"{location}: missing; {prepared_dir} is not a prepared directory (run python -m medmplm.prepare)"
        )
    return ds.dataset(location, format="parquet").to_table(columns=list(columns))


@dataclass
class LabStandardisation:
    """What :func:`fit_lab_standardisation` chose on a training split.

    Attributes:
        items: the ITEMIDs, most frequent first.
        mean, std: per token (item-major), over the admissions that measured the item.
        admissions: training admissions read; ``admissions_with_labs``: those with an observed chosen item.
    """

    items: list[str]
    mean: list[float]
    std: list[float]
    admissions: int
    admissions_with_labs: int


def fit_lab_standardisation(
    labs: pa.Array | pa.ChunkedArray, num_items: int, statistics: list[str]
) -> LabStandardisation:
    """The ``num_items`` most frequent items of a training split's ``labs`` and each token's mean and standard
    deviation over the admissions that measured its item.

    Raises:
        LabDataError: when no admission has a numeric lab value.
    """
    frequencies = item_frequencies(labs)
    if not frequencies:
        raise LabDataError("the training split has no lab event with a numeric valuenum: nothing for MEDFuse to read")
    items = [item for item, _ in sorted(frequencies.items(), key=lambda pair: (-pair[1], pair[0]))][:num_items]
    aggregates = aggregate_labs(labs, items, statistics)
    values = np.where(aggregates.observed[:, :, None], aggregates.values, np.nan)
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std = np.where(std > 0, std, 1.0)
    return LabStandardisation(
        items=items,
        mean=[float(v) for v in mean.reshape(-1)],
        std=[float(v) for v in std.reshape(-1)],
        admissions=len(labs),
        admissions_with_labs=int(aggregates.observed.any(axis=1).sum()),
    )


class LabFeaturizer:
    """Visit records -> standardised lab tokens of a lab model's configuration (picklable; a Ray Data stage).

    Output for a batch of ``B`` admissions, ``T = items x statistics`` tokens (item-major):

    ==========================  ======  ============================================================
    ``lab_values``              [B, T]  float32 standardised aggregates, 0 where missing
    ``lab_observed``            [B, T]  1 where the token's item was measured
    ``lab_items_observed``      [B]     items measured (0: the admission has no lab of the model)
    ``lab_events_other_items``  [B]     events of items the model does not read
    ``lab_events_non_numeric``  [B]     events of its items without a finite value
    ``hadm_id``                 [B]     when the batch has it
    ==========================  ======  ============================================================

    Args:
        config: a ``MedFuseLabConfig`` with its items, statistics and standardisation.
    """

    def __init__(self, config: MedFuseLabConfig) -> None:
        if not config.lab_mean:
            raise ValueError("the lab model's configuration has no standardisation (lab_mean, lab_std)")
        self.items = list(config.lab_items)
        self.statistics = list(config.lab_statistics)
        shape = (len(self.items), len(self.statistics))
        self.mean = np.asarray(config.lab_mean, dtype=np.float64).reshape(shape)
        self.std = np.asarray(config.lab_std, dtype=np.float64).reshape(shape)

    def __call__(self, batch: pa.Table | dict[str, Any]) -> dict[str, np.ndarray]:
        """Featurise a batch with a ``labs`` column (a pyarrow table: Ray Data's ``batch_format="pyarrow"``)."""
        if not isinstance(batch, pa.Table):
            batch = pa.table(batch)
        if "labs" not in batch.column_names:
            raise KeyError(f"visit batch lacks column 'labs' (has {batch.column_names}); expected VISIT_SCHEMA columns")
        aggregates = aggregate_labs(batch.column("labs"), self.items, self.statistics)
        observed = np.repeat(aggregates.observed[:, :, None], len(self.statistics), axis=2)
        standardised = np.where(observed, (aggregates.values - self.mean) / self.std, 0.0)
        out = {
            "lab_values": standardised.reshape(len(batch), -1).astype(np.float32),
            "lab_observed": observed.reshape(len(batch), -1).astype(np.int64),
            "lab_items_observed": aggregates.observed.sum(axis=1).astype(np.int64),
            "lab_events_other_items": aggregates.events_other_items.astype(np.int64),
            "lab_events_non_numeric": aggregates.events_non_numeric.astype(np.int64),
        }
        if "hadm_id" in batch.column_names:
            out["hadm_id"] = batch.column("hadm_id").to_numpy()
        return out


def mask_observed_items(
    observed: torch.Tensor, num_statistics: int, mask_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """``[B, T]`` observed flags -> ``[B, T]`` masked flags: each observed item (``num_statistics`` consecutive tokens)
    is masked with probability ``mask_prob``, all its tokens together; a missing item never is."""
    import torch

    items = observed.reshape(observed.shape[0], -1, num_statistics)[:, :, 0].bool()
    draw = torch.rand(items.shape, generator=generator, device=generator.device).to(observed.device)
    masked = items & (draw < mask_prob)
    return masked.repeat_interleave(num_statistics, dim=1)


def keep_admissions_with_labs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model columns of the admissions with an observed item of the model."""
    keep = batch["lab_items_observed"] > 0
    return {column: batch[column][keep] for column in MODEL_COLUMNS}


def load_pretraining_model(directory: Path) -> MedFuseLabForMaskedModeling:
    """The masked lab-test model saved in ``directory``, in training mode."""
    from medmplm.models.medfuse import MedFuseLabForMaskedModeling

    model = MedFuseLabForMaskedModeling.from_pretrained(directory)
    model.train()
    return model


@dataclass
class MedFuseLabPretrainingTask:
    """Masked lab-test modelling (:class:`~medmplm.models.medfuse.MedFuseLabForMaskedModeling`) for the shared loop.

    Args:
        num_statistics: statistics per item (consecutive tokens of one item).
        mask_prob: share of observed items masked.
    """

    num_statistics: int
    mask_prob: float
    name: str = "pretrain-medfuse-lab"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"

    def load_model(self, directory: Path) -> MedFuseLabForMaskedModeling:
        """The pretraining model saved in ``directory``, in training mode."""
        return load_pretraining_model(directory)

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """The lab tokens and the masked items (validation batches are masked alike, so that the validation loss
        measures the training objective)."""
        masked = mask_observed_items(batch["lab_observed"], self.num_statistics, self.mask_prob, generator)
        return {"lab_values": batch["lab_values"], "lab_observed": batch["lab_observed"], "lab_masked": masked}

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The reconstruction error per masked token, weighted by masked tokens."""
        count = output.masked_count.detach().float()
        return {"masked_mse": (output.loss.detach().float() * count, count)}


def _saved_model_type(directory: str) -> str | None:
    return json.loads((Path(directory) / "config.json").read_text(encoding="utf-8")).get("model_type")


class MedFuseLabFamily:
    """MEDFuse's masked lab-test modelling in the pretraining recipe (see the module docstring)."""

    name = "medfuse-lab"
    summary = "MEDFuse's masked tabular transformer: reconstruct masked lab values of an admission (labs only)"
    presets = PRESETS
    default_preset = "tiny"
    options: dict[str, Any] = {}

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        from huggingface_hub.errors import StrictDataclassError

        from medmplm.models.medfuse import MedFuseLabConfig, MedFuseLabForMaskedModeling

        resolve_options(self, model.options)
        for key in ("text_checkpoint", "tokenizer_dir"):
            if getattr(model, key) is not None:
                raise ConfigError(f"model.{key}: the medfuse-lab family reads lab tests only, no text")
        if model.init_from is not None:
            if model.overrides:
                raise ConfigError(
                    "model.overrides: the model continued from model.init_from keeps its own configuration"
                )
            found = _saved_model_type(model.init_from)
            if found != MedFuseLabConfig.model_type:
                raise ConfigError(
                    f"model.init_from: {model.init_from} holds a {found!r} model, expected a medfuse-lab export"
                )
            return BuiltModel(
                MedFuseLabForMaskedModeling.from_pretrained(model.init_from),
                description=f"continued from {model.init_from}",
            )
        values = preset_values(self, model)
        known = set(inspect.get_annotations(MedFuseLabConfig)) - {"lab_items", "lab_mean", "lab_std"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"model.overrides.{unknown[0]}: not a MEDFuse lab configuration field; known: {sorted(known)}"
            )
        try:
            config = MedFuseLabConfig(**values)
        except (TypeError, ValueError, StrictDataclassError) as error:
            raise ConfigError(f"model.overrides: {error}") from error
        fitted = fit_lab_standardisation(
            read_lab_split(prepared_dir, "train", ("labs",)).column("labs"),
            config.num_lab_items,
            list(config.lab_statistics),
        )
        config.lab_items, config.lab_mean, config.lab_std = fitted.items, fitted.mean, fitted.std
        return BuiltModel(
            MedFuseLabForMaskedModeling(config),
            description=(
                f"{model.preset or self.default_preset} preset, {len(fitted.items)} lab items x "
                f"{len(config.lab_statistics)} statistics, standardised on {fitted.admissions_with_labs} of "
                f"{fitted.admissions} training admissions"
            ),
        )

    def load_model(self, directory: Path) -> MedFuseLabForMaskedModeling:
        return load_pretraining_model(directory)

    def task(self, model_dir: Path) -> MedFuseLabPretrainingTask:
        from medmplm.models.medfuse import MedFuseLabConfig

        config = MedFuseLabConfig.from_pretrained(model_dir)
        return MedFuseLabPretrainingTask(num_statistics=len(config.lab_statistics), mask_prob=config.mask_prob)

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """Featurised ``train`` and ``val`` Ray Datasets of the lab tokens, admissions without a lab of the model
        dropped (and counted)."""
        import ray.data

        from medmplm.data.schema import VISITS_DIR
        from medmplm.models.medfuse import MedFuseLabConfig
        from medmplm.train import storage

        data = config.data
        if data.text_cache:
            raise ConfigError("data.text_cache: the medfuse-lab family reads no notes; set data.text_cache=false")
        featurizer = LabFeaturizer(MedFuseLabConfig.from_pretrained(model_dir))
        datasets = {}
        for split in ("train", "val"):
            location = storage.join(prepared_dir, VISITS_DIR, split)
            if not storage.exists(location):
                raise FileNotFoundError(
                    f"{location}: missing; {prepared_dir} is not a prepared directory (run python -m medmplm.prepare)"
                )
            dataset = ray.data.read_parquet(location, columns=list(VISIT_COLUMNS)).map_batches(
                featurizer, batch_format="pyarrow", batch_size=data.featurize_batch_size
            )
            if data.materialize:
                dataset = dataset.materialize()
                counts = lab_counts(dataset)
            dataset = dataset.map_batches(
                keep_admissions_with_labs, batch_format="numpy", batch_size=data.featurize_batch_size
            )
            if data.materialize:
                # Materialised after the projection too: the training workers then hold every CPU, and a lazy stage
                # would wait for one forever.
                dataset = dataset.materialize()
                logger.info(
                    "%s: %d admissions featurised, %d without a lab item of the model dropped; lab events of other "
                    "items: %d; events of its items without a numeric value: %d",
                    split,
                    counts["admissions"],
                    counts["admissions"] - dataset.count(),
                    counts["lab_events_other_items"],
                    counts["lab_events_non_numeric"],
                )
            datasets[split] = dataset
        return datasets


def lab_counts(dataset: Any) -> dict[str, int]:
    """Admissions and the featuriser's count columns, summed over a materialised dataset."""
    counts = {"admissions": 0, **{name: 0 for name in COUNT_COLUMNS}}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        counts["admissions"] += len(batch["lab_items_observed"])
        for name in COUNT_COLUMNS:
            counts[name] += int(batch[name].sum())
    return counts


FAMILY = MedFuseLabFamily()
