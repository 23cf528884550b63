"""Fixed appearance shifts that mimic other scanners, for a shifted-domain test of trained networks.

Each shift turns a prepared test image (1, D, H, W) in [0, 1] (0 outside the brain) into what the
same subject might look like from another scanner or protocol, deterministically: the same image
and ``seed`` always give the same result, so every network is tested on identical inputs. The
label map is unchanged (the anatomy is the same). Built from torchio's deterministic transforms
where one exists:

- ``contrast (gamma 0.5)`` / ``contrast (gamma 2)``: intensities raised to a power (torchio ``Gamma``);
- ``bias field``: a smooth multiplicative field (torchio ``BiasField``, 3rd-order polynomial,
  coefficients drawn once from ``seed`` with magnitude up to 0.5);
- ``low resolution (8 mm slices)``: one axis downsampled by 2 and back (torchio ``Resample`` twice,
  as ``RandomAnisotropy`` does), i.e. 8 mm slices at 4 mm voxels;
- ``noise``: Gaussian noise of std 0.05 from ``seed`` (torchio ``Noise``);
- ``inverted contrast``: brain intensities inverted (1 - x inside the brain), a crude T2-like
  contrast in which CSF is bright and white matter dark.

Every result is rescaled to [0, 1] over the brain's 0.5-99.5 percentiles and set to 0 outside it,
as prepared images are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from synthbrain import seeding

SHIFTS = (
    "contrast (gamma 0.5)",
    "contrast (gamma 2)",
    "bias field",
    "low resolution (8 mm slices)",
    "noise",
    "inverted contrast",
)


def _subject(image: torch.Tensor, affine):
    import torchio as tio

    return tio.Subject(image=tio.ScalarImage(tensor=image.float().clone(), affine=affine))


def _rescale(image: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    if not brain.any():
        return image * 0
    values = image[brain]
    low, high = torch.quantile(values, 0.005), torch.quantile(values, 0.995)
    return ((image - low) / (high - low).clamp_min(1e-6)).clamp(0, 1) * brain


def _shift(name: str, seed: int) -> Callable[[torch.Tensor, object], torch.Tensor]:
    import torchio as tio

    rng = np.random.default_rng(seed)
    if name == "contrast (gamma 0.5)":
        return lambda image, affine: tio.Gamma(0.5)(_subject(image, affine))["image"].data
    if name == "contrast (gamma 2)":
        return lambda image, affine: tio.Gamma(2.0)(_subject(image, affine))["image"].data
    if name == "bias field":
        coefficients = rng.uniform(-0.5, 0.5, size=20).tolist()  # the 20 terms of a 3rd-order polynomial in 3D
        return lambda image, affine: tio.BiasField(coefficients, order=3)(_subject(image, affine))["image"].data
    if name == "low resolution (8 mm slices)":

        def low_resolution(image: torch.Tensor, affine) -> torch.Tensor:
            subject = _subject(image, affine)
            spacing = np.array(subject["image"].spacing)
            coarse = spacing.copy()
            coarse[2] *= 2  # superior-inferior axis of the RAS grid
            down = tio.Resample(tuple(coarse), image_interpolation="linear")(subject)
            return tio.Resample(subject["image"], image_interpolation="linear")(down)["image"].data

        return low_resolution
    if name == "noise":
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return lambda image, affine: image + 0.05 * torch.randn(image.shape, generator=generator)
    if name == "inverted contrast":
        return lambda image, affine: 1.0 - image
    raise ValueError(f"shift={name!r}; allowed: {list(SHIFTS)}")


def apply_shift(name: str, image: torch.Tensor, affine, *, seed: int = 0) -> torch.Tensor:
    """``image`` (1, D, H, W) in [0, 1] under the shift ``name`` (one of :data:`SHIFTS`), on the grid of
    ``affine`` (4, 4); deterministic for a given ``seed``. Raises ``ValueError`` for an unknown shift
    or an image of another shape."""
    image = torch.as_tensor(image)
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"image: shape {tuple(image.shape)}; allowed: (1, D, H, W)")
    brain = image > 0
    shifted = _shift(name, seed)(image.float(), affine)
    return _rescale(shifted.float(), brain)


def shifted_set(name: str, images: torch.Tensor, affine, *, seed: int = 0) -> torch.Tensor:
    """:func:`apply_shift` for every image of (N, 1, D, H, W); image i with the seed
    :func:`synthbrain.seeding.child_seed` ``(seed, i)``."""
    seeds = [seeding.child_seed(seed, i) for i in range(len(images))]
    return torch.stack([apply_shift(name, image, affine, seed=s) for image, s in zip(images, seeds)])
