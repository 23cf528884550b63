"""What the evaluation metrics promise beyond their known answers in test_metrics.py: each input
named in its error, each bound at its edge, ties, defaults and settings that reach the
computation. Written for the mutants that survived (docs/testing.md)."""

import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric
from scipy.spatial.distance import pdist

from synthbrain.evaluation import (
    classifier_two_sample_test,
    frechet_distance,
    knn_precision_recall,
    memorisation_report,
    mmd,
    mmd_permutation_test,
    ms_ssim_3d,
    nearest_neighbour_distances,
    nearest_neighbour_ratio,
    pairwise_ms_ssim,
    wilson_interval,
)
from synthbrain.evaluation.metrics import MS_SSIM_WEIGHTS
from tests.evaluation.test_metrics import blobs, exact_moments

GOOD = np.arange(12.0).reshape(4, 3)
NAN = np.full((4, 3), np.nan)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda a, b: knn_precision_recall(a, b, k=1), ("real", "fake")),
        (lambda a, b: mmd(a, b), ("x", "y")),
        (lambda a, b: mmd_permutation_test(a, b, seed=0, permutations=2), ("x", "y")),
        (lambda a, b: nearest_neighbour_distances(a, b), ("query", "reference")),
        (lambda a, b: nearest_neighbour_ratio(a, b), ("query", "reference")),
        (lambda a, b: memorisation_report(a, b, GOOD), ("synthetic", "training")),
        (lambda a, b: frechet_distance(a, b), ("features_a", "features_b")),
    ],
)
def test_feature_metrics_name_the_input_at_fault(call, name):
    with pytest.raises(ValueError, match=rf"^{name[0]}: contains NaN or infinite values; allowed: finite values only$"):
        call(NAN, GOOD)
    with pytest.raises(ValueError, match=rf"^{name[1]}: contains NaN or infinite values; allowed"):
        call(GOOD, NAN)


def test_memorisation_report_names_the_held_out_set_and_flags_only_what_is_nearer_than_it():
    with pytest.raises(ValueError, match=r"^held_out_real: contains NaN"):
        memorisation_report(GOOD, GOOD, NAN)
    training = np.array([[0.0], [10.0]])
    report = memorisation_report(np.array([[1.0], [0.5], [8.5]]), training, np.array([[9.0], [3.0]]))  # all means exact: ties stay ties
    assert report.held_out_min == 1.0
    assert report.flagged.tolist() == [1]  # 0.5 from training is flagged; 1.0, exactly as near as held-out real, is not
    assert memorisation_report(GOOD, GOOD, GOOD[:1]).held_out_min == 0.0  # one held-out sample is enough


def test_sizes_at_their_bounds():
    one = np.zeros((1, 3))
    assert nearest_neighbour_distances(one, GOOD).indices.tolist() == [0]  # a single query sample is enough
    assert frechet_distance(GOOD[:2], GOOD[2:]) == pytest.approx(3 * 6.0**2)  # two samples per set are enough: means 6 apart, equal spreads
    assert np.isfinite(mmd_permutation_test(GOOD[:2], GOOD[2:], seed=0, permutations=1).mmd2)  # two each, one permutation
    with pytest.raises(ValueError, match=r"^x: 1 samples; allowed: >= 2$"):
        mmd_permutation_test(GOOD[:1], GOOD, seed=0)
    with pytest.raises(ValueError, match=r"^permutations=0; allowed: >= 1$"):
        mmd_permutation_test(GOOD, GOOD, seed=0, permutations=0)
    pair = nearest_neighbour_distances(GOOD[:2], GOOD[:2], exclude_self=True)
    assert pair.indices.tolist() == [1, 0]  # two samples: each one's nearest is the other
    with pytest.raises(
        ValueError, match=r"^query, reference: 1 and 1 samples with exclude_self=True; allowed: one set of >= 2 samples passed as both$"
    ):
        nearest_neighbour_distances(one, one, exclude_self=True)


def test_knn_balls_include_their_boundary_and_k_defaults_to_3():
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[4.0], [5.0], [6.0], [7.0]])
    # k=1: every ball has radius 1; fake 4 lies exactly on real 3's ball, real 3 exactly on fake 4's
    assert knn_precision_recall(real, fake, k=1) == (0.25, 0.25)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 2)), rng.normal(0.5, 1.0, size=(30, 2))
    assert knn_precision_recall(a, b) == knn_precision_recall(a, b, k=3) != knn_precision_recall(a, b, k=4)


