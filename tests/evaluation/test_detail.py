"""Detail and variety measures, the spot-the-fake test's positive control and the baseline
classifier on per-volume statistics: known answers on small constructed volumes."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from synthbrain.evaluation.metrics import (
    blurred_copy,
    buried_share,
    classifier_positive_control,
    feature_two_sample_test,
    high_frequency_share,
    mean_gradient_magnitude,
    pairwise_distances,
    wilson_interval,
)

SHAPE = (16, 16, 16)


def sinusoid(cycles: tuple[int, int, int], shape=SHAPE) -> np.ndarray:
    """One volume (1, 1, *shape): sin of 2 pi (c_d i / D + c_h j / H + c_w k / W), whole cycles across the grid."""
    grids = np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij")
    return np.sin(2 * np.pi * sum(c * g for c, g in zip(cycles, grids)))[None, None]


def ball(shape=SHAPE, radius=6.0) -> np.ndarray:
    """(1, 1, *shape) bool ball in the middle of the grid."""
    grids = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    return (sum(g * g for g in grids) <= radius**2)[None, None]


def textured(n: int, seed: int = 0) -> np.ndarray:
    """(n, 1, *SHAPE) volumes in [0, 1]: a smooth part and voxel-scale noise, zero outside the ball."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((n, 1, *SHAPE)), (0, 0, 2, 2, 2))
    volumes = 0.5 * (smooth - smooth.min()) / (smooth.max() - smooth.min()) + 0.5 * rng.random((n, 1, *SHAPE))
    return np.where(ball(), volumes, 0.0)


def test_high_frequency_share_of_sinusoids_is_one_above_the_cutoff_and_zero_below():
    assert high_frequency_share(sinusoid((6, 0, 0)))[0] == pytest.approx(1.0, abs=1e-12)  # 0.375 cycles/voxel
    assert high_frequency_share(sinusoid((0, 2, 0)))[0] == pytest.approx(0.0, abs=1e-12)  # 0.125
    assert high_frequency_share(sinusoid((0, 0, 4)))[0] == pytest.approx(0.0, abs=1e-12)  # 0.25 exactly is not above
    assert high_frequency_share(sinusoid((0, 0, 5)))[0] == pytest.approx(1.0, abs=1e-12)  # 0.3125
    # radial frequency: each axis below 0.25 but sqrt(2) * 3/16 = 0.265 above it; sqrt(2) * 2/16 = 0.177 below
    assert high_frequency_share(sinusoid((3, 3, 0)))[0] == pytest.approx(1.0, abs=1e-12)
    assert high_frequency_share(sinusoid((2, 2, 0)))[0] == pytest.approx(0.0, abs=1e-12)
    # equal power at 0.125 and 0.375 cycles/voxel: half; a brightness offset (zero frequency) changes nothing
    mixed = sinusoid((2, 0, 0)) + sinusoid((0, 6, 0))
    assert high_frequency_share(mixed)[0] == pytest.approx(0.5, abs=1e-12)
    assert high_frequency_share(mixed + 3.0)[0] == pytest.approx(0.5, abs=1e-12)
    assert high_frequency_share(mixed, cutoff=0.4)[0] == pytest.approx(0.0, abs=1e-12)
    # one value per volume, in order
    np.testing.assert_allclose(high_frequency_share(np.concatenate([sinusoid((6, 0, 0)), sinusoid((1, 0, 0))])), [1, 0], atol=1e-12)


def test_mean_gradient_of_a_ramp_is_its_slope():
    i, j, _ = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    ramp = (0.03 * i + 0.04 * j)[None, None]
    assert mean_gradient_magnitude(ramp)[0] == pytest.approx(0.05, abs=1e-12)  # exact at the edges too (one-sided)
    assert mean_gradient_magnitude(ramp + 0.5)[0] == pytest.approx(0.05, abs=1e-12)
    assert mean_gradient_magnitude(np.full((1, 1, *SHAPE), 0.7))[0] == 0.0


def test_measures_ignore_everything_outside_the_brain():
    """Each measure sees the volume with every voxel outside the brain set to 0: what lies there does not count."""
    volumes, brain = textured(3), np.repeat(ball(), 3, axis=0)
    noisy = np.where(brain, volumes, np.random.default_rng(1).random(volumes.shape))
    for measure in (high_frequency_share, mean_gradient_magnitude, pairwise_distances):
        np.testing.assert_array_equal(measure(noisy, brain), measure(volumes, brain))
        assert not np.array_equal(measure(noisy), measure(volumes))  # unmasked, the outside counts
    # the gradient is averaged over brain voxels only: a constant brain in a zero background has a gradient only at its edge
    constant = np.where(ball(), 0.6, 0.0)
    inner = ndimage.binary_erosion(ball()[0, 0])[None, None]
    edge_voxels, brain_voxels = (ball() & ~inner).sum(), ball().sum()
    magnitude = np.sqrt(sum(g * g for g in np.gradient(constant[0, 0])))
    assert magnitude[inner[0, 0]].max() == 0.0
    assert mean_gradient_magnitude(constant, ball())[0] == pytest.approx(magnitude[ball()[0, 0]].sum() / brain_voxels)
    assert 0 < edge_voxels < brain_voxels


