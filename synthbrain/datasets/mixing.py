"""Real and synthetic subjects in one training loop, at an exact fraction per batch.

``MixedDataset(real, synthetic)`` puts both behind one index (real first) and gives every item
the same keys: ``image`` (1, D, H, W) float, ``labels`` (D, H, W) int64 class indices (when the
synthetic dataset has labels), ``covariates`` (dict, the model's covariates; unknown real values
as "n/a" / NaN), ``is_synthetic``, ``index``, ``appearance`` ("real", "generated" or "randomized").
The real dataset may be a prepared cohort
(``PreparedCohort``; class fractions become the most likely class), a torchio
``SubjectsDataset`` (images named ``image`` and ``labels``), any dataset of (image, labels)
tensor pairs, or the tensors themselves (``(images, labels)``).

``MixedBatchSampler`` yields batches of indices into it, with ``fraction * batch_size`` synthetic
subjects in each batch when that is a whole number. When it is not (0.3 of 4), batches hold its
floor or its ceiling, spread so that after any number of batches the synthetic count is the exact
fraction of all subjects so far, rounded: never more than half a subject off, so the fraction is
exact over training and never silently rounded to another one. ``fraction`` is a number or a
function of the epoch (a schedule; call ``set_epoch`` each epoch). Real subjects are visited in a
seeded shuffled order, an epoch at a time; synthetic ones in index order across epochs, which keeps
the synthetic dataset's chunks hot in its cache and never repeats a synthetic subject until all
have been used.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from synthbrain.cohort.covariates import CATEGORICAL
from synthbrain.datasets.synthetic import SyntheticBrainDataset


class MixedDataset(torch.utils.data.Dataset):
    """Real and synthetic subjects behind one index (see the module docstring).

    Real subjects must lie on the synthetic subjects' grid: a torchio ``Subject`` or a prepared
    cohort item whose affine differs from the generator's (by more than ``atol_mm`` in any entry:
    another orientation such as LPS, another voxel size or origin) is a ``ValueError`` naming the
    subject and both affines, unless ``resample=True``, which resamples it onto the grid (torchio
    ``Resample``: linear for the image, nearest neighbour for the labels). Tensors carry no
    geometry and are taken to lie on the grid.
    """

    def __init__(self, real: Any, synthetic: SyntheticBrainDataset, *, resample: bool = False, atol_mm: float = 1e-3):
        if not isinstance(synthetic, SyntheticBrainDataset):
            raise ValueError(f"synthetic: {type(synthetic).__name__}; allowed: a SyntheticBrainDataset")
        if synthetic.as_subject:
            raise ValueError("synthetic: as_subject=True; MixedDataset returns dicts, so build the synthetic dataset with as_subject=False")
        if isinstance(real, torch.Tensor):
            real = torch.utils.data.TensorDataset(real)
        elif isinstance(real, (tuple, list)) and real and all(isinstance(t, torch.Tensor) for t in real):
            real = torch.utils.data.TensorDataset(*real)
        if not hasattr(real, "__getitem__") or not hasattr(real, "__len__"):
            raise ValueError(f"real: {type(real).__name__}; allowed: a map-style dataset, or tensors (images, labels)")
        if len(real) == 0:
            raise ValueError("real: an empty dataset; to train on synthetic subjects only, use the SyntheticBrainDataset itself")
        self.real, self.synthetic = real, synthetic
        self.resample, self.atol_mm = bool(resample), float(atol_mm)
        self.num_real = len(real)
        first = self._real_item(0)
        shape = tuple(synthetic.generator.image_grid.shape)
        if tuple(first["image"].shape) != (1, *shape):
            raise ValueError(f"real: images of shape {tuple(first['image'].shape)}; the synthetic ones are (1, {shape}); resample first")
        if synthetic.with_labels and synthetic.generator.label_classes and "labels" not in first:
            raise ValueError(
                "real: items without a label map, while the synthetic ones have one; "
                "give labels, or build the synthetic dataset with with_labels=False"
            )

    def __len__(self) -> int:
        return self.num_real + len(self.synthetic)

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < len(self):
            raise IndexError(f"index={index!r}; allowed: 0..{len(self) - 1} (real 0..{self.num_real - 1}, synthetic after)")
        return int(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items of a batch; the synthetic ones are fetched together, so that they are generated in
        one batched call where the synthetic dataset generates per request."""
        indices = [self._check_index(i) for i in indices]
        synthetic = [i - self.num_real for i in indices if i >= self.num_real]
        generated = iter(self.synthetic.__getitems__(synthetic) if synthetic else [])
        items = []
        for index in indices:
            if index < self.num_real:
                items.append(self._real(index))
            else:
                items.append({**next(generated), "index": index})
        return items

    def _real_item(self, index: int) -> dict[str, Any]:
        """A real item on the generator's grid (checked, or resampled with ``resample=True``)."""
        grid = self.synthetic.generator.image_grid
        item = _real_item(self.real[index], index, self.real)
        affine, name = item.pop("affine", None), item.pop("subject_id", index)
        if affine is not None and not np.allclose(affine, grid.affine, atol=self.atol_mm):
            if not self.resample:
                raise ValueError(
                    f"real[{index}] ({name}): affine\n{np.round(affine, 3)}\ndiffers from the synthetic subjects' grid\n"
                    f"{np.round(grid.affine, 3)}\n(another orientation, voxel size or origin); resample it onto the grid "
                    "(torchio.Resample with the generator's image_grid) or pass resample=True"
                )
            item = _resampled(item, affine, grid)
        return item

    def _real(self, index: int) -> dict[str, Any]:
        item = self._real_item(index)
        schema = self.synthetic.generator.schema
        item["covariates"] = {  # the synthetic items' keys, so batches collate; unknown values as n/a / NaN
            c.name: item["covariates"].get(c.name, "n/a" if c.kind == CATEGORICAL else float("nan")) for c in schema.covariates
        }
        if not (self.synthetic.with_labels and self.synthetic.generator.label_classes):
            item.pop("labels", None)
        return item


