"""``model.family=bert-mlm``: a ClinicalBERT-style text encoder pretrained by masked language modelling on the notes.

Model: transformers' own ``BertForMaskedLM`` (:mod:`medmplm.models.bert_mlm`), built from a preset with a WordPiece
tokenizer trained on the training notes (or ``model.tokenizer_dir``'s), or continued from a local BERT checkpoint
(``model.text_checkpoint`` or ``model.init_from``). Its export (model and tokenizer in one directory) is what MedM-PLM
takes as ``model.text_checkpoint``.

Featuriser (:class:`NoteWindowFeaturizer`): every cleaned note is tokenised once and cut into windows of
``max_length - 2`` tokens, each wrapped in ``[CLS] ... [SEP]`` and padded, so the whole of a long note is trained on
(one row per window); visits without a note give no row.

Objective (:class:`MaskedLanguageModelingTask`): transformers' ``DataCollatorForLanguageModeling`` masks the windows
(``mlm_probability`` of the tokens; 80% [MASK], 10% random token, 10% kept; special tokens and padding never), with
the loop's generator as its only randomness; the model returns the cross-entropy over the masked tokens.

Options (``model.options``):

- ``mlm_probability`` (0.15): share of a window's tokens (whole words with ``whole_word_mask``) that are predicted.
- ``whole_word_mask`` (false): mask every WordPiece of a word together (a word as the tokenizer's pre-tokenizer splits
  them: punctuation is a word of its own). transformers then replaces every masked token by [MASK] (no random or kept
  share).
- ``window_stride`` (0): tokens shared by consecutive windows of a note, as the ``stride`` of transformers' tokenizers
  (0: every token is in exactly one window; more gives tokens near a cut more context, at the price of training on
  them twice). Must be below ``max_length - 2``.
- ``max_windows_per_note`` (null): keep only a note's first windows (null: every window); the notes that lose windows
  are counted in the log.

Where they live: :meth:`BertMLMFamily.build_model` records the options in the model's configuration (``config.json``
key ``mlm_pretraining``) and the window length as the tokenizer's ``model_max_length``; the datasets and the task read
both from the initial model's directory, so a resumed run windows and masks as the run it resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medmplm.config import ConfigError
from medmplm.data.features import clean_note_text
from medmplm.pretraining.family import BuiltModel, preset_values, resolve_options

if TYPE_CHECKING:
    import torch
    from transformers import BertForMaskedLM, PreTrainedTokenizerBase

    from medmplm.config import ModelSection, PretrainConfig

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    # MedM-PLM tiny's text side (medmplm.models.configuration_medmplm.PRESETS), so that a tiny export is its
    # text_checkpoint as is.
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 2000,
        "max_length": 128,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    },
    # BERT-base (ClinicalBERT's size).
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 30522,
        "max_length": 512,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    },
}

OPTIONS: dict[str, Any] = {
    "mlm_probability": 0.15,
    "whole_word_mask": False,
    "window_stride": 0,
    "max_windows_per_note": None,
}

# The config.json key holding the resolved model.options.
OPTIONS_CONFIG_KEY = "mlm_pretraining"

# What model.overrides may change in a checkpoint (its architecture is fixed).
CHECKPOINT_OVERRIDES = ("max_length", "hidden_dropout_prob", "attention_probs_dropout_prob")

# Featuriser outputs the task reads; WORD_IDS only with whole-word masking.
MODEL_COLUMNS = ("input_ids", "attention_mask", "special_tokens_mask")
WORD_IDS = "word_ids"
# On a note's first window, how many windows the note had before max_windows_per_note (0 on the other windows):
# counted once for the run log, then dropped.
NOTE_WINDOWS = "note_windows"

IGNORE_INDEX = -100


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (resolved ``model.options``) when their values are valid.

    Raises:
        ConfigError: naming the ``model.options`` key and what was expected.
    """
    probability = options["mlm_probability"]
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability < 1:
        raise ConfigError(f"model.options.mlm_probability: expected a number in (0, 1), got {probability!r}")
    if not isinstance(options["whole_word_mask"], bool):
        raise ConfigError(f"model.options.whole_word_mask: expected true or false, got {options['whole_word_mask']!r}")
    stride = options["window_stride"]
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise ConfigError(f"model.options.window_stride: expected an integer >= 0, got {stride!r}")
    cap = options["max_windows_per_note"]
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"model.options.max_windows_per_note: expected an integer >= 1 or null, got {cap!r}")
    return {**options, "mlm_probability": float(probability)}


