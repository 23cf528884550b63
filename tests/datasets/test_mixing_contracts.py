"""What MixedDataset and MixedBatchSampler promise beyond the main mixing tests (test_mixing.py):
each argument check with its message, every accepted real-data form, the default batch count
and the exact fraction across epochs. Written for the mutants that survived (docs/testing.md)."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchio as tio

from synthbrain.datasets import SyntheticBrainDataset
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset, synthetic_counts
from synthbrain.preprocessing.prepared import PreparedCohort
from tests.helpers import make_prepared, tiny_generator

SHAPE = (16, 16, 16)


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


@pytest.fixture(scope="module")
def synthetic(generator):
    return SyntheticBrainDataset(12, None, generator, device="cpu", chunk_size=4)


@pytest.fixture(scope="module")
def unlabelled(generator):
    return SyntheticBrainDataset(4, None, generator, device="cpu", with_labels=False)


@pytest.fixture(scope="module")
def mixed(synthetic):
    return MixedDataset((torch.rand(10, 1, *SHAPE), torch.randint(0, 8, (10, *SHAPE))), synthetic)


class _NoLength:
    def __getitem__(self, index):
        return torch.rand(1, *SHAPE)


def test_bad_datasets_are_refused_with_what_is_allowed(generator, synthetic):
    images = torch.rand(2, 1, *SHAPE)
    with pytest.raises(ValueError, match=r"^synthetic: str; allowed: a SyntheticBrainDataset$"):
        MixedDataset(images, "synthetic")
    as_subject = SyntheticBrainDataset(2, None, generator, device="cpu", as_subject=True)
    with pytest.raises(
        ValueError, match=r"^synthetic: as_subject=True; MixedDataset returns dicts, so build the synthetic dataset with as_subject=False$"
    ):
        MixedDataset(images, as_subject)
    with pytest.raises(ValueError, match=r"^real: int; allowed: a map-style dataset, or tensors \(images, labels\)$"):
        MixedDataset(3, synthetic)
    with pytest.raises(ValueError, match=r"^real: _NoLength; allowed: a map-style dataset"):
        MixedDataset(_NoLength(), synthetic)
    with pytest.raises(
        ValueError, match=r"^real: an empty dataset; to train on synthetic subjects only, use the SyntheticBrainDataset itself$"
    ):
        MixedDataset(torch.utils.data.TensorDataset(torch.rand(0, 1, *SHAPE)), synthetic)
    with pytest.raises(
        ValueError,
        match=r"^real: items without a label map, while the synthetic ones have one; "
        r"give labels, or build the synthetic dataset with with_labels=False$",
    ):
        MixedDataset(images, synthetic)
    with pytest.raises(ValueError, match=r"^real\[0\]: str; allowed: a torchio Subject, a dict with 'image', or \(image, labels\)$"):
        MixedDataset(["not a subject"], synthetic)
    with pytest.raises(ValueError, match=r"^real\[0\]: a dict without an 'image' key \(has \['t1'\]\)$"):
        MixedDataset([{"t1": images[0]}], synthetic)
    no_image = tio.SubjectsDataset([tio.Subject(t1=tio.ScalarImage(tensor=images[0], affine=generator.image_grid.affine))])
    with pytest.raises(ValueError, match=r"^real\[0\]: a torchio Subject without an 'image' entry \(has \['t1'\]\); name the T1 'image'$"):
        MixedDataset(no_image, synthetic)


def test_index_must_be_an_int_in_range(mixed):
    with pytest.raises(IndexError, match=r"^index=22; allowed: 0..21 \(real 0..9, synthetic after\)$"):
        mixed[22]
    with pytest.raises(IndexError, match=r"^index=True; allowed"):
        mixed[True]


def test_every_form_of_real_data_becomes_a_float32_image_with_class_indices(generator, synthetic, unlabelled):
    labels = torch.randint(0, 3, SHAPE)
    one_hot = torch.nn.functional.one_hot(labels, 8).permute(3, 0, 1, 2).float()  # (C, D, H, W) class fractions, the model's 8 classes
    image = torch.rand(*SHAPE, dtype=torch.float64)  # no channel axis, float64
    for given, expected in ((one_hot, labels), (labels[None], labels), (labels.float(), labels)):
        item = MixedDataset([(image, given)], synthetic)[0]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (1, *SHAPE)
        torch.testing.assert_close(item["image"][0], image.float())
        assert item["label"].dtype == torch.long and torch.equal(item["label"][0], expected)
        assert item["appearance"] == "real" and item["is_synthetic"] is False
        assert math.isnan(item["covariates"]["age"]) and item["covariates"]["sex"] == "n/a"
    as_uint8 = MixedDataset([((image > 0.5).to(torch.uint8), labels)], synthetic)[0]
    assert as_uint8["image"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"^real\[0\] \(0\): image intensities in \[0, 25[45]\]; allowed: \[0, 1\]"):  # not rescaled
        MixedDataset([((image * 255).to(torch.uint8), labels)], synthetic)
    # without labels on either side: no labels key, from tensors and from torchio subjects with an image only
    assert "label" not in MixedDataset(torch.rand(2, 1, *SHAPE), unlabelled)[1]
    image_only = tio.SubjectsDataset([tio.Subject(image=tio.ScalarImage(tensor=image[None].float(), affine=generator.image_grid.affine))])
    assert "label" not in MixedDataset(image_only, unlabelled)[0]
    # a list of dicts that carry a subject id but no cohort table
    listed = MixedDataset([{"image": image, "labels": labels, "subject_id": "s1"}], synthetic)[0]
    assert torch.equal(listed["label"][0], labels) and "subject_id" not in listed


def test_bad_label_maps_are_named_by_their_index(synthetic):
    image = torch.rand(1, *SHAPE)
    with pytest.raises(ValueError, match=r"^real\[1\]: a label map of shape \(8, 8, 8\) for an image of shape \(16, 16, 16\)$"):
        MixedDataset([(image, torch.zeros(SHAPE, dtype=torch.long)), (image, torch.zeros(8, 8, 8, dtype=torch.long))], synthetic)[1]
    with pytest.raises(
        ValueError, match=r"^real\[0\]: a label map with non-integer values; give class indices or \(C, D, H, W\) class fractions$"
    ):
        MixedDataset([(image, torch.full(SHAPE, 0.5))], synthetic)


def test_affines_within_atol_mm_pass_and_others_are_refused_with_both_affines(generator, synthetic):
    grid = generator.image_grid.affine
    image, labels = torch.rand(1, *SHAPE), torch.zeros(1, *SHAPE)

    def subjects(affine):
        subject = tio.Subject(image=tio.ScalarImage(tensor=image, affine=affine), labels=tio.LabelMap(tensor=labels, affine=affine))
        return tio.SubjectsDataset([subject])

    nearly = grid.copy()
    nearly[0, 1] = 5e-4  # within the default 0.001 mm (numpy's default tolerance would refuse it)
    assert torch.equal(MixedDataset(subjects(nearly), synthetic)[0]["image"], image)
    off = grid.copy()
    off[0, 3] += 0.01234  # shown to 3 decimals
    with pytest.raises(ValueError) as refused:
        MixedDataset(subjects(off), synthetic)
    assert str(refused.value) == (
        f"real[0] (0): affine\n{np.round(off, 3)}\ndiffers from the synthetic subjects' grid\n{np.round(grid, 3)}\n"
        "(another orientation, voxel size or origin); resample it onto the grid (torchio.Resample with the generator's image_grid) "
        "or pass resample=True"
    )
    assert MixedDataset(subjects(off), synthetic, atol_mm=0.02)[0]["image"].shape == (1, *SHAPE)


def test_a_prepared_cohort_on_another_grid_is_refused_by_subject_id(synthetic, tmp_path):
    root = make_prepared(tmp_path / "prepared", n=2)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["grid"]["origin"] = [-31.0, -30.0, -30.0]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"^real\[0\] \(p00\): affine\n"):
        MixedDataset(PreparedCohort.load(root), synthetic)


def test_sampler_arguments_are_checked_by_name(mixed):
    for kwargs, message in (
        ({"seed": -1}, r"^seed=-1; allowed: an integer >= 0$"),
        ({"seed": True}, r"^seed=True; allowed"),
        ({"batch_size": 0}, r"^batch_size=0; allowed: an integer >= 1$"),
        ({"num_batches": 0}, r"^num_batches=0; allowed: an integer >= 1$"),
    ):
        with pytest.raises(ValueError, match=message):
            MixedBatchSampler(mixed, **{"batch_size": 4, "synthetic_fraction": 0.5, **kwargs})
    with pytest.raises(ValueError, match=r"^dataset: list; allowed: a MixedDataset$"):
        MixedBatchSampler([], batch_size=4, synthetic_fraction=0.5)
    sampler = MixedBatchSampler(mixed, batch_size=1, synthetic_fraction=0.5, num_batches=1)  # the smallest allowed
    assert len(list(sampler)) == 1 and len(next(iter(sampler))) == 1
    for epoch in (-1, True):
        with pytest.raises(ValueError, match=rf"^epoch={epoch!r}; allowed: an integer >= 0$"):
            sampler.set_epoch(epoch)


def test_the_default_seed_is_zero(mixed):
    unseeded = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.25, num_batches=4)
    assert list(unseeded) == list(MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.25, num_batches=4, seed=0))
    assert list(unseeded) != list(MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.25, num_batches=4, seed=1))


@pytest.mark.parametrize(
    "batch_size, fraction, expected",
    [
        (4, 0.5, 5),  # 2 real per batch: one pass over the 10 real subjects
        (4, 0.9, 25),  # 0.4 real per batch
        (32, 0.0, 1),  # more real per batch than there are: still one batch
        (5, 0.6, 5),  # 2 real per batch exactly (the binary 0.6 would give 2.0000000000000004 and 4 batches)
        (5, 1.0, 3),  # synthetic only: one pass over the 12 synthetic subjects, the last batch partly repeating
    ],
)
def test_the_default_batch_count_is_one_pass(mixed, batch_size, fraction, expected):
    assert len(MixedBatchSampler(mixed, batch_size=batch_size, synthetic_fraction=fraction)) == expected


def test_the_fraction_is_exact_across_epochs_and_the_synthetic_set_continues(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.3, num_batches=3)
    counts, synthetic = [], []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            counts.append(sum(i >= 10 for i in batch))
            synthetic += [i - 10 for i in batch if i >= 10]
    assert counts == synthetic_counts(0.3, 4, 6)  # one run of 6 batches: 7 of 24 (0.3 of 24 = 7.2), not 4 + 4
    assert sum(counts) == 7 and synthetic == list(range(7))
    for fraction, batch_size, expected in (
        (0.7, 5, [4, 3, 4, 3, 4, 3]),  # due 3.5, 7, 10.5, ...: rounded half up, as synthetic_counts does
        (np.float32(0.7), 5, [4, 3, 4, 3, 4, 3]),  # the decimal a float32 prints as, not its binary value
        (Fraction(7, 10), 5, [4, 3, 4, 3, 4, 3]),
        (0.35, 2, [1, 0, 1, 1, 1, 0]),
    ):
        sampler = MixedBatchSampler(mixed, batch_size=batch_size, synthetic_fraction=fraction, num_batches=6)
        assert [sum(i >= 10 for i in b) for b in sampler] == expected == synthetic_counts(fraction, batch_size, 6)
    halves = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.5, num_batches=2)
    assert [i - 10 for b in halves for i in b if i >= 10] == [0, 1, 2, 3]  # epoch 0 starts at the first synthetic subject


def test_synthetic_counts_known_answers_and_bounds():
    assert synthetic_counts(0.8, 4, 8) == [3, 3, 4, 3, 3, 3, 3, 4]  # 0.8 as a float
    # due 0.7, 1.4, 2.1, 2.8, 3.5 (rounded up, though 0.35 * 2 * 5 is 3.4999... in floats), 4.2, ...
    assert synthetic_counts(0.35, 2, 10) == [1, 0, 1, 1, 1, 0, 1, 1, 0, 1]
    assert synthetic_counts(0.7, 3, 6) == [2, 2, 2, 2, 3, 2]  # due 10.5 after 5 batches (5 * 2.1 is 10.4999... in floats)
    assert sum(synthetic_counts(0.123, 4, 1000)) == 492  # 0.123 of 4000, not 10/81 of it (494)
    assert synthetic_counts(0.25, 4, 3) == [1, 1, 1]
    assert synthetic_counts(1.0, 4, 2) == [4, 4]
    with pytest.raises(ValueError, match=r"^fraction=1.5; allowed: a number in \[0, 1\]$"):
        synthetic_counts(1.5, 4, 2)
