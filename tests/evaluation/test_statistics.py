"""Known answers for the benchmark intervals (synthbrain.evaluation.statistics): the AUC against
scikit-learn, the bootstrap against scipy where the two-level bootstrap reduces to one level, and
hand-built matrices whose right interval is obvious (constant, a clear paired shift, none)."""

import warnings
from dataclasses import astuple

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from synthbrain.evaluation.statistics import auc, bootstrap_auc, bootstrap_difference, bootstrap_mean

# Dice-like scores of 24 subjects: most near 1, a few failures, so the bootstrap distribution of
# the mean is skewed and a percentile interval differs from a symmetric (normal) one.
SKEWED = np.array(
    [0.97, 0.99, 0.95, 0.98, 0.15, 0.96, 0.99, 0.93, 0.97, 0.35, 0.98, 0.94]
    + [0.99, 0.96, 0.97, 0.91, 0.98, 0.99, 0.95, 0.55, 0.96, 0.97, 0.98, 0.92]
)


def _scipy_percentile(x, level=0.95, resamples=20000):
    result = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile", random_state=1)
    return result.confidence_interval


# ---- auc ---------------------------------------------------------------------------------------


def test_auc_equals_sklearn_with_and_without_ties():
    rng = np.random.default_rng(0)
    truth = np.array([0, 1] * 10)
    for scores in (rng.normal(size=20), np.round(rng.normal(size=20), 0), np.repeat([0.1, 0.5, 0.5, 0.9], 5)):
        assert auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0  # perfect separation
    assert auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0  # reversed
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: ties count half
    assert auc([0, 0, 1], [0.3, 0.7, 0.5]) == pytest.approx(0.5)  # by hand: 1 of 2 pairs ordered
    assert auc([0, 1, 1], [0.6, 0.5, 0.9]) == pytest.approx(0.5)  # one negative: 1 of 2 pairs ordered
    assert auc([0, 0, 1], [1, 3, 2]) == pytest.approx(0.5)  # integer scores


def test_auc_broadcasts_truth_over_rows_and_is_nan_with_one_class():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 15)
    truth[:2] = [0, 1]
    scores = np.round(rng.normal(size=(4, 15)), 1)
    np.testing.assert_allclose(auc(truth, scores), [roc_auc_score(truth, row) for row in scores], atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one class: NaN, quietly (no division warnings)
        both = auc(np.stack([np.zeros(4), [0, 1, 0, 1]]), np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]))
        assert np.isnan(both[0]) and both[1] == 0.75
        assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


# ---- bootstrap_mean ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_one_seed_is_scipys_percentile_bootstrap_over_subjects(level):
    """With one seed the two-level bootstrap is the ordinary percentile bootstrap of the subjects'
    mean: its interval agrees with scipy's within Monte-Carlo error (a small fraction of the
    standard error with 20000 resamples each), and it is skewed as the data are."""
    se = SKEWED.std(ddof=1) / np.sqrt(len(SKEWED))
    ours = bootstrap_mean(SKEWED[None], resamples=20000, level=level)
    ref = _scipy_percentile(SKEWED, level)
    assert ours.value == pytest.approx(SKEWED.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.1 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.1 * se)
    if level == 0.95:  # skewed to the failures, unlike mean ± z·se (which is 0.2 se away from scipy's ends here)
        assert ours.value - ours.low > 1.15 * (ours.high - ours.value)
    assert np.isnan(ours.p)  # a p-value only for differences


def test_one_subject_is_scipys_percentile_bootstrap_over_seeds():
    """With one subject, the same over seeds (the other level)."""
    per_seed = SKEWED[:12]
    se = per_seed.std(ddof=1) / np.sqrt(len(per_seed))
    ours = bootstrap_mean(per_seed[:, None], resamples=20000)
    ref = _scipy_percentile(per_seed)
    assert ours.low == pytest.approx(ref.low, abs=0.1 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.1 * se)


