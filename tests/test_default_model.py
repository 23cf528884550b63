"""The model embedded in the package: it loads offline, its files are intact, and it generates."""

import json

import numpy as np
import pytest

from synthbrain import BrainGenerator
from synthbrain.cli import main
from synthbrain.generator import DEFAULT_MODEL, INDEX

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / INDEX).is_file(), reason=f"no embedded model at {DEFAULT_MODEL}")


@pytest.fixture(scope="module")
def default():
    return BrainGenerator.from_pretrained("default")


def test_embedded_model_is_small_documented_and_hash_checked(default):
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.rglob("*") if f.is_file())
    assert size <= 50 * 2**20, f"embedded model is {size / 2**20:.1f} MB; the limit is 50 MB"
    card = (DEFAULT_MODEL / "README.md").read_text()
    for section in ("## Training data", "## Preprocessing", "## Training", "## Measured quality", "## Intended use"):
        assert section in card
    index = json.loads((DEFAULT_MODEL / INDEX).read_text())
    assert default.source["sha256"] == {k: v["sha256"] for k, v in index["components"].items()}
    assert default.label_classes[1] == "ventricles" and default.schema.names == ["sex", "age", "ventricular_volume", "brain_volume"]


def test_default_model_generates_a_volume_with_its_label_map(default):
    out = default.generate({"sex": "F", "age": 70.0}, n=1, seed=3, steps=5, timestep_spacing="trailing")
    grid = default.image_grid
    assert out.images.shape == (1, 1, *grid.shape) and out.labels.shape == (1, *grid.shape)
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0
    assert np.allclose(out.affine, grid.affine)
    assert out.covariates.loc[0, "sex"] == "F" and out.covariates.loc[0, "age"] == 70.0
    low, high = default.schema["ventricular_volume"].low, default.schema["ventricular_volume"].high
    assert low <= out.covariates.loc[0, "ventricular_volume"] <= high  # drawn from the training distribution


def test_generate_command_uses_the_embedded_model(tmp_path):
    argv = ["generate", "-n", "1", "--age", "70", "--sex", "F", "--steps", "3", "--timestep-spacing", "trailing"]
    assert main([*argv, "--out", str(tmp_path / "synth")]) == 0
    assert len(list((tmp_path / "synth").glob("sub-*/anat/*_T1w.nii.gz"))) == 1
    provenance = json.loads((tmp_path / "synth" / "provenance.json").read_text())
    assert provenance["model"]["path"] == str(DEFAULT_MODEL.resolve())
