"""The forward (noising) process shared by every sampler: betas, cumulative alphas, parameterisations.

Tables are kept in float64 and cast to the sample's dtype where they are used, so half-precision
sampling does not lose the schedule's small values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from synthbrain import _io
from synthbrain.sampling import SPACINGS

# Sampling must start at (or near) the noisiest timestep: a spacing whose first step lies more than this
# fraction of the schedule below it is refused ("leading" with 2 of 1000 steps would start at t=500).
MAX_START_GAP = 0.1
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete diffusion schedule. The defaults are the reference model's (Pinaya et al. 2022):
    1000 steps, ``scaled_linear`` betas from 0.0015 to 0.0205, epsilon prediction.

    ``num_train_timesteps``: T, timesteps 0 to T - 1; ``beta_schedule``: ``"linear"`` (Ho et al. 2020),
    ``"scaled_linear"`` (linear in sqrt(beta), as Stable Diffusion and diffusers) or ``"cosine"`` (Nichol
    and Dhariwal 2021; ``beta_start`` and ``beta_end`` then unused); ``prediction_type``: what the network
    outputs, ``"epsilon"`` (the noise), ``"sample"`` (x0) or ``"v_prediction"`` (v = sqrt(abar) noise -
    sqrt(1 - abar) x0, Salimans and Ho 2022); ``zero_terminal_snr``: rescale the betas so that the last
    timestep is pure noise (abar_{T-1} = 0; Lin et al. 2024, "Common diffusion noise schedules and
    sample steps are flawed", Algorithm 1: sqrt(abar) shifted to end at 0 and scaled to keep its first
    value). Without it the noisiest training step keeps a little signal (sqrt(abar_{T-1}) = 0.0098 of the
    amplitude for the defaults) that sampling from pure noise never has, whose lowest frequencies
    the network then takes from the noise. It needs a prediction that stays finite at zero signal
    (``v_prediction`` or ``sample``). Raises ``ValueError`` for T < 2, an unknown schedule or prediction type, betas
    outside 0 < beta_start < beta_end < 1, or ``zero_terminal_snr`` with epsilon prediction.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0205
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.num_train_timesteps, int) and self.num_train_timesteps >= 2):
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps!r}; allowed: an integer >= 2")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={self.beta_schedule!r}; allowed: {list(BETA_SCHEDULES)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r}; allowed: {list(PREDICTION_TYPES)}")
        if not (0 < self.beta_start < self.beta_end < 1):
            raise ValueError(f"beta_start={self.beta_start}, beta_end={self.beta_end}; need 0 < beta_start < beta_end < 1")
        if not isinstance(self.zero_terminal_snr, bool):
            raise ValueError(f"zero_terminal_snr={self.zero_terminal_snr!r}; allowed: True or False")
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError(
                "zero_terminal_snr=True with prediction_type='epsilon': the noise cannot be turned into a sample at zero signal; "
                "allowed: prediction_type 'v_prediction' or 'sample'"
            )

    @cached_property
    def betas(self) -> torch.Tensor:
        """Noise variance per step, float64 (T,) in (0, 1) (the cosine schedule's clamped to <= 0.999); with
        ``zero_terminal_snr`` the last one is 1."""
        betas = self._base_betas()
        if not self.zero_terminal_snr:
            return betas
        root = torch.cumprod(1.0 - betas, dim=0).sqrt()
        first, last = root[0].clone(), root[-1].clone()
        abar = ((root - last) * first / (first - last)) ** 2
        alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
        return 1.0 - alphas

    def _base_betas(self) -> torch.Tensor:
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            return torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        if self.beta_schedule == "scaled_linear":
            return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float64) ** 2
        s = 0.008
        x = torch.linspace(0, n, n + 1, dtype=torch.float64)
        abar = torch.cos((x / n + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(0, 0.999)

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """Cumulative products ``abar_t`` of (1 - beta) up to each step, float64 (T,), decreasing in (0, 1)
        (the last one 0 with ``zero_terminal_snr``)."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def alpha_bar(self, t: int) -> float:
        """Cumulative alpha at step ``t``; 1.0 for ``t < 0`` (the clean data). Raises ``ValueError`` for ``t >= T``."""
        if t >= self.num_train_timesteps:
            raise ValueError(f"timestep {t} >= num_train_timesteps={self.num_train_timesteps}")
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def timesteps(self, num_steps: int, spacing: str = "trailing") -> list[int]:
        """``num_steps`` timesteps, noisiest first (the spacings of Lin et al. 2024, "Common diffusion
        noise schedules and sample steps are flawed", as diffusers and MONAI name them).

        * ``"leading"``: ``T/n * [n-1, ..., 1, 0]``, i.e. 980, 960, ..., 0 for 50 of 1000 steps: the
          reference brain LDM's DDIM sampling (MONAI < 1.6).
        * ``"linspace"``: ``round(linspace(T-1, 0, n))``, what MONAI >= 1.6 uses.
        * ``"trailing"``: ``round(T - T/n * [0, ..., n-1]) - 1``, i.e. 999, 979, ..., 19; starts from
          the noisiest step, which few-step solvers need. With n = T it is every step, 999 to 0.

        Raises ``ValueError`` for ``num_steps`` outside [1, T], an unknown spacing, or a spacing whose first
        step lies more than :data:`MAX_START_GAP` of the schedule below T - 1.
        """
        total = self.num_train_timesteps
        if not (isinstance(num_steps, int) and 1 <= num_steps <= total):
            raise ValueError(f"num_steps={num_steps!r}; allowed: an integer in [1, {total}]")
        if spacing == "leading":
            steps = np.arange(num_steps)[::-1] * (total // num_steps)
        elif spacing == "linspace":
            steps = np.round(np.linspace(total - 1, 0, num_steps))
        elif spacing == "trailing":
            steps = np.round(total - np.arange(num_steps) * total / num_steps) - 1
        else:
            raise ValueError(f"spacing={spacing!r}; allowed: {list(SPACINGS)}")
        steps = [int(t) for t in steps]
        if total - 1 - steps[0] > total * MAX_START_GAP:
            raise ValueError(
                f"num_steps={num_steps} with spacing={spacing!r} starts at t={steps[0]}, more than {MAX_START_GAP:.0%} of the schedule "
                f"below its noisiest step t={total - 1}: the starting noise would be taken for a partly denoised sample; "
                "allowed: spacing 'trailing' or 'linspace' (they start at the noisiest step), or a step count for which "
                f"'leading' starts within {int(total * MAX_START_GAP)} steps of it"
            )
        return steps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for ``x0`` and ``noise`` (N, ...) and integer
        timesteps ``t`` (N,) on their device; result in the dtype of ``x0``."""
        abar = self._per_sample(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output under :attr:`prediction_type`: ``noise``, ``x0``, or
        v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0; shapes as :meth:`add_noise`."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        abar = self._per_sample(t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def split(self, model_output: torch.Tensor, sample: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's output at step ``t`` for ``sample`` (same shape) → (predicted x0, predicted noise),
        under :attr:`prediction_type`. Raises ``ValueError`` for ``t >= T``."""
        abar = self.alpha_bar(t)
        a, s = abar**0.5, (1 - abar) ** 0.5
        if self.prediction_type == "epsilon":
            return (sample - s * model_output) / a, model_output
        if self.prediction_type == "sample":
            return model_output, (sample - a * model_output) / s
        return a * sample - s * model_output, a * model_output + s * sample

    def _per_sample(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(like.device)[t.long()].to(like.dtype)
        return abar.reshape(-1, *([1] * (like.ndim - 1)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoiseSchedule:
        """The schedule that :meth:`to_dict` wrote; missing fields take their defaults. Raises ``ValueError``
        for unknown keys or invalid values."""
        return _io.dataclass_from_dict(cls, data, "noise schedule")
