"""Figures of brains that read on their own: the preview of generated volumes and the evaluation
montage. Each subject is a row of plain T1 views (axial, coronal, sagittal mid-slices) beside the
same views with the label map overlaid, every panel at the same scale (one millimetre is the same
number of pixels in every view), a 50 mm scale bar, titles with units, and one legend naming the
label classes. Built on ``matplotlib.figure.Figure`` objects: no pyplot state, no backend chosen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthbrain import _io

VIEWS = ("axial", "coronal", "sagittal")
PANEL_INCHES = 1.9  # the height of every panel: the tallest slice of the grid fills it
DPI = 110
# One colour per foreground class (index 1, 2, ...), distinct on a grey image: matplotlib's tab10, then tab20's lighter ones.
CLASS_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#c7c7c7",
)  # fmt: skip


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal mid-slices (2D) of a 3D volume indexed along RAS (x, y, z), oriented
    for display: anterior up in the axial slice, superior up in the others, the subject's left on
    the image's left in the axial and coronal slices (neurological), anterior on the right in the sagittal one."""
    i, j, k = (n // 2 for n in volume.shape)
    return [np.rot90(volume[:, :, k]), np.rot90(volume[:, j, :]), np.rot90(volume[i, :, :])]


def title_text(name: str, covariates: Mapping[str, Any], units: Mapping[str, str] | None = None) -> str:
    """``name: sex F, age 70 years, ventricular volume 23.3 mL`` from a row of covariates (the volume
    seed and quality-control columns left out; underscores read as spaces; numbers to 4 significant digits)."""
    parts = []
    for key, value in covariates.items():
        if key == "seed" or key.startswith("qc_"):
            continue
        unit = (units or {}).get(key, "")
        text = f"{value:.4g}" if isinstance(value, (float, np.floating)) and abs(value) < 1e4 else str(value)
        parts.append(f"{key.replace('_', ' ')} {text}" + (f" {unit}" if unit else ""))
    return f"{name}: " + ", ".join(parts)


def brain_rows(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None],
    titles: Sequence[str],
    spacing_mm: float,
    class_names: Sequence[str] | None = None,
):
    """A ``matplotlib.figure.Figure``: one row per subject, its title above it. ``images``: 3D arrays
    (D, H, W) along RAS, shown in [0, 1]; ``labels``: class-index maps of the same shape, or None
    (then only the plain views); ``spacing_mm``: the isotropic voxel size; ``class_names``: the
    classes, background first (index 0, never coloured). Raises ``ValueError`` for mismatched
    lengths or shapes, or a label index beyond ``class_names``."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not (len(images) == len(labels) == len(titles)) or not len(images):
        raise ValueError(f"images, labels, titles: {len(images)}, {len(labels)}, {len(titles)}; allowed: the same number, at least 1")
    shape = np.shape(images[0])
    if any(np.shape(x) != shape for x in images) or any(lab is not None and np.shape(lab) != shape for lab in labels):
        shapes = sorted({np.shape(x) for x in [*images, *labels] if x is not None})
        raise ValueError(f"images and labels: shapes {shapes}; allowed: one 3D shape")
    with_labels = any(lab is not None for lab in labels)
    names = list(class_names or [])
    if with_labels:
        top = max(int(np.max(lab)) for lab in labels if lab is not None)
        if not names or top >= len(names) or len(names) - 1 > len(CLASS_COLOURS):
            most = len(CLASS_COLOURS) + 1
            raise ValueError(f"class_names={names}: label maps hold index {top}; allowed: a name per index, at most {most}")
    widths = [s.shape[1] for s in mid_slices(np.zeros(shape))]
    height = max(s.shape[0] for s in mid_slices(np.zeros(shape)))
    per_voxel = PANEL_INCHES / height  # inches per voxel, the same in every panel
    gap, title_h, head_h, margin = 0.06, 0.28, 0.22, 0.1
    columns = widths + (widths if with_labels else [])
    extra = 0.25 if with_labels else 0.0  # between the plain and the labelled views
    fig_w = 2 * margin + sum(columns) * per_voxel + gap * (len(columns) - 1) + extra
    legend_h = 0.45 + 0.22 * ((len(names) - 2) // 4) if with_labels else 0.0
    fig_h = head_h + len(images) * (title_h + PANEL_INCHES + gap) + legend_h + margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    colours = ListedColormap(["#000000", *CLASS_COLOURS[: max(len(names) - 1, 1)]])

    def box(x_in: float, y_top_in: float, w_in: float, h_in: float):
        return [x_in / fig_w, 1 - (y_top_in + h_in) / fig_h, w_in / fig_w, h_in / fig_h]

    lefts, x = [], margin
    for c, w in enumerate(columns):
        lefts.append(x)
        x += w * per_voxel + gap + (extra if with_labels and c == len(widths) - 1 else 0.0)
    for c, w in enumerate(columns):
        heading = VIEWS[c % 3] + (" + labels" if c >= 3 else "")
        fig.text((lefts[c] + w * per_voxel / 2) / fig_w, 1 - (head_h - 0.04) / fig_h, heading, ha="center", va="bottom", fontsize=9)
    y = head_h
    for row, (image, lab, title) in enumerate(zip(images, labels, titles)):
        fig.text(margin / fig_w, 1 - (y + title_h - 0.06) / fig_h, title, ha="left", va="bottom", fontsize=9)
        y += title_h
        slices = mid_slices(np.asarray(image, dtype=np.float32))
        label_slices = mid_slices(np.asarray(lab)) if lab is not None else [None] * 3
        for c, w in enumerate(columns):
            img = slices[c % 3]
            pad = height - img.shape[0]  # the shorter slices centred on a black band: the same scale, not stretched
            ax = fig.add_axes(box(lefts[c], y, w * per_voxel, PANEL_INCHES))
            padded = np.pad(img, ((pad // 2, pad - pad // 2), (0, 0)))
            ax.imshow(padded, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
            if c >= 3 and label_slices[c % 3] is not None:
                overlay = np.pad(label_slices[c % 3], ((pad // 2, pad - pad // 2), (0, 0)))
                ax.imshow(np.ma.masked_equal(overlay, 0), cmap=colours, vmin=0, vmax=colours.N - 1, alpha=0.55, interpolation="nearest")
            ax.set_axis_off()
            if row == 0 and c == 0:  # a 50 mm scale bar, valid for every panel
                bar = 50.0 / spacing_mm
                ax.plot([2, 2 + bar], [height - 3, height - 3], color="white", lw=2)
                ax.text(2 + bar / 2, height - 5, "50 mm", color="white", ha="center", va="bottom", fontsize=7)
        y += PANEL_INCHES + gap
    if with_labels:
        handles = [Patch(facecolor=CLASS_COLOURS[k - 1], label=names[k].replace("_", " ")) for k in range(1, len(names))]
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 1 - (y + 0.05) / fig_h),
            ncol=min(4, len(handles)),
            fontsize=9,
            frameon=False,
            title="label classes",
            title_fontsize=9,
        )
    return fig


def save_brain_rows(path: str | Path, *args, **kwargs) -> Path:
    """:func:`brain_rows` written as a PNG, atomically; returns ``path``."""
    _io.save_figure(path, brain_rows(*args, **kwargs))
    return Path(path)
