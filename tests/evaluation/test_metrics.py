import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric
from scipy import ndimage
from scipy.spatial.distance import cdist

from synthbrain.evaluation import (
    classifier_two_sample_test,
    conditioning_accuracy,
    frechet_distance,
    knn_precision_recall,
    memorisation_report,
    mmd,
    mmd_permutation_test,
    ms_ssim_3d,
    nearest_neighbour_distances,
    pairwise_ms_ssim,
    wilson_interval,
)
from synthbrain.evaluation.metrics import MS_SSIM_WEIGHTS, high_frequency_share, high_pass_share, mean_gradient_magnitude


def exact_moments(rng, n, mean, cov):
    """n samples whose sample mean and sample covariance (ddof 1) are exactly mean and cov."""
    mean, cov = np.atleast_1d(np.asarray(mean, float)), np.atleast_2d(np.asarray(cov, float))
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return z @ np.linalg.cholesky(cov).T + mean


def blobs(rng, n, shape=(16, 16, 16), sigma=2.0):
    """Smooth random volumes (N, 1, *shape) scaled to [0, 1] each."""
    out = np.stack([ndimage.gaussian_filter(rng.uniform(size=shape), sigma) for _ in range(n)])
    low, high = out.min(axis=(1, 2, 3), keepdims=True), out.max(axis=(1, 2, 3), keepdims=True)
    return torch.tensor((out - low) / (high - low), dtype=torch.float32)[:, None]


# ------------------------------------------------------------------------------------- Fréchet


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    # One feature: (mean_a - mean_b)^2 + (sd_a - sd_b)^2 = 2^2 + 1^2.
    assert frechet_distance(exact_moments(rng, 40, [1.0], [[4.0]]), exact_moments(rng, 30, [-1.0], [[9.0]])) == pytest.approx(5.0)
    # Diagonal covariances: the sum of that over features.
    mean_a, mean_b, var_a, var_b = np.array([0, 1, 2.0]), np.array([1, 1, 0.0]), np.array([1, 4, 9.0]), np.array([4, 4, 1.0])
    expected = ((mean_a - mean_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    x, y = exact_moments(rng, 60, mean_a, np.diag(var_a)), exact_moments(rng, 60, mean_b, np.diag(var_b))
    assert frechet_distance(x, y) == pytest.approx(expected)
    # The same rotation and shift of both sets (now with full covariances) leaves it unchanged; it is symmetric.
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert frechet_distance(x @ rotation + 5, y @ rotation + 5) == pytest.approx(expected)
    assert frechet_distance(y, x) == pytest.approx(expected)


def test_frechet_distance_estimates_the_analytic_value_and_survives_singular_covariances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, size=(4000, 2)), rng.normal([3, 0], [1, 2], size=(4000, 2))
    assert frechet_distance(x, y) == pytest.approx(9 + 1, rel=0.05)  # 3^2 + (2 - 1)^2
    few = rng.normal(size=(5, 12))  # fewer samples than features: singular covariances
    assert frechet_distance(few, few) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(few, few + 1) == pytest.approx(12, rel=1e-3)  # a shift by 1 in each of 12 features


def test_frechet_distance_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"features_a: 1 samples; allowed: >= 2"):
        frechet_distance(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"features_b: 4 values per sample; allowed: the same as features_a \(3\)"):
        frechet_distance(rng.normal(size=(5, 3)), rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match=r"features_a: shape \(5,\)"):
        frechet_distance(rng.normal(size=5), rng.normal(size=(5, 1)))
    with pytest.raises(ValueError, match="features_b: contains NaN"):
        frechet_distance(rng.normal(size=(5, 3)), np.full((5, 3), np.nan))


# ---------------------------------------------------------------------------- precision/recall


def test_knn_precision_recall_known_answers():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 4))
    assert knn_precision_recall(real, real) == (1.0, 1.0)
    assert knn_precision_recall(real, real + 100.0) == (0.0, 0.0)
    assert knn_precision_recall(torch.tensor(real), torch.tensor(real + 100.0), k=1) == (0.0, 0.0)
    # Half the fakes are real samples, half lie far away: precision exactly 0.5.
    half = np.concatenate([real[:10], rng.normal(size=(10, 4)) + 100.0])
    precision, recall = knn_precision_recall(real, half)
    assert precision == 0.5 and 0.5 <= recall < 1.0
    # Mode collapse: every fake next to one real sample looks real but covers little of the real set.
    collapsed = real[0] + rng.normal(0, 1e-3, size=(20, 4))
    precision, recall = knn_precision_recall(real, collapsed)
    assert precision == 1.0 and recall <= 0.25


