import math
import pickle

import numpy as np
import pytest
import torch
import torchio as tio

from synthbrain.datasets import Fixed, SyntheticBrainDataset, Uniform, volume_seed
from tests.helpers import tiny_generator


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=3)


def test_index_is_the_same_volume_whatever_the_order_and_chunking(generator):
    a = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=3, device="cpu", cache_mb=1024)
    b = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=2, device="cpu", cache_mb=0)
    forward = [a[i] for i in range(7)]
    for i in reversed(range(7)):
        item = b[i]
        torch.testing.assert_close(item["image"], forward[i]["image"], atol=1e-5, rtol=0)
        assert (item["label"] != forward[i]["label"]).float().mean() < 0.01  # argmax may flip on float ties only
        assert item["covariates"] == forward[i]["covariates"] and item["is_synthetic"] and item["index"] == i
    assert forward[0]["image"].shape == (1, 16, 16, 16) and forward[0]["label"].dtype == torch.long
    assert 30 <= forward[0]["covariates"]["age"] <= 60 and set(forward[0]["covariates"]) == set(generator.schema.names)
    assert not torch.equal(forward[0]["image"], forward[1]["image"])
    other_seed = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=5, chunk_size=3, device="cpu")
    assert not torch.equal(other_seed[0]["image"], forward[0]["image"])


def test_same_volumes_through_dataloader_workers_and_pickling(generator):
    dataset = SyntheticBrainDataset(4, Fixed(sex="M"), generator, seed=1, chunk_size=2, device="cpu")
    direct = torch.stack([dataset[i]["image"] for i in range(4)])
    clone = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(clone[3]["image"], direct[3], atol=1e-5, rtol=0)
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, shuffle=False)
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
    assert subject["label"].data.shape == (1, 16, 16, 16)
    unlabelled = SyntheticBrainDataset(2, None, generator, device="cpu", as_subject=True, with_labels=False)[1]
    assert "label" not in unlabelled and unlabelled["sex"] in ("F", "M")
    assert "label" not in SyntheticBrainDataset(2, None, generator, device="cpu", with_labels=False)[0]


def test_shards_are_written_once_reloaded_memory_mapped_and_resumed(generator, tmp_path):
    shards = tmp_path / "shards"
    dataset = SyntheticBrainDataset(5, Fixed(age=50.0), generator, seed=2, chunk_size=2, device="cpu", shards=shards)
    dataset.pregenerate(rank=0, world_size=2, progress=False)  # this rank's chunks: 0 and 2
    assert sorted(p.name for p in shards.glob("chunk-*")) == ["chunk-000000", "chunk-000002"]  # this rank's only
    (shards / "chunk-000002" / "done.json").unlink()  # as if killed before the chunk finished
    (shards / "chunk-000002" / "images.npy").write_bytes(b"corrupt")
    (shards / "chunk-000002" / ".tmp-0123456789ab-labels.npy").write_bytes(b"left by the kill")
    (shards / "chunk-000001").mkdir()
    (shards / "chunk-000001" / ".tmp-ba9876543210-images.npy").write_bytes(b"rank 1 writing now")
    dataset.pregenerate(rank=0, world_size=2, progress=False)
    assert not list((shards / "chunk-000002").glob(".tmp-*"))  # rank 0 cleans its own chunks only
    assert (shards / "chunk-000001" / ".tmp-ba9876543210-images.npy").is_file()
    dataset.pregenerate(rank=1, world_size=2, progress=False)
    assert not list(shards.rglob(".tmp-*"))
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


