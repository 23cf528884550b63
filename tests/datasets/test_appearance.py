"""Randomised appearance (label-to-image synthesis): determinism per index, labels kept, intensities
inside the configured ranges, alignment under deformation, and bad input."""

import dataclasses

import numpy as np
import pytest
import torch
import torchio as tio

from synthbrain import SyntheticBrainDataset, Uniform
from synthbrain.datasets.appearance import AppearanceRandomizer, RandomizedLabelsDataset
from tests.helpers import tiny_generator

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


def blobs() -> torch.Tensor:
    """A label map (16^3) of nested cubes: classes 1..4 with known voxels."""
    labels = torch.zeros(16, 16, 16, dtype=torch.long)
    labels[2:14, 2:14, 2:14] = 3
    labels[4:12, 4:12, 4:12] = 4
    labels[6:10, 6:10, 6:10] = 1
    labels[2:4, 6:10, 6:10] = 2
    return labels


def test_each_class_gets_one_intensity_inside_the_configured_range_and_the_background_stays_zero():
    labels = blobs()
    plain = AppearanceRandomizer(
        mean=(0.2, 0.8), std=(0.0, 0.0), bias_field=0, log_gamma=(0, 0), downsampling=(1, 1), blur_std=(0, 0), noise_std=(0, 0)
    )
    means = []
    for seed in range(6):
        image, out_labels = plain(labels, 8, AFFINE, seed=seed)
        assert torch.equal(out_labels, labels) and image.shape == (1, 16, 16, 16)
        assert (image[0][labels == 0] == 0).all() and 0 <= image.min() and image.max() <= 1
        per_class = [image[0][labels == c] for c in (1, 2, 3, 4)]
        assert all(v.std() < 1e-5 for v in per_class)  # std 0: one value per class
        means.append([float(v.mean()) for v in per_class])
    means = np.array(means)
    assert (means.std(axis=0) > 0.05).all()  # each class's intensity varies across seeds (draws from the range)
    # before the final rescaling to [0, 1] the drawn means lie in (0.2, 0.8): their order varies, and none is clipped twice
    assert len({tuple(np.argsort(row)) for row in means}) > 1


