"""The sampling settings a caller asks for, and the one set of command-line flags that gives them.

:class:`SamplingSettings` holds what a call of :meth:`BrainGenerator.generate
<synthbrain.BrainGenerator.generate>` may override (``sampler``, ``steps``, ``guidance_scale``,
``timestep_spacing``, ``qc``), each ``None`` for the model's own default, checked once when made.
:func:`add_sampling_arguments` registers the flags of every command that generates (``synthbrain
generate``, ``synthbrain evaluate``, ``synthbrain reader-study create``) and
:meth:`SamplingSettings.from_args` reads them back, so that no command can accept a flag and leave it
out of the settings.

The names of samplers, timestep spacings and quality-control modes live here, without torch, so that
building the command-line parser stays light; :mod:`synthbrain.samplers` and
:meth:`NoiseSchedule.timesteps <synthbrain.samplers.schedule.NoiseSchedule.timesteps>` take them from here.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

SAMPLER_NAMES = ("ddpm", "ddim", "dpm++2m")  # the keys of synthbrain.samplers.SAMPLERS
SPACINGS = ("leading", "linspace", "trailing")  # timestep spacings of NoiseSchedule.timesteps
QC_MODES = ("measure", "reject")  # quality control of generate(): measure, or also draw failing volumes again


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings that override a model's defaults; ``None`` keeps the model's own.

    ``sampler``: a key of :data:`SAMPLER_NAMES`; ``steps``: an integer >= 1;
    ``guidance_scale``: a finite number >= 0 (1 = no classifier-free guidance); ``timestep_spacing``:
    one of :data:`SPACINGS`; ``qc``: ``"measure"`` or ``"reject"``.
    Raises ``ValueError`` naming the argument (:func:`synthbrain.generator.draws.check_sampling`)
    for a value none of them takes. What depends on the model (a step count its schedule cannot
    space, guidance for a model without a null condition, ``qc="reject"`` without label maps) is
    checked by the model when the settings are used.
    """

    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    timestep_spacing: str | None = None
    qc: str | None = None

    def __post_init__(self) -> None:
        from synthbrain.generator.draws import check_sampling

        check_sampling(  # a value left to the model is stood in for by one that passes
            "ddim" if self.sampler is None else self.sampler,
            1 if self.steps is None else self.steps,
            1.0 if self.guidance_scale is None else self.guidance_scale,
            self.timestep_spacing,
        )
        if self.qc is not None and self.qc not in QC_MODES:
            raise ValueError(f"qc={self.qc!r}; allowed: {list(QC_MODES)}")

    def given(self) -> dict[str, Any]:
        """The settings given (those not ``None``), as keyword arguments of ``generate``."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if getattr(self, field.name) is not None}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SamplingSettings:
        """The settings of a command's flags (registered by :func:`add_sampling_arguments`)."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})


def add_sampling_arguments(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """Register ``--sampler``, ``--steps``, ``--guidance-scale``, ``--timestep-spacing`` and ``--qc`` on
    ``parser``, each defaulting to the model's own; ``scope`` prefixes each help text (e.g. "with --model: ").
    Read them back with :meth:`SamplingSettings.from_args`."""
    parser.add_argument("--steps", type=int, default=None, help=f"{scope}sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, choices=list(SAMPLER_NAMES), help=f"{scope}diffusion sampler (default: the model's)")
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help=f"{scope}classifier-free guidance scale, 1 = none (default: the model's)"
    )
    parser.add_argument("--timestep-spacing", default=None, choices=list(SPACINGS), help=f"{scope}timestep spacing (default: the model's)")
    parser.add_argument(
        "--qc", default=None, choices=list(QC_MODES), help=f"{scope}reject: draw failing subjects again (default: the model's)"
    )