def test_bad_input_gets_clear_errors(generator, tmp_path):
    with pytest.raises(ValueError, match="n=0; allowed: an integer >= 1"):
        SyntheticBrainDataset(0, None, generator)
    with pytest.raises(ValueError, match="outside the fitted range"):
        SyntheticBrainDataset(2, Fixed(age=99.0), generator, device="cpu")
    with pytest.raises(ValueError, match="chunk_size=0"):
        SyntheticBrainDataset(2, None, generator, device="cpu", chunk_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SyntheticBrainDataset(2, None, generator, device="cuda")
    with pytest.raises(IndexError, match="index=2; allowed: 0..1"):
        SyntheticBrainDataset(2, None, generator, device="cpu")[2]
    for bad in (-3, 2.5, True):
        with pytest.raises(ValueError, match=f"n={bad!r}; allowed: an integer >= 1"):
            SyntheticBrainDataset(bad, None, generator, device="cpu")
    with pytest.raises(ValueError, match="seed=-1; allowed: an integer >= 0"):
        SyntheticBrainDataset(2, None, generator, device="cpu", seed=-1)
    with pytest.raises(ValueError, match="device='tpu'; allowed: 'cpu', 'cuda'"):
        SyntheticBrainDataset(2, None, generator, device="tpu")
    with pytest.raises(ValueError, match="cache_mb=-1; allowed: a number of megabytes >= 0"):
        SyntheticBrainDataset(2, None, generator, device="cpu", cache_mb=-1)
    with pytest.raises(ValueError, match="steps=0; allowed: an integer >= 1"):
        SyntheticBrainDataset(2, None, generator, device="cpu", steps=0)
    with pytest.raises(ValueError, match=r"unknown covariates \['weight'\]"):
        SyntheticBrainDataset(2, Fixed(weight=70.0), generator, device="cpu")
    with pytest.raises(ValueError, match="invalid values \\['X'\\]"):
        SyntheticBrainDataset(2, Fixed(sex="X"), generator, device="cpu")

    def rarely_unknown(rng):
        return {"age": 50.0} if rng.uniform() < 0.999 else {"weight": 70.0}

    late = SyntheticBrainDataset(100000, rarely_unknown, generator, device="cpu", cache_mb=0)  # the 32 check draws pass
    bad_index = next(i for i in range(100000) if "weight" in late.covariates(i))
    with pytest.raises(ValueError, match=rf"unknown covariates \['weight'\].*dataset indices \[{bad_index}\]"):
        late[bad_index]
    shards = SyntheticBrainDataset(2, None, generator, device="cpu", shards=tmp_path)
    with pytest.raises(ValueError, match="rank=2; allowed: 0..1"):
        shards.pregenerate(rank=2, world_size=2)
    with pytest.raises(ValueError, match="pregenerate needs shards=FOLDER"):
        SyntheticBrainDataset(2, None, generator, device="cpu").pregenerate()


def test_forked_workers_do_not_inherit_the_parents_prefetch_thread(generator):
    # The parent has read chunk 0 and prefetched chunk 1 in its thread; a forked worker that needs
    # chunks 2 and 3 must prefetch with a thread of its own (the parent's does not exist there).
    dataset = SyntheticBrainDataset(8, Fixed(sex="M"), generator, seed=6, chunk_size=2, device="cpu", cache_mb=1024)
    first = dataset[0]["image"]
    dataset.cache.pending[1].result()
    subset = torch.utils.data.Subset(dataset, [4, 5, 6, 7])
    context = torch.multiprocessing.get_context("fork")
    loader = torch.utils.data.DataLoader(subset, batch_size=2, num_workers=1, multiprocessing_context=context, timeout=300)  # hang guard
    images = torch.cat([b["image"] for b in loader])
    reference = SyntheticBrainDataset(8, Fixed(sex="M"), generator, seed=6, chunk_size=8, device="cpu")
    torch.testing.assert_close(images, torch.stack([reference[i]["image"] for i in range(4, 8)]), atol=1e-5, rtol=0)
    torch.testing.assert_close(first, reference[0]["image"], atol=1e-5, rtol=0)


def test_chunk_cache_stays_within_its_budget_counting_the_prefetched_chunk(generator):
    chunk_mb = 16**3 * 5 * 2 / 2**20  # float32 image + uint8 labels, 2 volumes
    dataset = SyntheticBrainDataset(12, None, generator, seed=7, chunk_size=2, device="cpu", cache_mb=3 * chunk_mb)
    assert dataset.cache_chunks == 3 and dataset.generates_chunks
    first = dataset[0]["image"]
    assert 1 in dataset.cache.pending or 1 in dataset.cache.chunks  # chunk 1 is made while chunk 0 is consumed
    for i in range(12):
        dataset[i]
        assert len(dataset.cache.chunks) + len(dataset.cache.pending) <= 3
    assert 0 not in dataset.cache.chunks  # evicted, least recently used; made again, identically
    torch.testing.assert_close(dataset[0]["image"], first)
    small = SyntheticBrainDataset(12, None, generator, seed=7, chunk_size=2, device="cpu", cache_mb=1.5 * chunk_mb)
    small[0]
    assert small.cache_chunks == 1 and not small.cache.pending  # no room for a prefetched chunk beside the one in use


def test_without_cache_each_dataloader_batch_is_generated_in_one_call(generator, monkeypatch):
    dataset = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=3, device="cpu", cache_mb=0)
    assert not dataset.generates_chunks
    calls = []
    generate = generator.generate
    monkeypatch.setattr(generator, "generate", lambda *args, **kwargs: calls.append(kwargs["seed"]) or generate(*args, **kwargs))
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0)).tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=order, num_workers=0)
    batches = list(loader)
    assert [len(c) for c in calls] == [3, 3, 1]  # exactly the indices asked, no whole chunks for one volume each
    assert sorted(s for c in calls for s in c) == sorted(volume_seed(4, i) for i in range(7))
    monkeypatch.undo()
    chunked = SyntheticBrainDataset(7, Uniform(age=(30, 60)), generator, seed=4, chunk_size=3, device="cpu", cache_mb=1024)
    got = torch.cat([b["image"] for b in batches])
    torch.testing.assert_close(got, torch.stack([chunked[i]["image"] for i in order]), atol=1e-5, rtol=0)
    assert [b["index"].tolist() for b in batches] == [order[:3], order[3:6], order[6:]]


