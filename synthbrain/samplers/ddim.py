"""DDIM (Song et al. 2021): deterministic for ``eta=0``, ancestral-like for ``eta=1``.

The default spacing is ``"trailing"`` (999, 979, ..., 19 for 50 of 1000 steps), which starts from the
noisiest step for any step count. The released brain LDM's samples were made with ``"leading"``
(980, 960, ..., 0), which its loader records in that model's defaults; see
:meth:`NoiseSchedule.timesteps`.
"""

from __future__ import annotations

import torch

from synthbrain.samplers.schedule import NoiseSchedule
from synthbrain.samplers.state import StepOutput, randn_like

DEFAULT_SPACING = "trailing"


def step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    sample: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    state: object = None,
) -> StepOutput:
    """One DDIM step from ``t`` to ``t_prev`` (``-1`` = the clean end, cumulative alpha 1), Song et al. 2021 eq. 12,
    with ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))``.

    ``model_output`` and ``sample``: same shape (N, ...); the returned ``prev_sample`` and ``pred_x0`` have it
    too, and ``state`` is None (``state`` in is ignored). ``generator``: one generator on the sample's
    device, or a list of CPU generators, one per batch element; used only when ``eta > 0``.
    Raises ``ValueError`` for ``eta < 0`` or a timestep outside the schedule.
    """
    if eta < 0:
        raise ValueError(f"eta={eta}; allowed: >= 0")
    x0, eps = schedule.split(model_output, sample, t)
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
    prev = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        prev = prev + sigma * randn_like(sample, generator)
    return StepOutput(prev, x0, None)
