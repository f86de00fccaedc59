"""Metric functions against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medmplm.metrics import (
    binary_metrics,
    ddi_rate,
    icd_metrics,
    medrec_metrics,
    precision_at_k,
    read_ddi_pairs,
    recall_at_precision,
)

MEDREC_TRUE = np.array([[1, 0, 1, 0], [0, 1, 0, 0]])
MEDREC_SCORE = np.array([[0.9, 0.4, 0.2, 0.1], [0.5, 0.8, 0.1, 0.35]])


def test_medrec_metrics_by_hand():
    m = medrec_metrics(MEDREC_TRUE, MEDREC_SCORE, threshold=0.3)
    # At 0.3: visit 0 predicts {0,1} vs true {0,2}; visit 1 predicts {0,1,3} vs true {1}.
    assert m["jaccard"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["f1"] == pytest.approx((2 * 1 / 4 + 2 * 1 / 4) / 2)
    # Visit 0 ranking T,F,T,F -> AP = (1 + 2/3) / 2; visit 1 ranks its only true code first -> AP = 1.
    assert m["prauc"] == pytest.approx((5 / 6 + 1) / 2)
    # Pooled: positives .9,.8,.2 against negatives .4,.1,.5,.1,.35 -> 5 + 5 + 2 of 15 pairs ordered right.
    assert m["auc_micro"] == pytest.approx(12 / 15)
    assert m["accuracy"] == 0.0
    assert m["hamming_accuracy"] == pytest.approx(4 / 8)
    assert "ddi_rate" not in m


def test_medrec_threshold_changes_hard_metrics_only():
    low = medrec_metrics(MEDREC_TRUE, MEDREC_SCORE, threshold=0.3)
    high = medrec_metrics(MEDREC_TRUE, MEDREC_SCORE, threshold=0.85)
    assert high["prauc"] == low["prauc"] and high["auc_micro"] == low["auc_micro"]
    # At 0.85 visit 0 predicts {0} (J = 1/2) and visit 1 predicts nothing (J = 0).
    assert high["jaccard"] == pytest.approx(0.25)


def test_ddi_rate(tmp_path):
    table = tmp_path / "ddi.csv"
    table.write_text("atc3_a,atc3_b\nA01A,B01A\nC01A,C01A\n")
    pairs = read_ddi_pairs(table)
    assert pairs == {frozenset(("A01A", "B01A"))}
    codes = ["A01A", "B01A", "C01A", "D01A"]
    m = medrec_metrics(MEDREC_TRUE, MEDREC_SCORE, threshold=0.3, label_codes=codes, ddi_pairs=pairs)
    # Visit 0 predicts {A,B}: 1 pair, interacting. Visit 1 predicts {A,B,D}: 3 pairs, 1 interacting.
    assert m["ddi_rate"] == pytest.approx(2 / 4)
    assert math.isnan(ddi_rate([["A01A"], []], pairs))


def test_ddi_table_errors_name_file_and_line(tmp_path):
    table = tmp_path / "ddi.csv"
    table.write_text("a,b\nA01A,B01A\nC01A\n")
    with pytest.raises(ValueError, match=r"ddi\.csv:3: expected two non-empty ATC-3 codes"):
        read_ddi_pairs(table)
    with pytest.raises(ValueError, match="label_codes"):
        medrec_metrics(MEDREC_TRUE, MEDREC_SCORE, ddi_pairs=set())


BIN_TRUE = np.array([0, 0, 1, 1, 0, 1])
BIN_SCORE = np.array([0.1, 0.6, 0.7, 0.4, 0.2, 0.9])


def test_binary_metrics_by_hand():
    m = binary_metrics(BIN_TRUE, BIN_SCORE, threshold=0.5)
    # Predictions at 0.5: TP = 2 (0.7, 0.9), FP = 1 (0.6), FN = 1 (0.4).
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Positives .7,.4,.9 over negatives .1,.6,.2: 3 + 2 + 3 of 9 pairs.
    assert m["auroc"] == pytest.approx(8 / 9)
    # Ranked .9 T, .7 T, .6 F, .4 T: AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4.
    assert m["auprc"] == pytest.approx(11 / 12)
    # Precision stays 1 up to recall 2/3, then drops to 3/4 < 0.8.
    assert m["rp80"] == pytest.approx(2 / 3)


def test_recall_at_precision_unreachable_is_zero():
    assert recall_at_precision(np.array([1, 0, 0]), np.array([0.1, 0.9, 0.8]), 0.8) == 0.0


def test_undefined_metrics_are_nan_not_errors():
    m = binary_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.9]))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"]) and math.isnan(m["rp80"])
    assert m["accuracy"] == pytest.approx(3 / 4)


ICD_TRUE = np.zeros((2, 10), dtype=int)
ICD_TRUE[0, [0, 2]] = 1
ICD_TRUE[1, [1, 3, 9]] = 1
ICD_SCORE = np.array(
    [
        [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.04, 0.03, 0.02],
        [0.1, 0.9, 0.2, 0.8, 0.3, 0.4, 0.5, 0.6, 0.7, 0.01],
    ]
)


def test_precision_at_k_by_hand():
    # Visit 0 top-5: codes 0,1,2,5,4 (2 true); top-8 adds 3,6,7 (still 2 true).
    # Visit 1 top-5: codes 1,3,8,7,6 (2 true); top-8 adds 5,4,2 (still 2 true).
    assert precision_at_k(ICD_TRUE, ICD_SCORE, 5) == pytest.approx(2 / 5)
    assert precision_at_k(ICD_TRUE, ICD_SCORE, 8) == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="k=11"):
        precision_at_k(ICD_TRUE, ICD_SCORE, 11)


def test_icd_metrics_by_hand():
    m = icd_metrics(ICD_TRUE, ICD_SCORE, threshold=0.5)
    # Predicted at 0.5: visit 0 {0,1,2}, visit 1 {1,3,6,7,8}: TP 4, predicted 8, true 5.
    assert m["f1_micro"] == pytest.approx(2 * (4 / 8) * (4 / 5) / (4 / 8 + 4 / 5))
    # Per code F1: codes 0, 2, 3 -> 1; code 1 -> 2/3 (one false positive); the other six -> 0.
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 10)
    # Codes with both classes: 0,1,2,3,9. AUC 1 for the first four, 0 for code 9 (.01 < .02).
    assert m["auc_macro"] == pytest.approx(4 / 5)
    assert m["auc_macro_codes"] == 5
    # Pooled positives .9,.7,.9,.8,.01 against 15 negatives: 15 + 13.5 + 15 + 14.5 + 0 of 75 (ties count half).
    assert m["auc_micro"] == pytest.approx(58 / 75)
    assert m["p_at_5"] == pytest.approx(2 / 5) and m["p_at_8"] == pytest.approx(2 / 8)
    assert m["accuracy"] == 0.0
    assert m["hamming_accuracy"] == pytest.approx(15 / 20)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.array([0, 1]), np.array([0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics(np.array([0, 2]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="2-D"):
        icd_metrics(BIN_TRUE, BIN_SCORE)
