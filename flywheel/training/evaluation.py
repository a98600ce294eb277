"""Model metrics on an evaluation set, and the gate a candidate must pass to replace the
champion. Pure Python and NumPy/SciPy; no Django."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from common.policy import Policy
from flywheel.training.accuracy import calibration


def metrics(truth: Sequence[str], predicted: Sequence[str], confidence: Sequence[float] | None = None,
            slices: Mapping[str, Sequence[str]] | None = None, min_slice_size: int = 1) -> dict:
    """Accuracy, macro F1, recall per label and (with confidences) the expected calibration
    error; the same per value of each slice that has at least `min_slice_size` rows."""
    out = _core(truth, predicted)
    if confidence is not None:
        out["ece"] = calibration(list(confidence), [t == p for t, p in zip(truth, predicted, strict=True)])["ece"]
    out["slices"] = {}
    for key, values in (slices or {}).items():
        groups: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            groups.setdefault(str(value), []).append(i)
        out["slices"][key] = {
            value: _core([truth[i] for i in rows], [predicted[i] for i in rows])
            for value, rows in sorted(groups.items()) if len(rows) >= min_slice_size
        }
    return out


def _core(truth: Sequence[str], predicted: Sequence[str]) -> dict:
    n = len(truth)
    if n == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "recall": {}}
    labels = sorted(set(truth) | set(predicted))
    f1 = f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    recalls = recall_score(truth, predicted, labels=labels, average=None, zero_division=0)
    present = set(truth)
    return {"n": n, "accuracy": float(accuracy_score(truth, predicted)), "macro_f1": float(f1),
            "recall": {label: float(r) for label, r in zip(labels, recalls, strict=True) if label in present}}


def majority_baseline(train_labels: Sequence[str], eval_size: int) -> list[str]:
    """What always answering the most frequent training label would predict."""
    label = Counter(train_labels).most_common(1)[0][0] if train_labels else ""
    return [label] * eval_size


@dataclass(frozen=True)
class GatePolicy(Policy):
    primary_metric: str = "macro_f1"  # or "accuracy"
    # The candidate must beat the champion by at least this much on the primary metric...
    min_improvement: float = 0.005
    # ...and significantly so (McNemar's exact test on the rows where they disagree).
    require_significance: bool = True
    significance_level: float = 0.05
    # On no declared slice may it fall further behind the champion than this.
    slice_tolerance: float = 0.02
    # Slices with fewer evaluation rows are too noisy to judge.
    min_slice_size: int = 30



@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]


def mcnemar_p(truth: Sequence[str], candidate: Sequence[str], champion: Sequence[str]) -> float:
    """One-sided p-value that the candidate is right more often than the champion, from the
    rows where exactly one of them is right."""
    only_candidate = sum(1 for t, c, h in zip(truth, candidate, champion, strict=True) if c == t and h != t)
    only_champion = sum(1 for t, c, h in zip(truth, candidate, champion, strict=True) if h == t and c != t)
    discordant = only_candidate + only_champion
    if discordant == 0:
        return 1.0
    return float(binomtest(only_candidate, discordant, 0.5, alternative="greater").pvalue)


def gate(*, truth: Sequence[str], candidate: Sequence[str], champion: Sequence[str] | None,
         baseline: Sequence[str], slices: Mapping[str, Sequence[str]], policy: GatePolicy) -> GateDecision:
    """Whether the candidate is truly better: it beats the majority-class baseline, beats the
    champion by the margin (significantly, if the policy asks), and falls behind it on no
    declared slice by more than the tolerance. Every check adds a reason, passed or not."""
    key = policy.primary_metric
    reasons, passed = [], True
    cand = metrics(truth, candidate, slices=slices, min_slice_size=policy.min_slice_size)
    base = _core(truth, baseline)
    if not truth:
        return GateDecision(False, ["the evaluation set is empty"])
    if cand[key] > base[key]:
        reasons.append(f"beats the majority-class baseline on {key}: {cand[key]:.4f} > {base[key]:.4f}")
    else:
        passed = False
        reasons.append(f"does not beat the majority-class baseline on {key}: {cand[key]:.4f} <= {base[key]:.4f}")
    if champion is None:
        reasons.append("no champion to compare with")
        return GateDecision(passed, reasons)
    champ = metrics(truth, champion, slices=slices, min_slice_size=policy.min_slice_size)
    gain = cand[key] - champ[key]
    if gain >= policy.min_improvement:
        reasons.append(f"beats the champion on {key} by {gain:+.4f} (margin {policy.min_improvement})")
    else:
        passed = False
        reasons.append(f"does not beat the champion on {key} by the margin: {gain:+.4f} < {policy.min_improvement}")
    if policy.require_significance:
        p = mcnemar_p(truth, candidate, champion)
        if p < policy.significance_level:
            reasons.append(f"the improvement is significant (McNemar p = {p:.3g})")
        else:
            passed = False
            reasons.append(f"the difference is not significant (McNemar p = {p:.3g} >= {policy.significance_level})")
    for slice_key, values in cand["slices"].items():
        for value, slice_metrics in values.items():
            other = champ["slices"].get(slice_key, {}).get(value)
            if other is None or other[key] is None:
                continue
            drop = other[key] - slice_metrics[key]
            if drop > policy.slice_tolerance:
                passed = False
                reasons.append(f"falls behind the champion on {slice_key}={value} by {drop:.4f} "
                               f"(tolerance {policy.slice_tolerance})")
    if passed:
        reasons.append("no declared slice falls behind by more than the tolerance")
    return GateDecision(passed, reasons)
