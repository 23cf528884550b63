"""deepbet's TorchScript brain-MRI network, the project's offline source of deep 3D features.

deepbet (Fisch et al. 2024, "deepbet: Fast brain extraction of T1-weighted MRI using Convolutional
Neural Networks"; MIT licence) ships TorchScript LinkNets trained on thousands of T1-weighted scans
of many sites in its PyPI wheel, so no download is needed at run time. ``bbox_model.pt`` works on
whole heads at about 2 mm. Its encoder serves the evaluation's features
(:mod:`synthbrain.evaluation.features`) and the autoencoder's perceptual loss
(:mod:`synthbrain.autoencoder.losses`).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

MEAN, STD = 0.449, 0.226  # deepbet's input scaling: a z-scored volume mapped to these (ImageNet-like) values


def network_file() -> Path:
    """The path of ``bbox_model.pt`` in the installed deepbet wheel; ``ValueError`` if it is absent."""
    try:
        path = Path(importlib.metadata.distribution("deepbet").locate_file("data/models/bbox_model.pt"))
    except importlib.metadata.PackageNotFoundError as err:
        raise ValueError(
            "deepbet network: the deepbet wheel is not installed; it comes with the evaluation extra: pip install 'synthbrain[evaluation]'"
        ) from err
    if not path.is_file():
        raise ValueError(f"deepbet network: deepbet is installed but {path} is missing")
    return path


def stages(net: torch.jit.ScriptModule, x: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
    """Feature maps (N, C, d, h, w) of the encoder stages ``names`` of a deepbet LinkNet for
    ``x`` (N, 1, D, H, W), already scaled with :func:`normalise`. Stage names, in order: ``conv1``
    (first convolution, 1/2 resolution), ``down0`` (1/4), ``down1`` (1/8), ``down2`` (1/16), ``down3`` (1/32);
    stages after the last one asked for are not computed. Raises ``KeyError`` for another stage name."""
    relu = getattr(net.conv, "2")  # deepbet passes its ReLU to every stage
    h = relu(getattr(net.init, "1")(getattr(net.init, "0")(x)))
    out = {"conv1": h}
    h = net.down0(relu, getattr(net.init, "3")(h))
    out["down0"] = h
    for name in ("down1", "down2", "down3"):
        if all(n in out for n in names):
            break
        h = getattr(net, name)(relu, h)
        out[name] = h
    return [out[n] for n in names]


def normalise(x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """deepbet's input scaling of ``x`` (N, 1, D, H, W), same shape back: z-score per volume (over all its
    voxels, background included; std clamped to >= 1e-6), then mean :data:`MEAN` and std :data:`STD`. With
    ``reference`` (same shape), its statistics are used (the same affine map for a prediction and its target)."""
    ref = x if reference is None else reference
    mean = ref.mean((1, 2, 3, 4), keepdim=True)
    std = ref.std((1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
    return STD * (x - mean) / std + MEAN