def test_a_blurred_copy_scores_lower_on_both_detail_measures_and_keeps_the_outline():
    volumes, brain = textured(4), np.repeat(ball(), 4, axis=0)
    blurred = blurred_copy(torch.tensor(volumes), 1.0, torch.tensor(brain))
    assert blurred.dtype == torch.float32 and blurred.shape == volumes.shape
    expected = np.where(brain, ndimage.gaussian_filter(volumes, (0, 0, 1, 1, 1), mode="constant"), 0.0)
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-6)  # scipy's filter, re-masked to the brain
    assert (blurred.numpy()[~brain] == 0).all()
    assert (high_frequency_share(blurred, brain) < 0.5 * high_frequency_share(volumes, brain)).all()
    assert (mean_gradient_magnitude(blurred, brain) < mean_gradient_magnitude(volumes, brain)).all()
    more = blurred_copy(volumes, 2.0, brain)  # more blur, less detail still
    assert (high_frequency_share(more, brain) < high_frequency_share(blurred, brain)).all()
    assert (mean_gradient_magnitude(more, brain) < mean_gradient_magnitude(blurred, brain)).all()


def test_pairwise_distances_known_answers():
    volumes = textured(3)
    copies = np.concatenate([volumes[:1]] * 4)
    np.testing.assert_array_equal(pairwise_distances(copies), np.zeros(6))  # identical copies: exactly 0
    zero, c = np.zeros((1, 1, *SHAPE)), 0.25
    distances = pairwise_distances(np.concatenate([zero, zero + c, zero + 2 * c]))
    np.testing.assert_allclose(distances, np.array([1, 2, 1]) * c * np.sqrt(np.prod(SHAPE)))  # pairs (0,1), (0,2), (1,2)
    d = pairwise_distances(volumes)
    assert d.shape == (3,) and d[0] == pytest.approx(np.linalg.norm(volumes[0] - volumes[1]))


def test_detail_measures_reject_bad_input():
    volumes = textured(2)
    with pytest.raises(ValueError, match=r"^volumes: shape \(2, 16, 16, 16\); allowed: \(N, 1, D, H, W\)$"):
        high_frequency_share(volumes[:, 0])
    with pytest.raises(ValueError, match=r"^brain: shape \(1, 1, 16, 16, 16\), dtype bool; allowed: bool of the volumes' shape"):
        mean_gradient_magnitude(volumes, ball())
    with pytest.raises(ValueError, match=r"^brain: shape \(2, 1, 16, 16, 16\), dtype float64; allowed: bool"):
        pairwise_distances(volumes, np.repeat(ball(), 2, axis=0).astype(float))
    empty = np.repeat(ball(), 2, axis=0)
    empty[1] = False
    with pytest.raises(ValueError, match=r"^brain: no brain voxel in volumes \[1\]; allowed: at least one per volume$"):
        mean_gradient_magnitude(volumes, empty)
    with pytest.raises(ValueError, match=r"^volumes: volume 0 has no power at a non-zero frequency \(constant\)"):
        high_frequency_share(np.full((1, 1, *SHAPE), 0.3))
    for cutoff in (0, 0.9):
        with pytest.raises(ValueError, match=rf"^cutoff={cutoff}; allowed: 0 < cutoff < 0.866"):
            high_frequency_share(volumes, cutoff=cutoff)
    with pytest.raises(ValueError, match=r"^volumes: 1 volumes; allowed: >= 2$"):
        pairwise_distances(volumes[:1])
    with pytest.raises(ValueError, match=r"^volumes: contains NaN"):
        mean_gradient_magnitude(np.full((1, 1, 4, 4, 4), np.nan))
    for sigma in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=rf"^sigma={sigma}; allowed: a finite number of voxels > 0$"):
            blurred_copy(volumes, sigma)


# ------------------------------------------------------------------- spot the fake: positive control


