"""Stage 3, the autoencoder: a 3D KL autoencoder that encodes a T1 image and its label map jointly.

The input is the image (1 channel, [0, 1]) concatenated with the one-hot label map (``num_classes``
channels); the output has the same channels: the image and label logits. Decoding one latent
therefore yields an image and a label map drawn from the same representation, which is what keeps
them matched. ``num_classes=0`` gives a plain image autoencoder (the reference model's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from monai.networks.nets.autoencoderkl import AutoencoderKL
from torch import nn

from synthbrain import _io


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of :class:`BrainAutoencoder` (MONAI's ``AutoencoderKL``, 3D, no attention).

    ``num_classes``: label classes encoded beside the image (0: image only; otherwise >= 2, background
    included); ``channels``: feature channels per resolution level (>= 2 levels, each divisible by
    ``norm_num_groups``); the latent is ``2 ** (len(channels) - 1)`` times smaller per axis
    (:attr:`downsample`); ``latent_channels``: channels of the latent; ``num_res_blocks``: residual
    blocks per level; ``norm_num_groups``: groups of the group normalisation.

    Raises ``ValueError`` for ``num_classes`` of 1 or below 0, fewer than 2 levels, a level not divisible
    by ``norm_num_groups``, or ``latent_channels`` or ``num_res_blocks`` below 1.
    """

    num_classes: int = 8
    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_num_groups: int = 16

    def __post_init__(self) -> None:
        if self.num_classes < 0 or self.num_classes == 1:
            raise ValueError(f"num_classes={self.num_classes}; allowed: 0 (image only) or >= 2")
        if len(self.channels) < 2 or any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"channels={self.channels}; need >= 2 levels, each divisible by norm_num_groups={self.norm_num_groups}")
        if self.latent_channels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"latent_channels={self.latent_channels}, num_res_blocks={self.num_res_blocks}; both must be >= 1")

    @property
    def downsample(self) -> int:
        """Spatial reduction factor from image to latent."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``channels`` as a list)."""
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        """The config that :meth:`to_dict` wrote. ``data`` must hold ``channels``; other fields fall back to
        their defaults. Raises ``ValueError`` for unknown keys or invalid values, ``KeyError`` without ``channels``."""
        return _io.dataclass_from_dict(cls, data, "autoencoder config", channels=tuple)


class AutoencoderOutput(NamedTuple):
    """What :meth:`BrainAutoencoder.forward` returns.

    ``image``: reconstruction (N, 1, D, H, W), not clamped to [0, 1]; ``label_logits``: (N, C, D, H, W)
    with C = ``num_classes``, or None for an image-only model; ``mu``, ``sigma``: posterior mean and
    standard deviation of the latent, (N, latent_channels, D/f, H/f, W/f) with f = ``config.downsample``.
    """

    image: torch.Tensor  # (B, 1, D, H, W), unclamped
    label_logits: torch.Tensor | None  # (B, C, D, H, W)
    mu: torch.Tensor
    sigma: torch.Tensor


