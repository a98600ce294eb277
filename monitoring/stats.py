"""Drift statistics over binned distributions: the fine grids values are counted on, the
coarse bins a reference implies, the distances and tests between two histograms, and the
verdict that needs both a practical effect and significance. Pure NumPy/SciPy, no Django.

How a feature is judged (docs/concepts.md, "How drift is judged"):

- Values are counted on a fine grid that never changes for a project (about a thousand
  bins per numeric feature, one per category), hour by hour, so any window is a sum.
- The reference decides the bins a check uses: its deciles (plus a bin below and above
  everything it saw, and one for missing values), or its categories (plus "unseen").
  Both histograms are merged from the fine grid into those bins, so changing the
  reference needs no rebuild.
- The effect size of a numeric field is the Wasserstein distance in standard deviations
  of the reference (0.1 by default: a tenth of a spread), which grows in proportion to a
  shift; PSI on those bins grows with its square, so a 0.2 sd shift has PSI ~0.04 and
  passes unseen under PSI's usual 0.1. Categories (and, by policy, numeric fields too)
  use PSI. Either threshold is the practical one or, when larger, what chance alone
  reaches in 1% of windows of this size against a reference of this size: PSI is about
  (1/n + 1/m) times a chi-squared variable with k - 1 degrees of freedom when nothing
  changed; sqrt(nm / (n + m)) times the Wasserstein distance tends to the integral of a
  Brownian bridge's absolute value along the reference's CDF, simulated once per check.
  Small windows thus need a large shift; huge windows still need a practical one.
- Significance is a two-sample test (Kolmogorov-Smirnov on the fine grid for numeric
  features, chi-squared for categories), with Benjamini-Hochberg across the features of
  the check.
- A feature drifts when both hold.
"""

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

# --- Fine grids ----------------------------------------------------------------------------------

# Fine bin layout shared by every grid: 0 holds missing values; numeric grids then have an
# underflow bin, their interior bins and an overflow bin; categorical ones an "other" bin
# (categories past the vocabulary's cap) and then one bin per category.
MISSING = 0
UNDERFLOW = 1
OTHER = 1
FIRST_CATEGORY = 2

# Numeric features: 2,048 bins uniform in asinh((x - center) / scale). Near the center the
# bins are linear (a hundredth of a standard deviation wide); further out they widen in
# proportion to the distance (about 2.8% of it), out to 1e12 scales. Whatever a feature's
# unit, offset or tail, the bins stay fine where its values are, without knowing its range.
ASINH_BINS = 2048
ASINH_SPAN = math.asinh(1e12)
MAX_CATEGORIES = 1000


class AsinhGrid:
    kind = "asinh"

    def __init__(self, center: float, scale: float, bins: int = ASINH_BINS):
        if not (math.isfinite(center) and math.isfinite(scale) and scale > 0 and bins > 0):
            raise ValueError(f"Invalid grid: center={center}, scale={scale}, bins={bins}")
        self.center = float(center)
        self.scale = float(scale)
        self.bins = int(bins)  # stored with the grid: profiles counted on it keep their meaning
        self.size = self.bins + 3

    @classmethod
    def from_sample(cls, values) -> "AsinhGrid | None":
        """The grid for a feature from a sample of its values: centered on the median and
        scaled by a quarter of the interquartile range (falling back to the standard
        deviation, then to a thousandth of the magnitude). A scale too small costs nothing
        (the bins widen logarithmically); one too large would lump values together, so the
        estimate errs small."""
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return None
        center = float(np.median(x))
        q25, q75 = np.percentile(x, [25, 75])
        scale = float(q75 - q25) / 4
        if not scale > 0:
            scale = float(np.std(x)) / 4
        if not scale > 0:
            scale = max(abs(center), 1.0) * 1e-3
        # Differences below float resolution at this magnitude carry no information.
        scale = max(scale, abs(center) * 1e-12, 1e-300)
        return cls(center, scale)

    def index(self, values) -> np.ndarray:
        x = np.asarray(values, dtype=float)
        missing = np.isnan(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            z = x - self.center
            z /= self.scale
            # asinh through log and sqrt: twice as fast as np.arcsinh, and exact enough
            # for bins 0.028 wide (z*z overflowing to inf lands in the overflow bin).
            # In place, in two buffers: a window of a million values spent a third of its
            # time allocating temporaries (bench/drift.py, the raw-array figure).
            u = np.abs(z)
            w = np.multiply(u, u)
            w += 1
            np.sqrt(w, out=w)
            w += u
            np.log(w, out=w)
            np.copysign(w, z, out=w)
            w += ASINH_SPAN
            w *= self.bins / (2 * ASINH_SPAN)
            np.floor(w, out=w)
        w[missing] = 0
        np.clip(w, -1, self.bins, out=w)
        out = w.astype(np.int64)
        out += 2
        out[missing] = MISSING
        return out

    def edges(self) -> np.ndarray:
        """The bins + 1 interior edges, in the feature's unit."""
        return self.center + self.scale * np.sinh(np.linspace(-ASINH_SPAN, ASINH_SPAN, self.bins + 1))

    def as_dict(self) -> dict:
        return {"grid": self.kind, "center": self.center, "scale": self.scale, "bins": self.bins}


class LinearGrid:
    """Equal bins over a known range: the model's confidence, in [0, 1]."""

    kind = "linear"

    def __init__(self, low: float = 0.0, high: float = 1.0, bins: int = 1000):
        if not (high > low and bins > 0):
            raise ValueError("Invalid linear grid")
        self.low, self.high, self.bins = float(low), float(high), int(bins)
        self.size = self.bins + 3

    def index(self, values) -> np.ndarray:
        x = np.asarray(values, dtype=float)
        missing = np.isnan(x)
        with np.errstate(invalid="ignore"):
            position = np.floor((x - self.low) / (self.high - self.low) * self.bins)
        # The top of the range belongs to the last bin, not to the overflow.
        position = np.where(x == self.high, self.bins - 1, position)
        position = np.clip(np.where(missing, 0, position), -1, self.bins)
        out = position.astype(np.int64) + 2
        out[missing] = MISSING
        return out

    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)

    def as_dict(self) -> dict:
        return {"grid": self.kind, "low": self.low, "high": self.high, "bins": self.bins}