def test_covariates_left_out_for_some_indices_do_not_depend_on_the_batch(generator):
    def sometimes_complete(rng):  # every covariate for some subjects, only the age for others
        age = float(rng.uniform(30, 60))
        if rng.uniform() < 0.5:
            return {"sex": "F", "age": age, "ventricular_volume": 20.0, "brain_volume": 1200.0}
        return {"age": age}

    together = SyntheticBrainDataset(10, sometimes_complete, generator, seed=8, chunk_size=10, device="cpu", cache_mb=1024)
    alone = SyntheticBrainDataset(10, sometimes_complete, generator, seed=8, chunk_size=1, device="cpu", cache_mb=0)
    complete = [i for i in range(10) if len(together.covariates(i)) == 4]
    assert 0 < len(complete) < 10
    for i in range(10):
        assert together[i]["covariates"] == alone[i]["covariates"]
        torch.testing.assert_close(together[i]["image"], alone[i]["image"], atol=1e-5, rtol=0)
    assert all(together[i]["covariates"]["brain_volume"] == 1200.0 for i in complete)


def test_model_without_covariate_density_needs_every_covariate(generator):
    bare = tiny_generator(distribution=False, steps=2)
    with pytest.raises(ValueError, match="cond_sampler=None: this generator has no covariate distribution"):
        SyntheticBrainDataset(2, None, bare, device="cpu")
    with pytest.raises(ValueError, match=r"cond_sampler leaves out \['brain_volume', 'sex', 'ventricular_volume'\]"):
        SyntheticBrainDataset(2, Fixed(age=50.0), bare, device="cpu")
    full = Fixed(sex="F", age=50.0, ventricular_volume=20.0, brain_volume=1200.0)
    assert SyntheticBrainDataset(2, full, bare, device="cpu", cache_mb=0)[1]["covariates"]["age"] == 50.0


def test_in_memory_models_with_other_weights_do_not_share_a_shard_folder(generator, tmp_path):
    SyntheticBrainDataset(2, None, generator, device="cpu", shards=tmp_path)
    other = tiny_generator(distribution=True, steps=3)
    with torch.no_grad():
        next(other.unet.parameters()).add_(1.0)
    with pytest.raises(ValueError, match=r"holds another dataset \(differing: \['model\.sha256\.in_memory'\]\)"):
        SyntheticBrainDataset(2, None, other, device="cpu", shards=tmp_path)
    SyntheticBrainDataset(2, None, tiny_generator(distribution=True, steps=3), device="cpu", shards=tmp_path)  # same weights: accepted


def test_embedded_default_model_works_as_written():
    from synthbrain.generator import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "synthbrain_generator.json").is_file():
        pytest.skip("the embedded default model is not installed")
    dataset = SyntheticBrainDataset(n=10000, cond_sampler=Uniform(age=(60, 80), sex=["F", "M"]))
    assert len(dataset) == 10000 and dataset.generator.source["path"] == str(DEFAULT_MODEL.resolve())
    assert 60 <= dataset.covariates(9999)["age"] <= 80
    item = SyntheticBrainDataset(2, Uniform(age=(60, 80)), seed=1, steps=2, timestep_spacing="trailing", device="cpu")[1]
    assert item["image"].shape == (1, *dataset.generator.image_grid.shape) and 60 <= item["covariates"]["age"] <= 80


