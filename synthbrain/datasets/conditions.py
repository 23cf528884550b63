"""Condition samplers: where the covariates of synthetic subjects come from.

A sampler is called with a ``numpy.random.Generator`` and returns one subject's covariates in
physical units (years, "F"/"M", mL) as a dict. It may return only some covariates: the
generator draws the others from its training cohort's density, conditionally on those given.
``SyntheticBrainDataset`` calls it with a generator seeded from (dataset seed, index), so a
subject's covariates depend on nothing else. Any callable ``rng -> dict`` works as a sampler;
the classes here cover the usual cases and check themselves against a generator's schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from synthbrain.cohort.covariates import CATEGORICAL, CovariateSchema, is_missing

ConditionSampler = Callable[[np.random.Generator], Mapping[str, Any]]


class Fixed:
    """The same covariates for every subject, e.g. ``Fixed(sex="F", age=70)``."""

    def __init__(self, **values: Any):
        self.values = values

    def __repr__(self) -> str:
        return f"Fixed({self.values})"

    def __call__(self, rng: np.random.Generator) -> dict[str, Any]:
        return dict(self.values)


class Uniform:
    """Each continuous covariate uniform in a (low, high) range, each categorical one uniform over
    a list of levels: ``Uniform(age=(20, 80), sex=["F", "M"])``."""

    def __init__(self, **ranges: tuple[float, float] | Sequence[str]):
        for name, spec in ranges.items():
            if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
                if not spec[0] <= spec[1]:
                    raise ValueError(f"{name}={spec}; allowed: a (low, high) range with low <= high")
            elif isinstance(spec, (list, tuple)) and spec and all(isinstance(v, str) for v in spec):
                continue
            else:
                raise ValueError(f"{name}={spec!r}; allowed: a (low, high) tuple of numbers or a non-empty list of levels")
        self.ranges = ranges

    def __repr__(self) -> str:
        return f"Uniform({self.ranges})"

    def __call__(self, rng: np.random.Generator) -> dict[str, Any]:
        out = {}
        for name, spec in self.ranges.items():
            if all(isinstance(v, str) for v in spec):
                out[name] = spec[int(rng.integers(len(spec)))]
            else:
                out[name] = float(rng.uniform(*spec))
        return out

    def check(self, schema: CovariateSchema, extrapolate: bool = False) -> None:
        for name, spec in self.ranges.items():
            check_values(schema, {name: list(spec)}, extrapolate)


class Empirical:
    """Rows of a real cohort table, drawn with replacement, with optional Gaussian jitter of each
    continuous column (``jitter`` times that column's standard deviation, redrawn until the value
    stays inside the column's observed range, so a table inside the model's range stays inside).

    ``weights`` (one per row) re-weights the table, e.g. towards a target distribution: see
    :meth:`balanced`. Rows with a missing value in ``columns`` are left out, and say so.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        columns: Sequence[str] | None = None,
        jitter: float = 0.0,
        weights: Sequence[float] | None = None,
    ):
        columns = list(columns) if columns is not None else [c for c in ("sex", "age", "ventricular_volume", "brain_volume") if c in table]
        absent = [c for c in columns if c not in table.columns]
        if absent or not columns:
            raise ValueError(f"columns={columns}: not in the table (absent {absent}); table columns: {list(table.columns)}")
        if jitter < 0:
            raise ValueError(f"jitter={jitter}; allowed: >= 0")
        weights = np.ones(len(table)) if weights is None else np.asarray(weights, dtype=float)
        if weights.shape != (len(table),) or (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError(f"weights: need {len(table)} finite values >= 0, got shape {weights.shape}")
        complete = ~table[columns].apply(lambda column: column.map(is_missing)).any(axis=1).to_numpy()
        self.dropped = int((~complete).sum())  # rows left out for a missing value
        self.table = table.loc[complete, columns].reset_index(drop=True)
        weights = weights[complete]
        if not len(self.table) or weights.sum() == 0:
            raise ValueError("table: no complete row with a weight > 0 to draw from")
        self.columns, self.jitter, self.p = columns, jitter, weights / weights.sum()
        numeric = [c for c in columns if pd.api.types.is_numeric_dtype(self.table[c])]
        self.scale = {c: float(self.table[c].std(ddof=0)) * jitter for c in numeric}
        self.bounds = {c: (float(self.table[c].min()), float(self.table[c].max())) for c in numeric}

    def __repr__(self) -> str:
        digest = hashlib.sha256(pd.util.hash_pandas_object(self.table, index=False).to_numpy().tobytes() + self.p.tobytes())
        return f"Empirical(columns={self.columns}, rows={len(self.table)}, jitter={self.jitter}, sha256={digest.hexdigest()[:16]})"

    @classmethod
    def balanced(
        cls,
        table: pd.DataFrame,
        bins: Mapping[str, Sequence[float]],
        by: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        jitter: float = 0.0,
    ) -> Empirical:
        """Every cell (a bin of each ``bins`` column, crossed with each level of the ``by``
        columns) drawn equally often, e.g. ``balanced(table, {"age": [20, 40, 60, 90]}, by=["sex"])``.
        Rows outside the bins get weight 0; an empty cell is an error, since it cannot be drawn."""
        cells = pd.Series(0, index=table.index).astype(str)
        inside = pd.Series(True, index=table.index)
        for name, edges in bins.items():
            edges = list(edges)
            if len(edges) < 2 or sorted(edges) != edges:
                raise ValueError(f"bins[{name!r}]={edges}; allowed: >= 2 increasing edges")
            cut = pd.cut(table[name], edges, include_lowest=True)
            inside &= cut.notna()
            cells = cells + "|" + cut.astype(str)
        for name in by:
            cells = cells + "|" + table[name].astype(str)
        counts = cells[inside].value_counts()
        expected = np.prod([len(e) - 1 for e in bins.values()]) * np.prod([table[b].dropna().nunique() for b in by])
        if len(counts) < expected:
            raise ValueError(f"bins, by: only {len(counts)} of the {int(expected)} cells hold rows of the table; widen the bins")
        weights = np.where(inside, 1.0 / cells.map(counts).fillna(1).to_numpy(), 0.0)
        return cls(table, columns, jitter, weights)

    def __call__(self, rng: np.random.Generator) -> dict[str, Any]:
        row = self.table.iloc[int(rng.choice(len(self.table), p=self.p))].to_dict()
        for name, scale in self.scale.items():
            value, (low, high) = float(row[name]), self.bounds[name]
            if scale:
                while not low <= (jittered := value + rng.normal(0.0, scale)) <= high:
                    pass  # the unjittered value lies inside, so this ends (acceptance >= about 1/2)
                value = jittered
            row[name] = value
        return row

    def check(self, schema: CovariateSchema, extrapolate: bool = False) -> None:
        check_values(schema, {c: self.table[c].tolist() for c in self.columns}, extrapolate)


def check_values(schema: CovariateSchema, values: Mapping[str, Sequence[Any]], extrapolate: bool = False) -> None:
    """Raise a clear error for a covariate the schema does not know, or a value it does not allow."""
    unknown = sorted(set(values) - set(schema.names))
    if unknown:
        raise ValueError(f"condition sampler: unknown covariates {unknown}; the model knows {schema.names}")
    for name, column in values.items():
        covariate = schema[name]
        distinct = list(dict.fromkeys(v for v in column if not is_missing(v)))  # each bad value named once
        covariate.normalize(distinct, extrapolate=extrapolate or covariate.kind == CATEGORICAL)


def check_sampler(sampler: ConditionSampler, schema: CovariateSchema, extrapolate: bool = False, draws: int = 32) -> None:
    """Check a sampler against a model's schema: its own ``check`` if it has one, then ``draws``
    draws from a fixed seed (which also catches callables returning something other than a dict)."""
    if not callable(sampler):
        raise ValueError(f"cond_sampler={sampler!r}; allowed: a callable rng -> dict of covariates")
    if hasattr(sampler, "check"):
        sampler.check(schema, extrapolate)
    rng = np.random.default_rng(0)
    rows = [sampler(rng) for _ in range(draws)]
    if not all(isinstance(r, Mapping) for r in rows):
        raise ValueError(f"cond_sampler returned {type(rows[0]).__name__}; allowed: a dict of covariate name to value")
    names = sorted({k for r in rows for k in r})
    check_values(schema, {k: [r[k] for r in rows if k in r] for k in names}, extrapolate)


def describe(sampler: ConditionSampler | None) -> str | None:
    """A stable description of a sampler (its repr when it defines one, else its qualified name),
    used to tell whether a shard folder was made by the same dataset definition."""
    if sampler is None:
        return None
    if type(sampler).__repr__ is not object.__repr__:
        return repr(sampler)
    return f"{getattr(sampler, '__module__', '?')}.{getattr(sampler, '__qualname__', type(sampler).__qualname__)}"