def test_both_levels_contribute_to_the_interval():
    """values[s, n] = seed effect + subject effect: the interval is wider than either level alone
    (each alone is the matrix with the other effect removed)."""
    seeds, subjects = np.array([-0.05, 0.0, 0.05]), np.linspace(-0.2, 0.2, 20)
    both = bootstrap_mean(0.5 + seeds[:, None] + subjects[None], resamples=4000)
    only_seeds = bootstrap_mean(0.5 + seeds[:, None] + 0 * subjects[None], resamples=4000)
    only_subjects = bootstrap_mean(0.5 + 0 * seeds[:, None] + subjects[None], resamples=4000)
    width = {k: e.high - e.low for k, e in (("both", both), ("seeds", only_seeds), ("subjects", only_subjects))}
    assert width["seeds"] > 0.02 and width["subjects"] > 0.05
    assert width["both"] > 1.05 * max(width["seeds"], width["subjects"])
    # independent levels: variances add (bootstrap variance ~ plug-in variance / size at each level)
    expected = 2 * 1.96 * np.sqrt(seeds.var() / 3 + subjects.var() / 20)
    assert width["both"] == pytest.approx(expected, rel=0.15)


def test_constant_matrix_gives_a_zero_width_interval():
    estimate = bootstrap_mean(np.full((3, 7), 0.8))
    assert estimate.value == estimate.low == estimate.high == pytest.approx(0.8)


def test_intervals_stay_inside_the_range_of_the_values():
    """Three seeds, Dice near 1: a t-interval over the seed means leaves [0, 1]; the bootstrap
    interval is a range of means of the values, so it cannot."""
    values = np.array([[1.0, 1.0, 0.98, 1.0], [0.55, 0.6, 0.5, 0.62], [1.0, 0.99, 1.0, 1.0]])
    seed_means = values.mean(1)
    t_high = seed_means.mean() + stats.t.ppf(0.975, 2) * seed_means.std(ddof=1) / np.sqrt(3)
    assert t_high > 1  # the interval the old benchmark reported
    for level in (0.95, 0.99):
        estimate = bootstrap_mean(values, level=level)
        assert values.min() <= estimate.low <= estimate.value <= estimate.high <= values.max() <= 1


def test_nans_are_ignored():
    values = np.array([[0.2, np.nan, 0.4], [0.3, 0.5, np.nan]])
    estimate = bootstrap_mean(values)
    assert estimate.value == pytest.approx(np.mean([0.2, 0.4, 0.3, 0.5]))
    assert 0.2 <= estimate.low <= estimate.high <= 0.5
    assert bootstrap_mean([[0.2, None, 0.4]]).value == pytest.approx(0.3)  # None (a missing value in a table) is NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resamples with no value at all are dropped quietly
        assert astuple(bootstrap_mean([[0.2, np.nan]]))[:3] == (0.2, 0.2, 0.2)
    with pytest.warns(RuntimeWarning):  # numpy's "Mean of empty slice"
        nothing = bootstrap_mean(np.full((2, 2), np.nan))
    assert np.isnan([nothing.value, nothing.low, nothing.high, nothing.p]).all()


def test_a_resample_is_the_mean_of_its_finite_values_however_few():
    """(0, 1, NaN), one seed, enumerated: of the 27 resamples of the three, 26 hold a value; 7 of
    them have the mean 0 (3 of those hold a single finite value), 7 the mean 1, the others 1/3, 1/2
    or 2/3. So the 50 % interval's ends are 0 and 1 (7/26 > 25 % in each tail)."""
    estimate = bootstrap_mean([[0.0, 1.0, np.nan]], level=0.5, resamples=20000)
    assert (estimate.value, estimate.low, estimate.high) == (0.5, 0.0, 1.0)