def test_nearest_neighbour_ratio_bounds_and_small_distances():
    assert nearest_neighbour_ratio(np.array([[0.0]]), np.array([[0.1], [0.3]]))[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"^reference: 2 samples; allowed: >= 3$"):
        nearest_neighbour_ratio(GOOD[:2], GOOD[:2], exclude_self=True)
    with pytest.raises(ValueError, match=r"^query, reference: 2 and 3 samples with exclude_self=True; allowed: one set$"):
        nearest_neighbour_ratio(GOOD[:2], GOOD[:3], exclude_self=True)
    line = np.array([[0.0], [1.0], [5.0]])
    assert nearest_neighbour_ratio(line, line, exclude_self=True) == pytest.approx([1 / 5, 1 / 4, 4 / 5])


def test_mmd_median_heuristic_is_the_median_of_the_distinct_pairs_at_any_scale():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 3)) * 0.01, rng.normal(0.005, 0.01, size=(9, 3))  # distances well below 1
    median = float(np.median(pdist(np.concatenate([x, y]))))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=median), rel=1e-12)
    assert mmd(x, y, bandwidth=0.5) == pytest.approx(mmd(x / 0.5, y / 0.5, bandwidth=1.0), rel=1e-12)
    test = mmd_permutation_test(x, y, seed=0, permutations=3, bandwidth=0.5)
    assert test.mmd2 == pytest.approx(mmd(x, y, bandwidth=0.5), rel=1e-12)
    default = mmd_permutation_test(x, y, seed=0)
    assert default.permutations == 200 and default == mmd_permutation_test(x, y, seed=0, permutations=200)
    with pytest.raises(ValueError, match=r"^x, y: median distance between samples is 0 \(most are duplicates\); pass bandwidth > 0$"):
        mmd(np.zeros((3, 2)), np.zeros((3, 2)))


SMALL = 16


def _volumes(seed, n=2, side=SMALL):
    return blobs(np.random.default_rng(seed), n, (side, side, side))


def test_ms_ssim_bounds_are_inclusive():
    a = _volumes(0)
    assert torch.allclose(ms_ssim_3d(a, a, kernel_size=1, scales=5), torch.ones(2, dtype=torch.float64))  # 1 * 2**4 = 16
    assert torch.allclose(ms_ssim_3d(a, a, kernel_size=3, scales=1, sigma=0.5), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^kernel_size=3, sigma=0; allowed: an odd kernel_size >= 1 and sigma > 0$"):
        ms_ssim_3d(a, a, kernel_size=3, sigma=0)
    with pytest.raises(ValueError, match=r"^scales=0; allowed: 1..5$"):
        ms_ssim_3d(a, a, scales=0)
    with pytest.raises(
        ValueError, match=r"^a, b: spatial shape \(20, 20, 20\); allowed: every side >= kernel_size \* 2\*\*\(scales - 1\) = 24$"
    ):  # 3 * 2**3, not 3 * 2 * 3
        ms_ssim_3d(_volumes(0, side=20), _volumes(1, side=20), kernel_size=3, scales=4)


def test_ms_ssim_checks_b_against_the_data_range_too():
    a = _volumes(0)
    torch.testing.assert_close(ms_ssim_3d(a.numpy(), a.numpy() * 0.5, kernel_size=3), ms_ssim_3d(a, a * 0.5, kernel_size=3))  # numpy too
    with pytest.raises(ValueError, match=r"^a: shape \(1, 2, 16, 16, 16\); allowed: \(N, 1, D, H, W\)$"):
        ms_ssim_3d(a.reshape(1, 2, 16, 16, 16), a.reshape(1, 2, 16, 16, 16), kernel_size=3)
    with pytest.raises(ValueError, match=r"^a: shape \(2, 1, 16, 16\); allowed"):
        ms_ssim_3d(a[..., 0], a[..., 0], kernel_size=3)
    with pytest.raises(ValueError, match=r"^b: values 0..2; allowed: 0..1.0 \(data_range\)$"):
        ms_ssim_3d(a, a * 2, kernel_size=3)


def test_ms_ssim_is_invariant_to_the_data_range_and_matches_monai_when_brightness_differs():
    a, b = _volumes(0, 2, 28), _volumes(1, 2, 28)
    unit = ms_ssim_3d(a, b * 0.5 + 0.25)
    torch.testing.assert_close(ms_ssim_3d(a * 255, (b * 0.5 + 0.25) * 255, data_range=255.0), unit, rtol=1e-6, atol=1e-8)
    weights = np.array(MS_SSIM_WEIGHTS[:3]) / sum(MS_SSIM_WEIGHTS[:3])
    monai = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=7, kernel_sigma=1.5, weights=tuple(weights), reduction="none")
    torch.testing.assert_close(unit, monai(a, b * 0.5 + 0.25)[:, 0].double(), atol=1e-4, rtol=0)  # luminance counts


