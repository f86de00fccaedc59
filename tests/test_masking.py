"""CodeMasker: rates, same-type replacements, labels, at-least-one, reproducibility."""

import pytest
import torch

from medmplm.data.masking import IGNORE_INDEX, CodeMasker
from medmplm.data.vocab import CLS_ID, MASK_ID, NUM_SPECIAL_TOKENS, PAD_ID, UNK_ID

DIAG_VOCAB, MED_VOCAB = 40, 5000


def code_batch(
    num_visits: int, num_codes: int, length: int, vocab_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] + ``num_codes`` random real codes + padding to ``length``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((num_visits, length), PAD_ID)
    ids[:, 0] = CLS_ID
    ids[:, 1 : 1 + num_codes] = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, (num_visits, num_codes), generator=g)
    mask = (ids != PAD_ID).long()
    return ids, mask


def featurised(num_visits: int = 2000, num_codes: int = 60, length: int = 62) -> dict[str, torch.Tensor]:
    diag_ids, diag_mask = code_batch(num_visits, num_codes, length, DIAG_VOCAB, seed=1)
    med_ids, med_mask = code_batch(num_visits, num_codes, length, MED_VOCAB, seed=2)
    return {
        "input_ids": torch.ones(num_visits, 4, dtype=torch.long),
        "attention_mask": torch.ones(num_visits, 4, dtype=torch.long),
        "has_note": torch.ones(num_visits, dtype=torch.long),
        "diag_ids": diag_ids,
        "diag_mask": diag_mask,
        "med_ids": med_ids,
        "med_mask": med_mask,
    }


def masker() -> CodeMasker:
    return CodeMasker({"diag": DIAG_VOCAB, "med": MED_VOCAB})


def test_rates_over_many_draws_match_configuration() -> None:
    batch = featurised()
    out = masker()(batch, torch.Generator().manual_seed(0))
    for prefix in ("diag", "med"):
        original, masked, labels = batch[f"{prefix}_ids"], out[f"{prefix}_ids"], out[f"{prefix}_labels"]
        real = original >= NUM_SPECIAL_TOKENS
        selected = labels != IGNORE_INDEX
        n_real, n_selected = int(real.sum()), int(selected.sum())
        # 120,000 codes: the standard error of the 15% rate is about 0.001.
        assert abs(n_selected / n_real - 0.15) < 0.005
        to_mask = selected & (masked == MASK_ID)
        kept = selected & (masked == original)
        replaced = selected & (masked != MASK_ID) & (masked != original)
        assert abs(int(to_mask.sum()) / n_selected - 0.8) < 0.015
        assert abs(int(kept.sum()) / n_selected - 0.1) < 0.015
        # A random replacement equal to the original counts as kept; with these vocabularies that is rare.
        assert abs(int(replaced.sum()) / n_selected - 0.1) < 0.015
        assert torch.equal(masked[~selected], original[~selected])


def test_random_replacements_are_codes_of_the_same_type() -> None:
    batch = featurised()
    out = masker()(batch, torch.Generator().manual_seed(3))
    for prefix, vocab_size in (("diag", DIAG_VOCAB), ("med", MED_VOCAB)):
        original, masked = batch[f"{prefix}_ids"], out[f"{prefix}_ids"]
        replaced = masked[(masked != original) & (masked != MASK_ID)]
        assert replaced.numel() > 1000
        assert int(replaced.min()) >= NUM_SPECIAL_TOKENS
        assert int(replaced.max()) < vocab_size
    # Medication replacements span the medication vocabulary, far beyond the diagnosis one.
    med_replaced = out["med_ids"][(out["med_ids"] != batch["med_ids"]) & (out["med_ids"] != MASK_ID)]
    assert int(med_replaced.max()) > 10 * DIAG_VOCAB


def test_labels_hold_original_ids_and_special_tokens_are_never_targets() -> None:
    batch = featurised(num_visits=300, num_codes=10, length=16)
    batch["diag_ids"][:, 1] = UNK_ID
    out = masker()(batch, torch.Generator().manual_seed(4))
    labels = out["diag_labels"]
    selected = labels != IGNORE_INDEX
    assert torch.equal(labels[selected], batch["diag_ids"][selected])
    assert not selected[:, 0].any()  # [CLS]
    assert not selected[:, 1].any()  # [UNK]
    assert not selected[:, 11:].any()  # [PAD]
    assert torch.equal(out["diag_ids"][:, 11:], batch["diag_ids"][:, 11:])


def test_every_non_empty_visit_gets_a_target() -> None:
    batch = featurised(num_visits=500, num_codes=1, length=8)
    empty = torch.arange(500) % 5 == 0
    batch["med_ids"][empty, 1] = PAD_ID
    batch["med_mask"][empty, 1] = 0
    out = masker()(batch, torch.Generator().manual_seed(5))
    assert torch.equal((out["diag_labels"] != IGNORE_INDEX).sum(dim=1), torch.ones(500, dtype=torch.long))
    per_visit = (out["med_labels"] != IGNORE_INDEX).sum(dim=1)
    assert torch.equal(per_visit[empty], torch.zeros(int(empty.sum()), dtype=torch.long))
    assert torch.equal(per_visit[~empty], torch.ones(int((~empty).sum()), dtype=torch.long))


def test_reproducible_with_the_same_generator_seed() -> None:
    batch = featurised(num_visits=50)
    first = masker()(batch, torch.Generator().manual_seed(7))
    again = masker()(batch, torch.Generator().manual_seed(7))
    other = masker()(batch, torch.Generator().manual_seed(8))
    for key in ("diag_ids", "diag_labels", "med_ids", "med_labels"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["diag_labels"], other["diag_labels"])


def test_output_is_the_forward_keyword_set() -> None:
    batch = featurised(num_visits=4)
    batch["hadm_id"] = torch.arange(4)
    out = masker()(batch, torch.Generator().manual_seed(0))
    assert set(out) == {
        "input_ids",
        "attention_mask",
        "has_note",
        "diag_ids",
        "diag_mask",
        "diag_labels",
        "med_ids",
        "med_mask",
        "med_labels",
    }
    batch["text_hidden_states"] = torch.zeros(4, 4, 8)
    out = masker()(batch, torch.Generator().manual_seed(0))
    assert "text_hidden_states" in out and "input_ids" not in out
    assert (out["diag_labels"] != IGNORE_INDEX).any()


def test_batch_from_another_vocabulary_is_an_error() -> None:
    batch = featurised(num_visits=4)
    with pytest.raises(ValueError, match="another vocabulary"):
        CodeMasker({"diag": 10, "med": MED_VOCAB})(batch, torch.Generator().manual_seed(0))


def test_invalid_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="sum to <= 1"):
        CodeMasker({"diag": DIAG_VOCAB, "med": MED_VOCAB}, mask_token_prob=0.9, random_token_prob=0.2)