def grid_from_dict(data: dict) -> AsinhGrid | LinearGrid:
    if data["grid"] == AsinhGrid.kind:
        return AsinhGrid(data["center"], data["scale"], data.get("bins", ASINH_BINS))
    if data["grid"] == LinearGrid.kind:
        return LinearGrid(data["low"], data["high"], data["bins"])
    raise ValueError(f"Unknown grid {data['grid']!r}")


class Vocabulary:
    """Categories in the order they were first seen; a category keeps its bin forever, so
    histograms counted at different times add up. Past MAX_CATEGORIES, new ones share
    the "other" bin (an id-like feature has no distribution worth tracking)."""

    def __init__(self, categories: Sequence[str] = (), cap: int = MAX_CATEGORIES):
        self.categories = list(categories)
        self.cap = cap
        self._positions = {c: i for i, c in enumerate(self.categories)}

    @property
    def size(self) -> int:
        return FIRST_CATEGORY + len(self.categories)

    def learn(self, values) -> bool:
        """Add the categories not seen before (up to the cap); True if any were added."""
        added = False
        for value in dict.fromkeys(v for v in values if v is not None):
            if value not in self._positions and len(self.categories) < self.cap:
                self._positions[value] = len(self.categories)
                self.categories.append(value)
                added = True
        return added

    def index(self, values) -> np.ndarray:
        lookup = {category: FIRST_CATEGORY + i for category, i in self._positions.items()}
        lookup[None] = MISSING
        # map() calls dict.get in C, with no Python frame per value: a third faster than a
        # generator over a million values.
        return np.fromiter(map(lookup.get, values, repeat(OTHER)), dtype=np.int64, count=len(values))


