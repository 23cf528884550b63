"""The shifted-domain test's appearance shifts (synthbrain.evaluation.shifts): deterministic for a
seed, in [0, 1] with 0 outside the brain, and each doing what its name says."""

import numpy as np
import pytest
import torch

from synthbrain.evaluation.shifts import SHIFTS, apply_shift, shifted_set

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SEEDED = {"bias field", "noise"}  # the shifts that draw from the seed


def _brain(seed: int = 0) -> torch.Tensor:
    """(1, 16, 16, 16): a ball of smoothly varying intensity in (0.2, 0.9], 0 outside."""
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij")
    inside = np.sqrt(xx**2 + yy**2 + zz**2) < 0.8
    rng = np.random.default_rng(seed)
    values = 0.55 + 0.3 * xx + 0.05 * rng.standard_normal(xx.shape)
    return torch.tensor(np.where(inside, np.clip(values, 0.2, 0.9), 0.0), dtype=torch.float32)[None]


@pytest.mark.parametrize("name", SHIFTS)
def test_every_shift_is_deterministic_in_range_and_zero_outside_the_brain(name):
    image = _brain()
    out = apply_shift(name, image, AFFINE, seed=3)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.equal(out, apply_shift(name, image, AFFINE, seed=3))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.all(out[image == 0] == 0)
    assert not torch.allclose(out, image, atol=1e-3)  # it changes the image
    other_seed = apply_shift(name, image, AFFINE, seed=4)
    assert torch.equal(out, other_seed) == (name not in SEEDED)


def test_each_shift_does_what_its_name_says():
    image = _brain()
    brain = image > 0
    low, high = apply_shift("contrast (gamma 0.5)", image, AFFINE), apply_shift("contrast (gamma 2)", image, AFFINE)
    assert low[brain].median() > high[brain].median()  # gamma < 1 brightens the middle of the range
    inverted = apply_shift("inverted contrast", image, AFFINE)
    order = torch.argsort(image[brain])
    assert inverted[brain][order[0]] > inverted[brain][order[-1]]  # the darkest voxel becomes the brightest
    rho = np.corrcoef(inverted[brain].numpy(), image[brain].numpy())[0, 1]
    assert rho < -0.99
    # 8 mm slices: on a texture filling the grid (no brain edge), neighbouring voxels along the last
    # (superior-inferior) axis become more alike, relative to those along the first axis
    texture = 0.2 + 0.7 * torch.rand((1, 16, 16, 16), generator=torch.Generator().manual_seed(0))

    def ratio(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean() / (x[:, 1:] - x[:, :-1]).abs().mean())

    assert ratio(texture) == pytest.approx(1, abs=0.1)
    assert ratio(apply_shift("low resolution (8 mm slices)", texture, AFFINE)) < 0.7


def test_the_set_gives_each_image_its_own_seed_and_an_unknown_shift_or_shape_is_refused():
    image = _brain()
    pair = shifted_set("noise", torch.stack([image, image]), AFFINE, seed=1)
    assert not torch.equal(pair[0], pair[1])  # the same subject twice gets two noise draws
    assert torch.equal(pair, shifted_set("noise", torch.stack([image, image]), AFFINE, seed=1))
    assert not torch.equal(pair, shifted_set("noise", torch.stack([image, image]), AFFINE, seed=2))
    with pytest.raises(ValueError, match=r"^shift='blur'; allowed: \['contrast \(gamma 0.5\)'"):
        apply_shift("blur", image, AFFINE)
    with pytest.raises(ValueError, match=r"^image: shape \(16, 16, 16\); allowed: \(1, D, H, W\)$"):
        apply_shift("noise", image[0], AFFINE)
