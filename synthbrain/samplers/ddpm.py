"""DDPM ancestral sampling (Ho et al. 2020), between any two timesteps of the schedule.

With ``t_prev = t - 1`` this is the original 1000-step sampler; with a subsequence of timesteps
it samples from the exact posterior q(x_{t_prev} | x_t, x0) of that subsequence.
"""

from __future__ import annotations

import torch

from synthbrain.samplers.schedule import NoiseSchedule
from synthbrain.samplers.state import StepOutput, randn_like

DEFAULT_SPACING = "trailing"  # with 1000 of 1000 steps: every timestep, 999 to 0


def step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    sample: torch.Tensor,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    state: object = None,
) -> StepOutput:
    """One ancestral step from ``t`` to ``t_prev`` (``-1`` = the clean end): a draw from the posterior
    q(x_{t_prev} | x_t, x0) with x0 predicted (Ho et al. 2020 eq. 6-7); the step to the clean end returns
    the posterior mean, without noise.

    ``model_output`` and ``sample``: same shape (N, ...), kept in the result; ``state`` is ignored and
    returned as None. ``generator``: one generator on the sample's device, or a list of CPU generators,
    one per batch element. Raises ``ValueError`` for a timestep outside the schedule.
    """
    x0, _ = schedule.split(model_output, sample, t)
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    alpha = abar_t / abar_prev  # product of (1 - beta) from t_prev + 1 to t
    beta = 1.0 - alpha
    mean = (abar_prev**0.5 * beta / (1 - abar_t)) * x0 + (alpha**0.5 * (1 - abar_prev) / (1 - abar_t)) * sample
    if t_prev < 0:
        return StepOutput(mean, x0, None)
    variance = beta * (1 - abar_prev) / (1 - abar_t)
    noise = randn_like(sample, generator)
    return StepOutput(mean + variance**0.5 * noise, x0, None)
