"""The models embedded in the package: each loads offline by its name, its files are intact, and it generates."""

import json

import numpy as np
import pytest

from synthbrain import BrainGenerator
from synthbrain.cli import main
from synthbrain.generator import DEFAULT_MODEL, EMBEDDED_MODELS, INDEX
from synthbrain.generator.output import model_name

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / INDEX).is_file(), reason=f"no embedded model at {DEFAULT_MODEL}")
SPACING = {"default": 4.0, "default-2mm": 2.0}  # mm, as their model cards say


@pytest.fixture(scope="module", params=sorted(EMBEDDED_MODELS))
def embedded(request):
    if not (EMBEDDED_MODELS[request.param] / INDEX).is_file():
        pytest.skip(f"no embedded model at {EMBEDDED_MODELS[request.param]}")
    return request.param, BrainGenerator.from_pretrained(request.param)


def test_embedded_model_is_small_documented_and_hash_checked(embedded):
    name, model = embedded
    folder = EMBEDDED_MODELS[name]
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 50 * 2**20, f"embedded model {name} is {size / 2**20:.1f} MB; the limit is 50 MB"
    card = (folder / "README.md").read_text()
    for section in ("## Training data", "## Preprocessing", "## Training", "## Measured quality", "## Intended use"):
        assert section in card
    index = json.loads((folder / INDEX).read_text())
    assert model.source["sha256"] == {k: v["sha256"] for k, v in index["components"].items()}
    assert model.label_classes[1] == "ventricles" and model.schema.names == ["sex", "age", "ventricular_volume", "brain_volume"]
    assert model.image_grid.spacing == SPACING[name] and model_name(model.source["path"]) == name


def test_embedded_model_generates_a_volume_with_its_label_map(embedded):
    _, model = embedded
    out = model.generate({"sex": "F", "age": 70.0}, n=1, seed=3, steps=5, timestep_spacing="trailing")
    grid = model.image_grid
    assert out.images.shape == (1, 1, *grid.shape) and out.labels.shape == (1, *grid.shape)
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0
    assert np.allclose(out.affine, grid.affine)
    assert out.covariates.loc[0, "sex"] == "F" and out.covariates.loc[0, "age"] == 70.0
    low, high = model.schema["ventricular_volume"].low, model.schema["ventricular_volume"].high
    assert low <= out.covariates.loc[0, "ventricular_volume"] <= high  # drawn from the training distribution


def test_generate_command_uses_the_embedded_model(tmp_path):
    argv = ["generate", "-n", "1", "--age", "70", "--sex", "F", "--steps", "3", "--timestep-spacing", "trailing"]
    assert main([*argv, "--out", str(tmp_path / "synth")]) == 0
    assert len(list((tmp_path / "synth").glob("sub-*/anat/*_T1w.nii.gz"))) == 1
    provenance = json.loads((tmp_path / "synth" / "provenance.json").read_text())
    assert provenance["model"]["path"] == str(DEFAULT_MODEL.resolve())
