"""How accurate a model really is in production, from the random audit sample: proportions
with Wilson intervals, and calibration. Plain Python over labels; no Django."""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    correct: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict:
        return {"accuracy": self.value, "low": self.low, "high": self.high, "correct": self.correct, "n": self.n}


# Written here rather than taken from SciPy (binomtest(k, n).proportion_ci(method="wilsoncc")
# gives the same bounds, to 1e-16 over 300 random cases): SciPy's call also computes the
# exact test's p-value, 150-350 us against 1.6 us here, and production accuracy asks for
# an interval per model version, label, predicted label, slice value and confidence bin on
# every stats and dashboard read. tests/flywheel/training/test_accuracy.py holds it to SciPy's.
def wilson(correct: int, n: int, z: float = Z_95) -> Estimate:
    """The Wilson score interval for a proportion, with continuity correction (Newcombe
    1998). Unlike the normal approximation it stays inside [0, 1] and holds up for small
    samples and proportions near 1, where production accuracy usually lives; the continuity
    correction keeps its coverage at or above the nominal 95% for every true accuracy,
    where the uncorrected interval oscillates around it and dips below (92-93% at some
    accuracies with 400 audit labels)."""
    if n == 0:
        return Estimate(0, 0, None, None, None)
    p = correct / n
    z2 = z * z
    low = 0.0 if correct == 0 else (
        2 * n * p + z2 - 1 - z * math.sqrt(z2 - 2 - 1 / n + 4 * p * (n * (1 - p) + 1))) / (2 * (n + z2))
    high = 1.0 if correct == n else (
        2 * n * p + z2 + 1 + z * math.sqrt(z2 + 2 - 1 / n + 4 * p * (n * (1 - p) - 1))) / (2 * (n + z2))
    return Estimate(correct, n, p, max(0.0, low), min(1.0, high))


def accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> Estimate:
    return wilson(sum(1 for p, t in zip(predicted, truth, strict=True) if p == t), len(truth))


def accuracy_by(keys: Sequence[Hashable], predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> dict:
    """Accuracy for each value of `keys` (a label, a slice value), each with its interval."""
    groups: dict = {}
    for key, p, t in zip(keys, predicted, truth, strict=True):
        hits, count = groups.get(key, (0, 0))
        groups[key] = (hits + (p == t), count + 1)
    ordered = sorted(groups.items(), key=lambda item: str(item[0]))
    return {key: wilson(hits, count).as_dict() for key, (hits, count) in ordered}


def calibration(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict:
    """Accuracy by confidence bin, and the expected calibration error: the bins' |accuracy -
    mean confidence| weighted by how many predictions fall in each."""
    n = len(confidence)
    table = []
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if low <= c < high or (b == bins - 1 and c == 1.0)]
        if not members:
            continue
        acc = sum(1 for i in members if correct[i]) / len(members)
        mean_confidence = sum(confidence[i] for i in members) / len(members)
        ece += len(members) / n * abs(acc - mean_confidence)
        table.append({"low": low, "high": high, "n": len(members), "accuracy": acc,
                      "confidence": mean_confidence, **_interval(members, correct)})
    return {"bins": table, "ece": ece if n else None, "n": n}


def _interval(members: list[int], correct: Sequence[bool]) -> dict:
    estimate = wilson(sum(1 for i in members if correct[i]), len(members))
    return {"accuracy_low": estimate.low, "accuracy_high": estimate.high}


# --- Accuracy without labels ---------------------------------------------------------------------

# Fewer audit labels than this calibrate nothing worth reporting.
MIN_CALIBRATION_LABELS = 30
BOOTSTRAP_FITS = 100
CBPE_METHOD = "cbpe_isotonic"


def label_free_accuracy(*, calibration_confidence: Sequence[float], calibration_correct: Sequence[bool],
                        confidence: Sequence[float], audit: Estimate | None = None, seed: int = 0) -> dict | None:
    """Accuracy estimated from the model's confidence alone (confidence-based performance
    estimation, as NannyML's CBPE): an isotonic map from confidence to the chance of being
    right, fitted on audit labels, averaged over the predictions to judge. It holds under
    covariate shift (inputs move, P(right | confidence) does not) and fails under concept
    shift, which it cannot see by itself: `audit`, the audit labels of the same
    predictions, can. The two disagreeing beyond their intervals is reported as
    consistent_with_audit = False.

    The interval is 95%: the calibration's uncertainty (a bootstrap of the audit labels,
    which are few) and the predictions' own Bernoulli noise, added in variance."""
    estimate = label_free_accuracy_groups(calibration_confidence=calibration_confidence,
                                          calibration_correct=calibration_correct,
                                          groups=[(confidence, [1] * len(confidence))], seed=seed)[0]
    if estimate is None:
        return None
    return {**estimate, "consistent_with_audit": bool(consistent_with_audit(estimate, audit) is not False)}


def consistent_with_audit(estimate: dict, audit: Estimate | None) -> bool | None:
    """Whether the label-free estimate and the audit estimate of the same predictions
    overlap in their intervals; None when there are no audit labels to tell."""
    if audit is None or not audit.n:
        return None
    return bool(audit.low <= estimate["high"] and estimate["low"] <= audit.high)


def label_free_accuracy_groups(*, calibration_confidence: Sequence[float], calibration_correct: Sequence[bool],
                               groups: Sequence[tuple[Sequence[float], Sequence[int]]],
                               seed: int = 0) -> list[dict | None]:
    """label_free_accuracy for many sets of predictions at once (a model version's hours
    or days), each given as confidences and how many predictions had each: one isotonic
    fit and one bootstrap of the audit labels serve every set, so a month of hours costs
    what one set does. None for a set without predictions, or for every set under
    MIN_CALIBRATION_LABELS audit labels."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    x = np.asarray(calibration_confidence, dtype=float)
    y = np.asarray(calibration_correct, dtype=float)
    if len(x) < MIN_CALIBRATION_LABELS:
        return [None] * len(groups)
    target = np.concatenate([np.asarray(c, dtype=float) for c, _ in groups]) if groups else np.empty(0)
    weight = np.concatenate([np.asarray(w, dtype=float) for _, w in groups]) if groups else np.empty(0)
    member = np.repeat(np.arange(len(groups)), [len(c) for c, _ in groups])
    n = np.bincount(member, weights=weight, minlength=len(groups))

    def fitted(xs, ys):
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(xs, ys)

    def means(chance):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(member, weights=weight * chance, minlength=len(groups)) / n

    chance = fitted(x, y).predict(target) if len(target) else target
    value = means(chance)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP_FITS):
        pick = rng.integers(0, len(x), len(x))
        draws.append(means(fitted(x[pick], y[pick]).predict(target) if len(target) else target))
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.bincount(member, weights=weight * chance * (1 - chance), minlength=len(groups)) / n ** 2
    variance = np.var(np.asarray(draws), axis=0, ddof=1) + noise
    out: list[dict | None] = []
    for i in range(len(groups)):
        if not n[i]:
            out.append(None)
            continue
        half = Z_95 * math.sqrt(float(variance[i]))
        out.append({"value": float(value[i]), "low": max(0.0, float(value[i]) - half),
                    "high": min(1.0, float(value[i]) + half), "method": CBPE_METHOD,
                    "calibration_labels": int(len(x)), "predictions": int(n[i])})
    return out
