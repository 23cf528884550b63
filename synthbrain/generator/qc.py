"""Quality control of generated subjects: measured signs of a broken sample.

A latent the decoder was not trained on decodes into a brain with labels scattered to the grid's
border, labelled voxels where the image is dark and ringing; the measures below find them. Each
is computed per subject from its image (1, D, H, W) in [0, 1] (before background masking) and
its label map (D, H, W) (0 = background):

- ``qc_border_labelled``: labelled (non-background) voxels on the faces of the grid; a prepared
  brain lies well inside its grid (0 in every IXI-HH subject);
- ``qc_dark_labelled``: voxels labelled with a bright class (one whose median intensity in this
  subject is above :data:`BRIGHT`: tissue, not fluid, which is dark on T1) whose intensity is below
  :data:`DARK`: labels where the image shows nothing;
- ``qc_stray_fraction``: the share of labelled voxels outside the largest 6-connected component of
  the brain mask (scipy.ndimage.label); a brain is one piece.

:data:`THRESHOLDS` are the limits a subject must stay within to pass, set from the real prepared
cohort (see ``docs/generator.md``): a real subject never exceeds them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

DARK = 0.05
BRIGHT = 0.3
THRESHOLDS = {"qc_border_labelled": 0, "qc_dark_labelled": 200, "qc_stray_fraction": 0.01}
COLUMNS = (*THRESHOLDS, "qc_pass")


def measure(images: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """The QC measures of a batch: ``images`` (B, 1, D, H, W), ``labels`` (B, D, H, W); one row per
    subject with the columns of :data:`COLUMNS` (``qc_pass``: every measure within its threshold)."""
    from scipy import ndimage  # on first use: importing the generator does not load SciPy

    if images.ndim != 5 or labels.ndim != 4 or images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)}, labels {tuple(labels.shape)}; allowed: (B, 1, D, H, W) and (B, D, H, W)")
    rows = []
    for image, label in zip(images[:, 0].detach().float().cpu().numpy(), labels.detach().cpu().numpy()):
        brain = label > 0
        border = brain.copy()
        border[1:-1, 1:-1, 1:-1] = False
        components, count = ndimage.label(brain)
        largest = np.bincount(components.ravel())[1:].max() if count else 0
        total = int(brain.sum())
        bright = [c for c in np.unique(label[brain]) if np.median(image[label == c]) > BRIGHT]
        rows.append(
            {
                "qc_border_labelled": int(border.sum()),
                "qc_dark_labelled": int((np.isin(label, bright) & (image < DARK)).sum()),
                "qc_stray_fraction": float((total - largest) / total) if total else 1.0,
            }
        )
    table = pd.DataFrame(rows, columns=list(THRESHOLDS))
    table["qc_pass"] = np.all([table[k] <= v for k, v in THRESHOLDS.items()], axis=0)
    return table
