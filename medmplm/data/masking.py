"""BERT-style masking of visit code sequences for MedM-PLM pretraining.

Applied per batch on the training worker, with an explicit ``torch.Generator`` so that a run is
reproducible. For each code type separately: every real code (not [PAD], [CLS] or [UNK]) is
selected with probability ``mask_prob``; a visit with codes but no selected code gets one
selected at random, so every non-empty visit contributes a target. Of the selected codes,
``mask_token_prob`` become [MASK], ``random_token_prob`` become a random code *of the same type*
(never a special token, never a code of the other type: G-BERT's released code drew replacement
diagnoses from the medication vocabulary and vice versa), and the rest are kept. Labels hold the
original id at selected positions and -100 elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medmplm.data.vocab import MASK_ID, NUM_SPECIAL_TOKENS, UNK_ID

IGNORE_INDEX = -100

# (ids key, mask key, labels key) per code type, as VisitFeaturizer names them.
CODE_KEYS = (("diag_ids", "diag_mask", "diag_labels"), ("med_ids", "med_mask", "med_labels"))
TEXT_KEYS = ("attention_mask", "has_note")


class CodeMasker:
    """Masks diagnosis and medication codes of a featurised batch and adds their labels.

    Args:
        vocab_sizes: total vocabulary size (special tokens included) for ``"diag"`` and ``"med"``.
        mask_prob: probability that a code is selected as a target.
        mask_token_prob: of the selected codes, the share replaced by [MASK].
        random_token_prob: of the selected codes, the share replaced by a random code of the
            same type; the remaining ``1 - mask_token_prob - random_token_prob`` are kept.
    """

    def __init__(
        self,
        vocab_sizes: Mapping[str, int],
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
    ) -> None:
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1.0:
            raise ValueError(
                "mask_token_prob and random_token_prob must be >= 0 and sum to <= 1, "
                f"got {mask_token_prob} and {random_token_prob}"
            )
        for prefix in ("diag", "med"):
            if vocab_sizes.get(prefix, 0) <= NUM_SPECIAL_TOKENS:
                raise ValueError(f"vocab_sizes[{prefix!r}] must exceed the {NUM_SPECIAL_TOKENS} special tokens")
        self.vocab_sizes = dict(vocab_sizes)
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob

    @classmethod
    def from_config(cls, config: Any) -> CodeMasker:
        """The masker of a model configuration holding ``vocabularies`` (code type -> codes) and the masking rates
        (MedM-PLM's, G-BERT's): read from ``config.json`` alone, without loading weights."""
        return cls(
            {
                "diag": NUM_SPECIAL_TOKENS + len(config.vocabularies["diagnosis"]),
                "med": NUM_SPECIAL_TOKENS + len(config.vocabularies["medication"]),
            },
            mask_prob=config.mask_prob,
            mask_token_prob=config.mask_token_prob,
            random_token_prob=config.random_token_prob,
        )

    @classmethod
    def from_model(cls, model: Any) -> CodeMasker:
        """The masker for a MedM-PLM model: its vocabulary sizes and its configured rates."""
        return cls.from_config(model.config)

    def mask_codes(
        self, ids: torch.Tensor, mask: torch.Tensor, vocab_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one code type.

        Args:
            ids: [B, L] code ids, [CLS] first.
            mask: [B, L] 1 on [CLS] and codes.
            vocab_size: size of this type's vocabulary; random replacements come from
                ``[NUM_SPECIAL_TOKENS, vocab_size)``.
            generator: the only randomness source.

        Returns:
            (masked ids [B, L], labels [B, L] with -100 where not selected).
        """
        device = generator.device

        def uniform(shape: torch.Size) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=device).to(ids.device)

        # [UNK] carries no code to predict, so it is never a target.
        candidates = mask.bool() & (ids >= NUM_SPECIAL_TOKENS) & (ids != UNK_ID)
        selected = candidates & (uniform(ids.shape) < self.mask_prob)
        # Visits with candidates but no selection: select the candidate with the largest uniform score.
        needs_one = candidates.any(dim=1) & ~selected.any(dim=1)
        scores = uniform(ids.shape).masked_fill(~candidates, -1.0)
        forced = torch.zeros_like(selected)
        forced.scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        selected |= forced & needs_one[:, None]

        labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
        action = uniform(ids.shape)
        to_mask = selected & (action < self.mask_token_prob)
        to_random = (
            selected & (action >= self.mask_token_prob) & (action < self.mask_token_prob + self.random_token_prob)
        )
        random_codes = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, ids.shape, generator=generator, device=device).to(
            ids.device
        )
        masked = torch.where(to_mask, torch.full_like(ids, MASK_ID), ids)
        masked = torch.where(to_random, random_codes, masked)
        return masked, labels

    def __call__(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Mask a featurised batch; returns exactly the keyword arguments of the pretraining forward.

        The text comes through as ``text_hidden_states`` when the batch has it (precomputed
        frozen prefix), otherwise as ``input_ids``.
        """
        out: dict[str, torch.Tensor] = {}
        text_key = "text_hidden_states" if "text_hidden_states" in batch else "input_ids"
        for key in (text_key, *TEXT_KEYS):
            if key not in batch:
                raise KeyError(f"batch lacks {key!r}; expected the VisitFeaturizer output")
            out[key] = batch[key]
        for (ids_key, mask_key, labels_key), prefix in zip(CODE_KEYS, ("diag", "med"), strict=True):
            if ids_key not in batch or mask_key not in batch:
                raise KeyError(f"batch lacks {ids_key!r} or {mask_key!r}; expected the VisitFeaturizer output")
            ids, mask = batch[ids_key], batch[mask_key]
            if int(ids.max()) >= self.vocab_sizes[prefix]:
                raise ValueError(
                    f"{ids_key} holds id {int(ids.max())} but the {prefix} vocabulary has {self.vocab_sizes[prefix]} "
                    "entries: the batch was featurised with another vocabulary"
                )
            out[ids_key], out[labels_key] = self.mask_codes(ids, mask, self.vocab_sizes[prefix], generator)
            out[mask_key] = mask
        return out


def mask_sequence_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    generator: torch.Generator,
    token_ranges: Sequence[tuple[int, int]],
    mask_prob: float,
    mask_token_prob: float,
    random_token_prob: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of a sequence of several token kinds (Med-BERT's codes, M-BEHRT's codes and lab items).

    Each real, non-special token is a target with ``mask_prob``; a target becomes [MASK] with ``mask_token_prob``, a
    random token of its own kind (the ``[start, end)`` id range of ``token_ranges`` it lies in) with
    ``random_token_prob``, and stays itself otherwise.

    Returns:
        ``[B, L]`` (masked ids, labels: the original id at targets, -100 elsewhere).
    """

    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=generator.device).to(input_ids.device)

    targets = attention_mask.bool() & (input_ids >= NUM_SPECIAL_TOKENS) & (uniform() < mask_prob)
    labels = torch.where(targets, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = uniform()
    to_mask = targets & (action < mask_token_prob)
    to_random = targets & (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)
    draw = uniform()
    random_tokens = input_ids
    for start, end in token_ranges:
        if end > start:
            in_range = (input_ids >= start) & (input_ids < end)
            tokens = start + (draw * (end - start)).long().clamp(max=end - start - 1)
            random_tokens = torch.where(in_range, tokens, random_tokens)
    masked = torch.where(to_mask, torch.full_like(input_ids, MASK_ID), input_ids)
    return torch.where(to_random, random_tokens, masked), labels
