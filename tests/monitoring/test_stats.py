"""monitoring.stats against SciPy's own tests and distances on the same data or bins."""

import math
import re

import numpy as np
import pytest
from scipy import spatial
from scipy import stats as scipy_stats

from monitoring import stats


@pytest.fixture
def rng():
    return np.random.default_rng(42)


# --- Grids -------------------------------------------------------------------------------------


def test_asinh_grid_bins_are_ordered_and_cover_everything(rng):
    grid = stats.AsinhGrid.from_sample(rng.normal(1000, 3, 2000))
    values = np.array([-1e300, -1e20, 990.0, 999.9, 1000.0, 1000.1, 1010.0, 1e20, 1e300, np.nan, np.inf, -np.inf])
    index = grid.index(values)
    assert index[-3] == stats.MISSING
    assert index[0] == index[-1] == stats.UNDERFLOW and index[-2] == index[8] == grid.size - 1
    finite = index[:9]
    assert np.all(np.diff(finite) >= 0), "bins follow the order of values"
    # A feature offset far from zero still gets fine bins around its values.
    assert len(set(grid.index(rng.normal(1000, 3, 5000)))) > 80


def test_asinh_grid_edges_agree_with_its_index(rng):
    grid = stats.AsinhGrid.from_sample(rng.lognormal(3, 1, 1000))
    edges = grid.edges()
    inside = (edges[:-1] + edges[1:]) / 2
    finite = np.isfinite(inside) & (np.abs(inside) < 1e15)
    assert np.array_equal(grid.index(inside[finite]), np.arange(2, 2 + grid.bins)[finite])


