"""Dataset items as MONAI and torchio take them: "label" (1, D, H, W), the affine carried along, the
old "labels" key deprecated with a warning, and real MONAI / torchio spatial transforms keeping image
and label aligned (issue 33)."""

import warnings

import numpy as np
import pytest
import torch
import torchio as tio
from monai.data import MetaTensor
from monai.transforms import RandAffined, ScaleIntensityd
from torch.utils.data import DataLoader, default_collate

from synthbrain.datasets import MixedBatchSampler, MixedDataset, SyntheticBrainDataset
from synthbrain.datasets.appearance import AppearanceRandomizer, RandomizedLabelsDataset
from synthbrain.datasets.items import make_item, make_subject
from tests.datasets.test_appearance import blobs
from tests.helpers import tiny_generator

# one intensity per class and nothing else: the image is a function of the label map, voxel by voxel
FLAT = AppearanceRandomizer(std=(0, 0), bias_field=0, log_gamma=(0, 0), downsampling=(1, 1), blur_std=(0, 0), noise_std=(0, 0))


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def lookup(image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The intensity of each class in an image that has one intensity per class (checked)."""
    table = torch.zeros(int(label.max()) + 1)
    for c in label.unique().tolist():
        values = image[label == c]
        assert values.max() - values.min() < 1e-6, c
        table[c] = values[0]
    return table


def test_dict_items_carry_label_with_its_channel_and_the_affine_and_labels_is_deprecated(generator):
    dataset = SyntheticBrainDataset(3, None, generator, seed=1, device="cpu", cache_mb=0)
    item = dataset[1]
    alone = generator.generate(seed=[dataset.item_seed(1)])  # the item's volume, generated alone
    assert item["label"].shape == (1, 16, 16, 16) and item["label"].dtype == torch.long
    assert (item["label"][0] != alone.labels[0].long()).float().mean() < 0.01  # argmax may flip on float ties only
    assert item["affine"].dtype == torch.float64 and np.array_equal(item["affine"].numpy(), generator.image_grid.affine)
    assert "labels" not in item.keys() and "labels" in item  # not stored; still found, for code that checks first
    with pytest.warns(FutureWarning, match=r"'labels' of synthbrain dataset items is deprecated.*use 'label'"):
        old = item["labels"]
    assert torch.equal(old, item["label"][0])  # what 'labels' held before: (D, H, W)
    with pytest.warns(FutureWarning):
        assert torch.equal(item.get("labels"), item["label"][0])
    batch = default_collate(dataset.__getitems__([0, 2]))
    assert batch["label"].shape == (2, 1, 16, 16, 16) and batch["affine"].shape == (2, 4, 4)
    with pytest.warns(FutureWarning):
        assert torch.equal(batch["labels"], batch["label"][:, 0])  # (B, D, H, W), as a batch of the old items
    item["labels"] = "set by a transform"
    assert item["labels"] == "set by a transform"  # a key stored under the old name is served as stored


def test_torchio_subjects_carry_label_and_labels_is_deprecated(generator):
    subject = SyntheticBrainDataset(2, None, generator, device="cpu", as_subject=True)[0]
    assert isinstance(subject["label"], tio.LabelMap) and subject["label"].data.shape == (1, 16, 16, 16)
    flipped = tio.RandomFlip(axes=(0,), flip_probability=1.0)(subject)
    assert type(flipped) is type(subject)  # torchio transforms keep the class, and so the deprecated key
    with pytest.warns(FutureWarning, match="use 'label'"):
        assert flipped["labels"] is flipped["label"]
    with pytest.warns(FutureWarning):
        assert flipped.labels is flipped["label"]


def test_the_deprecated_key_reads_after_a_monai_transform_and_through_get_warning_at_the_callers_line(generator):
    # MONAI's dictionary transforms return a plain dict: the dataset makes it an item again, so old code keeps reading "labels"
    dataset = SyntheticBrainDataset(2, None, generator, device="cpu", transform=ScaleIntensityd(keys=["image"], minv=0.0, maxv=2.0))
    item = dataset[0]
    assert float(item["image"].max()) == pytest.approx(2.0)  # the transform ran
    with pytest.warns(FutureWarning, match="use 'label'"):
        assert torch.equal(item["labels"], item["label"][0])
    image, label = torch.zeros(1, 2, 2, 2), torch.ones(2, 2, 2, dtype=torch.long)
    subject = make_subject(image, label, np.eye(4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert torch.equal(make_item(image, label, np.eye(4)).get("labels"), label)
        assert subject.get("labels") is subject["label"]  # not None: dict.get would bypass the deprecated key
    assert [w.category for w in seen] == [FutureWarning] * 2
    assert {w.filename for w in seen} == {__file__}  # the warning names the line that reads the old key


def test_real_items_of_this_package_are_mixed_without_reading_the_deprecated_key(generator):
    synthetic = SyntheticBrainDataset(2, None, generator, device="cpu")
    real = RandomizedLabelsDataset([blobs()], 8, generator.image_grid.affine)  # items with "label", as any dataset of this package
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        item = MixedDataset(real, synthetic)[0]
    assert torch.equal(item["label"], real[0]["label"]) and item["is_synthetic"] is False


def test_a_mixed_training_batch_reads_no_deprecated_key(generator):
    """Everything the package does with items (mixing real and synthetic ones, collating, the
    synthetic dataset, the randomised-appearance datasets) runs with warnings as errors."""
    synthetic = SyntheticBrainDataset(4, None, generator, device="cpu", cache_mb=0, appearance=0.5)
    grid = generator.image_grid
    real = tio.SubjectsDataset(
        [
            tio.Subject(
                image=tio.ScalarImage(tensor=torch.rand(1, 16, 16, 16), affine=grid.affine),
                label=tio.LabelMap(tensor=torch.randint(0, 8, (1, 16, 16, 16)), affine=grid.affine),
            )
            for _ in range(3)
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed = MixedDataset(real, synthetic)
        loader = DataLoader(mixed, batch_sampler=MixedBatchSampler(mixed, 4, 0.5, num_batches=1))
        batch = next(iter(loader))
        rendered = default_collate([RandomizedLabelsDataset([blobs()], 8, grid.affine)[0]] * 2)
    assert batch["label"].shape == (4, 1, 16, 16, 16) and batch["is_synthetic"].tolist() == [False, False, True, True]
    assert all(np.array_equal(a, grid.affine) for a in batch["affine"].numpy())  # real and synthetic items on one grid
    assert rendered["label"].shape == (2, 1, 16, 16, 16)


def label_image_item():
    """A dataset item whose image is its label map: 1 inside the blobs, 0 outside (smooth shapes,
    so that a linearly interpolated image thresholded at 0.5 is the nearest-neighbour label map)."""
    item = RandomizedLabelsDataset([blobs()], 8, np.diag([4.0, 4.0, 4.0, 1.0]))[0]
    item["image"] = (item["label"] > 0).float()
    return item


def test_monai_rand_affined_keeps_image_and_label_aligned(generator):
    rand_affine = RandAffined(
        keys=["image", "label"], mode=("bilinear", "nearest"), prob=1.0, rotate_range=(0.4, 0.4, 0.4), translate_range=(2, 2, 2)
    )
    rand_affine.set_random_state(seed=0)
    item = label_image_item()
    out = rand_affine(item)
    moved, before = out["label"][0] > 0, item["label"][0] > 0
    assert dice(moved, before) < 0.9  # it did move
    assert dice(out["image"][0] > 0.5, moved) > 0.95  # and the image moved with the label
    assert torch.equal(out["affine"], item["affine"])  # the item's affine is carried through
    wrapped = {**item, "image": MetaTensor(item["image"], affine=item["affine"]), "label": MetaTensor(item["label"], affine=item["affine"])}
    out = rand_affine(wrapped)  # as MetaTensors (MONAI's own way to carry the affine) the two stay on one grid
    assert torch.equal(out["image"].affine, out["label"].affine) and dice(out["image"][0] > 0.5, out["label"][0] > 0) > 0.95

    # exact, on a generated item: one intensity per class, nearest neighbour for both keys
    item = SyntheticBrainDataset(2, None, generator, device="cpu", appearance="randomized", randomizer=FLAT)[1]
    table = lookup(item["image"][0], item["label"][0])
    nearest = RandAffined(keys=["image", "label"], mode="nearest", prob=1.0, rotate_range=(0.4, 0.4, 0.4), translate_range=(2, 2, 2))
    out = nearest.set_random_state(seed=1)(item)
    assert not torch.equal(out["label"], item["label"])
    image, label = out["image"].as_tensor()[0], out["label"].as_tensor()[0].long()
    torch.testing.assert_close(image, table[label], atol=1e-6, rtol=0)


def test_torchio_random_affine_keeps_image_and_label_aligned(generator):
    item = label_image_item()
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=item["image"], affine=item["affine"]), label=tio.LabelMap(tensor=item["label"], affine=item["affine"])
    )
    torch.manual_seed(0)
    out = tio.RandomAffine(degrees=20, translation=8)(subject)  # linear for the image, nearest for the label map
    moved = out["label"].data[0] > 0
    assert dice(moved, item["label"][0] > 0) < 0.9 and dice(out["image"].data[0] > 0.5, moved) > 0.95
    assert np.array_equal(out["image"].affine, item["affine"].numpy()) and np.array_equal(out["label"].affine, item["affine"].numpy())

    # exact, on a generated subject: one intensity per class, nearest neighbour for both
    subject = SyntheticBrainDataset(2, None, generator, device="cpu", appearance="randomized", randomizer=FLAT, as_subject=True)[1]
    table = lookup(subject["image"].data[0], subject["label"].data[0])
    torch.manual_seed(1)
    out = tio.RandomAffine(degrees=20, translation=8, image_interpolation="nearest")(subject)
    assert not torch.equal(out["label"].data, subject["label"].data)
    torch.testing.assert_close(out["image"].data[0], table[out["label"].data[0].long()], atol=1e-6, rtol=0)
    assert all(np.array_equal(out[key].affine, generator.image_grid.affine) for key in ("image", "label"))
