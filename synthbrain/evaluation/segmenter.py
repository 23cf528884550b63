"""An independent segmenter for evaluation: a gradient-boosted voxel classifier trained on real
images and their label maps only.

Features per voxel: the intensity, local means and standard deviations over 3, 5 and 9 voxel
cubes, and the voxel's position on the (shared, MNI) grid. Position lets it separate classes of
equal intensity (cortical from deep grey matter, cerebellum, brainstem); the local statistics
carry the tissue contrast. It never sees a generated volume in training, so Dice between a
generated label map and this segmenter's reading of the generated image measures whether image
and labels agree (label faithfulness), against the same Dice on held-out real subjects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier

from synthbrain.overlap import dice_per_class  # noqa: F401  (re-exported from its former home)

SCALES = (3, 5, 9)


def voxel_features(image: np.ndarray) -> np.ndarray:
    """(D*H*W, 10) float32 features of a 3D image (D, H, W) in [0, 1] on the model grid, voxels in C order:
    the intensity, the mean and standard deviation over each cube of :data:`SCALES` voxels (zero padding
    at the border), and the voxel's index along each axis scaled to [0, 1]. Raises ``ValueError`` for
    an image that is not 3D."""
    if image.ndim != 3:
        raise ValueError(f"image: expected a 3D array, got shape {image.shape}")
    image = image.astype(np.float32)
    columns = [image]
    for size in SCALES:
        mean = ndimage.uniform_filter(image, size, mode="constant")
        square = ndimage.uniform_filter(image * image, size, mode="constant")
        columns += [mean, np.sqrt(np.clip(square - mean * mean, 0, None))]
    columns += [c.astype(np.float32) / (n - 1) for c, n in zip(np.indices(image.shape), image.shape)]
    return np.stack([c.ravel() for c in columns], axis=1)


class VoxelSegmenter:
    """The independent segmenter of the module docstring: scikit-learn's ``HistGradientBoostingClassifier``
    (``max_iter`` trees, learning rate 0.1, no early stopping, ``random_state=seed``) on
    :func:`voxel_features`, trained on ``voxels_per_subject`` random voxels of each subject. Raises
    ``ValueError`` for ``num_classes`` < 2 or ``voxels_per_subject`` < 1."""

    def __init__(self, num_classes: int, *, voxels_per_subject: int = 4000, max_iter: int = 150, seed: int = 0):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}; allowed: >= 2")
        if voxels_per_subject < 1:
            raise ValueError(f"voxels_per_subject={voxels_per_subject}; allowed: >= 1")
        self.num_classes, self.voxels_per_subject, self.seed = num_classes, voxels_per_subject, seed
        self.model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, early_stopping=False, random_state=seed)
        self.fitted = False

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> VoxelSegmenter:
        """Train on real (image, class map) pairs, each a 3D image in [0, 1] and an integer class map of its
        shape; a random subset of voxels per subject, seeded. Returns ``self``. Raises ``ValueError`` for
        different counts or none, shapes that differ, or classes outside 0..num_classes-1."""
        if len(images) != len(labels) or not len(images):
            raise ValueError(f"images, labels: need the same number (>= 1) of each, got {len(images)} and {len(labels)}")
        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for image, label in zip(images, labels):
            if image.shape != label.shape:
                raise ValueError(f"labels: shape {label.shape} differs from the image's {image.shape}")
            label = np.asarray(label).ravel()
            if label.min() < 0 or label.max() >= self.num_classes:
                raise ValueError(f"labels: values {label.min()}..{label.max()}; allowed: 0..{self.num_classes - 1}")
            pick = rng.choice(label.size, size=min(self.voxels_per_subject, label.size), replace=False)
            xs.append(voxel_features(image)[pick])
            ys.append(label[pick])
        y = np.concatenate(ys)
        self.model.fit(np.concatenate(xs), y)
        self.fitted = True
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class map (uint8, the image's shape) of one 3D image in [0, 1]. Raises ``RuntimeError`` before :meth:`fit`."""
        if not self.fitted:
            raise RuntimeError("VoxelSegmenter.predict before fit")
        scores = self.model.predict_proba(voxel_features(image))
        full = np.zeros((scores.shape[0], self.num_classes), dtype=np.float32)
        full[:, self.model.classes_] = scores  # classes missing from training get probability 0
        return full.argmax(axis=1).astype(np.uint8).reshape(image.shape)
