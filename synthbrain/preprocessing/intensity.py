"""Robust intensity normalisation to [0, 1]."""

from __future__ import annotations

import numpy as np


def robust_normalize(
    image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), zero_outside: bool = True
) -> tuple[np.ndarray, float, float]:
    """Map the ``percentiles`` of the intensities inside ``mask`` to 0 and 1 and saturate beyond them;
    voxels outside ``mask`` are set to 0 when ``zero_outside`` (skull stripping).

    ``image`` and ``mask``: arrays of one shape (``mask`` any dtype, read as bool); ``percentiles`` in
    [0, 100]. Returns the normalised float32 image (same shape, in [0, 1]) and the two intensities (in
    the input's units) that were mapped to 0 and 1. Raises ``ValueError`` for percentiles not
    ``0 <= low < high <= 100``, shapes that differ, an empty mask, or constant intensities inside it.
    """
    lo_p, hi_p = percentiles
    if not (0.0 <= lo_p < hi_p <= 100.0):
        raise ValueError(f"percentiles={percentiles!r}; allowed: 0 <= low < high <= 100")
    mask = mask.astype(bool)
    if image.shape != mask.shape:
        raise ValueError(f"mask: shape {mask.shape} differs from image shape {image.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no voxels to normalise the intensities on")
    low, high = (float(x) for x in np.percentile(image[mask], [lo_p, hi_p]))
    if high <= low:
        raise ValueError(f"image intensities inside the mask are constant ({low}); cannot normalise")
    out = np.clip((image.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    if zero_outside:
        out[~mask] = 0.0
    return out, low, high
