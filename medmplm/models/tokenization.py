"""Text tokenizers: a WordPiece tokenizer trained on the training notes, or one loaded from disk."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.dataset as ds
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from medmplm.data.features import clean_note_text
from medmplm.data.schema import VISITS_DIR

logger = logging.getLogger(__name__)

TOKENIZERS_DIR = "tokenizers"
TOKENIZER_MARKER = "tokenizer.json"

BERT_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def iter_split_notes(prepared_dir: str | os.PathLike, split: str = "train", batch_size: int = 1024) -> Iterator[str]:
    """Cleaned, non-empty note texts of one split of a prepared directory, in file order."""
    split_dir = Path(prepared_dir) / VISITS_DIR / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such split directory (expected a prepared directory)")
    dataset = ds.dataset(split_dir, format="parquet")
    for batch in dataset.to_batches(columns=["note_text"], batch_size=batch_size):
        for note in batch.column(0).to_pylist():
            if note:
                cleaned = clean_note_text(note)
                if cleaned:
                    yield cleaned


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Train a BERT-style (uncased) WordPiece tokenizer with the ``tokenizers`` library.

    Args:
        texts: training texts, already cleaned with ``clean_note_text``.
        vocab_size: target vocabulary size, special tokens included.
        model_max_length: recorded in the tokenizer (tokens per note the model accepts).

    Returns:
        A transformers fast tokenizer (so ``save_pretrained`` / ``AutoTokenizer`` work) whose
        post-processor wraps every text in ``[CLS] ... [SEP]``.
    """
    specials = list(BERT_SPECIAL_TOKENS.values())
    tokenizer = Tokenizer(models.WordPiece(unk_token=BERT_SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    counted = 0

    def counting(texts: Iterable[str]) -> Iterator[str]:
        nonlocal counted
        for text in texts:
            counted += 1
            yield text

    tokenizer.train_from_iterator(
        counting(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    )
    if counted == 0:
        raise ValueError("no note text to train the tokenizer on (every training visit lacks a note)")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    logger.info("trained a WordPiece tokenizer of %d tokens on %d notes", tokenizer.get_vocab_size(), counted)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **BERT_SPECIAL_TOKENS)


def prepared_wordpiece_tokenizer(
    prepared_dir: str | os.PathLike, vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerBase:
    """The WordPiece tokenizer of a prepared directory's training notes, trained once and kept beside the data.

    The ``tokenizers`` trainer breaks ties between equally frequent merges in hash-map order, which changes from process
    to process: two trainings on the same notes give different tokens, or the same tokens under other ids, and so two
    fresh runs of one config would start from different models. The first model built on a prepared directory stores
    its tokenizer in ``<prepared_dir>/tokenizers/wordpiece-<vocab_size>-<max_length>/`` (written under a temporary
    name, then renamed); every later model built on that directory loads it. Where the directory is not writable the
    tokenizer is trained afresh, with a warning that runs will not share token ids.
    """
    cache = Path(prepared_dir) / TOKENIZERS_DIR / f"wordpiece-{vocab_size}-{model_max_length}"
    if (cache / TOKENIZER_MARKER).is_file():
        return load_tokenizer(cache)
    tokenizer = train_wordpiece_tokenizer(iter_split_notes(prepared_dir, "train"), vocab_size, model_max_length)
    staging = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        tokenizer.save_pretrained(staging)
        staging.rename(cache)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if (cache / TOKENIZER_MARKER).is_file():
            # Another process stored one first: use it, so that both runs share its ids.
            return load_tokenizer(cache)
        logger.warning(
            "could not store the trained tokenizer in %s (%s): fresh runs on this data will train their own and "
            "may number tokens differently; pass model.tokenizer_dir to share one",
            cache,
            error.strerror or error,
        )
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory (never from a hub)."""
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
