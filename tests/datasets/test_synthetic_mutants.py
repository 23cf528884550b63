"""Known answers written for survivors of the mutation run on ``synthbrain/datasets/synthetic.py``
(docs/testing.md, "The orchestration modules")."""

import torch

from synthbrain import SyntheticBrainDataset
from tests.helpers import tiny_generator


def test_collect_hands_on_the_shards_images_label_maps_and_covariates_in_index_order(tmp_path):
    """``collect`` (what ``synthbrain generate`` writes) returns every volume of the shard folder:
    the images, label maps and covariates the dataset's items hold, over two chunks, in index order."""
    generator = tiny_generator(distribution=True, steps=2)
    dataset = SyntheticBrainDataset(3, None, generator, seed=4, device="cpu", chunk_size=2, shards=tmp_path / "shards", prefetch=False)
    dataset.pregenerate(progress=False)
    out = dataset.collect()
    items = [dataset[i] for i in range(3)]
    assert out.labels is not None and len(out) == 3
    assert torch.equal(out.images, torch.stack([item["image"] for item in items]))
    assert torch.equal(out.labels.long(), torch.stack([item["label"][0] for item in items]))
    assert out.covariates["age"].tolist() == [item["covariates"]["age"] for item in items]