def test_pairwise_ms_ssim_passes_settings_and_checks_its_own():
    volumes = _volumes(2, 3)
    assert pairwise_ms_ssim(volumes, seed=0, kernel_size=3, scales=1) == pytest.approx(
        np.mean([ms_ssim_3d(volumes[i : i + 1], volumes[j : j + 1], kernel_size=3, scales=1).item() for i, j in ((0, 1), (0, 2), (1, 2))])
    )
    assert pairwise_ms_ssim(volumes[:2], pairs=1, batch_size=1, seed=0, kernel_size=3) == pytest.approx(
        ms_ssim_3d(volumes[:1], volumes[1:2], kernel_size=3).item()
    )  # two volumes, one pair, batch of one
    with pytest.raises(ValueError, match=r"^pairs=0, batch_size=8; allowed: both >= 1$"):
        pairwise_ms_ssim(volumes, pairs=0, seed=0)
    with pytest.raises(ValueError, match=r"^pairs=100, batch_size=0; allowed: both >= 1$"):
        pairwise_ms_ssim(volumes, batch_size=0, seed=0)
    with pytest.raises(ValueError, match=r"^volumes: contains NaN"):
        pairwise_ms_ssim(volumes * float("nan"), seed=0)


def test_pairwise_ms_ssim_uses_100_pairs_by_default():
    volumes = _volumes(3, 16)  # 120 pairs
    assert pairwise_ms_ssim(volumes, seed=0, kernel_size=3) == pairwise_ms_ssim(volumes, pairs=100, seed=0, kernel_size=3)
    assert pairwise_ms_ssim(volumes, seed=0, kernel_size=3) != pairwise_ms_ssim(volumes, pairs=101, seed=0, kernel_size=3)


def test_wilson_interval_at_one_trial_and_one_success():
    assert wilson_interval(1, 1) == pytest.approx((0.2065, 1.0), abs=1e-4)
    assert wilson_interval(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)
    assert wilson_interval(1, 10)[0] == pytest.approx(0.0179, abs=1e-4)
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in (1, 3, 7, 1000, 10**6))


def test_classifier_two_sample_test_checks_names_and_bounds_and_is_seeded():
    real, fake = _volumes(4, 4, 8), _volumes(5, 4, 8)
    with pytest.raises(ValueError, match=r"^real: shape \(4, 8, 8, 8\); allowed: \(N, 1, D, H, W\)$"):
        classifier_two_sample_test(real[:, 0], fake, seed=0)
    with pytest.raises(ValueError, match=r"^fake: shape \(4, 8, 8, 8\); allowed"):
        classifier_two_sample_test(real, fake[:, 0], seed=0)
    with pytest.raises(ValueError, match=r"^fake: volume shape \(1, 8, 8, 4\); allowed: the shape of real's, \(1, 8, 8, 8\)$"):
        classifier_two_sample_test(real, fake[..., :4], seed=0)
    for kwargs in ({"test_fraction": 0}, {"test_fraction": 1}, {"epochs": 0}, {"batch_size": 0}):
        settings = {"test_fraction": 0.5, "epochs": 1, "batch_size": 1, **kwargs}
        with pytest.raises(
            ValueError,
            match=rf"^test_fraction={settings['test_fraction']}, epochs={settings['epochs']}, batch_size={settings['batch_size']}; "
            r"allowed: 0 < test_fraction < 1, epochs >= 1, batch_size >= 1$",
        ):
            classifier_two_sample_test(real, fake, seed=0, **settings)
    once = classifier_two_sample_test(real, fake, seed=3, epochs=1, batch_size=1, channels=(2,))
    assert once.n_test == 4 and once.n_train == 4
    assert classifier_two_sample_test(real, fake, seed=3, epochs=1, batch_size=1, channels=(2,)) == once
    with pytest.raises(ValueError, match=r"^real, fake: 4 and 4 volumes with test_fraction=0.1 leave 0 of 4 per class for testing"):
        classifier_two_sample_test(real, fake, seed=0, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"^real, fake: 4 and 4 volumes with test_fraction=0.9 leave 4 of 4 per class for testing"):
        classifier_two_sample_test(real, fake, seed=0, test_fraction=0.9)
    assert classifier_two_sample_test(real, fake, seed=0, test_fraction=0.25, epochs=1, channels=(2,)).n_test == 2  # one per class


def test_frechet_distance_of_one_feature_is_exact():
    rng = np.random.default_rng(3)
    a, b = exact_moments(rng, 50, [1.0], [[4.0]]), exact_moments(rng, 60, [3.0], [[1.0]])
    assert frechet_distance(a, b) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2, abs=1e-10)