def test_knn_precision_recall_rejects_bad_k():
    real = np.zeros((4, 2)) + np.arange(4)[:, None]
    with pytest.raises(ValueError, match=r"k=4; allowed: 1 <= k < min\(len\(real\), len\(fake\)\) = 4"):
        knn_precision_recall(real, real, k=4)
    with pytest.raises(ValueError, match="k=0"):
        knn_precision_recall(real, real, k=0)


# -------------------------------------------------------------------------------------- MMD


def test_mmd_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    # Identical sets, fixed bandwidth: exactly -2 (1 - mean K) / (N - 1).
    kernel = np.exp(-cdist(x, x, "sqeuclidean") / (2 * 1.5**2))
    assert mmd(x, x, bandwidth=1.5) == pytest.approx(-2 * (1 - kernel.mean()) / 29)
    # Linear kernel: |mean_x - mean_y|^2 - tr(cov_x) / N - tr(cov_y) / M.
    y = rng.normal(1.0, 2.0, size=(20, 3))
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() - np.trace(np.cov(x.T)) / 30 - np.trace(np.cov(y.T)) / 20
    assert mmd(x, y, kernel="linear") == pytest.approx(expected)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(100, 4)), rng.normal(size=(100, 4))
    same = mmd(x, y)
    assert abs(same) < 0.02
    shifted = [mmd(x, y + shift, bandwidth=2.0) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert shifted == sorted(shifted) and shifted[-1] > 10 * abs(shifted[0])
    assert mmd(x, y + 1.0) > 10 * abs(same)  # median-heuristic bandwidth


def test_mmd_permutation_test():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    same = mmd_permutation_test(x, y, seed=0, permutations=100)
    assert same.p_value > 0.05 and same.mmd2 == pytest.approx(mmd(x, y)) and same.permutations == 100
    shifted = mmd_permutation_test(x, y + 1.0, seed=0, permutations=100)
    assert shifted.p_value == pytest.approx(1 / 101)  # no relabelling comes near the observed value
    assert mmd_permutation_test(x, y, seed=0, permutations=100) == same


def test_mmd_rejects_bad_input():
    x = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match=r"kernel='poly'; allowed: 'rbf', 'linear'"):
        mmd(x, x, kernel="poly")
    with pytest.raises(ValueError, match=r"bandwidth=0.0; allowed: > 0"):
        mmd(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"y: 1 samples; allowed: >= 2"):
        mmd(x, x[:1])
    with pytest.raises(ValueError, match="median distance between samples is 0"):
        mmd(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"permutations=0; allowed: >= 1"):
        mmd_permutation_test(x, x, seed=0, permutations=0)


# ---------------------------------------------------------------------------------- MS-SSIM


def noisy_copies(rng, shape=(40, 56, 40), levels=(0.05, 0.1, 0.2)):
    """One smooth volume at 4 mm size, and copies of it with more and more noise."""
    base = blobs(rng, 1, shape)
    noisy = torch.stack([(base[0] + torch.tensor(rng.normal(0, s, shape), dtype=torch.float32)).clamp(0, 1) for s in levels])
    return base.expand(len(levels), -1, -1, -1, -1), noisy


def test_ms_ssim_3d_matches_monai_at_4mm_size_and_falls_with_noise():
    base, noisy = noisy_copies(np.random.default_rng(0))
    ours = ms_ssim_3d(base, noisy)
    weights = np.array(MS_SSIM_WEIGHTS[:3]) / sum(MS_SSIM_WEIGHTS[:3])
    monai = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=7, kernel_sigma=1.5, weights=tuple(weights), reduction="none")
    assert ours.shape == (3,)
    assert torch.allclose(ours, monai(base, noisy)[:, 0].double(), atol=1e-4)
    assert ours[0] > ours[1] > ours[2] > 0.5
    assert torch.allclose(ms_ssim_3d(base, base), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ms_ssim_3d(noisy, base), ours)  # symmetric


