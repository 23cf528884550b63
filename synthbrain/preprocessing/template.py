"""The template space: the MNI ICBM 2009a template and the fixed output grids built on it.

Every prepared volume and every generated volume lives on a :class:`~synthbrain.grid.Grid` (defined
in :mod:`synthbrain.grid`, a core type every stage imports; importable from here as before): RAS+ axes in MNI mm,
isotropic spacing, a shape padded to a multiple of 8 voxels (so autoencoders and UNets can halve it
three times), centred on the template's brain. At 1 mm the default field of view is the reference
model's 160 x 224 x 160.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import nibabel as nib
import nibabel.processing
import numpy as np
from scipy import ndimage

from synthbrain.grid import Grid

TEMPLATE_FILE = "mni_icbm152_2009a_t1_1mm.nii.gz"
FIELD_OF_VIEW_MM = (160.0, 224.0, 160.0)
# Centre of the template brain mask's bounding box, x [-72, 72], y [-107, 73], z [-72, 82] mm.
BRAIN_CENTRE_MM = (0.0, -17.0, 5.0)
SPACING_RANGE_MM = (0.5, 8.0)


def make_grid(spacing: float, field_of_view_mm: tuple[float, float, float] = FIELD_OF_VIEW_MM, multiple: int = 8) -> Grid:
    """The grid of ``spacing`` mm covering at least ``field_of_view_mm`` (x, y, z in mm) around the template
    brain (centred on :data:`BRAIN_CENTRE_MM`), each axis rounded up to a multiple of ``multiple`` voxels:
    at 2 mm the default is 80 x 112 x 80. Raises ``ValueError`` for a spacing outside
    :data:`SPACING_RANGE_MM` or a field of view that is not three positive sizes."""
    low, high = SPACING_RANGE_MM
    if not (isinstance(spacing, (int, float)) and low <= spacing <= high):
        raise ValueError(f"spacing={spacing!r}; allowed: a number of mm in [{low}, {high}] (1, 2, 3 and 4 are usual)")
    if len(field_of_view_mm) != 3 or min(field_of_view_mm) <= 0:
        raise ValueError(f"field_of_view_mm={field_of_view_mm!r}; allowed: three positive sizes in mm")
    shape = tuple(int(math.ceil(fov / spacing / multiple - 1e-9) * multiple) for fov in field_of_view_mm)
    origin = tuple(c - (n - 1) * spacing / 2.0 for c, n in zip(BRAIN_CENTRE_MM, shape))
    return Grid(shape, float(spacing), origin)


@lru_cache(maxsize=1)
def load_template() -> nib.Nifti1Image:
    """The skull-stripped MNI ICBM 2009a symmetric T1 template at 1 mm (uint8, 197 x 233 x 189)."""
    with resources.as_file(resources.files("synthbrain.preprocessing").joinpath("templates").joinpath(TEMPLATE_FILE)) as path:
        img = nib.load(path)
        return nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)


def template_brain_mask() -> nib.Nifti1Image:
    """The template's brain mask at 1 mm (uint8 0/1, the template's grid): its non-zero support with holes
    filled (CSF included)."""
    template = load_template()
    mask = ndimage.binary_fill_holes(np.asarray(template.dataobj) > 0)
    return nib.Nifti1Image(mask.astype(np.uint8), template.affine)


@lru_cache(maxsize=2)
def registration_template(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template resampled to ``spacing`` mm (float32 3D array), its (4, 4) voxel-to-RAS affine, and where
    registration samples its metric (bool, same shape): the brain dilated by 3 voxels, so that the
    brain's outline is inside. Cached; treat the arrays as read-only."""
    template = nibabel.processing.resample_to_output(load_template(), voxel_sizes=spacing, order=1)
    data = np.asarray(template.dataobj, dtype=np.float32)
    return data, template.affine, ndimage.binary_dilation(data > 0, iterations=3)


@lru_cache(maxsize=4)
def template_mask_on_grid(grid: Grid) -> np.ndarray:
    """The template brain mask resampled onto ``grid`` (nibabel, linear, then thresholded at 0.5): bool
    ``grid.shape``. Cached; treat the array as read-only."""
    mask = template_brain_mask()
    resampled = nibabel.processing.resample_from_to(
        nib.Nifti1Image(np.asarray(mask.dataobj, dtype=np.float32), mask.affine), (grid.shape, grid.affine), order=1
    )
    return np.asarray(resampled.dataobj) >= 0.5
