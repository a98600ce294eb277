"""Group labeling's clustering on scikit-learn's digits (1,797 8x8 images, 64 pixels each,
used as the embedding): purity, coverage and time of the candidate methods and sizes; then,
on queues like the simulation's (a model trained on few digits predicts a few hundred),
the purity of the groups an annotator is served first, with and without splitting groups
by the model's label. Prints the figures docs/concepts.md (Group labeling) cites. Pure
computation, no database (about a minute):

    python bench/grouping.py
"""

import os
import sys

# Run as `python bench/grouping.py`, Python puts bench/ first on the path: put the repository
# there instead, so the project's packages import.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import math  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.cluster import AgglomerativeClustering, KMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from labeling import grouping  # noqa: E402


def _groups_of(assignment, min_size, max_size):
    groups = [np.flatnonzero(assignment == c) for c in np.unique(assignment)]
    return [g.tolist() for g in groups if min_size <= len(g) <= max_size]


def main() -> None:
    digits = load_digits()
    truth = digits.target
    vectors = grouping.embedding_matrix([np.asarray(row, dtype="<f4").tobytes() for row in digits.data])
    n = len(vectors)
    print(f"digits: {n} items, 64 features, unit-length embeddings; min_size 3, max_size 50")
    print(f"{'method':<28}{'target':>7}{'groups':>8}{'grouped':>9}{'purity':>8}{'seconds':>9}")

    def report(name, target, groups, seconds):
        grouped = sum(len(g) for g in groups)
        print(f"{name:<28}{target:>7}{len(groups):>8}{grouped / n:>9.1%}{grouping.purity(groups, truth):>8.1%}"
              f"{seconds:>9.2f}")

    for target in (5, 10, 20, 40):
        started = time.perf_counter()
        formed = grouping.groups_form(vectors, min_size=3, max_size=50, target_size=target)
        report("ward (groups_form)", target, [f.members for f in formed], time.perf_counter() - started)
        clusters = math.ceil(n / target)
        for name, model in [
            ("average linkage, cosine", AgglomerativeClustering(n_clusters=clusters, linkage="average",
                                                                metric="cosine")),
            ("k-means (k-means++)", KMeans(n_clusters=clusters, n_init=1, random_state=0)),
        ]:
            started = time.perf_counter()
            assignment = model.fit_predict(vectors)
            report(name, target, _groups_of(assignment, 3, 50), time.perf_counter() - started)
    # The same digits without an embedding: pixels as numeric features with their declared
    # range (0 to 16), the path a project without embeddings takes.
    schema = [{"name": f"p{i}", "type": "numeric", "min": 0, "max": 16} for i in range(64)]
    rows = [{f"p{i}": float(v) for i, v in enumerate(row)} for row in digits.data]
    started = time.perf_counter()
    features = grouping.feature_matrix(rows, schema)
    formed = grouping.groups_form(features, min_size=3, max_size=50, target_size=20)
    report("ward on scaled features", 20, [f.members for f in formed], time.perf_counter() - started)
    # What a person saves: one look per group instead of one per item.
    formed = grouping.groups_form(vectors, min_size=3, max_size=50, target_size=20)
    grouped = sum(len(f.members) for f in formed)
    print(f"default (ward, 20): {grouped} items in {len(formed)} groups, {grouped / len(formed):.1f} items a group")
    served_first(digits)


def served_first(digits, seeds: int = 8, seconds: float = 45.0) -> None:
    """What the annotator sees first on a queue: a model (logistic regression on the pixels
    scaled 0..1, as the service trains it) learns from `train` digits and predicts `queue`
    others (with pixel noise of sd `noise`, as after the simulation's shift); groups form on
    the pixels as range-scaled features, are served by their members' margin scores summed,
    and an annotator gets through `seconds` of them (4 s a group plus 0.4 s a member, the
    simulation's time model). Means over seeds. "caught": the share of the served groups'
    misfits (members that are not their group's majority) the workspace marks (farther from
    the centre than 1.25 times the group's median, labeling/serializers.py); "precise": the
    share of marked members that are misfits."""
    x, truth = digits.data, digits.target
    schema = [{"name": f"p{i}", "type": "numeric", "min": 0, "max": 16} for i in range(64)]
    print(f"\nserved first ({seconds:.0f} s of groups; means of {seeds} seeds; min_size 3, max_size 50)")
    print(f"{'train':>6}{'queue':>6}{'noise':>6}{'target':>7}  {'split by model':<15}{'grouped':>8}"
          f"{'all purity':>11}{'served purity':>14}{'items':>6}{'caught':>9}{'precise':>9}")
    for train, queue, noise in ((60, 150, 0.0), (100, 400, 0.0), (150, 600, 2.0)):
        for target in (10, 20):
            for split in (False, True):
                figures, marks = [], []
                for seed in range(seeds):
                    rng = np.random.default_rng(seed)
                    order = rng.permutation(len(x))
                    learned, queued = order[:train], order[train:train + queue]
                    model = LogisticRegression(max_iter=2000).fit(x[learned] / 16, truth[learned])
                    pixels = np.clip(x[queued] + rng.normal(0, noise, (queue, 64)), 0, 16) if noise else x[queued]
                    probabilities = model.predict_proba(pixels / 16)
                    top_two = np.sort(probabilities, axis=1)[:, -2:]
                    priority = 1 - (top_two[:, 1] - top_two[:, 0])  # the margin score uncertainty routing uses
                    predicted = model.classes_[probabilities.argmax(axis=1)].tolist()
                    features = grouping.feature_matrix(
                        [{f"p{i}": float(v) for i, v in enumerate(row)} for row in pixels], schema)
                    formed = grouping.groups_form(features, min_size=3, max_size=50, target_size=target,
                                                  predicted=predicted if split else None)
                    formed = sorted(formed, key=lambda f: -priority[f.members].sum())
                    groups = [f.members for f in formed]
                    served, spent = [], 0.0
                    for group in formed:
                        spent += 4.0 + 0.4 * len(group.members)
                        if spent > seconds:
                            break
                        served.append(group)
                    figures.append((sum(map(len, groups)) / queue, grouping.purity(groups, truth[queued]),
                                    grouping.purity([f.members for f in served], truth[queued]),
                                    sum(len(f.members) for f in served)))
                    marks.append(_marked_misfits(served, truth[queued]))
                grouped, purity, served_purity, items = np.mean(figures, axis=0)
                misfits, marked, both = np.sum(marks, axis=0)
                caught, precise = both / max(misfits, 1), both / max(marked, 1)
                print(f"{train:>6}{queue:>6}{noise:>6.0f}{target:>7}  {'yes' if split else 'no':<15}{grouped:>8.1%}"
                      f"{purity:>11.1%}{served_purity:>14.1%}{items:>6.1f}{caught:>9.0%}{precise:>9.0%}")


def _marked_misfits(groups, truth) -> tuple[int, int, int]:
    """Misfits, marked members, and marked misfits in `groups` (FormedGroup)."""
    misfits = marked = both = 0
    for group in groups:
        majority = Counter(truth[i] for i in group.members).most_common(1)[0][0]
        median = float(np.median(group.distances))
        for member, distance in zip(group.members, group.distances, strict=True):
            misfit, mark = truth[member] != majority, distance > 1.25 * median > 0
            misfits, marked, both = misfits + misfit, marked + mark, both + (misfit and mark)
    return misfits, marked, both


if __name__ == "__main__":
    main()
