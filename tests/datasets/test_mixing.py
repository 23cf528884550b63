import pytest
import torch

from synthbrain.datasets import Fixed, SyntheticBrainDataset
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from tests.helpers import tiny_generator


@pytest.fixture(scope="module")
def mixed():
    generator = tiny_generator(distribution=True, steps=2)
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
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["labels"].dtype == torch.long
    assert batch["is_synthetic"].tolist() == [False, False, False, True]
    assert batch["covariates"]["sex"] == ["n/a", "n/a", "n/a", "F"]
    assert list(sampler) == batches  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_fraction_schedule_and_bad_fractions(mixed):
    sampler = MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=lambda epoch: [0.0, 0.5, 1.0][epoch], num_batches=3)
    counts = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        counts.append({sum(i >= 10 for i in b) for b in sampler})
    assert counts == [{0}, {2}, {4}]
    synthetic = [i for b in sampler for i in b]
    assert len(set(synthetic)) == len(synthetic)  # no synthetic subject repeats before all 12 are used
    with pytest.raises(ValueError, match=r"synthetic_fraction=1.5 \(epoch 0\); allowed: \[0, 1\]"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=1.5)
    with pytest.raises(ValueError, match="rounds to 0 synthetic subjects"):
        MixedBatchSampler(mixed, batch_size=4, synthetic_fraction=0.1)
    with pytest.raises(ValueError, match="batch_size=0"):
        MixedBatchSampler(mixed, batch_size=0, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="resample first"):
        MixedDataset(torch.utils.data.TensorDataset(torch.rand(2, 1, 8, 8, 8), torch.zeros(2, 8, 8, 8)), mixed.synthetic)
