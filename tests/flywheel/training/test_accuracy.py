"""flywheel.accuracy: the production accuracy estimate and calibration (pure)."""

import numpy as np
import pytest
from scipy.stats import binom

from flywheel.training import accuracy
from flywheel.training.accuracy import accuracy_by, calibration, wilson


def test_the_true_accuracy_is_inside_the_interval_in_at_least_93_of_100_seeded_runs():
    # A typical production accuracy, 100 seeded audit samples of 400. With a true coverage
    # of 95-97%, 100 runs land below 93 now and then for some accuracy by chance alone, so
    # the guarantee for every accuracy is the exact computation in the next test.
    true_accuracy = 0.9
    covered = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        correct = int((rng.random(400) < true_accuracy).sum())  # an audit sample of 400
        estimate = wilson(correct, 400)
        covered += estimate.low <= true_accuracy <= estimate.high
    assert covered >= 93


@pytest.mark.parametrize("n", [30, 100, 400, 2000])
def test_exact_coverage_is_at_least_95_percent_everywhere(n):
    # Coverage summed over every possible outcome, for a grid of true accuracies.
    for true_accuracy in np.linspace(0.05, 0.99, 48):
        coverage = sum(binom.pmf(k, n, true_accuracy) for k in range(n + 1)
                       if wilson(k, n).low <= true_accuracy <= wilson(k, n).high)
        assert coverage >= 0.949, (n, true_accuracy, coverage)


def test_wilson_edges():
    assert wilson(0, 0).value is None
    none_right = wilson(0, 50)
    assert none_right.low == 0.0 and 0 < none_right.high < 0.1
    all_right = wilson(50, 50)
    assert all_right.high == 1.0 and 0.9 < all_right.low < 1.0
    mid = wilson(80, 100)
    assert mid.low < 0.8 < mid.high and mid.value == 0.8


def test_accuracy_by_groups():
    by = accuracy_by(["eu", "eu", "us"], ["a", "b", "a"], ["a", "a", "a"])
    assert by["eu"]["accuracy"] == 0.5 and by["eu"]["n"] == 2 and by["us"]["accuracy"] == 1.0


def test_calibration_and_expected_calibration_error():
    confidence = [0.95] * 10 + [0.55] * 10
    correct = [True] * 9 + [False] + [True] * 5 + [False] * 5
    result = calibration(confidence, correct)
    assert [b["n"] for b in result["bins"]] == [10, 10]
    assert result["bins"][0]["accuracy"] == 0.5 and result["bins"][1]["accuracy"] == 0.9
    # |0.5-0.55| * 0.5 + |0.9-0.95| * 0.5
    assert result["ece"] == pytest.approx(0.05)
    assert calibration([], [])["ece"] is None


def test_the_interval_is_scipys_continuity_corrected_wilson_interval():
    from scipy.stats import binomtest

    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        correct = int(rng.integers(0, n + 1))
        estimate, ci = wilson(correct, n), binomtest(correct, n).proportion_ci(0.95, method="wilsoncc")
        assert estimate.low == pytest.approx(ci.low, abs=1e-12) and estimate.high == pytest.approx(ci.high, abs=1e-12)


# --- Accuracy without labels ---------------------------------------------------------------------


def _outcomes(rng, confidence, concept_drop=0.0):
    """Right with probability confidence**1.5 (a model that is over-confident), less
    `concept_drop` when the concept moved."""
    return rng.random(len(confidence)) < np.clip(confidence ** 1.5 - concept_drop, 0, 1)


def test_the_label_free_estimate_covers_the_truth_under_covariate_shift():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(20):
        audit_confidence = rng.beta(8, 2, 600)
        audit_correct = _outcomes(rng, audit_confidence)
        # The inputs move: the model is less sure of the new ones, and less often right.
        window = rng.beta(6, 2.5, 20_000)
        truth = float(np.mean(window ** 1.5))
        estimate = accuracy.label_free_accuracy(calibration_confidence=audit_confidence,
                                                calibration_correct=audit_correct, confidence=window)
        covered += estimate["low"] <= truth <= estimate["high"]
        assert estimate["method"] == "cbpe_isotonic" and estimate["high"] - estimate["low"] < 0.15
    assert covered >= 18, "a 95% interval covers the truth in nearly every case"
    # The confidences moved far from where the model was right: the estimate follows.
    assert estimate["value"] < float(np.mean(audit_correct)) - 0.1


def test_a_concept_shift_is_reported_as_the_estimate_failing():
    rng = np.random.default_rng(12)
    old_confidence = rng.beta(8, 2, 600)
    calibration = {"calibration_confidence": old_confidence,
                   "calibration_correct": _outcomes(rng, old_confidence)}
    window = rng.beta(8, 2, 5_000)
    # Same confidences, but the model is now right far less often; the audit sees it.
    audited = window[:400]
    shifted = accuracy.label_free_accuracy(
        **calibration, confidence=window,
        audit=accuracy.accuracy(_outcomes(rng, audited, concept_drop=0.25).tolist(), [True] * 400))
    assert shifted["consistent_with_audit"] is False
    unchanged = accuracy.label_free_accuracy(
        **calibration, confidence=window,
        audit=accuracy.accuracy(_outcomes(rng, audited).tolist(), [True] * 400))
    assert unchanged["consistent_with_audit"] is True


def test_too_few_audit_labels_estimate_nothing():
    assert accuracy.label_free_accuracy(calibration_confidence=[0.9] * 10, calibration_correct=[True] * 10,
                                        confidence=[0.8]) is None
