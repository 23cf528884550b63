"""DDIM (Song et al. 2021): deterministic for ``eta=0``, ancestral-like for ``eta=1``.

The default spacing is ``"leading"`` (980, 960, ..., 0 for 50 of 1000 steps), the one the released
brain LDM samples were made with; see :meth:`NoiseSchedule.timesteps` for the others.
"""

from __future__ import annotations

import torch

from synthbrain.samplers.schedule import NoiseSchedule
from synthbrain.samplers.state import StepOutput

DEFAULT_SPACING = "leading"


def step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    sample: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    state: object = None,
) -> StepOutput:
    """One DDIM step from ``t`` to ``t_prev`` (``-1`` = the clean end, cumulative alpha 1)."""
    if eta < 0:
        raise ValueError(f"eta={eta}; allowed: >= 0")
    x0, eps = schedule.split(model_output, sample, t)
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
    prev = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        prev = prev + sigma * torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=sample.device)
    return StepOutput(prev, x0, None)