def test_positive_control_passes_a_classifier_that_sees_and_flags_one_that_cannot():
    real = torch.tensor(textured(24, seed=2), dtype=torch.float32)
    brain = torch.tensor(np.repeat(ball(), 24, axis=0))
    seeing = classifier_positive_control(real, brain, seed=0, epochs=15)
    assert seeing.passed and seeing.result.ci_low > 0.5 and seeing.result.n_test == 24
    assert seeing.reason.startswith("positive control passed: accuracy")
    # without convolutions the network sees only each volume's mean, which blurring keeps: it cannot tell them apart
    blind = classifier_positive_control(real, brain, seed=0, epochs=15, channels=())
    assert not blind.passed and blind.result.ci_low <= 0.5
    assert blind.reason.startswith("positive control failed: accuracy") and "the interval includes or lies below 0.5" in blind.reason
    # so does an undertrained network, which answers one class for every volume (exactly 0.5)
    undertrained = classifier_positive_control(real, brain, seed=0, epochs=1)
    assert not undertrained.passed and undertrained.result.accuracy == 0.5
    assert (undertrained.result.ci_low, undertrained.result.ci_high) == pytest.approx(wilson_interval(12, 24))
    assert classifier_positive_control(real, brain, seed=0, epochs=1) == undertrained  # seeded


# ------------------------------------------------------------------------------- baseline classifier


def test_feature_two_sample_test_tells_separable_statistics_apart_and_not_one_distribution():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 2)), rng.normal(size=(40, 2)) + [10.0, 0.0]  # 10 sd apart: no overlap
    separable = feature_two_sample_test(real, fake, seed=0)
    assert separable.accuracy == 1.0 and separable.auc == 1.0 and separable.n_test == 60 and separable.n_train == 48
    assert (separable.ci_low, separable.ci_high) == pytest.approx(wilson_interval(60, 60))
    same = feature_two_sample_test(real, rng.normal(size=(30, 2)), seed=0)
    assert same.ci_low <= 0.5 <= same.ci_high and 0.25 < same.auc < 0.75
    assert feature_two_sample_test(real, fake, seed=0) == separable  # seeded
    assert feature_two_sample_test(real[:3], fake[:3], seed=0).n_test == 6  # 3 folds where a class has 3 samples
    with pytest.raises(ValueError, match=r"^folds=1; allowed: >= 2$"):
        feature_two_sample_test(real, fake, seed=0, folds=1)
    with pytest.raises(ValueError, match=r"^fake: 3 values per sample; allowed: the same as real \(2\)$"):
        feature_two_sample_test(real, rng.normal(size=(5, 3)), seed=0)


# ---- buried_share: a tissue far from the surface classes ------------------------------------------


def _shelled_cube(size=20, lo=4, hi=16):
    """Background 0, a cube of white matter (2) lined by a one-voxel shell of grey matter (1)."""
    labels = np.zeros((1, size, size, size), np.int64)
    labels[0, lo:hi, lo:hi, lo:hi] = 1
    labels[0, lo + 1 : hi - 1, lo + 1 : hi - 1, lo + 1 : hi - 1] = 2
    return labels


def test_buried_share_is_zero_for_a_lining_and_counts_a_blob_inside():
    labels = _shelled_cube()
    assert buried_share(labels, 1, [0]).tolist() == [0.0]
    labels[0, 9:11, 9:11, 9:11] = 1  # 8 grey voxels 6 voxels from the background
    shell = 12**3 - 10**3
    np.testing.assert_allclose(buried_share(torch.from_numpy(labels), 1, [0]), [8 / (shell + 8)])
    assert buried_share(labels, 1, [0], margin=6).tolist() == [0.0]  # within 6 voxels of the background


def test_buried_share_margin_is_a_chessboard_distance():
    labels = np.full((1, 8, 8, 8), 2, np.int64)
    labels[0, 0] = 3  # the surface class on one face
    labels[0, 2, 4, 4] = labels[0, 3, 4, 4] = 1  # 2 and 3 voxels from it
    assert buried_share(labels, 1, 3, margin=2).tolist() == [0.5]
    assert buried_share(labels, 1, 3, margin=3).tolist() == [0.0]
    assert buried_share(labels, 1, 3, margin=1).tolist() == [1.0]


def test_buried_share_nan_without_the_tissue_and_bad_input():
    assert np.isnan(buried_share(np.zeros((1, 4, 4, 4), np.int64), 1, [0])[0])
    with pytest.raises(ValueError, match="margin=0; allowed"):
        buried_share(_shelled_cube(), 1, [0], margin=0)
    with pytest.raises(ValueError, match="allowed: a tissue class that is not a surface class"):
        buried_share(_shelled_cube(), 1, [0, 1])
    with pytest.raises(ValueError, match=r"allowed: \(N, D, H, W\) integer classes"):
        buried_share(np.zeros((4, 4, 4)), 1, [0])
