"""Randomised appearance: an image synthesised from a label map with random contrast, bias field,
resolution and noise (label-to-image synthesis, as SynthSeg: Billot et al. 2023, "SynthSeg:
Segmentation of brain MRI scans of any contrast and resolution without retraining", Medical Image
Analysis 86).

A segmentation network trained on such images learns shapes rather than one scanner's contrast.
Combined with the generator's covariate-conditioned label maps, this draws unlimited new
anatomies of a chosen age, sex and ventricular volume, each in an unlimited range of contrasts.

:class:`AppearanceRandomizer` is a chain of torchio transforms, in SynthSeg's order: an optional
spatial deformation of the label map (``RandomAffine`` then ``RandomElasticDeformation``,
nearest-neighbour for labels), then a Gaussian intensity per class (``RandomLabelsToImage``), a
multiplicative bias field (``RandomBiasField``), a gamma change (``RandomGamma``), a lower
resolution (``RandomAnisotropy``), blur (``RandomBlur``), noise (``RandomNoise``), and a rescaling
to [0, 1] over the brain's 0.5-99.5 percentiles (``RescaleIntensity``) with the background set to
0, as in a skull-stripped prepared image. Because the image is made from the (deformed) label map,
labels and image are aligned by construction.

Two ways to call it. ``randomizer(labels, num_classes, affine, seed)`` returns ``(image, labels)``;
every draw comes from ``seed`` (torch's generator, forked so nothing outside changes), so an item's
appearance depends on its seed alone: the same whatever DataLoader worker, order or batch it is made
in (the datasets of this package call it so). ``randomizer(subject)``, also inside ``tio.Compose``,
is a torchio transform: it replaces the Subject's ``"image"`` by one synthesised from its ``"label"``
LabelMap and, like every torchio transform, draws from torch's global generator, so
``torch.manual_seed(s)`` before the call (or the Compose) makes the result reproducible, and each
DataLoader worker draws differently (torch seeds workers from the parent's generator). It runs on CPU
tensors (torchio works on the CPU); the generator's batch comes to the CPU once, as every item does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torchio as tio

from synthbrain.datasets.items import make_item

RANGES = ("mean", "std", "bias_field", "log_gamma", "downsampling", "blur_std", "noise_std", "scales", "degrees", "elastic_displacement")


@dataclasses.dataclass(unsafe_hash=True)
class AppearanceRandomizer(tio.transforms.augmentation.RandomTransform):
    """Settings of label-to-image synthesis (each a (low, high) range drawn uniformly per image; 0 or
    (0, 0) switches a step off), and a torchio transform that applies them. Intensities are in the
    [0, 1] units of prepared images. The settings cannot be changed after construction (a dataset
    records them with its definition).

    ``mean``, ``std``: per-class Gaussian intensity (SynthSeg: means U(25, 225), standard deviations
    U(5, 25) on a 0-255 scale, i.e. about (0.1, 0.9) and (0.02, 0.1) here): one range for every
    class, or a tuple of one range per foreground class; the background (class 0) stays 0.
    ``bias_field``: maximum magnitude of the polynomial bias-field coefficients (torchio; SynthSeg's
    bias std 0.5). ``log_gamma``: range of log gamma. ``downsampling``: factor range of
    the simulated lower resolution along one random axis (torchio ``RandomAnisotropy``; 2 = 8 mm at
    4 mm voxels), applied with ``downsampling_probability``. ``blur_std``: Gaussian blur std in mm.
    ``noise_std``: Gaussian noise std. ``spatial``: deform label and image together with
    ``scales`` (factor range; SynthSeg's +-0.15 is (0.85, 1.15)), ``degrees`` (rotation) and
    ``elastic_displacement`` (mm, maximum of a B-spline field with 7 control points per axis); off by
    default so the label map of ``appearance="randomized"`` is the generated one.

    As a torchio transform (``randomizer(subject)``, or inside ``tio.Compose``): the Subject's
    ``"label"`` LabelMap (class indices) gives the image, ``"image"`` (a ScalarImage, added or
    replaced); the number of classes is one more than the number of per-class ``mean``/``std`` ranges
    when those are given, else one more than the largest label present.

    Raises ``ValueError`` naming the setting for a range with low > high, a negative spread, or a
    probability outside [0, 1].
    """

    mean: tuple[float, float] = (0.1, 0.9)
    std: tuple[float, float] = (0.02, 0.1)
    bias_field: float = 0.5
    log_gamma: tuple[float, float] = (-0.3, 0.3)
    downsampling: tuple[float, float] = (1.0, 2.0)
    downsampling_probability: float = 0.5
    blur_std: tuple[float, float] = (0.0, 2.0)
    noise_std: tuple[float, float] = (0.0, 0.05)
    spatial: bool = False
    scales: tuple[float, float] = (0.85, 1.15)
    degrees: tuple[float, float] = (-15.0, 15.0)
    elastic_displacement: float = 8.0

    def __post_init__(self) -> None:
        super().__init__()  # torchio's Transform: probability 1, the subject given is copied, not changed
        for name in ("mean", "std"):  # one range for every class, or one per foreground class
            value = getattr(self, name)
            if isinstance(value, (tuple, list)) and value and all(isinstance(v, (tuple, list)) for v in value):
                ranges = tuple(_range(f"{name}[{k}]", v) for k, v in enumerate(value))
                if name == "std" and any(low < 0 for low, _ in ranges):
                    raise ValueError(f"std={value!r}: a negative spread; allowed: values >= 0")
                object.__setattr__(self, name, ranges)
        for name in RANGES:
            if name in ("mean", "std") and isinstance(getattr(self, name)[0], tuple):
                continue
            value = getattr(self, name)
            pair = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            if (
                not isinstance(pair, (tuple, list))
                or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in pair)
            ):
                raise ValueError(f"{name}={value!r}; allowed: a (low, high) pair of finite numbers")
            if pair[0] > pair[1]:
                raise ValueError(f"{name}={value!r}: low > high; allowed: low <= high")
            object.__setattr__(self, name, tuple(float(v) for v in pair) if isinstance(value, (tuple, list)) else float(value))
        for name in ("std", "blur_std", "noise_std"):
            if not isinstance(getattr(self, name)[0], tuple) and getattr(self, name)[0] < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: a negative spread; allowed: values >= 0")
        for name in ("bias_field", "elastic_displacement"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: >= 0")
        if self.downsampling[0] < 1:
            raise ValueError(f"downsampling={self.downsampling!r}; allowed: factors >= 1")
        if not 0.0 <= self.downsampling_probability <= 1.0:
            raise ValueError(f"downsampling_probability={self.downsampling_probability!r}; allowed: a probability in [0, 1]")
        if not isinstance(self.spatial, bool):
            raise ValueError(f"spatial={self.spatial!r}; allowed: True or False")
        object.__setattr__(self, "_settled", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dataclass_fields__ and self.__dict__.get("_settled"):
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The ranges as plain JSON values (recorded with a dataset's settings)."""
        return dataclasses.asdict(self)

    def check(self, num_classes: int) -> None:
        """Raise ``ValueError`` when per-class ``mean`` or ``std`` ranges do not give one range per
        foreground class of a label scheme of ``num_classes`` classes (background included)."""
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value[0], tuple) and len(value) != num_classes - 1:
                raise ValueError(
                    f"{name}: {len(value)} per-class ranges; allowed: one range for all classes, or {num_classes - 1} "
                    f"(one per foreground class of the model's {num_classes}-class label scheme)"
                )

    def _transforms(self, num_classes: int):
        self.check(num_classes)
        per_class = {name: list(getattr(self, name)) if isinstance(getattr(self, name)[0], tuple) else None for name in ("mean", "std")}
        steps = []
        if self.spatial:
            steps.append(tio.RandomAffine(scales=self.scales, degrees=self.degrees, label_interpolation="nearest"))
            if self.elastic_displacement > 0:
                steps.append(tio.RandomElasticDeformation(max_displacement=self.elastic_displacement, label_interpolation="nearest"))
        steps.append(
            tio.RandomLabelsToImage(
                label_key="label",
                image_key="image",
                used_labels=list(range(1, num_classes)),
                mean=per_class["mean"],
                std=per_class["std"],
                default_mean=self.mean if per_class["mean"] is None else (0.1, 0.9),
                default_std=self.std if per_class["std"] is None else (0.02, 0.1),
                ignore_background=True,
            )
        )
        if self.bias_field > 0:
            steps.append(tio.RandomBiasField(coefficients=self.bias_field, include=["image"]))
        if self.log_gamma != (0.0, 0.0):
            steps.append(tio.RandomGamma(log_gamma=self.log_gamma, include=["image"]))
        if self.downsampling[1] > 1 and self.downsampling_probability > 0:
            steps.append(tio.RandomAnisotropy(downsampling=self.downsampling, p=self.downsampling_probability, include=["image"]))
        if self.blur_std[1] > 0:
            steps.append(tio.RandomBlur(std=self.blur_std, include=["image"]))
        if self.noise_std[1] > 0:
            steps.append(tio.RandomNoise(std=self.noise_std, include=["image"]))
        return tio.Compose(steps)

    def _render(self, subject: tio.Subject, num_classes: int) -> tio.Subject:
        """``subject`` with ``"image"`` synthesised from its ``"label"`` (both deformed when
        ``spatial``), rescaled to [0, 1] inside the brain and 0 outside; draws from torch's generator."""
        label = subject["label"]
        subject.add_image(tio.ScalarImage(tensor=torch.zeros((1, *label.spatial_shape)), affine=label.affine), "image")
        out = self._transforms(num_classes)(subject)
        brain = out["label"].data[0].long()[None] > 0
        image = out["image"].data.float()
        if brain.any():
            values = image[brain]
            low, high = torch.quantile(values, 0.005), torch.quantile(values, 0.995)
            image = ((image - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
        out["image"].set_data(image * brain)
        return out

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        """The torchio transform (see the class docstring); ``ValueError`` for a Subject without a
        ``"label"`` LabelMap of class indices (one channel, integers >= 0)."""
        label = dict.get(subject, "label")
        if not isinstance(label, tio.LabelMap):
            raise ValueError(
                f"subject: no 'label' LabelMap (has {sorted(subject.keys())}); allowed: a Subject whose label map of class indices "
                "is named 'label', from which the image is synthesised"
            )
        values = label.data
        if values.shape[0] != 1 or not torch.equal(values, values.round()) or float(values.min()) < 0:
            raise ValueError(
                f"subject['label']: {values.shape[0]} channels with values in [{float(values.min())}, {float(values.max())}]; "
                "allowed: one channel of class indices (integers >= 0)"
            )
        largest = int(values.max())
        per_class = [len(getattr(self, name)) for name in ("mean", "std") if isinstance(getattr(self, name)[0], tuple)]
        num_classes = per_class[0] + 1 if per_class else max(2, largest + 1)
        if largest >= num_classes:
            raise ValueError(f"subject['label']: label {largest}; allowed: 0..{num_classes - 1} (one per-class range for each of 1..)")
        return self._render(subject, num_classes)

    def __call__(self, data, num_classes: int | None = None, affine=None, seed: int | None = None):
        """``randomizer(subject)``: the torchio transform (see the class docstring), a new Subject.

        ``randomizer(labels, num_classes, affine, seed)``: an image (1, D, H, W) float32 in [0, 1]
        synthesised from ``labels`` (D, H, W) class indices in [0, num_classes), and the label map it
        belongs to (D, H, W) int64 (deformed with the image when ``spatial``), on the grid of
        ``affine`` (4, 4). All randomness comes from ``seed``; torch's generator is left as it was."""
        if num_classes is None and affine is None and seed is None:
            return super().__call__(data)
        if num_classes is None or affine is None or seed is None:
            raise ValueError("randomizer(labels, num_classes, affine, seed) needs all four; randomizer(subject) takes a Subject alone")
        labels = torch.as_tensor(data).long().cpu()
        if labels.ndim != 3:
            raise ValueError(f"labels: shape {tuple(labels.shape)}; allowed: (D, H, W) class indices")
        if int(labels.max()) >= num_classes or int(labels.min()) < 0:
            raise ValueError(f"labels: values in [{int(labels.min())}, {int(labels.max())}]; allowed: [0, {num_classes - 1}]")
        subject = tio.Subject(label=tio.LabelMap(tensor=labels[None], affine=affine))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            out = self._render(subject, num_classes)
        return out["image"].data, out["label"].data[0].long()


def _range(name: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{name}={value!r}; allowed: a (low, high) pair of finite numbers")
    if value[0] > value[1]:
        raise ValueError(f"{name}={value!r}: low > high; allowed: low <= high")
    return float(value[0]), float(value[1])


class RandomizedLabelsDataset(torch.utils.data.Dataset):
    """Real anatomy, random appearance: the label maps of a real cohort rendered by an
    :class:`AppearanceRandomizer`, the control for what generated anatomy adds over the real one.

    ``labels``: a sequence of label maps (D, H, W) class indices, or class fractions (C, D, H, W)
    whose most likely class is taken (a :class:`~synthbrain.preprocessing.prepared.PreparedCohort`'s
    items' ``"labels"``), with ``num_classes`` classes on the grid of ``affine`` (4, 4). Item i
    (``n`` items, default one per label map) renders label map ``i % len(labels)`` with the seed
    ``volume_seed(seed, i)``'s appearance stream: ``{"image": (1, D, H, W), "label": (1, D, H, W)
    int64, "affine": (4, 4), "index": i, "source": i % len(labels), "is_synthetic": True,
    "appearance": "randomized"}`` (:mod:`synthbrain.datasets.items`; ``"labels"``, (D, H, W), is deprecated).
    """

    def __init__(
        self, labels, num_classes: int, affine, randomizer: AppearanceRandomizer | None = None, *, n: int | None = None, seed: int = 0
    ):
        from synthbrain.generator import draws

        if not len(labels):
            raise ValueError("labels: empty; allowed: one or more label maps")
        if not (draws.is_int(num_classes) and num_classes >= 2):
            raise ValueError(f"num_classes={num_classes!r}; allowed: an integer >= 2")
        self.labels = [torch.as_tensor(lab).argmax(0) if torch.as_tensor(lab).ndim == 4 else torch.as_tensor(lab).long() for lab in labels]
        self.randomizer = randomizer if randomizer is not None else AppearanceRandomizer()
        self.randomizer.check(num_classes)
        self.num_classes, self.affine = num_classes, affine
        self.n = len(self.labels) if n is None else n
        if not (draws.is_int(self.n) and self.n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        if not (draws.is_int(seed) and seed >= 0):
            raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        from synthbrain.generator import draws

        if not draws.is_int(index) or not 0 <= index < self.n:
            raise IndexError(f"index={index!r}; allowed: 0..{self.n - 1}")
        source = int(index) % len(self.labels)
        seed = draws.appearance_seed(draws.volume_seed(self.seed, int(index)))
        image, labels = self.randomizer(self.labels[source], self.num_classes, self.affine, seed)
        return make_item(image, labels, self.affine, index=int(index), source=source, is_synthetic=True, appearance="randomized")
