"""Real and synthetic subjects in one training loop, at an exact fraction per batch.

``MixedDataset(real, synthetic)`` puts both behind one index (real first) and gives every item
the same keys (:mod:`synthbrain.datasets.items`): ``image`` (1, D, H, W) float in [0, 1], ``label``
(1, D, H, W) int64 class indices (when the synthetic dataset has labels), ``affine`` (4, 4), the
synthetic subjects' grid, on which every real item lies, ``covariates`` (dict, the model's covariates in the
synthetic items' representation: categorical levels as the schema's level names, continuous values
as floats; unknown real values as "n/a" / NaN), ``is_synthetic``, ``index``, ``appearance``
("real", "generated" or "randomized"). Real items that do not fit are refused, not converted (see
:class:`MixedDataset`).
The real dataset may be a prepared cohort
(``PreparedCohort``; class fractions become the most likely class), a torchio
``SubjectsDataset`` (images named ``image`` and ``label``, or ``labels``), any dataset of (image, labels)
tensor pairs, or the tensors themselves (``(images, labels)``).

``MixedBatchSampler`` yields batches of indices into it, with ``fraction * batch_size`` synthetic
subjects in each batch when that is a whole number. When it is not (0.3 of 4), batches hold its
floor or its ceiling, spread so that after any number of batches the synthetic count is the exact
fraction of all subjects so far, rounded: never more than half a subject off, so the fraction is
exact over training and never silently rounded to another one. ``fraction`` is a number or a
schedule: a function of the epoch or of the global step (``schedule_unit``; ready-made:
``constant_share``, ``linear_decay``, ``cosine_decay``, ``synthetic_then_real``; call
``set_epoch`` each epoch). What an epoch is: see :class:`MixedBatchSampler`. Real subjects are visited in a
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

from synthbrain import seeding
from synthbrain.cohort.covariates import CATEGORICAL
from synthbrain.datasets.items import Item
from synthbrain.datasets.synthetic import SyntheticBrainDataset


class MixedDataset(torch.utils.data.Dataset):
    """Real and synthetic subjects behind one index (see the module docstring).

    Real subjects must lie on the synthetic subjects' grid: a torchio ``Subject`` or a prepared
    cohort item whose affine differs from the generator's (by more than ``atol_mm`` in any entry:
    another orientation such as LPS, another voxel size or origin) is a ``ValueError`` naming the
    subject and both affines, unless ``resample=True``, which resamples it onto the grid (torchio
    ``Resample``: linear for the image, nearest neighbour for the labels). Tensors carry no
    geometry and are taken to lie on the grid. Resampling does not register or normalise: a raw
    native-space subject is refused by the checks below, which point to ``synthbrain prepare``.

    Every real item is checked before it is served, and refused with a ``ValueError`` that names it
    (``real[index] (subject id)``), what was found and what is allowed:

    * its image must be (1, D, H, W) on the grid, finite, with intensities in :data:`IMAGE_RANGE`
      ([0, 1], the synthetic images' range; nothing is rescaled);
    * its label map (when the synthetic items have one) must hold class indices 0..C-1 of the
      model's ``label_classes`` (a fine parcellation such as FreeSurfer's 2, 41, ... is refused), or
      C class-fraction channels; a prepared cohort whose label scheme names other classes is refused;
    * its covariates go through the model's covariate schema (:meth:`Covariate.parse
      <synthbrain.cohort.covariates.Covariate.parse>`: the spellings ``prepare`` accepts, e.g. sex
      ``"female"`` is ``"F"``, age ``"70"`` is 70.0); a value it refuses names the covariate and value.

    When: at construction, every item of real data held in memory (tensors, a ``TensorDataset``, a
    list or tuple of items), the first item of any other dataset, and what a dataset says about all
    its items without reading images (a prepared cohort's label scheme and table, a torchio
    ``SubjectsDataset``'s covariates); every item again each time it is served (a few reductions
    over a volume already read), so an item read lazily is refused with the same error before it
    reaches a batch (reading every file at construction would cost a pass over the data).
    :meth:`check_all` reads and checks every item now. ``resample=True`` resamples, it does not
    register: a subject in native space whose intensities and labels were already brought into
    these ranges is not recognised as unregistered (``synthbrain prepare`` registers).
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
        generator = synthetic.generator
        self._classes = generator.label_classes if synthetic.with_labels and generator.label_classes else None
        self._real(0)  # the first item, whatever the dataset
        self._check_source()
        if isinstance(real, (torch.utils.data.TensorDataset, list, tuple)):  # in memory: every item is checked now
            for index in range(1, self.num_real):
                self._real(index)

    def check_all(self) -> None:
        """Read and check every real item now (each is checked before it is served anyway); raises
        the ``ValueError`` that serving the first bad one would raise."""
        for index in range(self.num_real):
            self._real(index)

    def _check_source(self) -> None:
        """What a real dataset says about all its items without reading their images: a prepared
        cohort's label classes and table covariates, a torchio dataset's covariates."""
        scheme = getattr(self.real, "label_scheme", None)
        if self._classes and scheme is not None and tuple(scheme.class_names) != tuple(self._classes):
            raise ValueError(
                f"real: a prepared cohort whose label classes {list(scheme.class_names)} differ from the model's "
                f"{list(self._classes)}; the same index would mean another class: prepare it with the model's label scheme "
                "(synthbrain prepare --label-scheme)"
            )
        table, schema = getattr(self.real, "table", None), getattr(self.real, "schema", None)
        if table is not None and schema is not None and "subject_id" in table:
            for index, row in enumerate(table.to_dict("records")):
                self._covariates({k: row[k] for k in schema.names if k in row}, index, row["subject_id"])
        elif hasattr(self.real, "dry_iter"):  # a torchio SubjectsDataset: subjects without loading their images
            for index, subject in enumerate(self.real.dry_iter()):
                self._covariates(_subject_covariates(subject), index, index)

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
                items.append(Item(next(generated), index=index))
        return items

    def _real_item(self, index: int) -> tuple[dict[str, Any], Any]:
        """A real item on the generator's grid (checked, or resampled with ``resample=True``), and its name."""
        grid = self.synthetic.generator.image_grid
        item = _real_item(self.real[index], index, self.real, len(self._classes) if self._classes else None)
        affine, name = item.pop("affine", None), item.pop("subject_id", index)
        if affine is not None and not np.allclose(affine, grid.affine, atol=self.atol_mm):
            if not self.resample:
                raise ValueError(
                    f"real[{index}] ({name}): affine\n{np.round(affine, 3)}\ndiffers from the synthetic subjects' grid\n"
                    f"{np.round(grid.affine, 3)}\n(another orientation, voxel size or origin); resample it onto the grid "
                    "(torchio.Resample with the generator's image_grid) or pass resample=True"
                )
            _check_values(item, index, name, self._classes, resample=True)  # raw data is named before it is resampled
            item = _resampled(item, affine, grid)
        item["affine"] = torch.as_tensor(np.asarray(grid.affine, dtype=np.float64))  # on the grid now, as the synthetic items
        return item, name

    def _real(self, index: int) -> dict[str, Any]:
        """A real item as served: on the grid, its values in the synthetic items' ranges and its
        covariates in their representation; raises ``ValueError`` naming it otherwise."""
        item, name = self._real_item(index)
        shape = tuple(self.synthetic.generator.image_grid.shape)
        if tuple(item["image"].shape) != (1, *shape):
            raise ValueError(
                f"real[{index}] ({name}): an image of shape {tuple(item['image'].shape)}; the synthetic ones are (1, {shape}); "
                "resample first"
            )
        if self._classes and "label" not in item:
            raise ValueError(
                "real: items without a label map, while the synthetic ones have one; "
                "give labels, or build the synthetic dataset with with_labels=False"
            )
        if not self._classes:
            item.pop("label", None)
        _check_values(item, index, name, self._classes, resample=self.resample)
        item["covariates"] = self._covariates(item["covariates"], index, name)
        return item

    def _covariates(self, raw: dict[str, Any], index: int, name: Any) -> dict[str, Any]:
        """The model's covariates of a real item, parsed by its schema into the synthetic items'
        representation: a categorical as its level (``"female"`` becomes ``"F"``), a continuous one as
        a float (``"70"`` becomes 70.0); missing values as ``"n/a"`` / NaN, other keys left out.
        Raises ``ValueError`` naming the item, covariate and value that the schema does not accept."""
        out: dict[str, Any] = {}
        for c in self.synthetic.generator.schema.covariates:
            value = raw.get(c.name)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            try:
                parsed = float(c.parse([value])[0])
            except ValueError as err:
                raise ValueError(f"real[{index}] ({name}): {err}") from None
            if c.kind == CATEGORICAL:
                out[c.name] = "n/a" if np.isnan(parsed) else c.categories[int(parsed)]
            else:
                out[c.name] = parsed
        return out


def _real_item(item: Any, index: int, dataset: Any, num_classes: int | None) -> dict[str, Any]:
    covariates: dict[str, Any] = {}
    affine = None
    if hasattr(item, "get_images_dict"):  # a torchio Subject
        if "image" not in item:
            raise ValueError(f"real[{index}]: a torchio Subject without an 'image' entry (has {sorted(item.keys())}); name the T1 'image'")
        key = "label" if "label" in item else "labels"  # torchio's name, or the one older subjects use
        image, labels = item["image"].data, item[key].data if key in item else None
        covariates = _subject_covariates(item)
        affine = np.asarray(item["image"].affine)
    elif isinstance(item, dict):  # a PreparedCohort item
        if "image" not in item:
            raise ValueError(f"real[{index}]: a dict without an 'image' key (has {sorted(item)})")
        # a prepared cohort's items hold "labels"; an item of this package "label" (and reading its deprecated "labels" would warn)
        image, labels = item["image"], item["label"] if "label" in item else item.get("labels")
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
    out = Item(image=image, covariates=covariates, is_synthetic=False, index=index, appearance="real")
    if affine is not None:
        out["affine"] = affine
    if isinstance(item, dict) and "subject_id" in item:
        out["subject_id"] = item["subject_id"]
    if labels is not None:
        out["label"] = _label_map(torch.as_tensor(labels), tuple(image.shape[1:]), index, num_classes)[None]
    return out


def _subject_covariates(subject: Any) -> dict[str, Any]:
    """The entries of a torchio Subject that are not images (its covariates, as given)."""
    images = subject.get_images_dict(intensity_only=False)
    return {k: v for k, v in subject.items() if k not in images}


IMAGE_RANGE = (0.0, 1.0)  # the synthetic images' intensities (and a prepared cohort's)
_RANGE_TOL = 1e-5  # float32 rounding of a rescaled or resampled image
_PREPARE = (
    "synthbrain prepare registers a raw cohort to MNI space, removes the skull, scales intensities to [0, 1] and maps "
    "labels to the model's classes with a label scheme (synthbrain prepare --label-scheme)"
)


def _check_values(item: dict[str, Any], index: int, name: Any, classes: tuple[str, ...] | None, resample: bool) -> None:
    """Raise ``ValueError`` naming the item unless its image is finite and in :data:`IMAGE_RANGE`
    and its label map (when the model has classes) holds only class indices 0..C-1."""
    image = item["image"]
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        raise ValueError(f"real[{index}] ({name}): image has {int((~finite).sum())} NaN/Inf voxels; allowed: finite intensities in [0, 1]")
    low, high = float(image.min()), float(image.max())
    if low < IMAGE_RANGE[0] - _RANGE_TOL or high > IMAGE_RANGE[1] + _RANGE_TOL:
        how = " (resample=True resamples onto the grid; it does not register or normalise)" if resample else ""
        raise ValueError(
            f"real[{index}] ({name}): image intensities in [{low:.4g}, {high:.4g}]; allowed: [0, 1], the range of the synthetic "
            f"images{how}; scale each image to [0, 1] as prepare does (robust percentiles inside the brain), or prepare the raw "
            f"cohort: {_PREPARE}"
        )
    labels = item.get("label")
    if classes is None or labels is None:
        return
    how = " (resample=True does not map labels)" if resample else ""
    outside = labels[(labels < 0) | (labels >= len(classes))]
    if outside.numel():
        values = torch.unique(outside).tolist()
        shown = f"{values[:10]}{' ...' if len(values) > 10 else ''}"
        more = f" ({len(values)} values outside)" if len(values) > 10 else ""
        raise ValueError(
            f"real[{index}] ({name}): label values {shown} are not classes of the model{more}; allowed: 0..{len(classes) - 1} "
            f"({', '.join(classes)}); a fine parcellation (FreeSurfer, DLMUSE, ...) must be mapped to these classes{how}: {_PREPARE}"
        )


def _resampled(item: dict[str, Any], affine: np.ndarray, grid) -> dict[str, Any]:
    """``item`` resampled from ``affine`` onto ``grid`` with torchio (linear image, nearest labels)."""
    import torchio as tio

    target = (tuple(grid.shape), np.asarray(grid.affine))
    parts = {"image": tio.ScalarImage(tensor=item["image"], affine=affine)}
    if "label" in item:
        parts["label"] = tio.LabelMap(tensor=item["label"], affine=affine)
    moved = tio.Resample(target)(tio.Subject(**parts))
    out = Item(item, image=moved["image"].data.float())
    if "label" in item:
        out["label"] = moved["label"].data.long()
    return out


def _label_map(labels: torch.Tensor, shape: tuple[int, ...], index: int, num_classes: int | None) -> torch.Tensor:
    """Class indices (D, H, W) int64 from a label map (D, H, W) or (1, D, H, W), or from class
    fractions / one-hot channels (C, D, H, W), whose most likely class is taken (C must be the
    model's number of classes, ``num_classes``, when it has classes)."""
    if labels.ndim == 4 and labels.shape[0] > 1:
        if num_classes is not None and labels.shape[0] != num_classes:
            raise ValueError(
                f"real[{index}]: a label map of {labels.shape[0]} class channels (class fractions); the model has {num_classes} classes, "
                f"so which channel is which class is unknown; give {num_classes} channels in the model's class order, or class indices"
            )
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

    ``synthetic_fraction`` is a number in [0, 1] or a schedule: a function of the epoch
    (``schedule_unit="epoch"``, the default) or of the global step (``schedule_unit="step"``: the
    batch index counted from the first batch of epoch 0, ``epoch * num_batches + b``) that returns
    the share of synthetic subjects in [0, 1]. Ready-made schedules: :func:`constant_share`,
    :func:`linear_decay`, :func:`cosine_decay`, :func:`synthetic_then_real`. Whatever the schedule,
    after every batch the running synthetic total is the exact due total, the sum of
    ``share * batch_size`` over every batch so far (computed in exact fractions), rounded half up.

    **An epoch** is ``num_batches`` batches (the sampler's ``len``); by default one pass over the
    real subjects at the share of epoch 0 (step 0): ``max(1, floor(num_real / ((1 - share) *
    batch_size)))`` batches, or one pass over the synthetic subjects when that share is 1. So 3 real
    subjects at batch size 4 and share 0 give an epoch of one batch (one of the 3 repeated), and 10
    real subjects at share 0.5 five batches. Give ``num_batches`` to set the epoch's length
    yourself (a step schedule requires it, as its steps are counted in batches).

    Real subjects come in an order drawn from :func:`synthbrain.seeding.epoch_rng` ``(seed, epoch)``;
    synthetic ones in index order across epochs. Call :meth:`set_epoch` before each epoch (also to
    resume: ``set_epoch(e)`` gives epoch e's batches as an uninterrupted run would). With
    ``num_epochs`` (the horizon) the whole plan, every epoch's or step's share, is checked at
    construction, before any training; without it each epoch's shares are checked by
    :meth:`set_epoch` (and epoch 0's at construction). Raises ``ValueError`` naming a bad argument
    and its value, and for a schedule that returns a non-number or a value outside [0, 1], the
    epoch or step and the value.
    """

    def __init__(
        self,
        dataset: MixedDataset,
        batch_size: int,
        synthetic_fraction: float | Callable[[int], float],
        num_batches: int | None = None,
        seed: int = 0,
        *,
        schedule_unit: str = "epoch",
        num_epochs: int | None = None,
    ):
        """``num_batches`` per epoch defaults to one pass over the real subjects at the fraction of
        epoch 0 (one pass over the synthetic ones when that fraction is 1); see the class docstring."""
        if not isinstance(dataset, MixedDataset):
            raise ValueError(f"dataset: {type(dataset).__name__}; allowed: a MixedDataset")
        if isinstance(batch_size, bool) or not (isinstance(batch_size, numbers.Integral) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1")
        if isinstance(seed, bool) or not (isinstance(seed, numbers.Integral) and seed >= 0):
            raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
        if schedule_unit not in SCHEDULE_UNITS:
            raise ValueError(f"schedule_unit={schedule_unit!r}; allowed: {', '.join(map(repr, SCHEDULE_UNITS))}")
        if schedule_unit == "step" and num_batches is None:
            raise ValueError("num_batches=None with schedule_unit='step'; allowed: an integer >= 1 (a step schedule counts batches)")
        if num_epochs is not None and (isinstance(num_epochs, bool) or not (isinstance(num_epochs, numbers.Integral) and num_epochs >= 1)):
            raise ValueError(f"num_epochs={num_epochs!r}; allowed: None or an integer >= 1")
        self.dataset, self.batch_size, self.fraction, self.seed = dataset, int(batch_size), synthetic_fraction, int(seed)
        self.schedule_unit, self.num_epochs = schedule_unit, None if num_epochs is None else int(num_epochs)
        self.epoch = 0
        first = self.fraction_at(0)  # validates the fraction of epoch 0 (step 0)
        if num_batches is None:
            real_per_batch = (1 - first) * self.batch_size
            if real_per_batch > 0:
                num_batches = max(1, math.floor(dataset.num_real / real_per_batch))
            else:
                num_batches = -(-len(dataset.synthetic) // self.batch_size)
        if isinstance(num_batches, bool) or not (isinstance(num_batches, numbers.Integral) and num_batches >= 1):
            raise ValueError(f"num_batches={num_batches!r}; allowed: an integer >= 1")
        self.num_batches = int(num_batches)
        self._before = [Fraction(0)]  # exact synthetic subjects due before each epoch, filled on demand
        if self.num_epochs is not None:
            self._synthetic_before(self.num_epochs)  # checks every share of the plan now

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shares and draws for the next iteration (like ``DistributedSampler.set_epoch``);
        a schedule's bad value in this epoch (or before it) is reported here, not mid-epoch."""
        if isinstance(epoch, bool) or not (isinstance(epoch, numbers.Integral) and epoch >= 0):
            raise ValueError(f"epoch={epoch!r}; allowed: an integer >= 0")
        if self.num_epochs is not None and epoch >= self.num_epochs:
            raise ValueError(f"epoch={epoch!r}; allowed: 0..{self.num_epochs - 1} (num_epochs={self.num_epochs}, the checked plan)")
        self._synthetic_before(int(epoch) + 1)
        self.epoch = int(epoch)

    def fraction_at(self, index: int) -> Fraction:
        """The synthetic share at an epoch (``schedule_unit="epoch"``) or a global step
        (``"step"``): the schedule's value, checked to be a number in [0, 1], as an exact fraction."""
        fraction = self.fraction(index) if callable(self.fraction) else self.fraction
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"synthetic_fraction={fraction!r} ({self.schedule_unit} {index}); allowed: a number in [0, 1]")
        return _decimal(fraction)

    def shares(self, epoch: int | None = None) -> list[Fraction]:
        """The synthetic share of each batch of ``epoch`` (default: the current one), exact."""
        epoch = self.epoch if epoch is None else epoch
        if self.schedule_unit == "epoch":
            return [self.fraction_at(epoch)] * self.num_batches
        return [self.fraction_at(epoch * self.num_batches + b) for b in range(self.num_batches)]

    def _synthetic_before(self, epoch: int) -> Fraction:
        """Synthetic subjects due before the first batch of ``epoch`` (exact, not rounded)."""
        while len(self._before) <= epoch:
            self._before.append(self._before[-1] + sum(self.shares(len(self._before) - 1), Fraction(0)) * self.batch_size)
        return self._before[epoch]

    def synthetic_counts(self) -> list[int]:
        """How many synthetic subjects each batch of the current epoch holds: after every batch,
        the running total is the exact due count rounded (half up)."""
        return _counts(self.shares(), self.batch_size, self._synthetic_before(self.epoch))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        counts = self.synthetic_counts()
        real_total = self.batch_size * self.num_batches - sum(counts)
        num_real = self.dataset.num_real
        rng = seeding.epoch_rng(self.seed, self.epoch)
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


SCHEDULE_UNITS = ("epoch", "step")


class ShareSchedule:
    """A synthetic share as a function of the step (or epoch) t >= 0, for
    ``MixedBatchSampler(synthetic_fraction=...)``; made by :func:`constant_share`,
    :func:`linear_decay`, :func:`cosine_decay` or :func:`synthetic_then_real` (picklable, so it
    travels to DataLoader workers). ``schedule(t)`` returns a number in [0, 1]: an exact
    ``Fraction`` except for the cosine, a float."""

    def __init__(self, kind: str, start: Fraction, steps: int | None):
        self.kind, self.start, self.steps = kind, start, steps

    def __call__(self, t: int) -> numbers.Real:
        if isinstance(t, bool) or not (isinstance(t, numbers.Integral) and t >= 0):
            raise ValueError(f"t={t!r}; allowed: a step or epoch, an integer >= 0")
        if self.kind == "constant":
            return self.start
        if t >= self.steps:
            return Fraction(0)
        if self.kind == "linear":
            return self.start * Fraction(self.steps - t, self.steps)
        if self.kind == "cosine":
            return float(self.start) * (1 + math.cos(math.pi * t / self.steps)) / 2
        return self.start  # synthetic first, then real

    def __repr__(self) -> str:
        share = str(self.start)
        if self.kind == "constant":
            return f"constant_share({share})"
        if self.kind == "first":
            return f"synthetic_then_real({self.steps}, share={share})"
        return f"{self.kind}_decay({share}, {self.steps})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShareSchedule) and (self.kind, self.start, self.steps) == (other.kind, other.start, other.steps)

    def __hash__(self) -> int:
        return hash((self.kind, self.start, self.steps))


def _share(name: str, value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r}; allowed: a number in [0, 1]")
    return _decimal(value)


def _steps(value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) and value >= low):
        raise ValueError(f"steps={value!r}; allowed: an integer >= {low}")
    return int(value)


def constant_share(share: numbers.Real) -> ShareSchedule:
    """``share`` at every step (the same as passing the number itself)."""
    return ShareSchedule("constant", _share("share", share), None)


def linear_decay(start: numbers.Real, steps: int) -> ShareSchedule:
    """``start * (steps - t) / steps`` at step t: ``start`` at step 0, falling linearly to 0 at
    ``steps`` and 0 after (exact fractions: over the first ``steps`` steps the shares sum to
    ``start * (steps + 1) / 2``)."""
    return ShareSchedule("linear", _share("start", start), _steps(steps))


def cosine_decay(start: numbers.Real, steps: int) -> ShareSchedule:
    """``start * (1 + cos(pi * t / steps)) / 2`` at step t < ``steps`` (a float), 0 after."""
    return ShareSchedule("cosine", _share("start", start), _steps(steps))


def synthetic_then_real(steps: int, share: numbers.Real = 1) -> ShareSchedule:
    """``share`` (default 1: synthetic only) for the first ``steps`` steps, then 0 (real only):
    pre-training on synthetic subjects, then fine-tuning on real ones, in one run."""
    return ShareSchedule("first", _share("share", share), _steps(steps, low=0))


def synthetic_counts(fraction: numbers.Real, batch_size: int, num_batches: int, before: Fraction = Fraction(0)) -> list[int]:
    """Synthetic subjects in each of ``num_batches`` batches of ``batch_size`` at ``fraction``, so
    that after every batch the running total is ``before + fraction * batch_size * batches``
    rounded half up: exact over a run, never more than half a subject off at any point (0.8 of 4
    gives 3, 3, 4, 3, 3, 3, 3, 4, ...: 16 of every 20). Raises ``ValueError`` for a fraction
    outside [0, 1]."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction={float(fraction)}; allowed: a number in [0, 1]")
    return _counts([_decimal(fraction)] * num_batches, batch_size, before)


def _counts(shares: Sequence[Fraction], batch_size: int, before: Fraction) -> list[int]:
    """Per batch synthetic counts whose running total after every batch is the exact due total
    (``before`` plus ``share * batch_size`` of every batch so far) rounded half up."""
    counts, due = [], before
    for share in shares:
        counts.append(_round(due + share * batch_size) - _round(due))
        due += share * batch_size
    return counts


def _decimal(fraction: numbers.Real) -> Fraction:
    """The fraction a person meant: a rational number (``Fraction``, int) as it is, a float (Python
    or numpy, any width) as the decimal it prints as: 0.7 is 7/10, not the binary
    0.69999999999999995559 (whose 0.7 * 5 = 3.4999... would round the due 3.5 subjects down)."""
    return Fraction(fraction) if isinstance(fraction, numbers.Rational) else Fraction(str(fraction))


def _round(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))
