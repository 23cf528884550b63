"""Stage 4, latent diffusion: a 3D UNet that predicts noise in the autoencoder's latent space,
conditioned on the covariate vector as the reference model does (Pinaya et al. 2022): the vector is
the cross-attention context (B, 1, C) and is also broadcast to C extra input channels.

With ``embed_condition=True`` the vector also passes through a small MLP whose output is added to
the timestep embedding, so it modulates every residual block (as class labels do in MONAI's UNet);
the reference model has no such path, and a single cross-attention token reduces to a constant bias.

Classifier-free guidance: training replaces the condition by :data:`NULL_CONDITION` (every entry
-1, outside the [0, 1] range of real normalised covariates) with some probability; sampling mixes
the conditional and unconditional predictions, ``eps = eps_null + scale * (eps_cond - eps_null)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet
from torch import nn

from synthbrain import _io

NULL_CONDITION = -1.0


@dataclass(frozen=True)
class DiffusionConfig:
    """The UNet's architecture (MONAI ``DiffusionModelUNet``, 3D). ``channels`` per level (each divisible
    by ``norm_num_groups``), ``attention_levels`` one flag per level, ``num_head_channels`` channels
    per attention head (one int, or one per level), ``condition_dim`` the width of the normalised
    covariate vector, ``concat_condition`` also feeds it as constant input channels (as the reference
    model does), ``embed_condition`` also adds it to the timestep embedding through an MLP, and
    ``classifier_free_guidance`` records whether the weights were trained with condition dropout
    (False for the released reference model: guidance scales other than 1 are refused for it).
    ``latent_channels`` is the autoencoder's latent width; ``num_res_blocks`` residual blocks per level;
    ``resblock_updown`` resamples with residual blocks rather than plain convolutions (MONAI's option).
    Raises ``ValueError`` for inconsistent levels, group counts or head sizes, or a ``condition_dim`` or
    ``latent_channels`` below 1."""

    latent_channels: int = 3
    condition_dim: int = 4
    channels: tuple[int, ...] = (64, 128, 128)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_res_blocks: int = 1
    num_head_channels: int | tuple[int, ...] = 32  # channels per attention head: one for every level, or one per level
    norm_num_groups: int = 32
    resblock_updown: bool = True
    concat_condition: bool = True
    embed_condition: bool = False
    classifier_free_guidance: bool = True  # trained with condition dropout, so the null condition means "unconditional"

    def __post_init__(self) -> None:
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(f"attention_levels={self.attention_levels}: need one entry per level of channels={self.channels}")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"channels={self.channels}: each must be divisible by norm_num_groups={self.norm_num_groups}")
        if self.condition_dim < 1 or self.latent_channels < 1:
            raise ValueError(f"condition_dim={self.condition_dim}, latent_channels={self.latent_channels}; both must be >= 1")
        if not isinstance(self.num_head_channels, int):  # per level, as the reference model's [0, 512, 768]
            heads = tuple(self.num_head_channels)
            object.__setattr__(self, "num_head_channels", heads)
            if len(heads) != len(self.channels) or any(h < 1 or c % h for h, c, a in zip(heads, self.channels, self.attention_levels) if a):
                raise ValueError(
                    f"num_head_channels={heads!r}; allowed: an int, or one int per level of channels={self.channels} "
                    "that divides the channels of each level with attention"
                )

    @property
    def head_channels(self) -> tuple[int, ...]:
        """Channels per attention head at each level (0 where a level has no attention)."""
        if isinstance(self.num_head_channels, int):
            return tuple(self.num_head_channels if a else 0 for a in self.attention_levels)
        return tuple(h if a else 0 for h, a in zip(self.num_head_channels, self.attention_levels))

    @property
    def downsample(self) -> int:
        """The factor each latent spatial size must be divisible by: ``2 ** (len(channels) - 1)``."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples as lists)."""
        levels = {"channels": list(self.channels), "attention_levels": list(self.attention_levels)}
        heads = self.num_head_channels if isinstance(self.num_head_channels, int) else list(self.num_head_channels)
        return {**asdict(self), **levels, "num_head_channels": heads}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """The config that :meth:`to_dict` wrote. ``data`` must hold ``channels`` and ``attention_levels``;
        other fields fall back to their defaults (so a config written before a field existed keeps the
        default, e.g. ``classifier_free_guidance=True``). Raises ``ValueError`` for unknown keys or invalid
        values, ``KeyError`` without ``channels`` or ``attention_levels``."""
        return _io.dataclass_from_dict(cls, data, "diffusion config", channels=tuple, attention_levels=tuple)


class ConditionalUNet(nn.Module):
    """The noise-predicting 3D UNet of the latent diffusion model (MONAI's ``DiffusionModelUNet``;
    conditioning as Pinaya et al. 2022), configured by a :class:`DiffusionConfig`.

    The covariate vector (N, condition_dim), normalised to [0, 1] or :data:`NULL_CONDITION`, is the
    single cross-attention token, and with ``concat_condition`` also ``condition_dim`` constant input
    channels; with ``embed_condition`` an MLP (condition_dim → 4 * channels[0] → 4 * channels[0]) adds
    it to the timestep embedding in place of MONAI's class embedding.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        in_channels = config.latent_channels + (config.condition_dim if config.concat_condition else 0)
        head_channels = list(config.head_channels)
        self.net = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=config.latent_channels,
            channels=config.channels,
            attention_levels=config.attention_levels,
            num_res_blocks=config.num_res_blocks,
            num_head_channels=head_channels,
            norm_num_groups=config.norm_num_groups,
            resblock_updown=config.resblock_updown,
            with_conditioning=True,
            cross_attention_dim=config.condition_dim,
            upcast_attention=True,
            num_class_embeds=1 if config.embed_condition else None,  # replaced below: MONAI adds it to the time embedding
        )
        if config.embed_condition:
            width = config.channels[0] * 4  # MONAI's time-embedding width
            self.net.class_embedding = nn.Sequential(nn.Linear(config.condition_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Predicted noise (N, latent_channels, d, h, w) (the standard normal noise added to the scaled latents).

        ``x``: noisy latents (N, latent_channels, d, h, w), each of d, h, w divisible by
        ``config.downsample``; ``t``: (N,) integer timesteps in [0, num_train_timesteps); ``condition``:
        (N, condition_dim), cast to the dtype of ``x``. Raises ``ValueError`` for a condition of another
        shape or spatial sizes not divisible by ``config.downsample``.
        """
        if condition.ndim != 2 or condition.shape != (x.shape[0], self.config.condition_dim):
            raise ValueError(f"condition: shape {tuple(condition.shape)}; expected ({x.shape[0]}, {self.config.condition_dim})")
        if any(n % self.config.downsample for n in x.shape[2:]):
            raise ValueError(
                f"x: latent spatial shape {tuple(x.shape[2:])} must be divisible by {self.config.downsample} "
                f"(the UNet has {len(self.config.channels)} levels)"
            )
        condition = condition.to(x.dtype)
        if self.config.concat_condition:
            x = torch.cat([x, condition[:, :, None, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        class_labels = condition if self.config.embed_condition else None
        return self.net(x, timesteps=t, context=condition[:, None, :], class_labels=class_labels)

    def guided(self, x: torch.Tensor, t: int, condition: torch.Tensor, guidance_scale: float = 1.0) -> torch.Tensor:
        """Noise prediction (N, latent_channels, d, h, w) at the single timestep ``t`` for every item, with
        classifier-free guidance (Ho and Salimans 2022): ``eps_null + guidance_scale * (eps_cond - eps_null)``,
        both branches in one batch of 2N. ``guidance_scale=1`` is the plain conditional prediction (one
        batch of N). Arguments and errors as :meth:`forward`."""
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if guidance_scale == 1.0:
            return self(x, timesteps, condition)
        null = torch.full_like(condition, NULL_CONDITION)
        both = self(torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([condition, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)


def drop_conditions(condition: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``condition`` (N, condition_dim) with each row replaced by :data:`NULL_CONDITION` with ``probability``
    (classifier-free guidance training, Ho and Salimans 2022); the draws come from ``generator``, a CPU
    generator if given. Raises ``ValueError`` for a probability outside [0, 1]."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability={probability}; allowed: [0, 1]")
    drop = torch.rand(condition.shape[0], generator=generator, device="cpu").to(condition.device) < probability
    return torch.where(drop[:, None], torch.full_like(condition, NULL_CONDITION), condition)