def test_fixed_seed_is_reproducible_and_another_seed_differs():
    values = np.random.default_rng(3).uniform(size=(3, 10))
    np.testing.assert_equal(astuple(bootstrap_mean(values, seed=5)), astuple(bootstrap_mean(values, seed=5)))  # NaN p equals NaN
    assert bootstrap_difference(values, values[::-1], seed=5) == bootstrap_difference(values, values[::-1], seed=5)
    assert bootstrap_mean(values, seed=5).low != bootstrap_mean(values, seed=6).low
    truth = [0, 1] * 5
    np.testing.assert_equal(astuple(bootstrap_auc(values, truth, seed=5)), astuple(bootstrap_auc(values, truth, seed=5)))
    assert bootstrap_auc(values, truth, seed=5).low != bootstrap_auc(values, truth, seed=6).low


# ---- bootstrap_difference ------------------------------------------------------------------------


def _paired_arms(shift: float):
    """Two arms on 3 seeds x 20 subjects whose subjects differ far more (0.3 .. 0.9) than the arms:
    b is a plus ``shift`` plus a small noise of mean exactly zero."""
    rng = np.random.default_rng(4)
    subjects = np.linspace(0.3, 0.9, 20)
    a = subjects[None] + rng.normal(0, 0.02, (3, 20))
    noise = np.tile([0.01, -0.01], (3, 10))
    return a, a + shift + noise


def test_paired_difference_with_an_obvious_shift_excludes_zero():
    """A shift of 0.03 on every subject, small against the subjects' spread: the paired interval
    excludes zero (an unpaired comparison of the two arms would not: their means' intervals overlap)."""
    a, b = _paired_arms(0.03)
    estimate = bootstrap_difference(b, a)
    assert estimate.value == pytest.approx(0.03)
    assert estimate.excludes_zero and 0.02 < estimate.low < 0.03 < estimate.high < 0.04
    assert estimate.p < 0.01
    assert bootstrap_mean(a).high > bootstrap_mean(b).low  # unpaired, the arms' intervals overlap
    reverse = bootstrap_difference(a, b)
    assert reverse.value == pytest.approx(-0.03) and reverse.high < 0


def test_paired_difference_without_a_shift_includes_zero():
    a, b = _paired_arms(0.0)
    estimate = bootstrap_difference(b, a)
    assert estimate.value == pytest.approx(0.0, abs=1e-12)
    assert estimate.low < 0 < estimate.high and not estimate.excludes_zero
    assert estimate.p > 0.5


def test_p_value_is_twice_the_smaller_tail_of_the_bootstrap_differences():
    """Differences (-1, 1, 1) of one seed: a resample of the three has a mean <= 0 when it holds -1
    at least twice, with probability 7/27 (and >= 0 with 20/27), so p = 2 * 7/27."""
    estimate = bootstrap_mean([[-1.0, 1.0, 1.0]], difference=True, resamples=20000)
    assert estimate.p == pytest.approx(14 / 27, abs=0.02)
    assert bootstrap_difference([[1.0, 1.0, 1.0]], [[2.0, 0.0, 0.0]], resamples=20000).p == pytest.approx(14 / 27, abs=0.02)


def test_difference_of_identical_arms_is_exactly_zero():
    a, _ = _paired_arms(0.0)
    estimate = bootstrap_difference(a, a)
    assert (estimate.value, estimate.low, estimate.high, estimate.p) == (0.0, 0.0, 0.0, 1.0)


# ---- bootstrap_auc ---------------------------------------------------------------------------------


