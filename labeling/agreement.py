"""Inter-annotator agreement: Cohen's kappa for a pair, Krippendorff's alpha (nominal) for
a group. Plain Python over labels; no Django."""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations


# Written here rather than taken from scikit-learn (cohen_kappa_score gives the same value,
# to 1e-16 over 300 random cases): its input validation costs about 670 us a pair against
# 7 us here, and the stats page asks for every pair of annotators on each read (32
# annotators: 496 pairs, a third of a second). tests/labeling/test_agreement.py holds it to
# scikit-learn's.
def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Agreement of two annotators on the same items, corrected for chance:
    (p_observed - p_expected) / (1 - p_expected). None when chance agreement is certain
    (both used a single, identical label throughout), where kappa is undefined."""
    if len(first) != len(second):
        raise ValueError("Both annotators must label the same items.")
    n = len(first)
    if n == 0:
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / n
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(counts_first[label] * counts_second.get(label, 0) for label in counts_first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal labels: 1 - D_observed / D_expected, from the
    coincidence matrix of the values within each unit (an item and all labels given to
    it). Units with fewer than two labels carry no pairs and are left out. None when no
    disagreement is possible by chance (a single label in all pairable values)."""
    coincidences: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_k - 1) if c == k else n_c * n_k
                if pairs:
                    coincidences[(c, k)] += pairs / (m - 1)
    n_by_value: Counter = Counter()
    for (c, _), weight in coincidences.items():
        n_by_value[c] += weight
    n = sum(n_by_value.values())
    if n <= 1:
        return None
    disagreement_observed = sum(w for (c, k), w in coincidences.items() if c != k) / n
    disagreement_expected = sum(
        n_by_value[c] * n_by_value[k] for c, k in combinations(n_by_value, 2)
    ) * 2 / (n * (n - 1))
    if disagreement_expected == 0:
        return None
    return 1.0 - disagreement_observed / disagreement_expected


def alpha_per_label(units: Sequence[Sequence[Hashable]], labels: Sequence[Hashable]) -> dict:
    """Alpha of each label against all others (a one-vs-rest view of the same units):
    which labels annotators find hard to agree on."""
    return {
        label: krippendorff_alpha([[value == label for value in values] for values in units])
        for label in labels
    }


def pairwise_kappa(by_annotator: Mapping[Hashable, Mapping[Hashable, Hashable]], *,
                   min_items: int = 1) -> dict[tuple, dict]:
    """Cohen's kappa for every pair of annotators over the items both labeled.
    `by_annotator` is {annotator: {item: label}}."""
    out = {}
    for a, b in combinations(sorted(by_annotator, key=str), 2):
        common = sorted(by_annotator[a].keys() & by_annotator[b].keys(), key=str)
        if len(common) < min_items:
            continue
        kappa = cohen_kappa([by_annotator[a][i] for i in common], [by_annotator[b][i] for i in common])
        out[(a, b)] = {"kappa": kappa, "items": len(common)}
    return out
