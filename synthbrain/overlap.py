"""Dice overlap: the one implementation every stage uses (preprocessing QC, evaluation, benchmarks).

:func:`dice_per_class` counts with :func:`numpy.bincount` in one pass over the voxels. It gives what
MONAI's :func:`monai.metrics.compute_dice` gives (``num_classes=C, ignore_empty=False``) for every
class present in either map (tests/test_overlap.py checks the two agree), adds NaN for a class
absent from both (MONAI gives 1.0 there, which would count a class that is not there as perfectly
segmented), and is about 60 times faster on a 2 mm brain (8 classes, 1M voxels), which matters in
:func:`synthbrain.evaluation.evaluate.evaluate` with its two maps per generated volume.
"""

from __future__ import annotations

import numpy as np


def dice_per_class(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice ``2 |A_c ∩ B_c| / (|A_c| + |B_c|)`` of each class c in 0..num_classes-1 between two
    non-negative integer class maps of one shape: (num_classes,) float64, NaN where both lack the
    class. Values >= ``num_classes`` count for no class."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    both = np.bincount(a[a == b], minlength=num_classes)[:num_classes]
    total = np.bincount(a, minlength=num_classes)[:num_classes] + np.bincount(b, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * both / total, np.nan)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |A ∩ B| / (|A| + |B|)`` of two boolean masks of one shape (1.0 when both are
    empty: they agree); :func:`dice_per_class` of the masks as class maps, class 1."""
    overlap = dice_per_class(np.asarray(a, dtype=np.uint8), np.asarray(b, dtype=np.uint8), 2)[1]
    return 1.0 if np.isnan(overlap) else float(overlap)
