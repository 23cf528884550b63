"""The dataset's GPU path (marked ``gpu``: skipped without a CUDA device). Kept apart from
test_synthetic.py, which imports torchio: the GPU machine of ``benchmarks/gpu/run.py`` has no torchio
(it needs SimpleITK, too large to bring), and these tests need neither."""

import pytest
import torch

from synthbrain.datasets import Fixed, SyntheticBrainDataset
from tests.helpers import tiny_generator

pytestmark = pytest.mark.gpu


def test_cuda_generator_refuses_forked_workers_and_works_with_spawn():
    dataset = SyntheticBrainDataset(4, Fixed(sex="F"), tiny_generator(distribution=True, steps=2), device="cuda", chunk_size=2)
    reference = torch.stack([dataset[i]["image"] for i in range(4)])
    forked = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match="CUDA does not survive fork"):
        list(forked)
    spawned = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn")
    torch.testing.assert_close(torch.cat([b["image"] for b in spawned]), reference, atol=1e-4, rtol=0)


def test_cuda_dataset_delivers_the_cpu_volumes_on_the_host(monkeypatch):
    """Index i is the same subject on either device (float32 rounding apart; TF32 off), delivered as CPU tensors,
    in any order and through the chunk cache."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    kwargs = {"seed": 3, "chunk_size": 2}
    cpu = SyntheticBrainDataset(5, Fixed(sex="M"), tiny_generator(distribution=True, steps=2), device="cpu", **kwargs)
    cuda = SyntheticBrainDataset(5, Fixed(sex="M"), tiny_generator(distribution=True, steps=2), device="cuda", **kwargs)
    cached = SyntheticBrainDataset(5, Fixed(sex="M"), tiny_generator(distribution=True, steps=2), device="cuda", cache_mb=64, **kwargs)
    assert cuda.generator.device.type == "cuda"
    for i in (4, 0, 2):
        want, got, again = cpu[i], cuda[i], cached[i]
        for item in (got, again):
            assert item["image"].device.type == "cpu" and item["label"].device.type == "cpu"
            assert item["image"].dtype == want["image"].dtype and item["label"].dtype == want["label"].dtype
            torch.testing.assert_close(item["image"], want["image"], atol=1e-3, rtol=0)
            assert (item["label"] != want["label"]).float().mean() < 0.01  # argmax may flip on near ties only
            assert item["covariates"] == want["covariates"] and item["index"] == i
    loader = torch.utils.data.DataLoader(cuda, batch_size=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 5 and batches[0]["image"].device.type == "cpu"
