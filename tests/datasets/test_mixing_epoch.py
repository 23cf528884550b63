"""What an epoch of ``MixedBatchSampler`` is, as its docstring states (issue 34, point 8)."""

import pytest
import torch

from synthbrain.datasets import Fixed, SyntheticBrainDataset
from synthbrain.datasets.mixing import MixedBatchSampler, MixedDataset
from tests.helpers import tiny_generator


@pytest.fixture(scope="module")
def three_real():
    real = torch.utils.data.TensorDataset(torch.rand(3, 1, 16, 16, 16), torch.randint(0, 8, (3, 16, 16, 16)))
    synthetic = SyntheticBrainDataset(10, Fixed(sex="F"), tiny_generator(distribution=True, steps=2), device="cpu", chunk_size=4)
    return MixedDataset(real, synthetic)


def test_a_default_epoch_is_one_pass_over_the_real_subjects_rounded_down(three_real):
    quarter = list(MixedBatchSampler(three_real, batch_size=4, synthetic_fraction=0.25))
    assert len(quarter) == 1 and sorted(quarter[0]) == [0, 1, 2, 3]  # 3 real + 1 synthetic: one batch
    half = list(MixedBatchSampler(three_real, batch_size=4, synthetic_fraction=0.5))
    assert len(half) == 1 and sum(i < 3 for i in half[0]) == 2  # 2 of the 3 real subjects; the third waits
    assert len(MixedBatchSampler(three_real, batch_size=4, synthetic_fraction=1.0)) == 3  # ceil(10 / 4) synthetic


def test_num_batches_sets_the_epoch_and_real_subjects_repeat_pass_by_pass(three_real):
    sampler = MixedBatchSampler(three_real, batch_size=4, synthetic_fraction=0.25, num_batches=5, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    real = [i for b in batches for i in b if i < 3]
    assert len(real) == 15 and all(sorted(real[k : k + 3]) == [0, 1, 2] for k in range(0, 15, 3))
    assert [i - 3 for b in batches for i in b if i >= 3] == [0, 1, 2, 3, 4]  # synthetic in index order