def test_the_same_seed_gives_the_same_image_and_another_seed_another():
    labels, randomizer = blobs(), AppearanceRandomizer()
    a, _ = randomizer(labels, 8, AFFINE, seed=3)
    b, _ = randomizer(labels, 8, AFFINE, seed=3)
    c, _ = randomizer(labels, 8, AFFINE, seed=4)
    assert torch.equal(a, b) and (a - c).abs().max() > 0.05
    state = torch.get_rng_state()
    randomizer(labels, 8, AFFINE, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # torch's global generator is left as it was


def test_labels_stay_aligned_under_spatial_deformation():
    """Known answer: with one constant intensity per class and no other change, every labelled voxel
    of the deformed label map has its class's intensity in the image: the image is made from the
    deformed labels, so they cannot drift apart."""
    labels = blobs()
    spatial = AppearanceRandomizer(
        std=(0, 0),
        bias_field=0,
        log_gamma=(0, 0),
        downsampling=(1, 1),
        blur_std=(0, 0),
        noise_std=(0, 0),
        spatial=True,
        elastic_displacement=6.0,
    )
    image, moved = spatial(labels, 8, AFFINE, seed=1)
    assert (moved != labels).any()  # it did deform
    for c in (1, 2, 3, 4):
        values = image[0][moved == c]
        assert values.numel() and values.std() < 1e-5, c
    assert (image[0][moved == 0] == 0).all()


def test_dataset_appearance_is_deterministic_per_index_and_keeps_the_generated_labels(generator):
    sampler = Uniform(age=(30, 60))
    generated = SyntheticBrainDataset(6, sampler, generator, seed=2, device="cpu")
    randomized = SyntheticBrainDataset(6, sampler, generator, seed=2, device="cpu", appearance="randomized")
    mixed = SyntheticBrainDataset(6, sampler, generator, seed=2, device="cpu", appearance=0.5)
    for i in range(6):
        assert torch.equal(generated[i]["label"], randomized[i]["label"])  # the same anatomy
        assert randomized[i]["appearance"] == "randomized" and generated[i]["appearance"] == "generated"
        assert not torch.allclose(generated[i]["image"], randomized[i]["image"])
    kinds = [mixed[i]["appearance"] for i in range(6)]
    assert kinds == [mixed[i]["appearance"] for i in reversed(range(6))][::-1]  # decided by the index, not the order
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(randomized, batch_size=4, num_workers=workers, shuffle=False)
        images = torch.cat([b["image"] for b in loader])
        torch.testing.assert_close(images, torch.stack([randomized[i]["image"] for i in range(6)]), atol=1e-5, rtol=0)
    shuffled = torch.utils.data.DataLoader(randomized, batch_size=3, sampler=[5, 1, 3, 0, 2, 4])
    for batch in shuffled:
        for image, index in zip(batch["image"], batch["index"]):
            torch.testing.assert_close(image, randomized[int(index)]["image"], atol=1e-5, rtol=0)


def test_real_anatomy_with_random_appearance():
    maps = [blobs(), blobs().flip(0)]
    dataset = RandomizedLabelsDataset(maps, 8, AFFINE, n=5, seed=1)
    assert len(dataset) == 5 and [dataset[i]["source"] for i in range(5)] == [0, 1, 0, 1, 0]
    assert torch.equal(dataset[2]["label"][0], maps[0]) and not torch.equal(dataset[0]["image"], dataset[2]["image"])
    torch.testing.assert_close(dataset[3]["image"], RandomizedLabelsDataset(maps, 8, AFFINE, n=5, seed=1)[3]["image"])
    fractions = torch.nn.functional.one_hot(blobs(), 8).movedim(-1, 0).float()  # a prepared cohort's class fractions
    assert torch.equal(RandomizedLabelsDataset([fractions], 8, AFFINE)[0]["label"][0], blobs())


def test_bad_settings_name_the_argument(generator):
    with pytest.raises(ValueError, match=r"mean=\(0.9, 0.1\): low > high"):
        AppearanceRandomizer(mean=(0.9, 0.1))
    with pytest.raises(ValueError, match=r"std=\(-0.1, 0.1\): a negative spread"):
        AppearanceRandomizer(std=(-0.1, 0.1))
    with pytest.raises(ValueError, match="downsampling_probability=1.5; allowed: a probability in"):
        AppearanceRandomizer(downsampling_probability=1.5)
    with pytest.raises(ValueError, match="noise_std=nan"):
        AppearanceRandomizer(noise_std=float("nan"))
    with pytest.raises(ValueError, match=r"mean: 3 per-class ranges; allowed: one range for all classes, or 7"):
        SyntheticBrainDataset(
            2, None, generator, device="cpu", appearance="randomized", randomizer=AppearanceRandomizer(mean=((0, 1),) * 3)
        )
    with pytest.raises(ValueError, match="appearance=1.5; allowed: 'generated', 'randomized', or a probability"):
        SyntheticBrainDataset(2, None, generator, device="cpu", appearance=1.5)
    with pytest.raises(ValueError, match="appearance='painted'"):
        SyntheticBrainDataset(2, None, generator, device="cpu", appearance="painted")
    unlabelled = tiny_generator(distribution=True, steps=2)
    unlabelled.label_classes = None
    with pytest.raises(ValueError, match="appearance='randomized': this generator makes no label maps"):
        SyntheticBrainDataset(2, None, unlabelled, device="cpu", appearance="randomized")


def test_the_randomizer_is_a_torchio_transform_inside_compose_reproducible_from_torchs_seed():
    """Inside tio.Compose after a RandomAffine: the image is synthesised from the moved label map (one
    intensity per class, background 0), torch.manual_seed makes the whole chain reproducible as for
    any torchio transform, and the subject given is left unchanged."""
    flat = AppearanceRandomizer(std=(0, 0), bias_field=0, log_gamma=(0, 0), downsampling=(1, 1), blur_std=(0, 0), noise_std=(0, 0))
    assert isinstance(flat, tio.Transform)
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.rand(1, 16, 16, 16), affine=AFFINE), label=tio.LabelMap(tensor=blobs()[None], affine=AFFINE)
    )
    before = subject["image"].data.clone()
    chain = tio.Compose([tio.RandomAffine(degrees=20), flat])
    torch.manual_seed(3)
    out = chain(subject)
    moved, image = out["label"].data[0], out["image"].data[0]
    assert not torch.equal(moved, blobs()) and torch.equal(subject["image"].data, before)
    assert (image[moved == 0] == 0).all() and 0 <= image.min() and image.max() <= 1
    assert all(image[moved == c].std() < 1e-5 for c in (1, 2, 3, 4))  # the image follows the moved label map
    torch.manual_seed(3)
    again = chain(subject)
    assert torch.equal(again["image"].data, out["image"].data) and torch.equal(again["label"].data, out["label"].data)
    torch.manual_seed(4)
    assert not torch.equal(chain(subject)["image"].data, out["image"].data)


def test_the_two_call_forms_are_one_synthesis():
    """randomizer(labels, num_classes, affine, seed) is the torchio transform's synthesis under
    torch.manual_seed(seed), with the number of classes inferred from the label map (blobs: 0..4)."""
    randomizer = AppearanceRandomizer(spatial=True)
    image, labels = randomizer(blobs(), 5, AFFINE, seed=7)
    subject = tio.Subject(label=tio.LabelMap(tensor=blobs()[None], affine=AFFINE))
    torch.manual_seed(7)
    out = randomizer.apply_transform(subject)
    assert torch.equal(out["image"].data, image) and torch.equal(out["label"].data[0].long(), labels)
    with pytest.raises(ValueError, match=r"subject: no 'label' LabelMap \(has \['image'\]\)"):
        randomizer(tio.Subject(image=tio.ScalarImage(tensor=torch.rand(1, 4, 4, 4))))
    with pytest.raises(ValueError, match="needs all four"):
        randomizer(blobs(), 5, AFFINE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        randomizer.noise_std = (0.0, 1.0)