def test_ms_ssim_3d_other_settings_match_monai():
    base, noisy = noisy_copies(np.random.default_rng(1), shape=(32, 36, 32), levels=(0.1,))
    weights = np.array(MS_SSIM_WEIGHTS[:2]) / sum(MS_SSIM_WEIGHTS[:2])
    monai = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=11, kernel_sigma=1.5, weights=tuple(weights))
    assert ms_ssim_3d(base, noisy, kernel_size=11, scales=2).item() == pytest.approx(monai(base, noisy).item(), abs=1e-4)


def test_ms_ssim_3d_rejects_bad_input():
    small = torch.rand(1, 1, 16, 30, 30)
    with pytest.raises(ValueError, match=r"spatial shape \(16, 30, 30\); allowed: every side >= kernel_size \* 2\*\*\(scales - 1\) = 28"):
        ms_ssim_3d(small, small)
    assert ms_ssim_3d(small, small, kernel_size=3, scales=3).item() == pytest.approx(1.0)
    bad = small.clone()
    bad[0, 0, 0, 0, :2] = torch.tensor([-0.5, 1.5])
    with pytest.raises(ValueError, match=r"a: values -0.5..1.5; allowed: 0..1.0 \(data_range\)"):
        ms_ssim_3d(bad, small, kernel_size=3)
    with pytest.raises(ValueError, match=r"b: shape \(1, 1, 16, 30, 29\); allowed: the shape of a"):
        ms_ssim_3d(small, small[..., :29], kernel_size=3)
    with pytest.raises(ValueError, match=r"a: shape \(16, 30, 30\); allowed: \(N, 1, D, H, W\)"):
        ms_ssim_3d(small[0, 0], small[0, 0])
    with pytest.raises(ValueError, match=r"scales=6; allowed: 1..5"):
        ms_ssim_3d(small, small, scales=6)
    with pytest.raises(ValueError, match=r"kernel_size=4"):
        ms_ssim_3d(small, small, kernel_size=4)


def test_pairwise_ms_ssim_measures_diversity():
    rng = np.random.default_rng(2)
    varied = blobs(rng, 6, (28, 28, 28))
    collapsed = varied[:1].expand(6, -1, -1, -1, -1)
    assert pairwise_ms_ssim(collapsed, seed=0) == pytest.approx(1.0)
    diverse = pairwise_ms_ssim(varied, seed=0)
    assert diverse < 0.5
    # pairs beyond the 15 there are: all of them, whatever the seed.
    every = [ms_ssim_3d(varied[i : i + 1], varied[j : j + 1]).item() for i in range(6) for j in range(i + 1, 6)]
    assert diverse == pytest.approx(np.mean(every)) and pairwise_ms_ssim(varied, seed=5, batch_size=4) == pytest.approx(diverse)
    # Fewer pairs: a seeded subset, the same for the same seed.
    assert pairwise_ms_ssim(varied, pairs=4, seed=1) == pairwise_ms_ssim(varied, pairs=4, seed=1)
    assert len({pairwise_ms_ssim(varied, pairs=4, seed=s) for s in range(4)}) > 1
    with pytest.raises(ValueError, match=r"volumes: 1 volumes; allowed: >= 2"):
        pairwise_ms_ssim(varied[:1], seed=0)


# ------------------------------------------------------------------------ classifier 2-sample


def test_wilson_interval_known_answers():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match=r"successes=11, n=10"):
        wilson_interval(11, 10)


def test_wilson_interval_at_another_level_by_hand():
    z = 1.6448536269514722  # the normal's 95th percentile: a 90 % interval
    p, n = 7 / 20, 20
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(7, 20, level=0.9) == pytest.approx((centre - half, centre + half), abs=1e-12)
    with pytest.raises(ValueError, match=r"^level=1.96; allowed: a confidence level strictly between 0 and 1$"):
        wilson_interval(7, 20, 1.96)  # a z where a level belongs


def test_classifier_two_sample_test_tells_noise_from_blobs():
    rng = np.random.default_rng(0)
    real, fake = blobs(rng, 24), torch.rand(30, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    result = classifier_two_sample_test(real, fake, seed=0, epochs=15)
    assert torch.equal(torch.get_rng_state(), state)  # global random state untouched
    assert result.n_test == 24 and result.n_train == 24  # both cut to 24, half of each for testing
    assert result.accuracy >= 0.9 and result.ci_low > 0.5
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(round(result.accuracy * 24), 24))


