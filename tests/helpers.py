"""Helpers for tests: tiny NIfTI files written on the fly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHARED_IXI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi-hh"

# A few MUSE labels, one per coarse class, used to build tiny label maps.
MUSE = {"ventricle": 51, "csf": 1, "cortex": 100, "wm": 81, "deep": 59, "cerebellum": 38, "brainstem": 35}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) * [2, 2, 2, 1] if affine is None else affine), path)
    return path


def tiny_labels(shape=(10, 10, 10)) -> np.ndarray:
    """A blocky label map holding ventricle, white-matter and cortex MUSE labels."""
    lab = np.zeros(shape, dtype=np.int16)
    lab[2:8, 2:8, 2:8] = MUSE["cortex"]
    lab[3:7, 3:7, 3:7] = MUSE["wm"]
    lab[4:6, 4:6, 4:6] = MUSE["ventricle"]
    return lab
