"""Fixtures of the reader-study tests: a tiny prepared cohort, a tiny folder of 'generated' volumes
(with the generator's faint background haze and a float header), and a study made of both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthbrain import GeneratedBrains
from synthbrain.grid import Grid
from synthbrain.reader_study.create import create_study
from tests.helpers import TINY_CLASSES, make_prepared

SHAPE = (16, 16, 16)
GRID = Grid(SHAPE, 4.0, (-30.0, -30.0, -30.0))  # the grid of tests.helpers.make_prepared


def make_synthetic(folder: Path, n: int = 6, seed: int = 1) -> Path:
    """A folder as GeneratedBrains.save writes it: blob brains like make_prepared's, smoother, with
    a haze of 0.001-0.01 over the background (label 0) and two stray labels away from the brain,
    as the generator leaves."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    images, labels = [], []
    for i in range(n):
        radius = np.sqrt((xx - 0.05 * i) ** 2 + yy**2 + zz**2)
        lab = np.zeros(SHAPE, np.uint8)
        lab[radius < 0.85] = 3
        lab[radius < 0.65] = 4
        lab[radius < 0.2 + 0.03 * i] = 1
        lab[0, 0, 0], lab[15, 7, 0] = 2, 3  # stray labels far from the brain, one on a face of the grid
        image = np.select([lab == 1, lab == 3, lab == 4], [0.15, 0.55, 0.85], 0.0).astype(np.float32)
        image += rng.normal(0, 0.01, SHAPE).astype(np.float32) * (lab > 0)
        image[lab == 0] = rng.uniform(0.001, 0.01, int((lab == 0).sum()))
        images.append(np.clip(image, 0, 1))
        labels.append(lab)
    covariates = pd.DataFrame({"age": [30.0 + i for i in range(n)], "sex": ["F", "M"] * (n // 2) + ["F"] * (n % 2), "seed": range(n)})
    brains = GeneratedBrains(
        images=torch.from_numpy(np.stack(images))[:, None],
        labels=torch.from_numpy(np.stack(labels)),
        covariates=covariates,
        affine=GRID.affine,
        label_classes=TINY_CLASSES,
    )
    return brains.save(folder)


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {"real": make_prepared(root / "real", n=8, shape=SHAPE), "synthetic": make_synthetic(root / "synthetic", n=6)}


def new_study(sources: dict[str, Path], out: Path, **kwargs) -> Path:
    options = {"n": 8, "synthetic_fraction": 0.5, "seed": 3, **kwargs}
    create_study(sources["real"], out, synthetic=sources["synthetic"], **options)
    return out


@pytest.fixture
def study(sources, tmp_path) -> Path:
    """A fresh 8-case study (4 real, 4 synthetic) in the test's own folder."""
    return new_study(sources, tmp_path / "study")
