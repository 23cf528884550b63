import math
import pickle

import pytest
import torch
import torchio as tio

from synthbrain.datasets import Fixed, SyntheticBrainDataset
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from synthbrain.preprocessing.prepared import PreparedCohort
from tests.helpers import make_prepared, tiny_generator


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=2)


@pytest.fixture(scope="module")
def mixed(generator):
    real = torch.utils.data.TensorDataset(torch.rand(10, 1, 16, 16, 16), torch.randint(0, 8, (10, 16, 16, 16)))
    return MixedDataset(real, SyntheticBrainDataset(12, Fixed(sex="F"), generator, device="cpu", chunk_size=4))


def test_every_batch_holds_the_exact_synthetic_fraction_with_shared_keys(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.25, num_batches=5, seed=0)
    batches = list(sampler)
    assert len(batches) == 5 and all(sum(i >= 10 for i in b) == 1 and len(b) == 4 for b in batches)
    real = [i for b in batches for i in b if i < 10]
    assert len(set(real[:10])) == 10  # a full shuffled pass over the real subjects before any repeats
    loader = torch.utils.data.DataLoader(mixed, batch_sampler=sampler)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["label"].dtype == torch.long
    assert batch["is_synthetic"].tolist() == [False, False, False, True]
    assert batch["covariates"]["sex"] == ["n/a", "n/a", "n/a", "F"]
    assert list(sampler) == batches  # seeded
    assert list(pickle.loads(pickle.dumps(sampler))) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_a_fraction_that_is_not_a_whole_count_per_batch_is_exact_over_the_batches(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.3, num_batches=10)
    counts = [sum(i >= 10 for i in b) for b in sampler]
    assert set(counts) == {1, 2} and sum(counts) == 12  # 0.3 of 40, not 0.25 (rounded per batch)
    running = [sum(counts[: b + 1]) for b in range(10)]
    assert all(abs(total - 0.3 * 4 * (b + 1)) <= 0.5 for b, total in enumerate(running))
    rare = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.1, num_batches=5)  # 0.4 per batch
    assert sum(sum(i >= 10 for i in b) for b in rare) == 2
    assert all(len(b) == 4 for b in rare)


def test_fraction_schedule_and_bad_fractions(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda epoch: [0.0, 0.5, 1.0][epoch], num_batches=3)
    counts = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        counts.append({sum(i >= 10 for i in b) for b in sampler})
    assert counts == [{0}, {2}, {4}]
    synthetic = [i for b in sampler for i in b]
    assert len(set(synthetic)) == len(synthetic)  # no synthetic subject repeats before all 12 are used
    with pytest.raises(ValueError, match=r"synthetic_fraction=1.5 \(epoch 0\); allowed: a number in \[0, 1\]"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=1.5)
    with pytest.raises(ValueError, match=r"synthetic_fraction=-0.1 \(epoch 0\); allowed"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=-0.1)
    with pytest.raises(ValueError, match=r"synthetic_fraction=nan \(epoch 0\); allowed"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=math.nan)
    with pytest.raises(ValueError, match=r"synthetic_fraction='0.5' \(epoch 0\); allowed"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction="0.5")
    schedule = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda epoch: 0.5 * (epoch + 1), num_batches=2)
    with pytest.raises(ValueError, match=r"synthetic_fraction=1.5 \(epoch 2\)"):  # reported when the epoch is set
        schedule.set_epoch(2)
    with pytest.raises(ValueError, match="batch_size=0"):
        MixedBatchSampler(mixed, batch_size=0, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="num_batches=0; allowed: an integer >= 1"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.5, num_batches=0)
    with pytest.raises(ValueError, match="resample first"):
        MixedDataset(torch.utils.data.TensorDataset(torch.rand(2, 1, 8, 8, 8), torch.zeros(2, 8, 8, 8)), mixed.synthetic)


def test_a_changing_schedule_continues_through_the_synthetic_set(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda epoch: [0.25, 0.5, 0.75][epoch], num_batches=3)
    synthetic = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        synthetic += [i - 10 for b in sampler for i in b if i >= 10]
    assert synthetic == [i % 12 for i in range(3 + 6 + 9)]  # in order, wrapping only after all 12 were used


