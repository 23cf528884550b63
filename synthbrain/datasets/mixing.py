"""Real and synthetic subjects in one training loop, at an exact fraction per batch.

``MixedDataset(real, synthetic)`` puts both behind one index (real first) and gives every item
the same keys: ``image`` (1, D, H, W) float, ``labels`` (D, H, W) int64 class indices,
``covariates`` (dict), ``is_synthetic``, ``index``. The real dataset may be a prepared cohort
(``PreparedCohort``; class fractions become the most likely class), a torchio
``SubjectsDataset`` (images named ``image`` and ``labels``), or any dataset of (image, labels)
tensor pairs.

``MixedBatchSampler`` yields batches of indices into it with exactly ``round(fraction *
batch_size)`` synthetic subjects each, where ``fraction`` is a number or a function of the epoch
(a schedule; call ``set_epoch`` each epoch). Real subjects are visited in a seeded shuffled
order, an epoch at a time; synthetic ones in index order, which keeps the synthetic dataset's
chunks hot in its cache and never repeats a synthetic subject until all have been used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from synthbrain.cohort.covariates import CATEGORICAL
from synthbrain.datasets.synthetic import SyntheticBrainDataset


class MixedDataset(torch.utils.data.Dataset):
    def __init__(self, real: torch.utils.data.Dataset, synthetic: SyntheticBrainDataset):
        if synthetic.as_subject:
            raise ValueError("synthetic: as_subject=True; MixedDataset returns dicts, so build the synthetic dataset with as_subject=False")
        self.real, self.synthetic = real, synthetic
        self.num_real = len(real)
        first = _real_item(real[0], 0, real)
        shape = tuple(synthetic.generator.image_grid.shape)
        if tuple(first["image"].shape[1:]) != shape:
            raise ValueError(f"real: images of shape {tuple(first['image'].shape)}; the synthetic ones are (1, {shape}); resample first")

    def __len__(self) -> int:
        return self.num_real + len(self.synthetic)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < self.num_real:
            item = _real_item(self.real[index], index, self.real)
            schema = self.synthetic.generator.schema
            item["covariates"] = {  # the synthetic items' keys, so batches collate; unknown values as n/a / NaN
                c.name: item["covariates"].get(c.name, "n/a" if c.kind == CATEGORICAL else float("nan")) for c in schema.covariates
            }
            return item
        item = self.synthetic[index - self.num_real]
        return {**item, "index": index}


def _real_item(item: Any, index: int, dataset: Any) -> dict[str, Any]:
    covariates: dict[str, Any] = {}
    if hasattr(item, "get_images_dict"):  # a torchio Subject
        image, labels = item["image"].data, item["labels"].data[0] if "labels" in item else None
        covariates = {k: v for k, v in item.items() if not hasattr(v, "data")}
    elif isinstance(item, dict):  # a PreparedCohort item
        image, labels = item["image"], item.get("labels")
        if hasattr(dataset, "table") and "subject_id" in item:
            row = dataset.table.set_index("subject_id").loc[item["subject_id"]]
            covariates = {k: row[k] for k in dataset.schema.names}
    else:
        image, labels = item[0], item[1] if len(item) > 1 else None
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.ndim == 3:
        image = image[None]
    out = {"image": image, "covariates": covariates, "is_synthetic": False, "index": index}
    if labels is not None:
        labels = torch.as_tensor(labels)
        out["labels"] = (labels.argmax(0) if labels.is_floating_point() else labels).long()
    return out


class MixedBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(
        self,
        dataset: MixedDataset,
        batch_size: int,
        synthetic_fraction: float | Callable[[int], float],
        num_batches: int | None = None,
        seed: int = 0,
    ):
        """``num_batches`` per epoch defaults to one pass over the real subjects."""
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        self.dataset, self.batch_size, self.fraction, self.seed = dataset, batch_size, synthetic_fraction, seed
        self.epoch = 0
        self.synthetic_per_batch()  # validates the fraction of epoch 0
        real_per_batch = batch_size - self.synthetic_per_batch()
        self.num_batches = num_batches if num_batches is not None else max(1, dataset.num_real // max(real_per_batch, 1))
        if not (isinstance(self.num_batches, int) and self.num_batches >= 1):
            raise ValueError(f"num_batches={num_batches!r}; allowed: an integer >= 1")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def synthetic_per_batch(self) -> int:
        fraction = self.fraction(self.epoch) if callable(self.fraction) else self.fraction
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"synthetic_fraction={fraction} (epoch {self.epoch}); allowed: [0, 1]")
        count = round(fraction * self.batch_size)
        if fraction > 0 and self.dataset.num_real and count == 0 and len(self.dataset.synthetic):
            raise ValueError(f"synthetic_fraction={fraction} of batch_size={self.batch_size} rounds to 0 synthetic subjects per batch")
        return count

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        synthetic = self.synthetic_per_batch()
        real = self.batch_size - synthetic
        if real and not self.dataset.num_real:
            raise ValueError("the real dataset is empty; use synthetic_fraction=1")
        rng = np.random.default_rng([self.seed, self.epoch])
        real_order = np.concatenate(
            [rng.permutation(self.dataset.num_real) for _ in range(-(-self.num_batches * real // max(self.dataset.num_real, 1)))]
            or [np.zeros(0, dtype=int)]
        )
        n_synth = len(self.dataset.synthetic)
        start = self.epoch * self.num_batches * synthetic  # continue through the synthetic set across epochs
        for b in range(self.num_batches):
            picks = [int(i) for i in real_order[b * real : (b + 1) * real]]
            picks += [self.dataset.num_real + (start + b * synthetic + k) % n_synth for k in range(synthetic)]
            yield picks