def _real_item(item: Any, index: int, dataset: Any) -> dict[str, Any]:
    covariates: dict[str, Any] = {}
    affine = None
    if hasattr(item, "get_images_dict"):  # a torchio Subject
        if "image" not in item:
            raise ValueError(f"real[{index}]: a torchio Subject without an 'image' entry (has {sorted(item.keys())}); name the T1 'image'")
        image, labels = item["image"].data, item["labels"].data if "labels" in item else None
        covariates = {k: v for k, v in item.items() if not hasattr(v, "data")}
        affine = np.asarray(item["image"].affine)
    elif isinstance(item, dict):  # a PreparedCohort item
        if "image" not in item:
            raise ValueError(f"real[{index}]: a dict without an 'image' key (has {sorted(item)})")
        image, labels = item["image"], item.get("labels")
        if hasattr(dataset, "table") and "subject_id" in item:
            row = dataset.table.set_index("subject_id").loc[item["subject_id"]]
            covariates = {k: row[k] for k in dataset.schema.names}
        if hasattr(dataset, "output_grid"):  # a prepared cohort: its items lie on its (averaged) grid
            affine = np.asarray(dataset.output_grid.affine)
    elif isinstance(item, (tuple, list)) and item:
        image, labels = item[0], item[1] if len(item) > 1 else None
    else:
        raise ValueError(f"real[{index}]: {type(item).__name__}; allowed: a torchio Subject, a dict with 'image', or (image, labels)")
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.ndim == 3:
        image = image[None]
    out = {"image": image, "covariates": covariates, "is_synthetic": False, "index": index, "appearance": "real"}
    if affine is not None:
        out["affine"] = affine
    if isinstance(item, dict) and "subject_id" in item:
        out["subject_id"] = item["subject_id"]
    if labels is not None:
        out["labels"] = _label_map(torch.as_tensor(labels), tuple(image.shape[1:]), index)
    return out


