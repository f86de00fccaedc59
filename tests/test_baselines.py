"""Baseline models: each computes what its docstring says, independent of padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmplm.models.baselines import MultiHotLogisticRegression, TextCNNEncoder, VisitGRUEncoder
from medmplm.models.baselines.logistic import multi_hot


def test_gru_history_reads_only_real_visits_in_order():
    torch.manual_seed(0)
    encoder = VisitGRUEncoder(10, 10, hidden_size=3)
    codes = torch.randn(3, 4, 6)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)
    summary = encoder.summarize_history(codes, None, mask)
    with torch.no_grad():
        _, expected_first = encoder.gru(codes[0:1, 2:])
        _, expected_second = encoder.gru(codes[1:2])
    assert torch.allclose(summary[0], expected_first[0, 0], atol=1e-6)
    assert torch.allclose(summary[1], expected_second[0, 0], atol=1e-6)
    assert torch.equal(summary[2], torch.zeros(3))  # no history at all


def test_gru_visit_embedding_is_a_multi_hot_sum():
    encoder = VisitGRUEncoder(10, 12, hidden_size=4)
    diag_ids = torch.tensor([[1, 5, 7, 0]])
    med_ids = torch.tensor([[1, 9, 0, 0]])
    out = encoder(diag_ids=diag_ids, diag_mask=(diag_ids > 0).long(), med_ids=med_ids, med_mask=(med_ids > 0).long())
    expected_diag = encoder.diagnosis_bag.weight[5] + encoder.diagnosis_bag.weight[7]
    assert torch.allclose(out.codes[0, :4], expected_diag) and torch.allclose(
        out.codes[0, 4:], encoder.medication_bag.weight[9]
    )


def test_cnn_ignores_padding_length():
    torch.manual_seed(0)
    encoder = TextCNNEncoder(vocab_size=50, pad_token_id=0, embedding_size=8, num_filters=4).eval()
    ids = torch.tensor([[2, 11, 12, 13, 3, 0, 0, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0, 0, 0, 0]])
    mask = (ids > 0).long()
    short = encoder(input_ids=ids[:, :6], attention_mask=mask[:, :6]).text
    long = encoder(input_ids=ids, attention_mask=mask).text
    assert short.shape == (2, 12)
    assert torch.allclose(short, long)
    changed = ids.clone()
    changed[0, 2] = 20
    assert not torch.allclose(encoder(input_ids=changed, attention_mask=mask).text[0], long[0])


def _arrays(diag, med, visit_mask, labels):
    diag, med = np.asarray(diag), np.asarray(med)
    return {
        "diag_ids": diag,
        "diag_mask": (diag > 0).astype(np.int64),
        "med_ids": med,
        "med_mask": (med > 0).astype(np.int64),
        "visit_mask": np.asarray(visit_mask),
        "labels": np.asarray(labels),
    }


def test_multi_hot_counts_a_code_once_and_skips_cls():
    matrix = multi_hot(np.array([[1, 4, 4, 6], [1, 0, 0, 0]]), np.array([[1, 1, 1, 1], [1, 0, 0, 0]]), 8)
    assert matrix.toarray().tolist() == [[0, 0, 0, 0, 1, 0, 1, 0], [0] * 8]


def test_logistic_regression_features_by_hand():
    model = MultiHotLogisticRegression(6, 6, multilabel=True)
    # Two examples, two visit slots: the target last, one history visit (second example has none).
    arrays = _arrays(
        diag=[[[1, 4, 0], [1, 5, 0]], [[1, 4, 0], [1, 4, 5]]],
        med=[[[1, 4, 0], [1, 0, 0]], [[1, 0, 0], [1, 5, 0]]],
        visit_mask=[[1, 1], [0, 1]],
        labels=[[1, 0], [0, 1]],
    )
    features = model.features(arrays).toarray()
    assert features.shape == (2, 4 * 6)
    # Blocks: target diagnoses, history-mean diagnoses, target medications, history-mean medications.
    assert features[0].tolist() == [0, 0, 0, 0, 0, 1] + [0, 0, 0, 0, 1, 0] + [0] * 6 + [0, 0, 0, 0, 1, 0]
    assert features[1].tolist() == [0, 0, 0, 0, 1, 1] + [0] * 6 + [0, 0, 0, 0, 0, 1] + [0] * 6


@pytest.mark.parametrize("multilabel", [True, False])
def test_logistic_regression_learns_a_code_rule(multilabel):
    rng = np.random.default_rng(0)
    diag = np.ones((200, 1, 3), dtype=np.int64)
    diag[:, 0, 1] = rng.integers(4, 8, size=200)
    label = (diag[:, 0, 1] == 5).astype(np.int64)
    labels = np.stack([label, 1 - label], axis=1) if multilabel else label
    arrays = _arrays(diag, np.ones((200, 1, 3), dtype=np.int64) * [1, 0, 0], np.ones((200, 1)), labels)
    model = MultiHotLogisticRegression(8, 8, multilabel=multilabel, c=10.0).fit(arrays)
    probabilities = model.predict_proba(arrays)
    assert probabilities.shape == labels.shape
    assert ((probabilities >= 0.5) == labels).all()