class BrainAutoencoder(nn.Module):
    """3D KL autoencoder (MONAI's ``AutoencoderKL``; Rombach et al. 2022) of a T1 image and its label map.

    Input and output channels are ``1 + config.num_classes``: the image in [0, 1] and the one-hot labels
    (or class fractions). Spatial sizes must be divisible by ``config.downsample``.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        io_channels = 1 + config.num_classes
        self.net = AutoencoderKL(
            spatial_dims=3,
            in_channels=io_channels,
            out_channels=io_channels,
            channels=config.channels,
            latent_channels=config.latent_channels,
            num_res_blocks=config.num_res_blocks,
            norm_num_groups=config.norm_num_groups,
            attention_levels=(False,) * len(config.channels),
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )

    def _inputs(self, image: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if image.ndim != 5 or image.shape[1] != 1:
            raise ValueError(f"image: shape {tuple(image.shape)}; expected (B, 1, D, H, W)")
        factor = self.config.downsample
        if any(n % factor for n in image.shape[2:]):
            raise ValueError(f"image: spatial shape {tuple(image.shape[2:])} must be divisible by {factor}")
        if self.config.num_classes == 0:
            return image
        classes = self.config.num_classes
        if labels is not None and labels.is_floating_point() and labels.shape == (image.shape[0], classes, *image.shape[2:]):
            return torch.cat([image, labels.to(image.dtype)], dim=1)  # class fractions (partial volumes)
        if labels is None or labels.is_floating_point() or labels.shape != image.shape[:1] + image.shape[2:]:
            raise ValueError(
                f"labels: expected integer class indices of shape {(image.shape[0], *image.shape[2:])} or class "
                f"fractions of shape {(image.shape[0], classes, *image.shape[2:])}, "
                f"got {None if labels is None else (tuple(labels.shape), labels.dtype)}"
            )
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"labels: values in [{int(labels.min())}, {int(labels.max())}]; allowed: [0, {classes - 1}]")
        one_hot = F.one_hot(labels.long(), classes).movedim(-1, 1).to(image.dtype)
        return torch.cat([image, one_hot], dim=1)

    def encode(self, image: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation of the latent, each (N, latent_channels, D/f, H/f, W/f)
        with f = ``config.downsample`` (sigma from a log-variance clamped to [-30, 20], as MONAI does).

        ``image``: (N, 1, D, H, W) float, in [0, 1]; ``labels``: integer class indices (N, D, H, W) in
        [0, num_classes - 1], or float class fractions (N, num_classes, D, H, W); ignored when
        ``num_classes`` is 0. Raises ``ValueError`` for another shape, a spatial size not divisible
        by f, missing labels on a model with classes, or class indices out of range.
        """
        return self.net.encode(self._inputs(image, labels))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent (N, latent_channels, d, h, w) → (image (N, 1, d*f, h*f, w*f), not clamped; label logits
        (N, num_classes, d*f, h*f, w*f), or None for an image-only model), with f = ``config.downsample``."""
        out = self.net.decode(z)
        return out[:, :1], (out[:, 1:] if self.config.num_classes else None)

    @torch.no_grad()
    def reconstruct(
        self,
        image: torch.Tensor,
        labels: torch.Tensor | None = None,
        window: tuple[int, int, int] | None = None,
        overlap: float = 0.5,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic reconstruction as generation decodes: the posterior mean decoded, the image
        clamped to [0, 1] and, for a model with classes, set to 0 where the decoded label map is
        background. Arguments and errors as :meth:`encode`. Returns the image (N, 1, D, H, W) and the
        decoded class indices (N, D, H, W) int64 (None for an image-only model).

        ``window`` (D, H, W voxels, each a multiple of ``config.downsample`` and at most the image's size):
        encode and decode in overlapping windows of that size instead of the whole volume, blended with
        Gaussian weights (MONAI's ``sliding_window_inference``; MAISI infers its patch-trained autoencoder
        this way). A model trained on random patches of that size (``--patch-size``) then sees the
        group-normalisation statistics it was trained with; on whole volumes it sees others, which shifts
        intensities. ``overlap``: the windows' overlap per axis, in [0, 1). Raises ``ValueError`` for a
        window of another length, size or divisibility, or an overlap outside [0, 1)."""
        if window is None:
            mu, _ = self.encode(image, labels)
            decoded, logits = self.decode(mu)
        else:
            decoded, logits = self._windowed(image, labels, tuple(window), overlap)
        decoded = decoded.float().clamp(0, 1)
        if logits is None:
            return decoded, None
        classes = logits.argmax(1)
        return decoded * (classes[:, None] > 0), classes

    def _windowed(
        self, image: torch.Tensor, labels: torch.Tensor | None, window: tuple[int, ...], overlap: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        from monai.inferers import sliding_window_inference

        inputs = self._inputs(image, labels)
        factor = self.config.downsample
        spatial = tuple(inputs.shape[2:])
        if len(window) != 3 or any(w < factor or w % factor or w > n for w, n in zip(window, spatial)):
            raise ValueError(
                f"window={window}; allowed: three sizes (D, H, W), each a multiple of {factor} and at most the image's {spatial}"
            )
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap={overlap!r}; allowed: a number in [0, 1)")
        mu = sliding_window_inference(inputs, window, 1, lambda x: self.net.encode(x)[0], overlap=overlap, mode="gaussian")
        latent_window = tuple(w // factor for w in window)
        out = sliding_window_inference(mu, latent_window, 1, self.net.decode, overlap=overlap, mode="gaussian")
        return out[:, :1], (out[:, 1:] if self.config.num_classes else None)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last convolution (for the adaptive adversarial weight)."""
        return self.net.decoder.blocks[-1].conv.weight

    def forward(
        self, image: torch.Tensor, labels: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> AutoencoderOutput:
        """Encode, draw one latent ``mu + sigma * eps`` (eps ~ N(0, 1), from ``generator`` if given, which
        must be on the device of the model), decode. Arguments and errors as :meth:`encode`."""
        mu, sigma = self.encode(image, labels)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        recon, logits = self.decode(mu + sigma * noise)
        return AutoencoderOutput(recon, logits, mu, sigma)
