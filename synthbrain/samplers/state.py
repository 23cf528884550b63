"""What a sampler step returns; steps keep no state of their own."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor  # x at the next (less noisy) timestep
    pred_x0: torch.Tensor  # the model's estimate of the clean sample at this step
    state: Any  # whatever the next step needs (multistep solvers), passed back in by the caller
