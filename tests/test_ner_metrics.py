"""Strict seqeval metrics of concept extraction against hand-computed values."""

from __future__ import annotations

import pytest

from medmplm.metrics import ner_metrics


def test_strict_f1_counts_a_boundary_error_as_wrong():
    true = [
        ["B-problem", "I-problem", "O", "B-test", "O"],
        ["O", "B-treatment", "I-treatment", "I-treatment", "O"],
    ]
    predicted = [
        # The problem right; the test right.
        ["B-problem", "I-problem", "O", "B-test", "O"],
        # The treatment's boundary one token short: a wrong concept and a missed one in strict mode.
        ["O", "B-treatment", "I-treatment", "O", "O"],
    ]
    metrics = ner_metrics(true, predicted)
    # 3 true concepts, 3 predicted, 2 exact matches.
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["concepts"] == 3
    assert metrics["f1_problem"] == 1.0 and metrics["f1_test"] == 1.0
    assert metrics["precision_treatment"] == 0.0 and metrics["recall_treatment"] == 0.0


def test_strict_mode_rejects_an_entity_without_its_b_tag_and_a_wrong_type():
    true = [["B-problem", "I-problem", "O", "B-test"]]
    # An I- start is no entity in strict IOB2 (lenient mode would count a problem at 0-1 here).
    predicted = [["I-problem", "I-problem", "O", "B-problem"]]
    metrics = ner_metrics(true, predicted)
    # Predicted: one problem (3-3, the wrong type): 0 of 1 right; true: 2, none found.
    assert metrics["precision"] == 0.0 and metrics["recall"] == 0.0 and metrics["f1"] == 0.0
    assert metrics["recall_test"] == 0.0 and metrics["precision_problem"] == 0.0


def test_micro_average_pools_the_types():
    true = [["B-a", "O", "B-a", "O", "B-b", "I-b"]]
    predicted = [["B-a", "O", "O", "O", "B-b", "O"]]
    metrics = ner_metrics(true, predicted)
    # a: 1 of 1 predicted right, 1 of 2 found; b: 0 of 1, 0 of 1. Micro: 1 of 2 predicted, 1 of 3 found.
    assert metrics["precision"] == pytest.approx(1 / 2)
    assert metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert metrics["precision_a"] == 1.0 and metrics["recall_a"] == pytest.approx(0.5)
    assert metrics["f1_b"] == 0.0


def test_mismatched_sentences_are_refused():
    with pytest.raises(ValueError, match="same lengths"):
        ner_metrics([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="no sentences"):
        ner_metrics([], [])
