"""Group labeling's arithmetic: the vectors tasks are compared by, the clustering that forms
groups, a group's split in two, and the nearest neighbours of one task. Plain functions over
numbers (scikit-learn underneath), no Django, so they are tested and benchmarked alone
(bench/grouping.py)."""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize


def embedding_vector(raw: bytes) -> np.ndarray:
    """An embedding as stored (little-endian float32 bytes), as a vector."""
    return np.frombuffer(bytes(raw), dtype="<f4").astype(np.float64)


def embedding_matrix(raws: Sequence[bytes]) -> np.ndarray:
    """Embeddings of one length, scaled to unit length: apps' embeddings are compared by
    direction (cosine), and on unit vectors Euclidean distance orders pairs the same way."""
    return normalize(np.vstack([embedding_vector(raw) for raw in raws]))


def feature_matrix(rows: Sequence[Mapping], schema: Sequence[Mapping]) -> np.ndarray:
    """Features as vectors: a numeric feature scaled to 0..1 by its declared range (else by
    the range seen in these rows), a missing one at the middle; a categorical feature one-hot.
    Each feature then weighs about as much as any other, whatever its unit."""
    columns: list[np.ndarray] = []
    for feature in schema:
        name = feature["name"]
        values = [row.get(name) for row in rows]
        if feature.get("type") == "categorical":
            categories = sorted({str(v) for v in values if v is not None})
            for category in categories:
                columns.append(np.array([1.0 if v is not None and str(v) == category else 0.0 for v in values]))
            continue
        numbers = np.array([float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan
                            for v in values])
        low, high = feature.get("min"), feature.get("max")
        if low is None or high is None:
            seen = numbers[~np.isnan(numbers)]
            low, high = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 1.0)
        span = (high - low) or 1.0
        columns.append(np.nan_to_num((numbers - low) / span, nan=0.5))
    if not columns:
        return np.zeros((len(rows), 1))
    return np.column_stack(columns)


@dataclass(frozen=True)
class FormedGroup:
    members: list[int]  # row indices, least typical first
    distances: list[float]  # each member's distance to the group's centre, same order


def groups_form(vectors: np.ndarray, *, min_size: int, max_size: int, target_size: int,
                predicted: Sequence | None = None) -> list[FormedGroup]:
    """Cut the rows into groups of similar content: Ward-linkage agglomerative clustering
    into about n / target_size clusters; a cluster larger than max_size is cut again the same
    way. With `predicted` (each row's label as the model predicted it), a cluster is then
    split by that label: members the model labels differently are ones the content alone
    did not tell apart, and on the digits they were most of what a person had to take out
    (docs/concepts.md: of the groups served first on queues of 150 to 600 digits, 53-93%
    of members were their group's majority before, 87-99% after; bench/grouping.py). A part
    smaller than min_size stays ungrouped."""
    n = len(vectors)
    if n < max(min_size, 2):
        return []
    clusters = _ward(vectors, np.arange(n), max(1, math.ceil(n / target_size)))
    formed = []
    pending = list(clusters)
    while pending:
        rows = pending.pop()
        if len(rows) > max_size:
            pending.extend(_ward(vectors, rows, math.ceil(len(rows) / max_size) + 1))
            continue
        for part in _by_prediction(rows, predicted):
            if len(part) >= min_size:
                formed.append(_ordered(vectors, part))
    return formed


def _by_prediction(rows: np.ndarray, predicted: Sequence | None) -> list[np.ndarray]:
    """The rows split by the model's label, in the order each label first appears (rows
    without a predicted label keep together)."""
    if predicted is None:
        return [rows]
    parts: dict = {}
    for row in rows:
        parts.setdefault(predicted[row], []).append(row)
    return [np.asarray(part, dtype=rows.dtype) for part in parts.values()]


def _ward(vectors: np.ndarray, rows: np.ndarray, clusters: int) -> list[np.ndarray]:
    clusters = min(clusters, len(rows))
    if clusters <= 1:
        return [rows]
    assignment = AgglomerativeClustering(n_clusters=clusters, linkage="ward").fit_predict(vectors[rows])
    return [rows[assignment == c] for c in range(clusters)]


def _ordered(vectors: np.ndarray, rows: np.ndarray) -> FormedGroup:
    """Members by distance to the centre, farthest (least typical) first, where a person
    looks first."""
    centre = vectors[rows].mean(axis=0)
    distances = np.linalg.norm(vectors[rows] - centre, axis=1)
    order = np.argsort(-distances, kind="stable")
    return FormedGroup(members=[int(rows[i]) for i in order], distances=[float(distances[i]) for i in order])


def split_in_two(vectors: np.ndarray) -> tuple[FormedGroup, FormedGroup] | None:
    """A group cut in two by content (Ward, two clusters); None when it cannot be (fewer
    than two members)."""
    if len(vectors) < 2:
        return None
    halves = _ward(vectors, np.arange(len(vectors)), 2)
    return _ordered(vectors, halves[0]), _ordered(vectors, halves[1])


def member_distances(vectors: np.ndarray) -> list[float]:
    """Each row's distance to the rows' centre (after members change)."""
    centre = vectors.mean(axis=0)
    return [float(d) for d in np.linalg.norm(vectors - centre, axis=1)]


def nearest(vectors: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k rows nearest to `query`, nearest first, with their distances."""
    if len(vectors) == 0:
        return []
    k = min(k, len(vectors))
    distances, indices = NearestNeighbors(n_neighbors=k).fit(vectors).kneighbors(query.reshape(1, -1))
    return [(int(i), float(d)) for i, d in zip(indices[0], distances[0], strict=True)]


def group_worth(priorities: Sequence[float]) -> float:
    """A group's worth, which decides which group is served first: its members' worths
    summed, each e^priority. Positive, so a larger group of the same tasks is worth more; a
    plain sum of priorities was not, once tasks an earlier champion routed had been demoted
    below zero (STALE_DEMOTION): on the digits the simulation's annotators were served the
    few small groups still above zero, 6.8 members on average with 20 asked for. Each
    demotion (1.0) cuts a member's worth to about a third, so fresh tasks still go first."""
    return float(np.exp(np.asarray(priorities, dtype=float)).sum())


def suggested_label(labels: Sequence[str]) -> str:
    """The label most members' model chose (ties: the first seen)."""
    return Counter(labels).most_common(1)[0][0]


def purity(groups: Sequence[Sequence[int]], truth: Sequence) -> float:
    """Share of grouped rows whose true label is their group's majority: the share a person
    labeling each group once, without excluding anyone, gets right."""
    grouped = sum(len(g) for g in groups)
    if not grouped:
        return float("nan")
    return sum(Counter(truth[i] for i in g).most_common(1)[0][1] for g in groups) / grouped