def test_classifier_two_sample_test_finds_nothing_between_samples_of_one_distribution():
    rng = np.random.default_rng(1)
    real, fake = blobs(rng, 24), blobs(rng, 24)
    result = classifier_two_sample_test(real, fake, seed=0, epochs=15)
    assert result.ci_low <= 0.5 <= result.ci_high
    assert classifier_two_sample_test(real, fake, seed=0, epochs=15) == result  # seeded: same inputs, same answer


def test_classifier_two_sample_test_rejects_bad_input():
    volumes = torch.rand(4, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"fake: volume shape \(1, 8, 8, 7\); allowed: the shape of real's"):
        classifier_two_sample_test(volumes, volumes[..., :7], seed=0)
    with pytest.raises(ValueError, match=r"leave 0 of 1 per class for testing"):
        classifier_two_sample_test(volumes[:1], volumes, seed=0, test_fraction=0.4)
    with pytest.raises(ValueError, match=r"test_fraction=1.0"):
        classifier_two_sample_test(volumes, volumes, seed=0, test_fraction=1.0)


# ----------------------------------------------------------------------------- memorisation


def test_nearest_neighbour_distances_known_answers():
    reference = np.array([[0.0], [1.0], [3.0]])
    nearest = nearest_neighbour_distances(np.array([[2.9], [-1.0]]), reference)
    assert np.allclose(nearest.distances, [0.1, 1.0]) and list(nearest.indices) == [2, 0]
    itself = nearest_neighbour_distances(reference, reference)
    assert np.array_equal(itself.distances, [0, 0, 0]) and list(itself.indices) == [0, 1, 2]
    others = nearest_neighbour_distances(reference, reference, exclude_self=True)
    assert np.allclose(others.distances, [1, 1, 2]) and list(others.indices) == [1, 0, 1]
    with pytest.raises(ValueError, match="exclude_self=True"):
        nearest_neighbour_distances(reference[:2], reference, exclude_self=True)


def test_memorisation_report_flags_copies_and_not_fresh_samples():
    rng = np.random.default_rng(0)
    training, held_out, fresh = blobs(rng, 30, (8, 8, 8)), blobs(rng, 200, (8, 8, 8)), blobs(rng, 5, (8, 8, 8))
    nudged = (training[3] + 0.001 * torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    synthetic = torch.cat([training[7:8], nudged[None], fresh])
    report = memorisation_report(synthetic, training, held_out)
    assert list(report.flagged) == [0, 1]
    assert report.synthetic_distances[0] == 0.0 and list(report.synthetic_nearest[:2]) == [7, 3]
    assert report.held_out_min == report.held_out_distances.min() > 0 and report.held_out_distances.shape == (200,)
    assert (report.synthetic_distances[2:] >= report.held_out_min).all()
    with pytest.raises(ValueError, match=r"held_out_real: 64 values per sample; allowed: the same as training \(512\)"):
        memorisation_report(synthetic, training, held_out[:, :, :4, :4, :4])


# ----------------------------------------------------------------------------- conditioning


def test_conditioning_accuracy_known_answers():
    requested = np.random.default_rng(0).uniform(20, 80, size=2000)
    assert conditioning_accuracy(requested, requested) == pytest.approx((1.0, 0.0, 0.0, 2000))
    assert conditioning_accuracy(requested, requested + 2.5) == pytest.approx((1.0, 2.5, 2.5, 2000))
    shuffled = conditioning_accuracy(requested, np.random.default_rng(1).permutation(requested))
    assert abs(shuffled.pearson_r) < 0.1 and shuffled.mae > 10
    assert conditioning_accuracy(torch.tensor([1.0, 2, 3]), [3.0, 2, 1]).pearson_r == pytest.approx(-1.0)


def test_conditioning_accuracy_pearson_r_by_hand():
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-3, -2, -1, 6): r = 14 / sqrt(5 * 50) (a rank correlation would give 1)
    assert conditioning_accuracy([1.0, 2, 3, 4], [1.0, 2, 3, 10]).pearson_r == pytest.approx(14 / np.sqrt(250), abs=1e-12)