def recorded_options(model_dir: Path) -> dict[str, Any]:
    """The ``model.options`` that :meth:`BertMLMFamily.build_model` recorded in ``model_dir``'s configuration (the
    defaults, logged, for a BERT directory built elsewhere)."""
    from transformers import AutoConfig

    recorded = getattr(AutoConfig.from_pretrained(model_dir, local_files_only=True), OPTIONS_CONFIG_KEY, None)
    if recorded is None:
        logger.info(
            "%s records no bert-mlm options (%s): using the defaults %s", model_dir, OPTIONS_CONFIG_KEY, OPTIONS
        )
    return {**OPTIONS, **(recorded or {})}


def load_masked_lm(directory: Path) -> BertForMaskedLM:
    """The ``BertForMaskedLM`` saved in ``directory``, in training mode (``from_pretrained`` returns it in eval mode)."""
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(directory, local_files_only=True)
    model.train()
    return model


# --------------------------------------------------------------------------------------------------------------------
# Featuriser: notes -> fixed-length windows
# --------------------------------------------------------------------------------------------------------------------


class NoteWindowFeaturizer:
    """Picklable ``map_batches`` function: a batch of visits (``note_text``) -> one row per window of each note.

    Each cleaned note (:func:`~medmplm.data.features.clean_note_text`) is tokenised once by the fast tokenizer, whose
    overflow handling cuts the token ids into windows of ``max_length - 2`` tokens overlapping by ``window_stride``
    tokens and wraps each in ``[CLS] ... [SEP]``, padded to ``max_length`` (the tokenizer's ``model_max_length``).
    Visits without a note (null, or empty once cleaned) give no row.

    Output columns (``int32`` / ``int8`` arrays of ``max_length`` per row): ``input_ids``, ``attention_mask``,
    ``special_tokens_mask`` (1 on [CLS], [SEP] and padding), with ``word_ids`` the index of each token's word in its
    note (-1 on special tokens and padding), and ``note_windows`` (see :data:`NOTE_WINDOWS`).

    Args:
        tokenizer: a fast tokenizer whose post-processor adds [CLS] and [SEP]; ``model_max_length`` is the window.
        window_stride: tokens shared by consecutive windows.
        max_windows_per_note: keep a note's first windows only (``None``: all).
        word_ids: also output ``word_ids`` (for whole-word masking).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        window_stride: int = 0,
        max_windows_per_note: int | None = None,
        word_ids: bool = False,
    ) -> None:
        if not tokenizer.is_fast:
            raise TypeError(
                f"NoteWindowFeaturizer needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.max_length = int(tokenizer.model_max_length)
        if not 0 <= window_stride < self.max_length - 2:
            raise ValueError(
                f"window_stride must be in [0, max_length - 2 = {self.max_length - 2}) so that every window moves on, "
                f"got {window_stride}"
            )
        self.window_stride = window_stride
        self.max_windows_per_note = max_windows_per_note
        self.word_ids = word_ids

    @property
    def model_columns(self) -> tuple[str, ...]:
        """The output columns the task reads."""
        return (*MODEL_COLUMNS, WORD_IDS) if self.word_ids else MODEL_COLUMNS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        notes = [
            cleaned for cleaned in (clean_note_text(note) if note else "" for note in batch["note_text"]) if cleaned
        ]
        if not notes:
            return self._no_rows()
        encoded = self.tokenizer(
            notes,
            max_length=self.max_length,
            truncation=True,
            stride=self.window_stride,
            return_overflowing_tokens=True,
            padding="max_length",
            return_attention_mask=True,
            return_special_tokens_mask=True,
            return_token_type_ids=False,
        )
        # Windows come note by note, in order: a window's index in its note counts from its note's first row.
        note_of_window = np.asarray(encoded["overflow_to_sample_mapping"])
        windows_per_note = np.bincount(note_of_window, minlength=len(notes))
        first_row = np.concatenate([[0], np.cumsum(windows_per_note)[:-1]])
        window_in_note = np.arange(len(note_of_window)) - first_row[note_of_window]
        keep = np.ones(len(note_of_window), bool)
        if self.max_windows_per_note is not None:
            keep = window_in_note < self.max_windows_per_note
        rows = {
            "input_ids": np.asarray(encoded["input_ids"], np.int32)[keep],
            "attention_mask": np.asarray(encoded["attention_mask"], np.int8)[keep],
            "special_tokens_mask": np.asarray(encoded["special_tokens_mask"], np.int8)[keep],
            NOTE_WINDOWS: np.where(window_in_note == 0, windows_per_note[note_of_window], 0).astype(np.int32)[keep],
        }
        if self.word_ids:
            rows[WORD_IDS] = np.array(
                [[-1 if word is None else word for word in encoded.word_ids(row)] for row in np.flatnonzero(keep)],
                np.int32,
            )
        return rows

    def _no_rows(self) -> dict[str, np.ndarray]:
        rows = {
            "input_ids": np.zeros((0, self.max_length), np.int32),
            "attention_mask": np.zeros((0, self.max_length), np.int8),
            "special_tokens_mask": np.zeros((0, self.max_length), np.int8),
            NOTE_WINDOWS: np.zeros(0, np.int32),
        }
        if self.word_ids:
            rows[WORD_IDS] = np.zeros((0, self.max_length), np.int32)
        return rows


def window_counts(note_windows: Iterable[np.ndarray], cap: int | None) -> dict[str, int]:
    """The featurised split's counts for the run log, from its ``note_windows`` column batch by batch: ``windows``
    (rows), ``notes``, ``windows_before_cap``, and ``capped_notes`` (notes that had more than ``cap`` windows)."""
    counts = {"windows": 0, "notes": 0, "windows_before_cap": 0, "capped_notes": 0}
    for column in note_windows:
        counts["windows"] += len(column)
        counts["notes"] += int(np.count_nonzero(column))
        counts["windows_before_cap"] += int(column.sum())
        if cap is not None:
            counts["capped_notes"] += int(np.count_nonzero(column > cap))
    return counts


def log_window_counts(split: str, visits: int, counts: dict[str, int], cap: int | None) -> None:
    """Log a split's notes, windows, visits without a note and the notes ``max_windows_per_note`` (``cap``) cut.

    Raises:
        ValueError: when the training split has no note text.
    """
    notes, windows = counts["notes"], counts["windows"]
    if split == "train" and notes == 0:
        raise ValueError(f"train: none of the {visits} visits has note text; bert-mlm trains on the notes")
    logger.info(
        "%s: %d visits, %d notes -> %d windows (%.2f per note); %d visits without a note",
        split,
        visits,
        notes,
        windows,
        windows / notes if notes else 0.0,
        visits - notes,
    )
    if cap is not None:
        logger.info(
            "%s: %d notes had more than max_windows_per_note=%d windows; %d windows dropped",
            split,
            counts["capped_notes"],
            cap,
            counts["windows_before_cap"] - windows,
        )


# --------------------------------------------------------------------------------------------------------------------
# Objective: masking and statistics
# --------------------------------------------------------------------------------------------------------------------


def word_offsets(word_ids: torch.Tensor) -> torch.Tensor:
    """Character offsets ``[B, L, 2]`` that group tokens into the words ``word_ids`` names, in the form
    transformers' whole-word masking reads (a token continues the previous token's word when it starts where that
    one ended): token ``p`` of word ``w`` spans ``[p + w, p + w + 1)``, so consecutive tokens of one word touch and a
    new word leaves a gap."""
    import torch

    starts = torch.arange(word_ids.shape[-1]).expand_as(word_ids) + word_ids.long()
    return torch.stack([starts, starts + 1], dim=-1)


@dataclass
class MaskedLanguageModelingTask:
    """Masked language modelling on note windows for the shared loop (:class:`~transformers.BertForMaskedLM`).

    Args:
        tokenizer: the model's tokenizer ([MASK] id, vocabulary size for random replacements).
        mlm_probability: share of eligible tokens (words with ``whole_word_mask``) predicted.
        whole_word_mask: mask whole words (needs the featuriser's ``word_ids``).
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = OPTIONS["mlm_probability"]
    whole_word_mask: bool = OPTIONS["whole_word_mask"]
    name: str = "bert-mlm"
    score_metric: str = "val_loss"
    score_mode: Literal["min", "max"] = "min"
    collator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import DataCollatorForLanguageModeling

        # transformers' whole-word masking only replaces by [MASK]; said here so the collator does not warn about it.
        replacement = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if self.whole_word_mask else {}
        self.collator = DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=self.mlm_probability, whole_word_mask=self.whole_word_mask, **replacement
        )

    def load_model(self, directory: Path) -> BertForMaskedLM:
        """The ``BertForMaskedLM`` saved in ``directory``, in training mode."""
        return load_masked_lm(directory)

    def model_inputs(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator, training: bool
    ) -> dict[str, torch.Tensor]:
        """Mask the windows with the collator (its randomness: ``generator`` only) and add their ``labels`` (-100 where
        nothing is predicted).

        A batch in which no token was drawn (a few short windows) gets one masked token drawn with ``generator``:
        the model's loss is a mean over masked tokens, undefined over none.
        """
        import torch

        input_ids = batch["input_ids"].to(torch.long, copy=True)
        attention_mask = batch["attention_mask"].to(torch.long)
        never_masked = batch["special_tokens_mask"].bool() | (attention_mask == 0)
        offsets = word_offsets(batch[WORD_IDS]) if self.whole_word_mask else None
        self.collator.generator = generator
        try:
            input_ids, labels = self.collator.torch_mask_tokens(
                input_ids, special_tokens_mask=never_masked, offset_mapping=offsets
            )
        finally:
            # The task is pickled to the workers: no generator stays behind.
            self.collator.generator = None
        eligible = (~never_masked).flatten().nonzero().squeeze(1)
        if len(eligible) and not (labels != IGNORE_INDEX).any():
            position = eligible[torch.randint(len(eligible), (1,), generator=generator)]
            labels.view(-1)[position] = input_ids.view(-1)[position]
            input_ids.view(-1)[position] = self.tokenizer.mask_token_id
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def batch_statistics(
        self, output: Any, inputs: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``loss_mlm`` (the model's mean cross-entropy) and ``masked_token_accuracy`` (argmax = label), both
        weighted by the batch's masked tokens."""
        labels = inputs["labels"]
        masked = labels != IGNORE_INDEX
        count = masked.sum().float()
        correct = ((output.logits.detach().argmax(dim=-1) == labels) & masked).sum().float()
        return {
            "loss_mlm": (output.loss.detach().float() * count, count),
            "masked_token_accuracy": (correct, count),
        }


# --------------------------------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------------------------------


def _checked_tokenizer(tokenizer: PreTrainedTokenizerBase, key: str, where: str) -> PreTrainedTokenizerBase:
    missing = [
        name for name in ("pad_token", "mask_token", "cls_token", "sep_token") if getattr(tokenizer, name) is None
    ]
    if missing:
        raise ConfigError(
            f"{key}: the tokenizer in {where} has no {', '.join(missing)}; masked language modelling on "
            "BERT windows needs [PAD], [MASK], [CLS] and [SEP]"
        )
    if not tokenizer.is_fast:
        raise ConfigError(f"{key}: the tokenizer in {where} is not a fast (tokenizers-backed) tokenizer")
    return tokenizer


class BertMLMFamily:
    """``model.family=bert-mlm`` (see the module docstring)."""

    name = "bert-mlm"
    summary = "BERT text encoder (ClinicalBERT-style) by masked language modelling on the notes, long notes in windows"
    presets = PRESETS
    default_preset = "tiny"
    options = OPTIONS

    def build_model(self, prepared_dir: str, model: ModelSection) -> BuiltModel:
        """A ``BertForMaskedLM`` from the preset with a WordPiece tokenizer trained on the training notes (or
        ``model.tokenizer_dir``'s), or continued from ``model.text_checkpoint`` / ``model.init_from``.

        Raises:
            ConfigError: naming the ``model.*`` key that is wrong.
        """
        options = check_options(resolve_options(self, model.options))
        if (
            model.text_checkpoint is not None
            and model.init_from is not None
            and model.text_checkpoint != model.init_from
        ):
            raise ConfigError(
                "model.init_from: bert-mlm continues from one checkpoint, given both model.text_checkpoint="
                f"{model.text_checkpoint} and model.init_from={model.init_from}"
            )
        if model.text_checkpoint is not None:
            built, max_length = self._continued(model.text_checkpoint, "model.text_checkpoint", model)
        elif model.init_from is not None:
            built, max_length = self._continued(model.init_from, "model.init_from", model)
        else:
            built, max_length = self._from_scratch(prepared_dir, model)
        if not 0 <= options["window_stride"] < max_length - 2:
            raise ConfigError(
                f"model.options.window_stride: must be below max_length - 2 = {max_length - 2} (the window's content "
                f"tokens), got {options['window_stride']}"
            )
        # The saved tokenizer carries the window length, the saved configuration the options (module docstring).
        built.tokenizer.model_max_length = max_length
        setattr(built.model.config, OPTIONS_CONFIG_KEY, options)
        window = f"windows of {max_length} tokens (stride {options['window_stride']})"
        masking = f"{'whole-word ' if options['whole_word_mask'] else ''}masking {options['mlm_probability']:g}"
        built.description = f"{built.description}; {window}; {masking}"
        return built

    def _from_scratch(self, prepared_dir: str, model: ModelSection) -> tuple[BuiltModel, int]:
        from transformers import BertForMaskedLM

        from medmplm.models.bert_mlm import bert_config_for
        from medmplm.models.tokenization import load_tokenizer, prepared_wordpiece_tokenizer

        values = preset_values(self, model)
        preset = model.preset or self.default_preset
        unknown = sorted(set(model.overrides) - set(self.presets[preset]))
        if unknown:
            raise ConfigError(
                f"model.overrides.{unknown[0]}: not a bert-mlm model setting; known: {sorted(self.presets[preset])}"
            )
        max_length = values["max_length"]
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise ConfigError(
                f"model.overrides.max_length: expected an integer >= 3 ([CLS], a token, [SEP]), got {max_length!r}"
            )
        if model.tokenizer_dir is not None:
            tokenizer = _checked_tokenizer(
                load_tokenizer(model.tokenizer_dir), "model.tokenizer_dir", model.tokenizer_dir
            )
            source = f"tokenizer from {model.tokenizer_dir} ({len(tokenizer)} tokens)"
        else:
            tokenizer = prepared_wordpiece_tokenizer(prepared_dir, values["vocab_size"], max_length)
            source = f"WordPiece {len(tokenizer)} trained on the training notes"
        try:
            bert = BertForMaskedLM(bert_config_for(values, len(tokenizer), tokenizer.pad_token_id))
        except ValueError as error:
            # e.g. a hidden size that the number of heads does not divide.
            raise ConfigError(
                f"model.overrides: preset {preset!r} with {model.overrides} is not a valid BERT: {error}"
            ) from error
        return BuiltModel(
            model=bert, tokenizer=tokenizer, description=f"{preset} preset from scratch, {source}"
        ), max_length

    def _continued(self, checkpoint: str, key: str, model: ModelSection) -> tuple[BuiltModel, int]:
        from transformers import AutoConfig, BertForMaskedLM

        from medmplm.models.tokenization import load_tokenizer

        path = Path(checkpoint).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{key}: {path} has no config.json (expected a local save_pretrained directory of a BERT model)"
            )
        checkpoint_config = AutoConfig.from_pretrained(path, local_files_only=True)
        if checkpoint_config.model_type != "bert":
            raise ConfigError(
                f"{key}: {path} holds a {checkpoint_config.model_type!r} model; bert-mlm continues BERT (model_type 'bert') only"
            )
        fixed = sorted(set(model.overrides) - set(CHECKPOINT_OVERRIDES))
        if fixed:
            raise ConfigError(
                f"model.overrides.{fixed[0]}: the checkpoint {path} fixes the architecture; with {key} only "
                f"{list(CHECKPOINT_OVERRIDES)} can be changed"
            )
        if model.preset is not None:
            logger.info("model.preset=%s is not used: the architecture comes from %s", model.preset, path)
        dropout = {name: value for name, value in model.overrides.items() if name != "max_length"}
        bert, loading = BertForMaskedLM.from_pretrained(
            path, local_files_only=True, output_loading_info=True, **dropout
        )
        missing = sorted(loading["missing_keys"])
        encoder_missing = [name for name in missing if not name.startswith("cls.")]
        if encoder_missing:
            raise ConfigError(
                f"{key}: {path} lacks encoder weights {encoder_missing[:5]} ({len(encoder_missing)} in all)"
            )
        description = f"continued from {path}"
        if missing:
            # A BertModel checkpoint (e.g. an encoder without its pretraining heads): the MLM head starts fresh.
            logger.info(
                "%s has no masked-LM head: its %d tensors start from a fresh initialisation", path, len(missing)
            )
            description += " (fresh MLM head)"
        tokenizer_dir = model.tokenizer_dir if model.tokenizer_dir is not None else str(path)
        tokenizer_key = "model.tokenizer_dir" if model.tokenizer_dir is not None else key
        tokenizer = _checked_tokenizer(load_tokenizer(tokenizer_dir), tokenizer_key, tokenizer_dir)
        if len(tokenizer) > bert.config.vocab_size:
            raise ConfigError(
                f"{tokenizer_key}: the tokenizer has {len(tokenizer)} tokens but {path}'s embedding has "
                f"{bert.config.vocab_size}"
            )
        positions = bert.config.max_position_embeddings
        max_length = model.overrides.get("max_length", min(int(tokenizer.model_max_length), positions))
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 3 <= max_length <= positions:
            raise ConfigError(
                f"model.overrides.max_length: expected an integer in [3, {positions}] ({path}'s positions), got {max_length!r}"
            )
        return BuiltModel(model=bert, tokenizer=tokenizer, description=description), max_length

    def load_model(self, directory: Path) -> BertForMaskedLM:
        """The ``BertForMaskedLM`` saved in ``directory``, in training mode, on the CPU."""
        return load_masked_lm(directory)

    def datasets(self, prepared_dir: str, model_dir: Path, config: PretrainConfig) -> dict[str, Any]:
        """Windowed ``train`` and ``val`` notes (:class:`NoteWindowFeaturizer`), with their counts logged when
        ``config.data.materialize``.

        Raises:
            FileNotFoundError: naming a missing split directory.
            ValueError: when the training split has no note text.
        """
        import ray.data

        from medmplm.data import schema
        from medmplm.models.tokenization import load_tokenizer
        from medmplm.train import storage

        options = recorded_options(model_dir)
        featurizer = NoteWindowFeaturizer(
            load_tokenizer(model_dir),
            window_stride=options["window_stride"],
            max_windows_per_note=options["max_windows_per_note"],
            word_ids=options["whole_word_mask"],
        )
        datasets = {}
        for split in ("train", "val"):
            location = storage.join(prepared_dir, schema.VISITS_DIR, split)
            if not storage.exists(location):
                raise FileNotFoundError(f"{location}: missing; {prepared_dir} is not a prepared directory")
            visits = ray.data.read_parquet(location, columns=["note_text"])
            windows = visits.map_batches(featurizer, batch_format="numpy", batch_size=config.data.featurize_batch_size)
            if config.data.materialize:
                windows = windows.materialize()
                cap = options["max_windows_per_note"]
                batches = windows.select_columns([NOTE_WINDOWS]).iter_batches(batch_size=None, batch_format="numpy")
                counts = window_counts((batch[NOTE_WINDOWS] for batch in batches), cap)
                log_window_counts(split, visits.count(), counts, cap)
            windows = windows.select_columns(list(featurizer.model_columns))
            # Materialised after the projection too: the training workers then hold every CPU, and a lazy projection
            # would wait for one forever.
            datasets[split] = windows.materialize() if config.data.materialize else windows
        return datasets

    def task(self, model_dir: Path) -> MaskedLanguageModelingTask:
        """The masking task with the options recorded in ``model_dir`` and its tokenizer."""
        from medmplm.models.tokenization import load_tokenizer

        options = recorded_options(model_dir)
        return MaskedLanguageModelingTask(
            tokenizer=load_tokenizer(model_dir),
            mlm_probability=options["mlm_probability"],
            whole_word_mask=options["whole_word_mask"],
        )


FAMILY = BertMLMFamily()