def histogram(indices: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(indices, minlength=size).astype(np.int64)


# --- Sparse storage of fine histograms ------------------------------------------------------------

SPARSE_DTYPE = np.dtype([("bin", "<u2"), ("count", "<u4")])


def sparse_encode(counts: np.ndarray) -> bytes:
    nonzero = np.flatnonzero(counts)
    out = np.empty(nonzero.size, dtype=SPARSE_DTYPE)
    out["bin"] = nonzero
    out["count"] = counts[nonzero]
    return out.tobytes()


def sparse_sum(blobs: Sequence[bytes], size: int = 0) -> np.ndarray:
    """The dense sum of sparse histograms: one decode and one bincount for all of them."""
    if not blobs:
        return np.zeros(size, dtype=np.int64)
    pairs = np.frombuffer(b"".join(blobs), dtype=SPARSE_DTYPE)
    if pairs.size == 0:
        return np.zeros(size, dtype=np.int64)
    dense = np.bincount(pairs["bin"], weights=pairs["count"], minlength=size)
    return np.rint(dense).astype(np.int64)


def padded(counts: np.ndarray, size: int) -> np.ndarray:
    if len(counts) >= size:
        return counts
    return np.concatenate([counts, np.zeros(size - len(counts), dtype=counts.dtype)])


# --- Coarse bins implied by a reference -----------------------------------------------------------


@dataclass(frozen=True)
class CoarseBins:
    """How fine bins merge into the bins a check compares: `mapping[fine] = coarse`."""

    mapping: np.ndarray
    labels: list[str]
    # Numeric bins: the coarse edges in the feature's unit (len(labels) - 2 + 1 of them,
    # for the bins between "below" and "above"); None for categories.
    edges: list[float] | None = None

    def merge(self, fine: np.ndarray) -> np.ndarray:
        fine = padded(fine, len(self.mapping))
        return np.bincount(self.mapping, weights=fine[:len(self.mapping)], minlength=len(self.labels)).astype(np.int64)


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "-inf" if value < 0 else "inf"
    return f"{value:.3g}"


def numeric_bins(reference: np.ndarray, edges: np.ndarray, quantiles: int = 10) -> CoarseBins:
    """Bins at the reference's quantiles (snapped to fine edges), one below and one above
    everything the reference saw, and one for missing values. `edges` are the grid's
    interior edges (bins + 1 of them)."""
    size = len(reference)
    values = reference.astype(np.int64).copy()
    values[MISSING] = 0
    present = np.flatnonzero(values)
    mapping = np.zeros(size, dtype=np.intp)
    if present.size == 0:
        mapping[1:] = 1
        return CoarseBins(mapping, ["missing", "all values"], [])
    first, last = int(present[0]), int(present[-1])
    cumulative = np.cumsum(values[first:last + 1])
    targets = cumulative[-1] * np.arange(1, quantiles) / quantiles
    # Each quantile falls inside some fine bin: cut at whichever of its two edges is nearer.
    inside = np.searchsorted(cumulative, targets, side="left")
    before = np.where(inside > 0, cumulative[np.maximum(inside - 1, 0)], 0)
    after_is_nearer = cumulative[inside] - targets <= targets - before
    cuts = inside + first + after_is_nearer.astype(np.int64)
    # A group starts at a bin the reference has values in: no group is empty by construction.
    cuts = np.unique(present[np.minimum(np.searchsorted(present, cuts), present.size - 1)])
    starts = [first, *[int(c) for c in cuts if first < c <= last]]
    groups = len(starts)
    mapping[1:first] = 1  # below the reference
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < groups else last + 1
        mapping[start:end] = 2 + number
    mapping[last + 1:] = 2 + groups  # above the reference

    def lower(fine: int) -> float:
        return -math.inf if fine <= UNDERFLOW else float(edges[fine - 2])

    def upper(fine: int) -> float:
        return math.inf if fine >= size - 1 else float(edges[fine - 1])

    coarse_edges = [lower(start) for start in starts] + [upper(last)]
    whole = all(math.isfinite(e) for e in coarse_edges) and _whole_numbers(present, edges, size)
    labels = ["missing", *(_integer_labels(coarse_edges) if whole else _range_labels(coarse_edges))]
    return CoarseBins(mapping, labels, coarse_edges)


def _whole_numbers(present: np.ndarray, edges: np.ndarray, size: int) -> bool:
    """Whether the reference looks like whole numbers (pixel values, counts): every fine bin
    it fills is narrower than 1 and holds an integer. Values with fractions would also fill
    narrow bins that hold none."""
    interior = [int(i) for i in present if UNDERFLOW < i < size - 1]
    if not interior:
        return False
    for fine in interior:
        low, high = float(edges[fine - 2]), float(edges[fine - 1])
        if high - low >= 1 or math.ceil(low) >= high:
            return False
    return True


def _integer_labels(coarse_edges: list[float]) -> list[str]:
    """Bins of whole numbers named by the numbers they hold: "< 0", "0-1", "2", "> 16"."""
    whole = [(math.ceil(low), math.ceil(high) - 1) for low, high in zip(coarse_edges, coarse_edges[1:], strict=False)]
    labels = [f"< {_plain(whole[0][0])}"]
    labels += [_plain(first) if first == last else f"{_plain(first)}–{_plain(last)}" for first, last in whole]
    labels.append(f"> {_plain(whole[-1][1])}")
    return labels


def _range_labels(coarse_edges: list[float]) -> list[str]:
    """Bins named by their edges, all rounded to the fewest decimals that keep them apart:
    "4.5 to 5.0" instead of "4.52 to 4.98", "0 to 2" instead of "-0.0183 to 1.95"."""
    finite = [e for e in coarse_edges if math.isfinite(e)]
    decimals = 0
    for decimals in range(-6, 12):  # noqa: B007 - the first that keeps every edge apart is kept
        rounded = [round(e, decimals) for e in finite]
        if all(a < b for a, b in zip(rounded, rounded[1:], strict=False)):
            break

    def text(value: float) -> str:
        if not math.isfinite(value):
            return _number(value)
        return _plain(round(value, decimals), max(decimals, 0))

    labels = [f"< {text(coarse_edges[0])}"]
    labels += [f"{text(a)} to {text(b)}" for a, b in zip(coarse_edges, coarse_edges[1:], strict=False)]
    labels.append(f"> {text(coarse_edges[-1])}")
    return labels


def _plain(value: float, decimals: int = 0) -> str:
    """A number as people write it: thousands separated, no "-0"."""
    if value == 0:
        value = 0.0
    return f"{value:,.{decimals}f}"


def categorical_bins(reference: np.ndarray, categories: Sequence[str], size: int,
                     min_share: float = 0.01, max_bins: int = 50) -> CoarseBins:
    """One bin per category with at least `min_share` of the reference (the largest
    `max_bins`), one for the reference's rarer categories, one for categories the
    reference never saw ("unseen"), and one for missing values. `size` covers the window's
    vocabulary, which may have grown since the reference was counted."""
    counts = padded(reference.astype(np.int64), size).copy()
    counts[MISSING] = 0
    total = counts.sum()
    mapping = np.zeros(size, dtype=np.intp)
    labels = ["missing"]
    seen = np.flatnonzero(counts)
    own = [int(i) for i in seen[np.argsort(-counts[seen], kind="stable")]
           if i >= FIRST_CATEGORY and counts[i] >= min_share * total][:max_bins]
    for i in own:
        mapping[i] = len(labels)
        labels.append(categories[i - FIRST_CATEGORY])
    rare = [int(i) for i in seen if int(i) not in set(own)]
    if rare:
        mapping[rare] = len(labels)
        labels.append("other (rare in reference)")
    unseen = [i for i in range(1, size) if counts[i] == 0]
    mapping[unseen] = len(labels)
    labels.append("unseen")
    return CoarseBins(mapping, labels)


# --- Distances and tests --------------------------------------------------------------------------

PSI_PSEUDOCOUNT = 0.5


def _nonempty(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (reference > 0) | (current > 0)
    return reference[keep].astype(float), current[keep].astype(float)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index, sum (p - q) ln(p / q), with half a count added to
    every bin either side has values in (a bin empty on one side would make it infinite)."""
    r, c = _nonempty(reference, current)
    if r.size < 2:
        return 0.0
    q = (r + PSI_PSEUDOCOUNT) / (r.sum() + PSI_PSEUDOCOUNT * r.size)
    p = (c + PSI_PSEUDOCOUNT) / (c.sum() + PSI_PSEUDOCOUNT * c.size)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between the two histograms."""
    r, c = _nonempty(reference, current)
    if r.size == 0 or r.sum() == 0 or c.sum() == 0:
        return 0.0
    return float(jensenshannon(r / r.sum(), c / c.sum(), base=2))


def chi2_homogeneity(reference: np.ndarray, current: np.ndarray) -> tuple[float, int, float]:
    """Pearson's chi-squared test that two histograms come from one distribution (the 2 x k
    contingency table, no continuity correction); returns (statistic, dof, p-value)."""
    r, c = _nonempty(reference, current)
    if r.size < 2 or r.sum() == 0 or c.sum() == 0:
        return 0.0, 0, 1.0
    result = scipy_stats.chi2_contingency(np.vstack([r, c]), correction=False)
    return float(result.statistic), int(result.dof), float(result.pvalue)


def ks_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov on ordered bins: the largest gap between the two
    empirical CDFs at the bin edges, and its p-value from the distribution SciPy's ks_2samp
    uses for large samples. Missing values (bin 0) are left out. On the fine grid the
    statistic is within 0.01 of the exact one, and never above it, so the p-value errs on
    the side of no alarm."""
    r = reference[1:].astype(np.int64)
    c = current[1:].astype(np.int64)
    m, n = int(r.sum()), int(c.sum())
    if m == 0 or n == 0:
        return 0.0, 1.0
    gap = np.abs(np.cumsum(r) / m - np.cumsum(c) / n)
    d = float(gap.max())
    return d, ks_p_value(d, m * n / (m + n))


# SciPy's exact Kolmogorov distribution takes up to seconds per call for large samples;
# past this effective size, the limiting distribution with Stephens' correction agrees
# with it to a fraction of a percent.
KS_EXACT_UP_TO = 2_000


def ks_p_value(d: float, effective_n: float) -> float:
    """Two-sided p-value of a two-sample KS statistic `d` with effective size n*m/(n+m)."""
    if effective_n <= KS_EXACT_UP_TO:
        return float(np.clip(scipy_stats.kstwo.sf(d, max(round(effective_n), 1)), 0.0, 1.0))
    root = math.sqrt(effective_n)
    return float(np.clip(scipy_stats.kstwobign.sf((root + 0.12 + 0.11 / root) * d), 0.0, 1.0))


def bin_positions(edges: np.ndarray) -> np.ndarray:
    """A point for each value bin (underflow, interior, overflow): interior midpoints and
    the outer edges for the two open bins."""
    mids = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([[edges[0]], mids, [edges[-1]]])


def wasserstein_binned(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> float | None:
    """Wasserstein-1 distance between the binned distributions (mass at each bin's point),
    divided by the reference's standard deviation: how far, in reference spreads, the
    mass had to move. None when the reference does not vary."""
    r = reference[1:].astype(float)
    c = current[1:].astype(float)
    if r.sum() == 0 or c.sum() == 0:
        return None
    positions = bin_positions(edges)
    used = np.flatnonzero((r > 0) | (c > 0))
    lo, hi = used[0], used[-1]
    r, c, positions = r[lo:hi + 1], c[lo:hi + 1], positions[lo:hi + 1]
    q = r / r.sum()
    distance = float(scipy_stats.wasserstein_distance(positions, positions, u_weights=r, v_weights=c))
    mean = float(np.sum(q * positions))
    spread = float(math.sqrt(max(0.0, np.sum(q * (positions - mean) ** 2))))
    if spread == 0:
        return 0.0 if distance == 0 else None
    return distance / spread


# The chance level of the normalized Wasserstein distance comes from its limit under no
# change: sqrt(n m / (n + m)) W -> integral of |B(F(x))| dx, B a Brownian bridge, F the
# reference CDF. Simulated on at most this many groups of the reference's bins, this
# many times, with a fixed seed so one check gives one threshold.
WASSERSTEIN_NULL_GROUPS = 500
WASSERSTEIN_NULL_REPLICATES = 1000
WASSERSTEIN_NULL_SEED = 20260


@functools.cache
def _standard_normals() -> np.ndarray:
    # Drawn once: the seed is fixed, so every call would draw the same numbers anyway.
    rng = np.random.default_rng(WASSERSTEIN_NULL_SEED)
    return rng.standard_normal((WASSERSTEIN_NULL_REPLICATES, WASSERSTEIN_NULL_GROUPS + 1), dtype=np.float32)


def wasserstein_null(reference: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """Draws of the limit of sqrt(n m / (n + m)) times the normalized Wasserstein distance
    between two samples of the reference's distribution (missing values left out). Its
    quantile times sqrt(1/n + 1/m) is what chance alone reaches for sizes n and m: the
    shape of the distribution (tails, gaps, discreteness) is in it, the sizes are not.
    None when the reference does not vary."""
    r = reference[1:].astype(float)
    if r.sum() == 0:
        return None
    positions = bin_positions(edges)
    used = np.flatnonzero(r > 0)
    lo, hi = used[0], used[-1]
    r, positions = r[lo:hi + 1], positions[lo:hi + 1]
    q = r / r.sum()
    mean = float(np.sum(q * positions))
    spread = float(math.sqrt(max(0.0, np.sum(q * (positions - mean) ** 2))))
    if spread == 0 or r.size < 2:
        return None
    cdf = np.cumsum(q)[:-1]  # at the gaps between consecutive bins; the last is 1
    gaps = np.diff(positions) / spread
    # Group consecutive gaps by the reference's quantiles: the bridge barely moves within
    # a group, and the simulation's cost stays fixed however fine the grid.
    group = np.minimum((cdf * WASSERSTEIN_NULL_GROUPS).astype(np.intp), WASSERSTEIN_NULL_GROUPS - 1)
    widths = np.bincount(group, weights=gaps, minlength=WASSERSTEIN_NULL_GROUPS)
    at = np.bincount(group, weights=cdf * gaps, minlength=WASSERSTEIN_NULL_GROUPS)
    keep = widths > 0
    widths, at = widths[keep], at[keep] / widths[keep]  # a group's CDF, weighted by its width
    steps = np.diff(np.concatenate([[0.0], at, [1.0]]))
    scale = np.sqrt(np.maximum(steps, 0.0)).astype(np.float32)
    walk = np.cumsum(scale * _standard_normals()[:, :steps.size], axis=1)
    bridge = walk[:, :-1] - at.astype(np.float32) * walk[:, -1:]
    return (np.abs(bridge) @ widths.astype(np.float32)).astype(float)


def wasserstein_noise_threshold(null: np.ndarray | None, reference_count: int, current_count: int,
                                quantile: float = 0.99) -> float:
    """The normalized Wasserstein distance two samples of the reference's distribution
    exceed only with probability 1 - quantile, for these sample sizes."""
    if null is None or reference_count == 0 or current_count == 0:
        return math.inf
    return float(np.quantile(null, quantile) * math.sqrt(1 / reference_count + 1 / current_count))


def share_test(reference_hits: int, reference_total: int, current_hits: int, current_total: int) -> float:
    """p-value of the chi-squared test that a share (e.g. of missing values) is the same."""
    if reference_total == 0 or current_total == 0 or reference_hits + current_hits == 0:
        return 1.0
    reference = np.array([reference_hits, reference_total - reference_hits])
    current = np.array([current_hits, current_total - current_hits])
    return chi2_homogeneity(reference, current)[2]


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: reject those <= q to keep the expected share
    of false discoveries among the rejections at q."""
    p = np.asarray(p_values, dtype=float)
    return p if p.size == 0 else scipy_stats.false_discovery_control(p, method="bh")


def psi_noise_threshold(reference_count: int, current_count: int, bins: int, quantile: float = 0.99) -> float:
    """The PSI that two samples of one distribution exceed only with probability
    1 - quantile, for these sample sizes: PSI ~ (1/n + 1/m) * chi2(k - 1) under no change."""
    if bins < 2 or reference_count == 0 or current_count == 0:
        return math.inf
    return float(scipy_stats.chi2.ppf(quantile, bins - 1) * (1 / reference_count + 1 / current_count))


# --- Comparing one field and judging a check -------------------------------------------------------


@dataclass
class Comparison:
    """One field (feature, predicted label or confidence) of a window against the reference."""

    name: str
    type: str  # numeric | categorical
    count: int
    reference_count: int
    labels: list[str]
    reference_hist: list[int]
    current_hist: list[int]
    psi: float
    js: float
    chi2: float
    chi2_p: float
    test: str  # which test gives p_value: ks | chi2
    p_value: float
    ks: float | None = None
    ks_p: float | None = None
    wasserstein: float | None = None
    bins: int = 0  # coarse bins with values on either side
    # Numeric fields: draws of the Wasserstein distance's limit under no change.
    wasserstein_null: np.ndarray | None = field(default=None, repr=False)
    # Filled by judge(): the effect size the verdict used (wasserstein or psi) and its value.
    statistic: str = "psi"
    value: float | None = None
    threshold: float | None = None
    p_value_adjusted: float | None = None
    drifted: bool = False
    reason: str = ""
    extra: dict = field(default_factory=dict)
    # Numeric fields: the coarse bins' edges (CoarseBins.edges), so a bin can be told apart
    # again from a raw value (the regions drift routing sends to the queue).
    edges: list[float] | None = None


def compare_numeric(name: str, reference: np.ndarray, current: np.ndarray, edges: np.ndarray,
                    quantiles: int = 10, type_: str = "numeric") -> Comparison:
    size = max(len(reference), len(current))
    reference, current = padded(reference, size), padded(current, size)
    coarse = numeric_bins(reference, edges, quantiles)
    ref_c, cur_c = coarse.merge(reference), coarse.merge(current)
    chi2, _, chi2_p = chi2_homogeneity(ref_c, cur_c)
    d, ks_p = ks_binned(reference, current)
    p_value = ks_p
    m, n = int(reference.sum()), int(current.sum())
    if reference[MISSING] or current[MISSING]:
        # A change in how often the value is missing is drift too: the smaller of the two
        # p-values, Bonferroni-corrected for having looked twice.
        p_value = min(1.0, 2 * min(ks_p, share_test(int(reference[MISSING]), m, int(current[MISSING]), n)))
    missing = {"reference_missing": int(reference[MISSING]), "current_missing": int(current[MISSING])}
    return Comparison(
        name=name, type=type_, count=n, reference_count=m, labels=coarse.labels,
        reference_hist=ref_c.tolist(), current_hist=cur_c.tolist(), psi=psi(ref_c, cur_c),
        js=js_distance(ref_c, cur_c), chi2=chi2, chi2_p=chi2_p, test="ks", p_value=p_value, ks=d, ks_p=ks_p,
        wasserstein=wasserstein_binned(reference, current, edges), bins=int(((ref_c > 0) | (cur_c > 0)).sum()),
        wasserstein_null=wasserstein_null(reference, edges), edges=coarse.edges,
        extra=missing if reference[MISSING] or current[MISSING] else {},
    )


def compare_categorical(name: str, reference: np.ndarray, current: np.ndarray, categories: Sequence[str],
                        type_: str = "categorical") -> Comparison:
    size = max(len(reference), len(current), FIRST_CATEGORY + len(categories))
    reference, current = padded(reference, size), padded(current, size)
    coarse = categorical_bins(reference, categories, size)
    ref_c, cur_c = coarse.merge(reference), coarse.merge(current)
    chi2, _, chi2_p = chi2_homogeneity(ref_c, cur_c)
    return Comparison(
        name=name, type=type_, count=int(current.sum()), reference_count=int(reference.sum()), labels=coarse.labels,
        reference_hist=ref_c.tolist(), current_hist=cur_c.tolist(), psi=psi(ref_c, cur_c),
        js=js_distance(ref_c, cur_c), chi2=chi2, chi2_p=chi2_p, test="chi2", p_value=chi2_p,
        bins=int(((ref_c > 0) | (cur_c > 0)).sum()),
    )


WASSERSTEIN, PSI = "wasserstein", "psi"


@dataclass(frozen=True)
class JudgePolicy:
    # The effect size numeric fields are judged by: the Wasserstein distance in reference
    # standard deviations (grows in proportion to a shift), or PSI (grows with its square).
    numeric_statistic: str = WASSERSTEIN
    wasserstein_threshold: float = 0.1
    psi_threshold: float = 0.1
    fdr: float = 0.05
    noise_quantile: float = 0.99
    min_count: int = 30


def _effect(comparison: Comparison, policy: JudgePolicy) -> tuple[str, float, float]:
    """(statistic, value, threshold) of the effect a field is judged by: the practical
    threshold, or, when larger, what chance alone reaches in 1% of windows this size."""
    m, n = comparison.reference_count, comparison.count
    if (comparison.type == "numeric" and policy.numeric_statistic == WASSERSTEIN
            and comparison.wasserstein is not None and comparison.wasserstein_null is not None):
        floor = wasserstein_noise_threshold(comparison.wasserstein_null, m, n, policy.noise_quantile)
        return WASSERSTEIN, comparison.wasserstein, max(policy.wasserstein_threshold, floor)
    # Categories, a reference that does not vary, or the policy's choice.
    floor = psi_noise_threshold(m, n, comparison.bins, policy.noise_quantile)
    return PSI, comparison.psi, max(policy.psi_threshold, floor)


def _missing_shifted(comparison: Comparison, policy: JudgePolicy) -> bool:
    """Whether the share of missing values moved by a practical amount: the Wasserstein
    distance sees only the values present, so a field that goes missing half the time is
    caught here (PSI over missing / present, against the PSI threshold and its floor)."""
    reference_missing = comparison.extra.get("reference_missing", 0)
    current_missing = comparison.extra.get("current_missing", 0)
    if not (reference_missing or current_missing):
        return False
    r = np.array([reference_missing, comparison.reference_count - reference_missing])
    c = np.array([current_missing, comparison.count - current_missing])
    floor = psi_noise_threshold(comparison.reference_count, comparison.count, 2, policy.noise_quantile)
    return psi(r, c) > max(policy.psi_threshold, floor)


def judge(comparisons: Sequence[Comparison], policy: JudgePolicy = JudgePolicy()) -> list[Comparison]:
    """Fill each comparison's effect size, threshold, adjusted p-value and verdict. A field
    drifts when its effect size passes max(practical threshold, chance level for these
    sizes) and its test is significant after Benjamini-Hochberg across the fields judged
    together."""
    judged = []
    for comparison in comparisons:
        if comparison.reference_count == 0:
            comparison.reason = "not_in_reference"
        elif comparison.count < policy.min_count:
            comparison.reason = "too_few"
        else:
            judged.append(comparison)
        if comparison.count and comparison.reference_count:
            comparison.statistic, comparison.value, comparison.threshold = _effect(comparison, policy)
        else:
            comparison.statistic = WASSERSTEIN if (comparison.type == "numeric"
                                                   and policy.numeric_statistic == WASSERSTEIN) else PSI
            comparison.value = comparison.wasserstein if comparison.statistic == WASSERSTEIN else comparison.psi
            comparison.threshold = None
        comparison.drifted = False
    adjusted = benjamini_hochberg([c.p_value for c in judged])
    for comparison, p_adjusted in zip(judged, adjusted, strict=True):
        comparison.p_value_adjusted = float(p_adjusted)
        large = comparison.value > comparison.threshold
        if not large and comparison.statistic == WASSERSTEIN and _missing_shifted(comparison, policy):
            large = True
            comparison.extra["missing_shifted"] = True
        significant = p_adjusted <= policy.fdr
        comparison.drifted = bool(large and significant)
        comparison.reason = "drifted" if comparison.drifted else (
            "not_significant" if large else "below_threshold")
    return list(comparisons)


# --- Multivariate drift ----------------------------------------------------------------------------

# Why PCA reconstruction error and not a domain classifier: on the same samples both find a
# correlation that flips, but the classifier needs cross-validated fits (seconds where
# this takes tens of milliseconds, measured in bench/drift.py) and gives no per-row score
# without a model to keep; the reconstruction error is one fit, one number per row, and
# rank-testable against held-out reference rows. docs/concepts.md, "Joint drift".
PCA_VARIANCE = 0.65  # share of the reference's variance the kept components explain
MULTIVARIATE_STATISTIC = "pca_reconstruction_error"


@dataclass
class Multivariate:
    """One joint statistic over the numeric features of a check."""

    statistic: str
    value: float | None  # mean reconstruction error of the window over the reference's
    threshold: float  # |value - 1| a change must reach
    p_value: float | None
    drifted: bool
    reason: str
    features: list[str]
    reference_rows: int
    current_rows: int
    components: int = 0
    # Per current row: its reconstruction error over the reference's median (not stored).
    row_scores: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {"name": "multivariate", "type": "multivariate", "statistic": self.statistic,
                "value": self.value, "threshold": self.threshold, "p_value": self.p_value,
                "drifted": self.drifted, "reason": self.reason, "features": self.features,
                "reference_rows": self.reference_rows, "current_rows": self.current_rows,
                "components": self.components}


def multivariate_pca(reference: np.ndarray, current: np.ndarray, features: Sequence[str], *,
                     threshold: float = 0.1, alpha: float = 0.01, min_rows: int = 200,
                     seed: int = 0) -> Multivariate:
    """Joint drift of numeric features, rows x features, missing values as NaN.

    Each sample's features are mapped to normal scores through that sample's own quantiles
    (tails, units and marginal shifts drop out: only how features move together is left,
    the copula); PCA on
    half the reference keeps the components that explain PCA_VARIANCE of its variance;
    each row's error is its squared distance from its reconstruction. The window drifts
    when its mean error differs from the other half of the reference's by more than
    `threshold` (relative) and a Mann-Whitney test of the two sets of errors is significant
    at `alpha`: the held-out half was never fitted, so under no change the two are samples
    of one distribution and false alarms stay at `alpha`."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import QuantileTransformer

    features = list(features)
    out = Multivariate(MULTIVARIATE_STATISTIC, None, threshold, None, False, "too_few", features,
                       len(reference), len(current))
    if len(features) < 2:
        out.reason = "too_few_features"
        return out
    if len(reference) < 2 * min_rows or len(current) < min_rows:
        return out
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reference))
    fit, held_out = reference[order[: len(order) // 2]], reference[order[len(order) // 2:]]
    medians = np.nanmedian(fit, axis=0)
    varying = np.isfinite(medians) & (np.nanstd(fit, axis=0) > 0)
    if varying.sum() < 2:
        out.reason = "too_few_features"
        return out

    def filled(rows: np.ndarray) -> np.ndarray:
        rows = rows[:, varying]
        return np.where(np.isnan(rows), medians[varying], rows)

    def normal_scores(rows: np.ndarray) -> np.ndarray:
        # Each sample through its own quantiles: every marginal becomes N(0, 1) whatever it
        # was, so a shifted feature (judged on its own above) does not count twice here
        # and only how the features move together is left.
        rows = filled(rows)
        return QuantileTransformer(n_quantiles=min(200, len(rows)), output_distribution="normal",
                                   subsample=len(rows), random_state=seed).fit_transform(rows)

    pca = PCA(n_components=PCA_VARIANCE, svd_solver="covariance_eigh").fit(normal_scores(fit))

    def errors(rows: np.ndarray) -> np.ndarray:
        z = normal_scores(rows)
        return np.sum((z - pca.inverse_transform(pca.transform(z))) ** 2, axis=1)

    reference_errors, current_errors = errors(held_out), errors(current)
    base = float(np.mean(reference_errors))
    out.components = int(pca.n_components_)
    out.features = [name for name, keep in zip(features, varying, strict=True) if keep]
    out.value = float(np.mean(current_errors) / base) if base > 0 else None
    out.p_value = float(scipy_stats.mannwhitneyu(current_errors, reference_errors).pvalue)
    large = out.value is not None and abs(out.value - 1) > threshold
    significant = out.p_value <= alpha
    out.drifted = bool(large and significant)
    out.reason = "drifted" if out.drifted else ("not_significant" if large else "below_threshold")
    median = float(np.median(reference_errors))
    out.row_scores = current_errors / median if median > 0 else None
    return out


# Routing the multivariate outliers while a joint-drift alert is open (on_drift.route_drifted):
# a row is an outlier when its reconstruction error passes what this share of the reference's
# own rows stay under, so about 1% of unchanged traffic qualifies and far more of traffic
# whose features stopped moving together as they did.
OUTLIER_LEVEL = 0.99
# Quantiles kept per feature to map a single row to normal scores: enough for the tails
# that matter at the 99th percentile, small enough to travel with an alert.
OUTLIER_QUANTILES = 101
# Normal scores are clipped as scikit-learn's QuantileTransformer clips them.
_OUTLIER_CLIP = 1e-7


def outlier_model(reference: np.ndarray, features: Sequence[str], *, level: float = OUTLIER_LEVEL,
                  min_rows: int = 200, seed: int = 0) -> dict | None:
    """What it takes to tell, one row at a time, a row that does not fit how the
    reference's numeric features move together (rows x features, missing values as NaN):
    per feature the median (for missing values) and quantiles of half the reference, which
    map a row to normal scores; the PCA kept on that half (PCA_VARIANCE, as the joint drift
    test); and the reconstruction error that a share `level` of the other half stays
    under. Unlike multivariate_pca, which puts each sample through its own quantiles to
    test a whole window, a single row can only be put through the reference's. Plain
    lists, to be stored as JSON; None when there is too little to fit."""
    from sklearn.decomposition import PCA

    features = list(features)
    if len(features) < 2 or len(reference) < 2 * min_rows:
        return None
    order = np.random.default_rng(seed).permutation(len(reference))
    fit, held_out = reference[order[: len(order) // 2]], reference[order[len(order) // 2:]]
    medians = np.nanmedian(fit, axis=0)
    varying = np.isfinite(medians) & (np.nanstd(fit, axis=0) > 0)
    if varying.sum() < 2:
        return None
    fit = fit[:, varying]
    fit = np.where(np.isnan(fit), medians[varying], fit)
    model = {"features": [name for name, keep in zip(features, varying, strict=True) if keep],
             "medians": medians[varying].tolist(),
             "quantiles": np.quantile(fit, np.linspace(0, 1, OUTLIER_QUANTILES), axis=0).T.tolist(),
             "level": level}
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="covariance_eigh").fit(_outlier_scores(model, fit))
    model["mean"], model["components"] = pca.mean_.tolist(), pca.components_.tolist()
    model["threshold"] = float(np.quantile(outlier_errors(model, held_out[:, varying]), level))
    return model


def _outlier_scores(model: dict, rows: np.ndarray) -> np.ndarray:
    quantiles = np.asarray(model["quantiles"], dtype=float)
    levels = np.linspace(0, 1, quantiles.shape[1])
    shares = np.column_stack([np.interp(rows[:, j], quantiles[j], levels) for j in range(quantiles.shape[0])])
    return scipy_stats.norm.ppf(np.clip(shares, _OUTLIER_CLIP, 1 - _OUTLIER_CLIP))


def outlier_errors(model: dict, rows: np.ndarray) -> np.ndarray:
    """Each row's reconstruction error against the reference (outlier_model); rows carry
    the model's features in its order, missing values as NaN (taken as the median)."""
    rows = np.asarray(rows, dtype=float).reshape(-1, len(model["features"]))
    rows = np.where(np.isnan(rows), np.asarray(model["medians"], dtype=float), rows)
    centered = _outlier_scores(model, rows) - np.asarray(model["mean"], dtype=float)
    components = np.asarray(model["components"], dtype=float)
    residual = centered - (centered @ components.T) @ components
    return np.sum(residual ** 2, axis=1)


def outliers(model: dict, rows: np.ndarray) -> np.ndarray:
    """Which rows are multivariate outliers of the reference (outlier_model)."""
    return outlier_errors(model, rows) > model["threshold"]


def grown_regions(*, name: str, type_: str, bins: Sequence[str], reference: Sequence[int], current: Sequence[int],
                  edges: Sequence[float | None] | None, top: int = 2) -> list[dict]:
    """Where a drifted field's window has more than its reference: the `top` bins whose
    share rose most (and at least half as much as the largest rise), as ranges of a
    numeric field ({"feature", "low", "high"}, None meaning unbounded, low inclusive) or
    categories of a categorical one ({"feature", "categories"}). The missing, rare and
    unseen bins are not regions a value can be matched to, so they are left out."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0 or len(ref) != len(cur):
        return []
    rise = cur / cur.sum() - ref / ref.sum()
    rise[MISSING] = 0.0
    if type_ == "categorical":
        rise[-1] = 0.0  # unseen
        rise[[i for i, label in enumerate(bins) if label.startswith("other (")]] = 0.0
    order = [int(i) for i in np.argsort(-rise, kind="stable") if rise[i] > 0]
    if not order:
        return []
    chosen = [i for i in order[:top] if rise[i] >= rise[order[0]] / 2]
    if type_ == "categorical":
        return [{"feature": name, "categories": [bins[i] for i in chosen]}]
    if not edges:
        return []
    bounds = [None, *edges, None]  # bin 1 is below the first edge, the last above the last
    regions = []
    for i in sorted(chosen):
        low, high = bounds[i - 1], bounds[i]
        regions.append({"feature": name,
                        "low": None if low is None or not math.isfinite(low) else float(low),
                        "high": None if high is None or not math.isfinite(high) else float(high)})
    return regions