def _resampled(item: dict[str, Any], affine: np.ndarray, grid) -> dict[str, Any]:
    """``item`` resampled from ``affine`` onto ``grid`` with torchio (linear image, nearest labels)."""
    import torchio as tio

    target = (tuple(grid.shape), np.asarray(grid.affine))
    parts = {"image": tio.ScalarImage(tensor=item["image"], affine=affine)}
    if "labels" in item:
        parts["labels"] = tio.LabelMap(tensor=item["labels"][None], affine=affine)
    moved = tio.Resample(target)(tio.Subject(**parts))
    out = {**item, "image": moved["image"].data.float()}
    if "labels" in item:
        out["labels"] = moved["labels"].data[0].long()
    return out


def _label_map(labels: torch.Tensor, shape: tuple[int, ...], index: int) -> torch.Tensor:
    """Class indices (D, H, W) int64 from a label map (D, H, W) or (1, D, H, W), or from class
    fractions / one-hot channels (C, D, H, W), whose most likely class is taken."""
    if labels.ndim == 4 and labels.shape[0] > 1:
        labels = labels.argmax(0)
    elif labels.ndim == 4:
        labels = labels[0]
    if tuple(labels.shape) != shape:
        raise ValueError(f"real[{index}]: a label map of shape {tuple(labels.shape)} for an image of shape {shape}")
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise ValueError(f"real[{index}]: a label map with non-integer values; give class indices or (C, D, H, W) class fractions")
        labels = labels.round()
    return labels.long()


class MixedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices (a list of ``batch_size`` ints per batch) into a :class:`MixedDataset`,
    ``synthetic_fraction`` of them synthetic: exact over training, never more than half a subject
    off at any batch (see the module docstring and :func:`synthetic_counts`).

    ``synthetic_fraction`` is a number in [0, 1] or a function of the epoch; real subjects come in
    an order drawn from ``numpy.random.default_rng([seed, epoch])``; call :meth:`set_epoch` before
    each epoch. Raises ``ValueError`` naming a bad argument and its value.

    An epoch is ``num_batches`` batches (``len(sampler)``), whatever the number of subjects. By
    default that is one pass over the real subjects: ``floor(num_real / ((1 - fraction) * batch_size))``
    batches at the fraction of epoch 0, at least 1 (with fraction 1, ``ceil(len(synthetic) / batch_size)``).
    The floor means a pass never repeats a real subject, but with few real subjects an epoch is
    short and may leave some out: 3 real subjects, ``batch_size=4``, fraction 0.25 give 1 batch (3
    real + 1 synthetic); fraction 0.5 also gives 1 batch, holding 2 of the 3 real subjects (the
    next epoch's order is drawn again, so none is left out for good). To train for a set number
    of steps, give ``num_batches``: the real subjects then repeat, each pass in a new shuffled order
    (a subject never appears twice before every real subject has appeared once), and the synthetic
    ones continue in index order across epochs.
    """

    def __init__(
        self,
        dataset: MixedDataset,
        batch_size: int,
        synthetic_fraction: float | Callable[[int], float],
        num_batches: int | None = None,
        seed: int = 0,
    ):
        """``num_batches`` per epoch defaults to one pass over the real subjects at the fraction of
        epoch 0 (one pass over the synthetic ones when that fraction is 1)."""
        if not isinstance(dataset, MixedDataset):
            raise ValueError(f"dataset: {type(dataset).__name__}; allowed: a MixedDataset")
        if isinstance(batch_size, bool) or not (isinstance(batch_size, numbers.Integral) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        if isinstance(seed, bool) or not (isinstance(seed, numbers.Integral) and seed >= 0):
            raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
        self.dataset, self.batch_size, self.fraction, self.seed = dataset, int(batch_size), synthetic_fraction, int(seed)
        self.epoch = 0
        first = self.fraction_at(0)  # validates the fraction of epoch 0
        if num_batches is None:
            real_per_batch = (1 - first) * self.batch_size
            if real_per_batch > 0:
                num_batches = max(1, math.floor(dataset.num_real / real_per_batch))
            else:
                num_batches = -(-len(dataset.synthetic) // self.batch_size)
        if isinstance(num_batches, bool) or not (isinstance(num_batches, numbers.Integral) and num_batches >= 1):
            raise ValueError(f"num_batches={num_batches!r}; allowed: an integer >= 1")
        self.num_batches = int(num_batches)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s fraction and draws for the next iteration (like ``DistributedSampler.set_epoch``)."""
        if isinstance(epoch, bool) or not (isinstance(epoch, numbers.Integral) and epoch >= 0):
            raise ValueError(f"epoch={epoch!r}; allowed: an integer >= 0")
        self.fraction_at(int(epoch))  # a schedule's bad value is reported here, not mid-epoch
        self.epoch = int(epoch)

    def fraction_at(self, epoch: int) -> Fraction:
        """The synthetic fraction of an epoch (the schedule's value), checked to lie in [0, 1]."""
        fraction = self.fraction(epoch) if callable(self.fraction) else self.fraction
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"synthetic_fraction={fraction!r} (epoch {epoch}); allowed: a number in [0, 1]")
        return _decimal(fraction)

    def _synthetic_before(self, epoch: int) -> Fraction:
        """Synthetic subjects due before the first batch of ``epoch`` (exact, not rounded)."""
        return sum((self.fraction_at(e) for e in range(epoch)), Fraction(0)) * self.batch_size * self.num_batches

    def synthetic_counts(self) -> list[int]:
        """How many synthetic subjects each batch of the current epoch holds: after every batch,
        the running total is the exact due count rounded (half up)."""
        return synthetic_counts(self.fraction_at(self.epoch), self.batch_size, self.num_batches, self._synthetic_before(self.epoch))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        counts = self.synthetic_counts()
        real_total = self.batch_size * self.num_batches - sum(counts)
        num_real = self.dataset.num_real
        rng = np.random.default_rng([self.seed, self.epoch])
        passes = -(-real_total // num_real)
        real_order = np.concatenate([rng.permutation(num_real) for _ in range(passes)] or [np.zeros(0, dtype=int)])
        n_synth = len(self.dataset.synthetic)
        synthetic_next = _round(self._synthetic_before(self.epoch))  # continue through the synthetic set across epochs
        real_next = 0
        for count in counts:
            real = self.batch_size - count
            picks = [int(i) for i in real_order[real_next : real_next + real]]
            picks += [num_real + (synthetic_next + k) % n_synth for k in range(count)]
            real_next, synthetic_next = real_next + real, synthetic_next + count
            yield picks


def synthetic_counts(fraction: numbers.Real, batch_size: int, num_batches: int, before: Fraction = Fraction(0)) -> list[int]:
    """Synthetic subjects in each of ``num_batches`` batches of ``batch_size`` at ``fraction``, so
    that after every batch the running total is ``before + fraction * batch_size * batches``
    rounded half up: exact over a run, never more than half a subject off at any point (0.8 of 4
    gives 3, 3, 4, 3, 3, 3, 3, 4, ...: 16 of every 20). Raises ``ValueError`` for a fraction
    outside [0, 1]."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction={float(fraction)}; allowed: a number in [0, 1]")
    fraction = _decimal(fraction)
    step = fraction * batch_size
    return [_round(before + (b + 1) * step) - _round(before + b * step) for b in range(num_batches)]


def _decimal(fraction: numbers.Real) -> Fraction:
    """The fraction a person meant: a rational number (``Fraction``, int) as it is, a float (Python
    or numpy, any width) as the decimal it prints as: 0.7 is 7/10, not the binary
    0.69999999999999995559 (whose 0.7 * 5 = 3.4999... would round the due 3.5 subjects down)."""
    return Fraction(fraction) if isinstance(fraction, numbers.Rational) else Fraction(str(fraction))


def _round(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))
