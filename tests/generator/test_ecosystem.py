"""GeneratedBrains in MONAI's and torchio's hands: ``to_dicts()`` through a real ``RandAffined`` and a MONAI
DataLoader, ``to_subjects()`` through a real ``tio.RandomAffine``, image and label map staying aligned."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import RandAffined

from synthbrain.generator import GeneratedBrains
from synthbrain.grid import Grid
from tests.helpers import tiny_generator

GRID = Grid((16, 16, 16), 4.0, (-30.0, -30.0, -30.0))


def _blocks() -> GeneratedBrains:
    """Two subjects whose image is exactly their label map (0 / 1): an off-centre box each, so that a rotation or a
    shift moves it. Aligned after a transform means: image > 0.5 (bilinear) where label == 1 (nearest)."""
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.uint8)
    labels[0, 3:9, 4:13, 5:10] = 1
    labels[1, 6:14, 2:8, 4:12] = 1
    covariates = pd.DataFrame({"age": [30.0, 70.0], "sex": ["F", "M"], "seed": np.array([11, 12], dtype=np.int64)})
    return GeneratedBrains(labels[:, None].float(), labels, covariates, GRID.affine, ("background", "brain"))


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_to_dicts_go_through_monai_rand_affined_with_image_and_label_aligned():
    brains = _blocks()
    items = brains.to_dicts()
    assert [sorted(item) for item in items] == [["age", "image", "label", "seed", "sex"]] * 2
    first = items[0]
    assert isinstance(first["image"], MetaTensor) and first["image"].shape == (1, 16, 16, 16) and first["image"].dtype == torch.float32
    assert isinstance(first["label"], MetaTensor) and first["label"].shape == (1, 16, 16, 16) and first["label"].dtype == torch.uint8
    np.testing.assert_array_equal(first["image"].affine.numpy(), GRID.affine)
    assert first["age"] == 30.0 and first["sex"] == "F" and first["seed"] == 11 and type(first["seed"]) is int

    transform = RandAffined(
        keys=["image", "label"], mode=("bilinear", "nearest"), prob=1.0, rotate_range=((0.3, 0.5),) * 3, translate_range=((2, 3),) * 3
    )
    transform.set_random_state(seed=0)  # radians and voxels, each drawn from the range: every axis rotates and shifts
    for item, before in zip(items, brains.labels):
        out = transform(item)
        image, label = out["image"][0] > 0.5, out["label"][0] > 0
        assert _dice(image, label) > 0.9  # aligned: the same rotation and shift for both
        assert _dice(label, before > 0) < 0.8  # and moved
        torch.testing.assert_close(out["image"].affine, out["label"].affine)
        assert not torch.allclose(out["image"].affine, torch.as_tensor(GRID.affine))  # the affine follows the transform

    batch = next(iter(DataLoader(Dataset(brains.to_dicts(), transform), batch_size=2)))  # MONAI's collation of the dicts
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["label"].shape == (2, 1, 16, 16, 16)
    assert batch["age"].tolist() == [30.0, 70.0] and batch["sex"] == ["F", "M"]


def test_to_subjects_go_through_torchio_random_affine_with_image_and_label_aligned():
    brains = _blocks()
    subjects = brains.to_subjects()
    first = subjects[0]
    assert isinstance(first["image"], tio.ScalarImage) and isinstance(first["label"], tio.LabelMap)
    assert first["image"].shape == (1, 16, 16, 16) and first["label"].shape == (1, 16, 16, 16) and first["label"].data.dtype == torch.uint8
    np.testing.assert_array_equal(first["image"].affine, GRID.affine)
    np.testing.assert_array_equal(first["label"].affine, GRID.affine)
    assert first.age == 30.0 and first["sex"] == "F" and first["seed"] == 11

    torch.manual_seed(0)
    transform = tio.RandomAffine(degrees=(15, 30), translation=(8, 12), image_interpolation="linear")  # mm: 2 to 3 voxels
    for subject, before in zip(subjects, brains.labels):
        out = transform(subject)
        image, label = out["image"].data[0] > 0.5, out["label"].data[0] > 0
        assert _dice(image, label) > 0.9  # aligned: torchio resamples the LabelMap with the same transform, nearest neighbour
        assert _dice(label, before > 0) < 0.8  # and moved
        assert out.age == subject.age


def test_real_generated_brains_convert_with_their_covariates_and_clashes_are_refused():
    brains = tiny_generator().generate(age=[30.0, 70.0], sex="F", ventricular_volume=20.0, brain_volume=1200.0, seed=2)
    items, subjects = brains.to_dicts(), brains.to_subjects()
    for i in range(2):
        torch.testing.assert_close(items[i]["image"].as_tensor(), brains.images[i], rtol=0, atol=0)
        torch.testing.assert_close(items[i]["label"].as_tensor()[0], brains.labels[i], rtol=0, atol=0)
        torch.testing.assert_close(subjects[i]["image"].data, brains.images[i], rtol=0, atol=0)
        torch.testing.assert_close(subjects[i]["label"].data[0], brains.labels[i], rtol=0, atol=0)
        for column in brains.covariates.columns:  # covariates, seed and the quality-control measures
            assert items[i][column] == subjects[i][column] == brains.covariates[column].iloc[i]
    assert brains.images.shape == (2, 1, 16, 16, 16) and brains.labels.shape == (2, 16, 16, 16)  # today's attributes unchanged
    without_labels = GeneratedBrains(brains.images, None, brains.covariates, brains.affine)
    assert "label" not in without_labels.to_dicts()[0] and "label" not in without_labels.to_subjects()[0]
    clash = GeneratedBrains(brains.images, brains.labels, brains.covariates.rename(columns={"age": "label"}), brains.affine)
    with pytest.raises(ValueError, match=r"covariates: columns \['label'\] would replace the image or the label map"):
        clash.to_subjects()
