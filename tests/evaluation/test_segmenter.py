import numpy as np
import pytest

from synthbrain.evaluation import VoxelSegmenter, dice_per_class
from synthbrain.evaluation.segmenter import voxel_features


def phantom(seed: int, shape=(20, 24, 20)):
    """Background 0, a bright sphere (class 2) inside a darker shell (class 1), with noise and a
    random shift, so position alone does not give the answer."""
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), centre)))
    labels = np.where(radius < 5, 2, np.where(radius < 8, 1, 0)).astype(np.uint8)
    image = np.choose(labels, [0.05, 0.4, 0.8]) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), labels


def test_dice_per_class_known_answers():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert np.allclose(dice_per_class(a, a, 4)[:3], 1.0) and np.isnan(dice_per_class(a, a, 4)[3])
    b = np.array([0, 0, 2, 2, 1, 1])
    assert np.allclose(dice_per_class(a, b, 3), [1.0, 0.0, 0.0])
    assert dice_per_class(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 2)[1] == pytest.approx(2 / 3)


def test_features_have_one_row_per_voxel():
    image, _ = phantom(0)
    features = voxel_features(image)
    assert features.shape == (image.size, 1 + 2 * 3 + 3) and np.isfinite(features).all()
    with pytest.raises(ValueError, match="expected a 3D array"):
        voxel_features(image[0])


def test_segmenter_trained_on_real_pairs_segments_a_new_subject():
    pairs = [phantom(s) for s in range(6)]
    segmenter = VoxelSegmenter(3, voxels_per_subject=2000, max_iter=30).fit([p[0] for p in pairs], [p[1] for p in pairs])
    image, labels = phantom(100)
    predicted = segmenter.predict(image)
    assert predicted.shape == labels.shape and predicted.dtype == np.uint8
    assert np.nanmin(dice_per_class(labels, predicted, 3)) > 0.9
    # The same subject with its label map shuffled: the segmenter's reading disagrees with it.
    shuffled = np.random.default_rng(0).permutation(labels.ravel()).reshape(labels.shape)
    assert np.nanmax(dice_per_class(shuffled, predicted, 3)[1:]) < 0.5


def test_segmenter_is_reproducible_and_rejects_bad_input():
    pairs = [phantom(s) for s in range(3)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    first = VoxelSegmenter(3, voxels_per_subject=500, max_iter=10, seed=1).fit(images, labels).predict(images[0])
    second = VoxelSegmenter(3, voxels_per_subject=500, max_iter=10, seed=1).fit(images, labels).predict(images[0])
    assert np.array_equal(first, second)
    with pytest.raises(RuntimeError, match="before fit"):
        VoxelSegmenter(3).predict(images[0])
    with pytest.raises(ValueError, match="num_classes=1"):
        VoxelSegmenter(1)
    with pytest.raises(ValueError, match="same number"):
        VoxelSegmenter(3).fit(images, labels[:2])
    with pytest.raises(ValueError, match=r"labels: values 0..2; allowed: 0..1"):
        VoxelSegmenter(2).fit(images, labels)
    with pytest.raises(ValueError, match="differs from the image's"):
        VoxelSegmenter(3).fit(images[:1], [labels[0][:-1]])
