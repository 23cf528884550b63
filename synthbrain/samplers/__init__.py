"""Samplers: one file per algorithm, each with a ``DEFAULT_SPACING`` of timesteps and a stateless ``step``.

:func:`sample` runs any of them from noise to a clean sample with a denoising function
``model_fn(x, t) -> model output``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from tqdm.auto import tqdm

from synthbrain.samplers import ddim, ddpm, dpm_solver
from synthbrain.samplers.schedule import NoiseSchedule
from synthbrain.samplers.state import StepOutput
from synthbrain.sampling import SAMPLER_NAMES

SAMPLERS: dict[str, ModuleType] = dict(zip(SAMPLER_NAMES, (ddpm, ddim, dpm_solver), strict=True))

__all__ = ["SAMPLERS", "NoiseSchedule", "StepOutput", "get_sampler", "sample"]


def get_sampler(name: str) -> ModuleType:
    """The sampler module called ``name`` (a key of :data:`SAMPLERS`: ``"ddpm"``, ``"ddim"``, ``"dpm++2m"``).
    Raises ``ValueError`` for another name."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r}; allowed: {list(SAMPLERS)}")
    return SAMPLERS[name]


@torch.no_grad()
def sample(
    model_fn: Callable[[torch.Tensor, int], torch.Tensor],
    noise: torch.Tensor,
    schedule: NoiseSchedule,
    sampler: str = "ddim",
    num_steps: int = 50,
    *,
    spacing: str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **step_kwargs,
) -> torch.Tensor:
    """Integrate from ``noise`` (at the first timestep) to a clean sample in ``num_steps`` model calls.

    ``noise``: the starting sample, any shape with the batch first (here latents (N, C, d, h, w)); the
    result has its shape and dtype. ``model_fn(x, t)`` returns the network's output for ``x`` at the
    integer timestep ``t`` (noise, sample or v, as ``schedule.prediction_type`` says). ``spacing``
    defaults to the sampler's own (``DEFAULT_SPACING``); see :meth:`NoiseSchedule.timesteps`.
    ``generator`` (one generator on the device of ``noise``, or a list of CPU generators, one per batch
    element) drives the noise of stochastic steps; ``step_kwargs`` go to the sampler's ``step`` (e.g.
    ``eta`` for DDIM). Raises ``ValueError`` for an unknown sampler, a step count or spacing that
    :meth:`NoiseSchedule.timesteps` refuses, or what the step refuses.
    """
    module = get_sampler(sampler)
    steps = schedule.timesteps(num_steps, spacing or module.DEFAULT_SPACING)
    x, state = noise, None
    for i, t in enumerate(tqdm(steps, desc=sampler, disable=not progress, leave=False)):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        x, _, state = module.step(schedule, model_fn(x, t), t, t_prev, x, state=state, generator=generator, **step_kwargs)
    return x
