"""What each generated volume is: its seed, and its covariates in physical units.

One owner for both :meth:`BrainGenerator.generate <synthbrain.BrainGenerator.generate>` and
:class:`~synthbrain.SyntheticBrainDataset`, so that the two always agree. The seed scheme (volume
seeds and their streams, one per purpose) is :mod:`synthbrain.seeding`'s; its names are importable
from here too (``draws.volume_seed``, ``draws.stream``, ``draws.CONDITION``, ...).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from synthbrain.cohort.covariates import CATEGORICAL, CovariateSchema, is_missing
from synthbrain.generator.conditions import check_sampler
from synthbrain.seeding import (  # noqa: F401 (the seed scheme's names, re-exported for the generator's callers)
    APPEARANCE,
    CONDITION,
    DENSITY,
    SAMPLER,
    SEED_BITS,
    appearance_seed,
    initial_noise,
    is_int,
    stream,
    torch_stream,
    volume_seed,
    volume_seeds,
)

if TYPE_CHECKING:  # a type only: scikit-learn loads when a density is read or fitted
    from synthbrain.cohort.distribution import CovariateDistribution


def check_sampling(sampler: Any, steps: Any, guidance_scale: Any, spacing: Any = None, where: str = "") -> None:
    """Raise ``ValueError`` naming the argument for a sampler name, step count, guidance scale or
    timestep spacing that sampling cannot take (``where`` prefixes the names, e.g. "defaults: ")."""
    from synthbrain.samplers import SAMPLERS
    from synthbrain.samplers.schedule import SPACINGS

    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"{where}sampler={sampler!r}; allowed: {list(SAMPLERS)}")
    if not (is_int(steps) and steps >= 1):
        raise ValueError(f"{where}steps={steps!r}; allowed: an integer >= 1")
    if not (isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool) and math.isfinite(guidance_scale)):
        raise ValueError(f"{where}guidance_scale={guidance_scale!r}; allowed: a finite number >= 0")
    if guidance_scale < 0:
        raise ValueError(f"{where}guidance_scale={guidance_scale}; allowed: >= 0")
    if spacing is not None and spacing not in SPACINGS:
        raise ValueError(f"{where}timestep_spacing={spacing!r}; allowed: {list(SPACINGS)}")


def covariate_table(covariates: pd.DataFrame | Mapping[str, Any], n: int | None = None) -> pd.DataFrame:
    """The caller's covariates as a table of one row per volume: a DataFrame as it is, or a mapping
    of name to a scalar (repeated) or a list (one value per volume). ``n`` fixes the row count."""
    if isinstance(covariates, pd.DataFrame):
        if n is not None and n != len(covariates):
            raise ValueError(f"n={n}: the covariates table has {len(covariates)} rows; give n=None or a table of n rows")
        table = covariates.reset_index(drop=True)
    elif isinstance(covariates, Mapping):
        lengths = {len(v) for v in covariates.values() if isinstance(v, (list, tuple, np.ndarray, pd.Series))}
        if n is not None:
            lengths.add(n)
        if len(lengths) > 1:
            raise ValueError(f"covariates: lists of different lengths, or not of n={n}: {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        table = pd.DataFrame(
            {k: list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v] * n for k, v in covariates.items()},
            index=range(n),
        )
    elif callable(covariates):
        raise ValueError(f"covariates={covariates!r}: a condition sampler; pass it as cond_sampler= (with n volumes)")
    else:
        raise ValueError(f"covariates: {type(covariates).__name__}; allowed: a DataFrame or a mapping of name to value(s)")
    if len(table) == 0:
        raise ValueError("covariates: no rows; need at least one volume to generate")
    return table


def sampled_covariates(cond_sampler: Callable[[np.random.Generator], Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """What ``cond_sampler`` gives the volume of volume seed ``seed`` (missing values dropped)."""
    row = cond_sampler(stream(seed, CONDITION))
    if not isinstance(row, Mapping):
        raise ValueError(f"cond_sampler returned {type(row).__name__}; allowed: a dict of covariate name to value")
    return {k: v for k, v in row.items() if not is_missing(v)}


def resolve_covariates(
    schema: CovariateSchema,
    distribution: CovariateDistribution | None,
    seeds: Sequence[int],
    *,
    given: pd.DataFrame | None = None,
    cond_sampler: Callable[[np.random.Generator], Mapping[str, Any]] | None = None,
    extrapolate: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Every covariate of every volume, in physical units and the schema's order, and the names
    drawn from the training density for at least one volume.

    Per volume, the values come from ``given`` (one row per volume) or ``cond_sampler`` (called
    with the volume's :data:`CONDITION` stream); those left out are drawn from ``distribution``
    conditionally on the others, with the volume's :data:`DENSITY` stream. Categorical values are
    returned as the schema's level names (``"female"`` becomes ``"F"``). Raises ``ValueError`` for
    an unknown covariate, a missing given value, a value of the wrong type or outside the training
    range (unless ``extrapolate``), or a covariate left out of a model without a density.
    """
    names = schema.names
    if given is not None and cond_sampler is not None:
        raise ValueError("covariates and cond_sampler: give one or the other (a sampler can fix values, e.g. Fixed(sex='F'))")
    if cond_sampler is not None:
        check_sampler(cond_sampler, schema, extrapolate, complete=distribution is None)
        rows = []
        for i, seed in enumerate(seeds):
            row = sampled_covariates(cond_sampler, seed)
            unknown = [k for k in row if k not in names]
            if unknown:  # not silently dropped: the sampler means something the model cannot condition on
                raise ValueError(f"cond_sampler gave unknown covariates {unknown} for volume {i}; the model knows {names}")
            rows.append(row)
    else:
        table = given if given is not None else pd.DataFrame(index=range(len(seeds)))
        unknown = [name for name in table.columns if name not in names]
        if unknown:
            raise ValueError(f"covariates: unknown {unknown}; the model knows {names}")
        for name in table.columns:
            for i, value in enumerate(table[name]):
                if is_missing(value):
                    leave_out = f"; leave {name!r} out to draw it from the training distribution" if distribution else ""
                    raise ValueError(f"covariates: {name}={value!r} for volume {i} is missing; allowed: {schema[name].allowed}{leave_out}")
        rows = table.to_dict("records")
    for name in names:
        values = [row[name] for row in rows if name in row]
        if values:
            parsed = schema[name].parse(values)
            schema[name].check_range(parsed, extrapolate)
            if schema[name].kind == CATEGORICAL:  # canonical level names
                levels = iter(schema[name].categories[int(k)] for k in parsed)
                rows = [{**row, name: next(levels)} if name in row else row for row in rows]
    missing = [name for name in names if any(name not in row for row in rows)]
    if missing and distribution is None:
        raise ValueError(f"covariates: missing {missing}, and this model has no covariate distribution to draw them from")
    complete = [
        row if all(name in row for name in names) else distribution.sample(1, row, seed=stream(seed, DENSITY)).iloc[0].to_dict()
        for row, seed in zip(rows, seeds)
    ]
    return pd.DataFrame(complete, index=range(len(complete)))[names], missing