def test_close_waits_for_the_prefetched_chunk_and_a_later_access_prefetches_again(generator):
    dataset = SyntheticBrainDataset(8, None, generator, seed=7, chunk_size=2, device="cpu", cache_mb=math.inf)
    dataset[0]
    pending = dataset.cache.pending.get(1)
    dataset.close()
    assert dataset.cache.executor is None and (pending is None or pending.done())
    dataset[2]  # chunk 1 (made before close) is served; chunk 2 is prefetched by a new thread
    assert dataset.cache.executor is not None
    dataset.close()
    torch.testing.assert_close(dataset[3]["image"], SyntheticBrainDataset(8, None, generator, seed=7, device="cpu")[3]["image"])


def test_sampling_settings_reach_generation(generator):
    """Each sampling setting of the dataset reaches generate: an item equals generate with the same
    settings at the item's seed (each setting here is not the model's default, so a dataset that
    dropped one would give another image); extrapolate lets an out-of-range age through."""
    settings = dict(steps=4, sampler="dpm++2m", guidance_scale=2.0, timestep_spacing="linspace")  # the model: 3, ddim, 1, trailing
    sampler = Fixed(sex="F", age=95.0, ventricular_volume=20.0, brain_volume=1200.0)  # 95: outside the fitted ages, extrapolated
    dataset = SyntheticBrainDataset(3, sampler, generator, seed=2, device="cpu", extrapolate=True, **settings)
    item = dataset[1]
    alone = generator.generate(cond_sampler=sampler, seed=[dataset.item_seed(1)], extrapolate=True, **settings)
    torch.testing.assert_close(item["image"], alone.images[0], atol=1e-5, rtol=0)
    assert item["covariates"]["age"] == 95.0
    default = generator.generate(cond_sampler=sampler, seed=[dataset.item_seed(1)], extrapolate=True)
    assert (default.images[0] - item["image"]).abs().max() > 1e-3
    for name, value in settings.items():  # each setting alone changes the image
        other = generator.generate(cond_sampler=sampler, seed=[dataset.item_seed(1)], extrapolate=True, **(settings | {name: None}))
        assert (other.images[0] - item["image"]).abs().max() > 1e-3, name


def test_qc_reject_reaches_generation_and_an_item_is_the_redraw(generator, monkeypatch):
    """qc="reject": an item failing quality control is drawn again, with the seed
    volume_seed(item seed, 1) and the dataset's condition sampler and settings, and the redraw is
    what the item holds; with qc="measure" the failing volume is served."""
    from synthbrain.generator import qc as quality

    sampler, settings = Uniform(age=(30, 60), sex=["F", "M"]), dict(steps=2, sampler="dpm++2m")
    real_measure, calls = quality.measure, []

    def fails_index_two_once(images, labels):  # the dataset's index 2 is position 2 of its one call
        table = real_measure(images, labels)
        table["qc_pass"] = True
        if not calls:
            table.loc[2, "qc_pass"] = False
        calls.append(len(images))
        return table

    monkeypatch.setattr(quality, "measure", fails_index_two_once)
    rejecting = SyntheticBrainDataset(4, sampler, generator, seed=6, device="cpu", qc="reject", **settings)
    items = rejecting.__getitems__([0, 1, 2, 3])
    assert calls == [4, 1]
    monkeypatch.setattr(quality, "measure", real_measure)
    redraw = volume_seed(rejecting.item_seed(2), 1)
    alone = generator.generate(cond_sampler=sampler, seed=[redraw], **settings)
    torch.testing.assert_close(items[2]["image"], alone.images[0], atol=1e-5, rtol=0)
    assert items[2]["covariates"] == {k: alone.covariates[k][0] for k in generator.schema.names}  # drawn by the sampler from the new seed
    first = generator.generate(cond_sampler=sampler, seed=[rejecting.item_seed(2)], **settings)
    assert (first.images[0] - items[2]["image"]).abs().max() > 1e-3
    passing = SyntheticBrainDataset(4, sampler, generator, seed=6, device="cpu", **settings)[1]["image"]
    torch.testing.assert_close(items[1]["image"], passing)  # an item that passes is not drawn again
    calls.clear()
    monkeypatch.setattr(quality, "measure", fails_index_two_once)
    measuring = SyntheticBrainDataset(4, sampler, generator, seed=6, device="cpu", qc="measure", **settings)
    served = measuring.__getitems__([0, 1, 2, 3])
    assert calls == [4]  # measured, not drawn again
    torch.testing.assert_close(served[2]["image"], first.images[0], atol=1e-5, rtol=0)
