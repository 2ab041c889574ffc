import numpy as np
import pytest

from crossdeploy.validation.parity import Thresholds, compare_logits


def test_identical_logits_are_perfect():
    x = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    m = compare_logits(x, x.copy(), labels=x.argmax(1))
    assert m["top1_agreement"] == 1.0 and m["top5_overlap"] == 1.0 and m["max_abs_err"] == 0.0
    assert m["cosine_min"] == pytest.approx(1.0) and m["accuracy_top1"] == 1.0


def test_disagreement_is_counted():
    reference = np.eye(4, 10, dtype=np.float32) * 5
    candidate = reference.copy()
    candidate[0, 0], candidate[0, 9] = 0.0, 5.0  # first sample now predicts class 9
    m = compare_logits(reference, candidate, labels=np.array([0, 1, 2, 3]))
    assert m["top1_agreement"] == 0.75 and m["accuracy_top1"] == 0.75
    assert m["max_abs_err"] == 5.0 and m["max_abs_err_rel"] == 1.0
    assert m["cosine_min"] == pytest.approx(0.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        compare_logits(np.zeros((2, 3)), np.zeros((2, 4)))


def test_thresholds_report_every_miss():
    t = Thresholds(top1_agreement=0.99, cosine_min=0.999, max_abs_err_rel=1e-3)
    metrics = {"top1_agreement": 0.5, "top5_overlap": 1.0, "cosine_min": 0.9, "max_abs_err_rel": 0.1}
    misses = t.misses(metrics)
    assert len(misses) == 3 and "top1_agreement 0.5000 < 0.99" in misses[0]
    assert t.misses({"top1_agreement": 1.0, "top5_overlap": 1.0, "cosine_min": 1.0, "max_abs_err_rel": 0.0}) == []


def test_agreement_can_be_left_out_of_the_verdict():
    t = Thresholds(top1_agreement=0.98, top5_overlap=0.8, cosine_min=0.98)
    near_tie_flip = {"top1_agreement": 0.9, "top5_overlap": 0.7, "cosine_min": 0.999, "max_abs_err_rel": 0.01}
    assert len(t.misses(near_tie_flip)) == 2
    assert t.misses(near_tie_flip, judge_agreement=False) == []
    assert t.misses({**near_tie_flip, "cosine_min": 0.5}, judge_agreement=False) == ["cosine_min 0.5000 < 0.98"]