def test_real_data_as_prepared_cohort_torchio_or_tensors_gives_the_synthetic_keys(generator, tmp_path):
    synthetic = SyntheticBrainDataset(4, None, generator, device="cpu", cache_mb=0)
    prepared = PreparedCohort.load(make_prepared(tmp_path / "prepared", n=3))
    subjects = tio.SubjectsDataset(
        [
            tio.Subject(
                image=tio.ScalarImage(tensor=torch.rand(1, 16, 16, 16), affine=generator.image_grid.affine),
                labels=tio.LabelMap(tensor=torch.ones(1, 16, 16, 16), affine=generator.image_grid.affine),
                age=40.0,
            )
            for _ in range(2)
        ]
    )
    tensors = (torch.rand(2, 1, 16, 16, 16), torch.randint(0, 8, (2, 16, 16, 16)))
    for real in (prepared, subjects, tensors):
        dataset = MixedDataset(real, synthetic)
        real_item, synthetic_item = dataset[1], dataset[len(dataset) - 1]
        assert set(real_item) == set(synthetic_item) == {"image", "label", "affine", "covariates", "is_synthetic", "index", "appearance"}
        assert set(real_item["covariates"]) == set(synthetic_item["covariates"]) == set(generator.schema.names)
        assert real_item["image"].shape == synthetic_item["image"].shape and real_item["label"].dtype == synthetic_item["label"].dtype
        torch.utils.data.default_collate([real_item, synthetic_item])  # one batch
    assert MixedDataset(prepared, synthetic)[1]["covariates"]["age"] == prepared.table["age"][1]
    from_torchio = MixedDataset(subjects, synthetic)[0]
    assert from_torchio["covariates"]["age"] == 40.0 and (from_torchio["label"] == 1).all()  # a float label map keeps its classes
    unlabelled = SyntheticBrainDataset(4, None, generator, device="cpu", with_labels=False)
    assert "label" not in MixedDataset(tensors, unlabelled)[0]  # the real labels are left out too, so keys match
    with pytest.raises(ValueError, match="real: items without a label map"):
        MixedDataset(torch.rand(2, 1, 16, 16, 16), synthetic)
    with pytest.raises(ValueError, match="real: an empty dataset"):
        MixedDataset(torch.utils.data.TensorDataset(torch.rand(0, 1, 16, 16, 16)), synthetic)
    with pytest.raises(IndexError, match=r"index=6; allowed: 0..5"):
        MixedDataset(tensors, synthetic)[6]


def test_a_batch_generates_its_synthetic_subjects_together(generator, monkeypatch):
    synthetic = SyntheticBrainDataset(6, None, generator, device="cpu", cache_mb=0)
    dataset = MixedDataset((torch.rand(4, 1, 16, 16, 16), torch.randint(0, 8, (4, 16, 16, 16))), synthetic)
    sampler = MixedBatchSampler(dataset, batch_size=4, synthetic_fraction=0.5, num_batches=3)
    calls = []
    generate = generator.generate
    monkeypatch.setattr(generator, "generate", lambda *args, **kwargs: calls.append(len(kwargs["seed"])) or generate(*args, **kwargs))
    batches = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler))
    assert calls == [2, 2, 2]
    assert [b["index"].tolist()[2:] for b in batches] == [[4, 5], [6, 7], [8, 9]]
    monkeypatch.undo()
    clone = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(clone[9]["image"], batches[2]["image"][3], atol=1e-5, rtol=0)


def test_real_subjects_on_another_grid_are_refused_or_resampled():
    """A real subject in LPS orientation, or with 2 mm voxels, beside synthetic volumes on the 4 mm RAS grid."""
    import numpy as np
    import torchio as tio

    generator = tiny_generator(distribution=True, steps=2)
    synthetic = SyntheticBrainDataset(4, None, generator, device="cpu")
    grid = generator.image_grid
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid.affine
    image = torch.rand(1, *grid.shape)
    labels = torch.randint(0, 8, (1, *grid.shape))
    subjects = tio.SubjectsDataset(
        [tio.Subject(image=tio.ScalarImage(tensor=image, affine=lps), labels=tio.LabelMap(tensor=labels, affine=lps))]
    )
    with pytest.raises(ValueError, match=r"(?s)real\[0\] \(0\): affine\n.*differs from the synthetic subjects' grid.*resample=True"):
        MixedDataset(subjects, synthetic)
    mixed = MixedDataset(subjects, synthetic, resample=True)
    item = mixed[0]
    # LPS is RAS mirrored in x and y: resampled onto the RAS grid, the volume comes out flipped in both axes
    torch.testing.assert_close(item["image"], image.flip(1).flip(2), atol=1e-5, rtol=0)
    assert torch.equal(item["label"][0], labels[0].flip(0).flip(1))
    on_grid = tio.SubjectsDataset(
        [tio.Subject(image=tio.ScalarImage(tensor=image, affine=grid.affine), labels=tio.LabelMap(tensor=labels, affine=grid.affine))]
    )
    torch.testing.assert_close(MixedDataset(on_grid, synthetic)[0]["image"], image)
