"""What a sampler step returns; steps keep no state of their own."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class StepOutput(NamedTuple):
    """What a sampler's ``step`` returns: ``prev_sample`` (x at ``t_prev``, the shape of the sample),
    ``pred_x0`` (the model's estimate of the clean sample at ``t``, same shape), and ``state`` (what the
    next step needs, for multistep solvers; None otherwise), which the caller passes back in."""

    prev_sample: torch.Tensor  # x at the next (less noisy) timestep
    pred_x0: torch.Tensor  # the model's estimate of the clean sample at this step
    state: Any  # whatever the next step needs (multistep solvers), passed back in by the caller


def randn_like(sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like ``sample``, from one generator for the whole batch or from
    a list of CPU generators, one per batch element (so each element's noise does not depend on the
    batch it is in). A single generator must be on the sample's device. Raises ``ValueError`` for a list
    whose length is not the batch size."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != sample.shape[0]:
            raise ValueError(f"generator: {len(generator)} generators for a batch of {sample.shape[0]}; give one per element")
        noise = torch.stack([torch.randn(sample.shape[1:], generator=g, dtype=sample.dtype) for g in generator])
        return noise.to(sample.device)
    return torch.randn(sample.shape, generator=generator, dtype=sample.dtype, device=sample.device)
