"""The live comparison's estimator of the accuracy difference and the live gate's verdict."""

import numpy as np
import pytest

from flywheel.training.live import LiveGatePolicy, accuracy_difference, live_verdict

DISAGREE, ONLY_CHALLENGER, ONLY_CHAMPION = 0.08, 0.5, 0.35
TRUE_DIFFERENCE = DISAGREE * (ONLY_CHALLENGER - ONLY_CHAMPION)


def live_traffic(seed: int, *, paired=10_000, rate=0.3, labeled_share=0.8):
    """One stretch of live traffic: which predictions the two models disagree on, who was
    right there, which disagreements were drawn at `rate` and which of those got labeled."""
    rng = np.random.default_rng(seed)
    disagrees = rng.random(paired) < DISAGREE
    outcome = rng.choice([1, -1, 0], size=paired, p=[ONLY_CHALLENGER, ONLY_CHAMPION,
                                                     1 - ONLY_CHALLENGER - ONLY_CHAMPION])
    drawn = disagrees & (rng.random(paired) < rate)
    labeled = drawn & (rng.random(paired) < labeled_share)
    share = labeled.sum() / drawn.sum()
    return accuracy_difference(paired=paired, labeled=[(int(d), rate * share) for d in outcome[labeled]])


def test_the_interval_holds_the_true_difference_in_at_least_93_of_100_runs():
    runs = [live_traffic(seed) for seed in range(100)]
    covered = sum(r.low <= TRUE_DIFFERENCE <= r.high for r in runs)
    assert covered >= 93, covered
    # Unbiased: the estimates centre on the truth.
    assert np.mean([r.value for r in runs]) == pytest.approx(TRUE_DIFFERENCE, abs=0.002)
    assert all(0 < r.p_value <= 1 for r in runs)


def test_a_low_rate_still_covers_with_wider_intervals():
    narrow = [live_traffic(seed, rate=0.5) for seed in range(100, 200)]
    wide = [live_traffic(seed, rate=0.1) for seed in range(100, 200)]
    assert sum(r.low <= TRUE_DIFFERENCE <= r.high for r in wide) >= 93
    assert np.mean([r.high - r.low for r in wide]) > np.mean([r.high - r.low for r in narrow])


def test_nothing_labeled_estimates_nothing():
    empty = accuracy_difference(paired=1000, labeled=[])
    assert empty.value is None and empty.low is None and empty.labeled == 0


def test_the_estimate_weighs_each_label_by_its_inverse_probability():
    # 100 paired; two labeled disagreements drawn at 0.5: one the challenger won, one lost,
    # one more won drawn at 0.25.
    difference = accuracy_difference(paired=100, labeled=[(1, 0.5), (-1, 0.5), (1, 0.25)])
    assert difference.value == pytest.approx(4 / 100)
    assert difference.low < difference.value < difference.high


def slice_row(value):
    return {"key": "region", "value": "eu", "difference": {"value": value, "low": None, "high": None}}


def test_the_verdict_waits_for_labels_then_decides_either_way():
    policy = LiveGatePolicy(enabled=True, min_labels=100, min_improvement=0.0)
    few = accuracy_difference(paired=1000, labeled=[(1, 0.5)] * 50)
    assert live_verdict(difference=few, slices=[], policy=policy, slice_tolerance=0.02).verdict == "undecided"
    better = accuracy_difference(paired=5000, labeled=[(1, 0.5)] * 150 + [(-1, 0.5)] * 50)
    assert better.low > 0
    assert live_verdict(difference=better, slices=[], policy=policy, slice_tolerance=0.02).verdict == "better"
    held = live_verdict(difference=better, slices=[slice_row(-0.05)], policy=policy, slice_tolerance=0.02)
    assert held.verdict == "undecided" and "region=eu" in held.reasons[0]
    worse = accuracy_difference(paired=5000, labeled=[(-1, 0.5)] * 150 + [(1, 0.5)] * 50)
    assert live_verdict(difference=worse, slices=[], policy=policy, slice_tolerance=0.02).verdict == "worse"
    tied = accuracy_difference(paired=5000, labeled=[(-1, 0.5)] * 100 + [(1, 0.5)] * 100)
    assert live_verdict(difference=tied, slices=[], policy=policy, slice_tolerance=0.02).verdict == "undecided"
