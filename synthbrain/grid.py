"""The voxel grid every prepared and generated volume lives on: a core type of every stage.

:class:`Grid` is made by :func:`synthbrain.preprocessing.template.make_grid` (which centres it on the
template brain) and read by every later stage (model folders, generation, datasets, evaluation), so it
lives here, where none of them reaches into the preprocessing stage for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid in MNI space: ``shape`` voxels of ``spacing`` mm (isotropic), axes along RAS+, voxel
    (0, 0, 0) at ``origin`` mm."""

    shape: tuple[int, int, int]
    spacing: float
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """The (4, 4) float64 voxel-index → MNI RAS+ mm matrix: ``diag(spacing)`` plus ``origin``."""
        affine = np.diag([self.spacing] * 3 + [1.0])
        affine[:3, 3] = self.origin
        return affine

    @property
    def voxel_volume_mm3(self) -> float:
        """The volume of one voxel in mm3 (``spacing ** 3``)."""
        return self.spacing**3

    def to_dict(self) -> dict:
        """JSON-ready: ``shape``, ``spacing`` (mm), ``origin`` (mm) and ``space`` (``"MNI152NLin2009aSym"``)."""
        return {"shape": list(self.shape), "spacing": self.spacing, "origin": list(self.origin), "space": "MNI152NLin2009aSym"}

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        """The grid that :meth:`to_dict` wrote (``space`` is not read). Raises ``KeyError`` for a missing
        ``shape``, ``spacing`` or ``origin``."""
        return cls(tuple(int(x) for x in data["shape"]), float(data["spacing"]), tuple(float(x) for x in data["origin"]))