def test_bootstrap_auc_point_is_the_mean_auc_over_seeds_and_matches_scipy_for_one_seed():
    rng = np.random.default_rng(6)
    truth = np.array([0, 1] * 15)
    scores = np.round(truth + rng.normal(0, 1.0, (3, 30)), 1)  # ties included
    estimate = bootstrap_auc(scores, truth)
    assert estimate.value == pytest.approx(np.mean([roc_auc_score(truth, row) for row in scores]))
    assert 0 <= estimate.low <= estimate.value <= estimate.high <= 1

    one = bootstrap_auc(scores[:1], truth, resamples=20000)
    ref = stats.bootstrap(
        (truth, scores[0]),
        lambda t, s, axis: auc(t, s),
        paired=True,
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=2,
    ).confidence_interval
    spread = (ref.high - ref.low) / 3.92  # about the AUC's standard error
    assert one.value == pytest.approx(roc_auc_score(truth, scores[0]))
    assert one.low == pytest.approx(ref.low, abs=0.1 * spread)
    assert one.high == pytest.approx(ref.high, abs=0.1 * spread)


def test_bootstrap_auc_with_a_reference_is_the_paired_auc_difference():
    rng = np.random.default_rng(7)
    truth = np.array([0, 1] * 20)
    weak = truth * 0.3 + rng.normal(0, 1, (3, 40))
    strong = truth * 3.0 + weak
    estimate = bootstrap_auc(strong, truth, reference=weak)
    expected = np.mean([roc_auc_score(truth, s) - roc_auc_score(truth, w) for s, w in zip(strong, weak)])
    assert estimate.value == pytest.approx(expected)
    assert estimate.excludes_zero and estimate.low > 0 and estimate.p < 0.01
    same = bootstrap_auc(weak, truth, reference=weak)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    perfect = bootstrap_auc(np.tile(truth, (2, 1)).astype(float), truth)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)


def test_bootstrap_auc_is_nan_when_truth_has_one_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quietly
        estimate = bootstrap_auc(np.array([[0.1, 0.5, 0.9]]), [0, 0, 0])
    assert np.isnan([estimate.value, estimate.low, estimate.high]).all()


def test_bootstrap_auc_drops_resamples_with_one_class():
    truth = np.array([0, 0, 0, 0, 0, 1])  # a third of the resamples have no positive subject
    scores = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9]])
    with pytest.warns(RuntimeWarning):  # numpy's "Mean of empty slice" on the dropped resamples
        estimate = bootstrap_auc(scores, truth)
    assert (estimate.value, estimate.low, estimate.high) == (1.0, 1.0, 1.0)


# ---- argument checks -------------------------------------------------------------------------------


def test_bad_shapes_and_levels_raise_value_errors_naming_the_argument():
    good = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"values: shape \(3,\)"):
        bootstrap_mean(np.ones(3))
    with pytest.raises(ValueError, match=r"values: shape \(0, 3\)"):
        bootstrap_mean(np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"values: shape \(2, 3, 1\)"):
        bootstrap_mean(np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=r"^a: shape \(3,\)"):
        bootstrap_difference(np.ones(3), good)
    with pytest.raises(ValueError, match=r"^b: shape \(3,\)"):
        bootstrap_difference(good, np.ones(3))
    with pytest.raises(ValueError, match=r"a \(2, 3\), b \(3, 3\)"):
        bootstrap_difference(good, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"level=1\.0"):
        bootstrap_mean(good, level=1.0)
    with pytest.raises(ValueError, match=r"level=0"):
        bootstrap_difference(good, good, level=0)
    with pytest.raises(ValueError, match=r"scores: shape \(3,\)"):
        bootstrap_auc(np.ones(3), [0, 1, 0])
    with pytest.raises(ValueError, match=r"truth: shape \(2,\)"):
        bootstrap_auc(good, [0, 1])
    with pytest.raises(ValueError, match=r"truth: shape \(3,\)"):
        bootstrap_auc(good, [0, 1, 2])  # not binary
    with pytest.raises(ValueError, match=r"^reference: shape \(3,\)"):
        bootstrap_auc(good, [0, 1, 0], reference=np.ones(3))
    with pytest.raises(ValueError, match=r"reference \(1, 3\), scores \(2, 3\)"):
        bootstrap_auc(good, [0, 1, 0], reference=np.ones((1, 3)))
