import pickle

import numpy as np
import pytest
import torch
import torchio as tio

from synthbrain.datasets import Fixed, SyntheticBrainDataset, Uniform
from tests.helpers import tiny_generator


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=3)


def test_index_is_the_same_volume_whatever_the_order_and_chunking(generator):
    a = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=3, device="cpu")
    b = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=2, device="cpu", cache_mb=0)
    forward = [a[i] for i in range(7)]
    for i in reversed(range(7)):
        item = b[i]
        torch.testing.assert_close(item["image"], forward[i]["image"], atol=1e-5, rtol=0)
        assert (item["labels"] != forward[i]["labels"]).float().mean() < 0.01  # argmax may flip on float ties only
        assert item["covariates"] == forward[i]["covariates"] and item["is_synthetic"] and item["index"] == i
    assert forward[0]["image"].shape == (1, 16, 16, 16) and forward[0]["labels"].dtype == torch.long
    assert 30 <= forward[0]["covariates"]["age"] <= 60 and set(forward[0]["covariates"]) == set(generator.schema.names)
    assert not torch.equal(forward[0]["image"], forward[1]["image"])
    other_seed = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=5, chunk_size=3, device="cpu")
    assert not torch.equal(other_seed[0]["image"], forward[0]["image"])


def test_same_volumes_through_dataloader_workers_and_pickling(generator):
    dataset = SyntheticBrainDataset(4, Fixed(sex="M"), generator, seed=1, chunk_size=2, device="cpu")
    direct = torch.stack([dataset[i]["image"] for i in range(4)])
    clone = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(clone[3]["image"], direct[3], atol=1e-5, rtol=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    torch.testing.assert_close(torch.cat([b["image"] for b in batches]), direct, atol=1e-5, rtol=0)
    assert batches[0]["covariates"]["sex"] == ["M", "M"] and batches[0]["is_synthetic"].all()


def test_torchio_subjects_take_standard_transforms(generator):
    flip = tio.RandomFlip(axes=(0,), flip_probability=1.0)
    dataset = SyntheticBrainDataset(2, None, generator, device="cpu", as_subject=True, transform=flip)
    plain = SyntheticBrainDataset(2, None, generator, device="cpu")
    subject = dataset[1]
    assert isinstance(subject, tio.Subject) and subject["is_synthetic"]
    np.testing.assert_allclose(subject["image"].affine, generator.image_grid.affine)
    torch.testing.assert_close(subject["image"].data, plain[1]["image"].flip(1), atol=1e-5, rtol=0)
    assert subject["labels"].data.shape == (1, 16, 16, 16)


def test_shards_are_written_once_reloaded_memory_mapped_and_resumed(generator, tmp_path):
    shards = tmp_path / "shards"
    dataset = SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=2, chunk_size=2, device="cpu", shards=shards)
    dataset.pregenerate(rank=0, world_size=2, progress=False)  # this rank's chunks: 0 and 2
    assert sorted(p.name for p in shards.glob("chunk-*")) == ["chunk-000000", "chunk-000002"]
    (shards / "chunk-000002" / "done.json").unlink()  # as if killed before the chunk finished
    (shards / "chunk-000002" / "images.npy").write_bytes(b"corrupt")
    dataset.pregenerate(rank=0, world_size=2, progress=False)
    dataset.pregenerate(rank=1, world_size=2, progress=False)
    assert len(list(shards.glob("chunk-*/done.json"))) == 3
    fresh = SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=2, chunk_size=2, device="cpu")
    reloaded = SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=2, chunk_size=2, device="cpu", shards=shards)
    for i in range(5):
        torch.testing.assert_close(reloaded[i]["image"], fresh[i]["image"], atol=1e-5, rtol=0)
        got, want = reloaded[i]["covariates"], fresh[i]["covariates"]
        assert got["sex"] == want["sex"] and np.allclose(
            [got[k] for k in ("age", "brain_volume")], [want[k] for k in ("age", "brain_volume")]
        )
    assert reloaded[4]["covariates"]["age"] == 50.0
    with pytest.raises(ValueError, match=r"holds another dataset \(differing: \['seed'\]\)"):
        SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=3, chunk_size=2, device="cpu", shards=shards)


def test_bad_input_gets_clear_errors(generator):
    with pytest.raises(ValueError, match="n=0; allowed: an integer >= 1"):
        SyntheticBrainDataset(0, None, generator)
    with pytest.raises(ValueError, match="outside the fitted range"):
        SyntheticBrainDataset(2, Fixed(age=99.0), generator, device="cpu")
    with pytest.raises(ValueError, match="sampler='ddpm' draws fresh noise"):
        SyntheticBrainDataset(2, None, generator, device="cpu", sampler="ddpm")
    with pytest.raises(ValueError, match="chunk_size=0"):
        SyntheticBrainDataset(2, None, generator, device="cpu", chunk_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SyntheticBrainDataset(2, None, generator, device="cuda")
    with pytest.raises(IndexError, match="index=2; allowed: 0..1"):
        SyntheticBrainDataset(2, None, generator, device="cpu")[2]