def test_asinh_grid_index_puts_every_value_where_stored_profiles_put_it(rng):
    # Profiles counted before the index was rewritten in place must keep their meaning:
    # the same bins as the plain expression, bit for bit, tails and missing values too.
    grid = stats.AsinhGrid.from_sample(rng.lognormal(0, 1, 1000))
    values = np.concatenate([rng.lognormal(0, 1, 100_000), rng.normal(0, 1e6, 1000), grid.edges(),
                             [np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        z = (values - grid.center) / grid.scale
        u = np.copysign(np.log(np.abs(z) + np.sqrt(z * z + 1)), z)
        position = np.floor((u + stats.ASINH_SPAN) * (grid.bins / (2 * stats.ASINH_SPAN)))
    expected = np.clip(np.where(np.isnan(values), 0, position), -1, grid.bins).astype(np.int64) + 2
    expected[np.isnan(values)] = stats.MISSING
    assert np.array_equal(grid.index(values), expected)


def test_a_degenerate_sample_still_makes_a_usable_grid():
    grid = stats.AsinhGrid.from_sample([0.0] * 10)
    assert grid.scale > 0
    assert len(set(grid.index(np.linspace(-1, 1, 500)))) > 50
    assert stats.AsinhGrid.from_sample([np.nan, None]) is None


def test_linear_grid_puts_the_top_of_the_range_in_the_last_bin():
    grid = stats.LinearGrid(0.0, 1.0, 1000)
    assert list(grid.index([0.0, 0.0005, 0.999, 1.0, 1.5, -0.1, np.nan])) == [2, 2, 1001, 1001, 1002, 1, 0]


def test_vocabulary_keeps_bins_and_sends_the_overflow_to_other():
    vocabulary = stats.Vocabulary(cap=2)
    vocabulary.learn(["b", "a", "b", None, "c"])
    assert vocabulary.categories == ["b", "a"]
    assert list(vocabulary.index(["a", "b", "c", None])) == [3, 2, stats.OTHER, stats.MISSING]


def test_sparse_histograms_add_up():
    a = np.array([0, 3, 0, 0, 7], dtype=np.int64)
    b = np.array([1, 0, 0, 2], dtype=np.int64)
    assert list(stats.sparse_sum([stats.sparse_encode(a), stats.sparse_encode(b)], 6)) == [1, 3, 0, 2, 7, 0]
    assert list(stats.sparse_sum([], 3)) == [0, 0, 0]


# --- Coarse bins -----------------------------------------------------------------------------------


def test_numeric_bins_are_the_reference_deciles(rng):
    sample = rng.normal(size=50_000)
    grid = stats.AsinhGrid.from_sample(sample[:1000])
    coarse = stats.numeric_bins(stats.histogram(grid.index(sample), grid.size), grid.edges(), 10)
    shares = coarse.merge(stats.histogram(grid.index(sample), grid.size)) / sample.size
    assert coarse.labels[0] == "missing" and coarse.labels[1].startswith("<") and coarse.labels[-1].startswith(">")
    assert shares[0] == shares[1] == shares[-1] == 0
    assert np.allclose(shares[2:-1], 0.1, atol=0.02)
    assert np.allclose(coarse.edges[1:-1], np.quantile(sample, np.arange(1, 10) / 10), atol=0.05)


def test_a_discrete_reference_gets_one_bin_per_value():
    values = np.repeat([1.0, 2.0, 3.0], [500, 300, 200])
    grid = stats.AsinhGrid.from_sample(values)
    coarse = stats.numeric_bins(stats.histogram(grid.index(values), grid.size), grid.edges(), 10)
    assert list(coarse.merge(stats.histogram(grid.index(values), grid.size))) == [0, 0, 500, 300, 200, 0]


def test_bins_of_whole_numbers_are_named_by_the_numbers_they_hold(rng):
    """Pixel values 0-16: bins read "0–1", "2", "15–16", not "-0.0183 to 1.95"."""
    values = rng.integers(0, 17, 5000).astype(float)
    grid = stats.AsinhGrid.from_sample(values)
    labels = stats.numeric_bins(stats.histogram(grid.index(values), grid.size), grid.edges(), 10).labels
    assert labels[1] == "< 0" and labels[-1] == "> 16"
    assert all(re.fullmatch(r"\d+(–\d+)?", label) for label in labels[2:-1]), labels
    held = [int(n) for label in labels[2:-1] for n in label.split("–")]
    assert held[0] == 0 and held[-1] == 16 and held == sorted(held)


def test_bins_of_measurements_are_rounded_alike_and_kept_apart(rng):
    values = rng.normal(5, 2, 5000)
    grid = stats.AsinhGrid.from_sample(values)
    labels = stats.numeric_bins(stats.histogram(grid.index(values), grid.size), grid.edges(), 10).labels
    edges = [label.split(" to ") for label in labels[2:-1]]
    assert all(re.fullmatch(r"-?\d+\.\d", edge) for pair in edges for edge in pair), labels
    assert all(float(a) < float(b) for a, b in edges), labels


def test_categorical_bins_keep_rare_and_unseen_apart():
    categories = ["a", "b", "c", "d"]
    reference = np.array([5, 0, 900, 95, 5, 0])  # missing, other, a, b, c, d
    coarse = stats.categorical_bins(reference, categories, size=7)
    assert coarse.labels == ["missing", "a", "b", "other (rare in reference)", "unseen"]
    current = np.array([1, 2, 10, 10, 10, 10, 10])
    assert list(coarse.merge(current)) == [1, 10, 10, 10, 22]


# --- Distances and tests against SciPy ----------------------------------------------------------------


def test_psi_is_the_symmetric_kl_divergence_of_the_smoothed_shares():
    reference = np.array([100, 250, 0, 400, 250])
    current = np.array([10, 30, 5, 30, 25])
    keep = (reference > 0) | (current > 0)
    q = (reference[keep] + 0.5) / (reference[keep].sum() + 0.5 * keep.sum())
    p = (current[keep] + 0.5) / (current[keep].sum() + 0.5 * keep.sum())
    expected = scipy_stats.entropy(p, q) + scipy_stats.entropy(q, p)
    assert stats.psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert stats.psi(reference, reference) == pytest.approx(0.0, abs=1e-15)


def test_js_distance_matches_scipy():
    reference = np.array([100, 250, 0, 400, 250])
    current = np.array([10, 30, 5, 30, 0])
    expected = spatial.distance.jensenshannon(reference / reference.sum(), current / current.sum(), base=2)
    assert stats.js_distance(reference, current) == pytest.approx(expected, rel=1e-12)
    assert stats.js_distance(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)


def test_chi2_matches_scipy_contingency():
    reference = np.array([120, 340, 0, 80, 60])
    current = np.array([15, 20, 0, 9, 30])
    statistic, dof, p = stats.chi2_homogeneity(reference, current)
    keep = (reference + current) > 0
    expected = scipy_stats.chi2_contingency(np.vstack([reference[keep], current[keep]]), correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert dof == expected.dof and p == pytest.approx(expected.pvalue, rel=1e-9)


def test_binned_ks_on_exact_values_equals_scipy(rng):
    reference = rng.integers(0, 40, 3000).astype(float)
    current = rng.integers(2, 42, 800).astype(float)
    grid = stats.AsinhGrid.from_sample(reference)
    d, p = stats.ks_binned(stats.histogram(grid.index(reference), grid.size),
                           stats.histogram(grid.index(current), grid.size))
    expected = scipy_stats.ks_2samp(reference, current, method="asymp")
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-6)


@pytest.mark.parametrize("effective_n", [3_000, 10_000, 40_000])
@pytest.mark.parametrize("z", [0.5, 1.0, 1.5, 2.0])
def test_ks_p_values_of_large_samples_agree_with_scipys_exact_distribution(effective_n, z):
    d = z / math.sqrt(effective_n)
    assert stats.ks_p_value(d, effective_n) == pytest.approx(scipy_stats.kstwo.sf(d, effective_n), rel=0.01)


@pytest.mark.parametrize("make", [
    lambda rng, n, shift: rng.normal(shift, 1, n),
    lambda rng, n, shift: rng.lognormal(shift, 0.8, n),
    lambda rng, n, shift: rng.exponential(1 + shift, n),
    lambda rng, n, shift: rng.uniform(shift, 10 + shift, n) * 1e6 + 3e9,
])
@pytest.mark.parametrize("n, shift", [(200, 0.0), (5_000, 0.1), (20_000, 0.5)])
def test_binned_ks_on_continuous_values_is_within_001_of_scipy_and_never_above(rng, make, n, shift):
    reference = make(rng, 20_000, 0.0)
    current = make(rng, n, shift)
    grid = stats.AsinhGrid.from_sample(reference[:1000])
    d, _ = stats.ks_binned(stats.histogram(grid.index(reference), grid.size),
                           stats.histogram(grid.index(current), grid.size))
    exact = scipy_stats.ks_2samp(reference, current).statistic
    assert exact - 0.01 <= d <= exact + 1e-12


def test_wasserstein_is_scipy_on_the_bins_divided_by_the_reference_spread(rng):
    reference = rng.normal(0, 2, 5000)
    current = rng.normal(1, 2, 2000)
    grid = stats.AsinhGrid.from_sample(reference)
    ref_h = stats.histogram(grid.index(reference), grid.size)
    cur_h = stats.histogram(grid.index(current), grid.size)
    positions = stats.bin_positions(grid.edges())
    used = (ref_h[1:] + cur_h[1:]) > 0
    expected = scipy_stats.wasserstein_distance(positions[used], positions[used], ref_h[1:][used], cur_h[1:][used])
    spread = math.sqrt(np.average((positions[used] - np.average(positions[used], weights=ref_h[1:][used])) ** 2,
                                  weights=ref_h[1:][used]))
    assert stats.wasserstein_binned(ref_h, cur_h, grid.edges()) == pytest.approx(expected / spread, rel=1e-9)
    # ...and close to the raw-data figure: a 0.5 sd shift moves the mass half a spread.
    assert stats.wasserstein_binned(ref_h, cur_h, grid.edges()) == pytest.approx(0.5, abs=0.06)


def test_benjamini_hochberg_matches_scipy(rng):
    p_values = np.concatenate([rng.uniform(size=20), [1e-6, 0.003, 0.02]])
    assert np.allclose(stats.benjamini_hochberg(p_values), scipy_stats.false_discovery_control(p_values))
    assert stats.benjamini_hochberg([]).size == 0


# --- Verdicts ------------------------------------------------------------------------------------------


def _compare(rng, n, shift, reference=None):
    reference = reference if reference is not None else rng.normal(size=50_000)
    grid = stats.AsinhGrid.from_sample(reference[:1000])
    return stats.compare_numeric("x", stats.histogram(grid.index(reference), grid.size),
                                 stats.histogram(grid.index(rng.normal(shift, 1, n)), grid.size), grid.edges())


def test_small_windows_need_a_large_shift(rng):
    noise = stats.judge([_compare(rng, 50, 0.0) for _ in range(40)])
    # Chance alone moves ~0.3 sd of mass at n = 50: the floor is there, not at 0.1.
    assert all(c.statistic == "wasserstein" and c.threshold > 0.3 for c in noise)
    assert not any(c.drifted for c in noise)
    assert all(c.drifted for c in stats.judge([_compare(rng, 50, 2.0)]))


def test_huge_windows_need_a_practical_shift(rng):
    (tiny,) = stats.judge([_compare(rng, 1_000_000, 0.02)])
    assert tiny.p_value < 1e-3, "the shift is real and the test sees it"
    assert tiny.threshold == 0.1 and tiny.value == pytest.approx(0.02, abs=0.005) and not tiny.drifted
    assert tiny.reason == "below_threshold"


@pytest.mark.parametrize("n", [10_000, 200_000])
def test_a_fifth_of_a_standard_deviation_drifts_in_big_windows_where_psi_misses_it(rng, n):
    (shifted,) = stats.judge([_compare(rng, n, 0.2)])
    assert shifted.drifted and shifted.statistic == "wasserstein"
    assert shifted.value == pytest.approx(0.2, abs=0.02) and shifted.threshold == 0.1
    assert shifted.psi < 0.1, "PSI grows with the square of a shift: about 0.04 here"
    (by_psi,) = stats.judge([_compare(rng, n, 0.2)], stats.JudgePolicy(numeric_statistic="psi"))
    assert by_psi.statistic == "psi" and not by_psi.drifted


@pytest.mark.parametrize("make", [
    lambda rng, n: rng.normal(size=n),
    lambda rng, n: rng.lognormal(0, 1, n),
    lambda rng, n: rng.poisson(3, n).astype(float),
    lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(2, 1, n)),
], ids=["normal", "lognormal", "poisson", "bimodal"])
@pytest.mark.parametrize("n", [50, 500, 5_000])
def test_the_wasserstein_floor_is_passed_by_chance_in_about_1_percent_of_windows(rng, make, n):
    reference = make(rng, 50_000)
    grid = stats.AsinhGrid.from_sample(reference[:1000])
    ref_h = stats.histogram(grid.index(reference), grid.size)
    floor = stats.wasserstein_noise_threshold(stats.wasserstein_null(ref_h, grid.edges()), 50_000, n)
    draws = np.array([stats.wasserstein_binned(ref_h, stats.histogram(grid.index(make(rng, n)), grid.size),
                                               grid.edges()) for _ in range(400)])
    # 400 windows: 1% is 4 of them; 3% would be far out (the floor errs high, not low).
    assert (draws > floor).mean() <= 0.03
    assert floor < 1.5 * np.quantile(draws, 0.99), "and it is not so high that real shifts pass unseen"


def test_the_wasserstein_floor_is_deterministic_and_shrinks_with_the_window(rng):
    reference = rng.normal(size=20_000)
    grid = stats.AsinhGrid.from_sample(reference[:1000])
    ref_h = stats.histogram(grid.index(reference), grid.size)
    null = stats.wasserstein_null(ref_h, grid.edges())
    assert np.array_equal(null, stats.wasserstein_null(ref_h, grid.edges()))
    floors = [stats.wasserstein_noise_threshold(null, 20_000, n) for n in (50, 500, 5_000)]
    assert floors[0] > floors[1] > floors[2]
    constant = np.zeros(10, dtype=np.int64)
    constant[5] = 100
    assert stats.wasserstein_null(constant, np.arange(8.0)) is None


def test_a_constant_reference_is_judged_by_psi(rng):
    reference = np.zeros(12, dtype=np.int64)
    reference[5] = 5000
    current = np.zeros(12, dtype=np.int64)
    current[5], current[7] = 300, 300
    (judged,) = stats.judge([stats.compare_numeric("x", reference, current, np.arange(10.0))])
    assert judged.statistic == "psi" and judged.drifted


def test_benjamini_hochberg_is_applied_across_the_fields_of_a_check(rng):
    comparisons = [_compare(rng, 500, 0.0) for _ in range(24)] + [_compare(rng, 500, 0.5)]
    judged = stats.judge(comparisons)
    assert [c.drifted for c in judged] == [False] * 24 + [True]
    raw = [c.p_value for c in judged]
    assert [c.p_value_adjusted for c in judged] == pytest.approx(list(scipy_stats.false_discovery_control(raw)))


def test_fields_without_data_are_reported_but_not_judged(rng):
    empty = stats.compare_numeric("x", np.zeros(5, dtype=np.int64), np.array([0, 0, 3, 4, 0]), np.arange(3.0))
    few = _compare(rng, 10, 5.0)
    judged = stats.judge([empty, few])
    assert [c.reason for c in judged] == ["not_in_reference", "too_few"]
    assert not any(c.drifted for c in judged)


def test_a_change_in_missing_values_is_drift(rng):
    reference = np.zeros(8, dtype=np.int64)
    reference[[2, 3, 4, 5]] = 2500
    current = reference // 10
    current[stats.MISSING] = 400
    comparison = stats.compare_numeric("x", reference, current, np.arange(6.0))
    (judged,) = stats.judge([comparison])
    assert judged.drifted and comparison.ks == pytest.approx(0.0)


# --- Joint drift ---------------------------------------------------------------------------------


def _joint(rng, n, correlation, features=6, shift=0.0):
    rows = rng.standard_normal((n, features))
    rows[:, 1] = correlation * rows[:, 0] + math.sqrt(1 - correlation ** 2) * rng.standard_normal(n)
    rows[:, 2] = np.exp(rows[:, 2]) + shift  # a skewed feature, shifted on demand
    return rows


NAMES = [f"f{i}" for i in range(6)]


def test_a_flipped_correlation_is_joint_drift_with_every_marginal_unchanged(rng):
    reference = _joint(rng, 4000, 0.8)
    result = stats.multivariate_pca(reference, _joint(rng, 2000, -0.8), NAMES)
    assert result.drifted and result.reason == "drifted"
    assert result.value > 1.1 and result.p_value < 1e-10 and result.components >= 1
    assert result.as_dict()["statistic"] == "pca_reconstruction_error"


def test_joint_drift_false_alarms_stay_near_alpha_and_ignore_marginal_shifts(rng):
    reference = _joint(rng, 4000, 0.8)
    unchanged = [stats.multivariate_pca(reference, _joint(rng, 2000, 0.8), NAMES) for _ in range(30)]
    assert sum(r.drifted for r in unchanged) <= 1  # alpha = 1%: 0.3 expected
    # The p-values of unchanged data are spread out, not piled near 0 (a biased test would be).
    assert np.median([r.p_value for r in unchanged]) > 0.2
    # A marginal shift is per-feature drift; the joint statistic sees only dependence.
    shifted = stats.multivariate_pca(reference, _joint(rng, 2000, 0.8, shift=3.0), NAMES)
    assert not shifted.drifted


def test_joint_drift_needs_enough_rows_and_features(rng):
    assert stats.multivariate_pca(_joint(rng, 4000, 0.8), _joint(rng, 50, -0.8), NAMES).reason == "too_few"
    one = stats.multivariate_pca(_joint(rng, 4000, 0.8)[:, :1], _joint(rng, 2000, 0.8)[:, :1], ["f0"])
    assert one.reason == "too_few_features" and one.value is None and not one.drifted
    # Missing values are filled with the reference's median, not dropped or fatal.
    current = _joint(rng, 2000, -0.8)
    current[::7, 3] = np.nan
    assert stats.multivariate_pca(_joint(rng, 4000, 0.8), current, NAMES).drifted