def test_conditioning_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"measured: 4 values; allowed: one per requested value \(3\)"):
        conditioning_accuracy([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"measured: every value is 4; allowed: values that vary"):
        conditioning_accuracy([1, 2, 3], [4, 4, 4])
    with pytest.raises(ValueError, match=r"requested: shape \(2,\); allowed: one value per sample, >= 3 samples"):
        conditioning_accuracy([1, 2], [1, 2])
    with pytest.raises(ValueError, match="requested: contains NaN"):
        conditioning_accuracy([1, np.nan, 3], [1, 2, 3])


def test_nearest_neighbour_ratio_known_answers():
    from synthbrain.evaluation import nearest_neighbour_ratio

    reference = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ratio = nearest_neighbour_ratio(np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0]]), reference)
    np.testing.assert_allclose(ratio, [0.0, 1.0, 1.0 / 9.0])
    loo = nearest_neighbour_ratio(reference, reference, exclude_self=True)
    np.testing.assert_allclose(loo, [1.0, 10.0 / np.sqrt(200.0), 10.0 / np.sqrt(200.0)])
    with pytest.raises(ValueError, match="reference: 1 samples"):
        nearest_neighbour_ratio(reference, reference[:1])


# ------------------------------------------------------------------------- detail over a region


def test_mean_gradient_magnitude_over_an_eroded_brain_leaves_the_outline_out():
    shape = (12, 12, 12)
    brain = np.zeros((1, 1, *shape), bool)
    brain[..., 2:10, 2:10, 2:10] = True
    ramp = np.broadcast_to(10 + 3 * np.arange(12.0)[:, None, None], shape)[None, None].copy()
    volumes = np.where(brain, ramp, 0.0)
    interior = np.zeros_like(brain)
    interior[..., 4:8, 4:8, 4:8] = True  # central differences there reach brain voxels only
    assert mean_gradient_magnitude(volumes, brain, over=interior)[0] == pytest.approx(3.0, abs=1e-12)
    assert mean_gradient_magnitude(volumes, brain)[0] > 3.5  # over the whole brain the step down to 0 counts
    with pytest.raises(ValueError, match=r"^over: no voxel to measure over in volumes \[0\]; allowed: at least one per volume$"):
        mean_gradient_magnitude(volumes, brain, over=np.zeros_like(brain))


def test_high_pass_share_known_answers():
    shape, i = (24, 24, 24), np.arange(24.0)
    inner = np.zeros((1, 1, *shape), bool)
    inner[..., 4:20, 4:20, 4:20] = True  # 4 voxels from the faces: the reach of scipy's Gaussian at sigma 1 (truncate 4)
    cosine = np.broadcast_to(np.cos(2 * np.pi * 0.25 * i)[:, None, None], shape)[None, None].copy()
    taps = np.arange(-4, 5)
    weights = np.exp(-(taps**2) / 2.0) / np.exp(-(taps**2) / 2.0).sum()
    gain = (weights * np.cos(2 * np.pi * 0.25 * taps)).sum()  # the sampled Gaussian's gain at 0.25 cycles/voxel
    assert high_pass_share(cosine, over=inner)[0] == pytest.approx((1 - gain) ** 2, rel=1e-9)  # residual (1 - gain) v
    ramp = np.broadcast_to(2.0 * i[:, None, None], shape)[None, None].copy()
    assert high_pass_share(ramp, over=inner)[0] == pytest.approx(0.0, abs=1e-20)  # a blur leaves a ramp as it is
    assert high_pass_share(np.full((1, 1, *shape), 7.0))[0] == 0.0  # no variance: 0, not NaN
    # a constant brain in a zero background: no texture inside, but its outline is detail to the Fourier measure
    brain, interior = np.zeros((1, 1, *shape), bool), np.zeros((1, 1, *shape), bool)
    brain[..., 4:20, 4:20, 4:20], interior[..., 8:16, 8:16, 8:16] = True, True
    flat = np.where(brain, 0.6, 0.0)
    assert high_pass_share(flat, brain, over=interior)[0] == 0.0 and high_frequency_share(flat, brain)[0] > 0.05
    with pytest.raises(ValueError, match=r"^sigma=0; allowed: > 0 voxels$"):
        high_pass_share(flat, sigma=0)
