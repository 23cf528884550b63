"""Shared fixtures: a tiny cohort written on the fly, and the shared real data if present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import SHARED_IXI, tiny_labels, write_nifti

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``gpu`` skip cleanly where there is no CUDA device (CI, the CPU machines)."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device (marked gpu)")


@pytest.fixture
def tiny_folder(tmp_path: Path) -> dict[str, Path]:
    """Three valid subjects: images/, labels/ and participants.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for i, sid in enumerate(["s01", "s02", "s03"]):
        write_nifti(tmp_path / "images" / f"{sid}_T1.nii.gz", rng.uniform(0, 100, (10, 10, 10)).astype(np.float32))
        write_nifti(tmp_path / "labels" / f"{sid}_T1_seg.nii.gz", tiny_labels())
        rows.append({"subject_id": sid, "age": 30 + 10 * i, "sex": "FM"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "participants.csv", index=False)
    return {"images": tmp_path / "images", "labels": tmp_path / "labels", "table": tmp_path / "participants.csv", "root": tmp_path}


@pytest.fixture
def ixi() -> Path:
    if not SHARED_IXI.is_dir():
        pytest.skip(f"real data not found at {SHARED_IXI} (the shared IXI-HH folder beside the checkout)")
    return SHARED_IXI
