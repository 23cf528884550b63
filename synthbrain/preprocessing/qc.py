"""Quality-control figures of a prepared cohort, as PNG files.

Figures are :class:`matplotlib.figure.Figure` objects made directly, not through pyplot: importing or
using this module never sets or changes the caller's plotting backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthbrain import _io
from synthbrain.cohort.covariates import CATEGORICAL, CovariateSchema
from synthbrain.figures import mid_slices


def size_bound_dice(volume_a: float, volume_b: float) -> float:
    """The highest Dice two masks of these volumes can reach (one inside the other).

    Rigid registration keeps head size, so a subject's Dice with the template cannot exceed this;
    Dice / bound separates misalignment from size difference.
    """
    return 2.0 * min(volume_a, volume_b) / (volume_a + volume_b) if volume_a + volume_b else 1.0


# What a registration to the template may plausibly do to a brain (:func:`registration_flags`).
REGISTRATION_LIMITS = {
    # Dice with the template brain over the most the two brain volumes allow (size_bound_dice): IXI-HH's
    # worst subject reached 0.955 with its label-map brain (docs/benchmarks/prepare-ixi-hh-2mm-rigid.md)
    "min_dice_over_size_bound": 0.90,
    # rotation of the head in the scanner frame: heads lie within about 20 degrees of the scanner axes
    "max_rotation_deg": 30.0,
    # scaling of an affine registration (1 for rigid): IXI-HH brains were scaled 1.17-1.59x (docs/preprocessing.md)
    "scale_range": (0.5, 2.0),
}


def registration_flags(template_to_subject_ras: np.ndarray, dice: float, size_bound: float) -> list[str]:
    """Why a registration to the template looks wrong: a list of reasons, empty when it looks right.

    ``template_to_subject_ras``: the (4, 4) RAS mm matrix found; ``dice`` and ``size_bound``: the brain
    mask's Dice with the template brain and :func:`size_bound_dice` (NaN without a brain mask: that
    check is left out). Flagged (:data:`REGISTRATION_LIMITS`): Dice / size bound below
    ``min_dice_over_size_bound`` (the brain lands beside the template's), a rotation beyond
    ``max_rotation_deg`` (the rotation of the matrix's polar decomposition), or a scaling (its
    singular values) outside ``scale_range``. An outlying voxel that moved the registration by a
    millimetre or two is prevented by :func:`~synthbrain.preprocessing.registration.registration_intensities`,
    not caught here; this catches registrations gone wrong."""
    flags = []
    ratio = dice / size_bound if np.isfinite(dice) and np.isfinite(size_bound) and size_bound > 0 else float("nan")
    least = REGISTRATION_LIMITS["min_dice_over_size_bound"]
    if np.isfinite(ratio) and ratio < least:
        flags.append(f"Dice / size bound {ratio:.3f} < {least:g}: the brain is misaligned with the template's")
    u, scales, vt = np.linalg.svd(np.asarray(template_to_subject_ras, dtype=float)[:3, :3])
    rotation = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
    if np.linalg.det(rotation) < 0:
        flags.append("the transform mirrors the brain (negative determinant)")
    elif angle > REGISTRATION_LIMITS["max_rotation_deg"]:
        flags.append(f"rotation {angle:.1f} deg > {REGISTRATION_LIMITS['max_rotation_deg']:g} deg")
    low, high = REGISTRATION_LIMITS["scale_range"]
    if scales.min() < low or scales.max() > high:
        flags.append(f"scaling {scales.min():.2f}-{scales.max():.2f} outside [{low:g}, {high:g}]")
    return flags


def montage(
    path: str | Path,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None],
    titles: Sequence[str],
    num_classes: int | None = None,
    outline: np.ndarray | None = None,
) -> None:
    """Write a PNG with one row per subject: three mid-slices of the image (3D, shown in [0, 1]), label map
    (class indices, same shape) overlaid in colour where given, and the ``outline`` mask (e.g. the
    template brain, same shape) drawn as a yellow contour. ``images``, ``labels`` and ``titles`` are one
    per row; ``num_classes`` fixes the colour scale (default: from each label map's maximum)."""
    rows = len(images)
    fig = Figure(figsize=(7.5, 2.6 * rows), dpi=100)
    axes = fig.subplots(rows, 3, squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    outline_slices = mid_slices(outline.astype(float)) if outline is not None else [None] * 3  # the same for every row
    for row, (image, lab, title) in enumerate(zip(images, labels, titles)):
        lab_slices = mid_slices(lab) if lab is not None else [None] * 3
        for col, (img_slice, lab_slice, line) in enumerate(zip(mid_slices(image), lab_slices, outline_slices)):
            ax = axes[row, col]
            ax.imshow(img_slice, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if lab_slice is not None:
                overlay = np.ma.masked_equal(lab_slice, 0)
                ax.imshow(
                    overlay, cmap=cmap, vmin=0, vmax=max(num_classes or int(lab.max()) + 1, 10) - 1, alpha=0.25, interpolation="nearest"
                )
            if line is not None:
                ax.contour(line, levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_axis_off()
        axes[row, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    _io.save_figure(path, fig)


def covariate_plots(path: str | Path, table: pd.DataFrame, schema: CovariateSchema, extra: Sequence[str] = ()) -> None:
    """Write a PNG of histograms of continuous covariates (and the ``extra`` columns of ``table``), bar charts
    of categorical ones, each titled with its unit and counts of present and missing values. Columns
    ``table`` lacks are left out."""
    names = [n for n in [*schema.names, *extra] if n in table.columns]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names):
        values = table[name]
        covariate = schema[name] if name in schema.names else None
        if covariate is not None and covariate.kind == CATEGORICAL:
            counts = values.value_counts().reindex(list(covariate.categories), fill_value=0)
            ax.bar(counts.index.astype(str), counts.values, color="tab:blue")
            missing = int(values.isna().sum())
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            missing = int(numeric.isna().sum())
            present = numeric.dropna().to_numpy(dtype=float)
            # values equal but for rounding (the same volume from two sessions, say) cannot make 20 bins
            spread = np.ptp(present) if len(present) else 0.0
            bins = 20 if spread > 1e-9 * max(1.0, float(np.abs(present).max(initial=0.0))) else 1
            ax.hist(present, bins=bins, color="tab:blue")
        unit = f" [{covariate.unit}]" if covariate is not None and covariate.unit else ""
        ax.set_title(f"{name}{unit}\nn={len(values) - missing}, missing={missing}", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig)
