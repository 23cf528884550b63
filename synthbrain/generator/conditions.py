"""Condition samplers: where the covariates of synthetic subjects come from.

A sampler is called with a ``numpy.random.Generator`` and returns one subject's covariates in
physical units (years, "F"/"M", mL) as a dict. It may return only some covariates: the
generator draws the others from its training cohort's density, conditionally on those given.
``SyntheticBrainDataset`` calls it with a generator seeded from (dataset seed, index), so a
subject's covariates depend on nothing else. Any callable ``rng -> dict`` works as a sampler;
the classes here cover the usual cases and check themselves against a generator's schema:

* :class:`Fixed` values; :class:`Uniform` ranges and levels;
* a real cohort's joint distribution: :class:`Empirical` (rows resampled, with optional jitter)
  or :class:`Density` (a scikit-learn Gaussian mixture or kernel density fitted on it);
* a target distribution: :meth:`Empirical.balanced` (equal across age bins and sex, say) and
  :meth:`Empirical.target` (any proportions, e.g. over-sampling a rare age range).
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
        """Raise ``ValueError`` when a value this sampler can draw lies outside ``schema``'s range (unless ``extrapolate``)."""
        for name, spec in self.ranges.items():
            check_values(schema, {name: list(spec)}, extrapolate)


class Empirical:
    """Rows of a real cohort table, drawn with replacement, with optional Gaussian jitter of each
    continuous column (``jitter`` times that column's standard deviation, redrawn until the value
    stays inside the column's observed range, so a table inside the model's range stays inside).

    ``columns``: the covariates to draw (default: every column but identifiers, see
    :func:`covariate_columns`). ``weights`` (one per row) re-weights the table, e.g. towards a
    target distribution: see :meth:`balanced`. Rows with a missing value in ``columns`` are left
    out, and say so (``dropped``). Raises ``ValueError`` for absent columns, a negative jitter, or
    weights that are not one finite value >= 0 per row.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        columns: Sequence[str] | None = None,
        jitter: float = 0.0,
        weights: Sequence[float] | None = None,
    ):
        columns = list(columns) if columns is not None else covariate_columns(table)
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
        return cls.target(table, bins, by, columns=columns, jitter=jitter)

    @classmethod
    def target(
        cls,
        table: pd.DataFrame,
        bins: Mapping[str, Sequence[float]] | None = None,
        by: Sequence[str] = (),
        proportions: Mapping[str, Sequence[float] | Mapping[str, float]] | None = None,
        columns: Sequence[str] | None = None,
        jitter: float = 0.0,
    ) -> Empirical:
        """Rows re-weighted so that the cells (a bin of each ``bins`` column, crossed with each
        level of the ``by`` columns) are drawn with target proportions: for each variable, one
        proportion per bin (a list) or per level (a dict), equal where not given; a cell's target
        is the product of its variables' proportions. Over-sampling a rare range, e.g. the oldest:
        ``target(table, {"age": [20, 70, 90]}, proportions={"age": [0.5, 0.5]})``. Rows outside
        the bins (or with a missing value) get weight 0; a cell with a target > 0 and no row is an
        error, since it cannot be drawn."""
        bins = dict(bins or {})
        by = list(by)
        proportions = dict(proportions or {})
        unknown = sorted(set(proportions) - set(bins) - set(by))
        if unknown:
            raise ValueError(f"proportions: {unknown} are neither in bins {list(bins)} nor in by {by}")
        absent = [c for c in [*bins, *by] if c not in table.columns]
        if absent:
            raise ValueError(f"bins, by: columns {absent} are not in the table; table columns: {list(table.columns)}")
        inside = pd.Series(True, index=table.index)
        cells = pd.Series("", index=table.index)
        target = pd.Series(1.0, index=table.index)
        expected = 1
        for name, edges in bins.items():
            edges = list(edges)
            if len(edges) < 2 or sorted(edges) != edges or len(set(edges)) != len(edges):
                raise ValueError(f"bins[{name!r}]={edges}; allowed: >= 2 strictly increasing edges")
            codes = pd.cut(pd.to_numeric(table[name], errors="coerce"), edges, include_lowest=True, labels=False)
            share = _shares(name, proportions.get(name), [f"[{a:g}, {b:g}]" for a, b in zip(edges, edges[1:])], by_position=True)
            inside &= codes.notna()
            cells = cells + "|" + codes.astype(str)
            target *= codes.map(lambda code: share[int(code)] if code == code else 0.0).astype(float)
            expected *= sum(v > 0 for v in share)
        for name in by:
            present = ~table[name].map(is_missing)
            levels = sorted(table.loc[present, name].astype(str).unique())
            share = _shares(name, proportions.get(name), levels, by_position=False)
            inside &= present
            cells = cells + "|" + table[name].astype(str)
            target *= table[name].astype(str).map(dict(zip(levels, share))).fillna(0.0).astype(float)
            expected *= sum(v > 0 for v in share)
        drawn = inside & (target > 0)
        counts = cells[drawn].value_counts()
        if len(counts) < expected:
            raise ValueError(
                f"bins, by: only {len(counts)} of the {int(expected)} cells with a target > 0 hold rows of the table; "
                "widen the bins or give the empty cells proportion 0"
            )
        weights = np.where(drawn, target / cells.map(counts).fillna(1).to_numpy(), 0.0)
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
        """Raise ``ValueError`` when a value this sampler can draw lies outside ``schema``'s range (unless ``extrapolate``)."""
        check_values(schema, {c: self.table[c].tolist() for c in self.columns}, extrapolate)


class Density:
    """A density fitted on a real cohort table with scikit-learn, then sampled: a Gaussian mixture
    (``estimator="gmm"``, ``components`` full-covariance components) or a Gaussian kernel density
    (``estimator="kde"``, ``bandwidth`` in standard deviations, or Scott's rule) over the
    standardised continuous columns, one per level of the categorical columns (drawn at their
    observed frequencies). Unlike :class:`Empirical`, it draws new combinations of covariates,
    not copies of rows. Draws outside the observed range of a column are redrawn (``max_tries``),
    so a table inside the model's range gives draws inside it. Fitting is deterministic (``seed``);
    each draw comes from the ``rng`` it is given.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        columns: Sequence[str] | None = None,
        estimator: str = "gmm",
        components: int = 2,
        bandwidth: float | None = None,
        seed: int = 0,
        max_tries: int = 1000,
    ):
        from sklearn.neighbors import KernelDensity

        columns = list(columns) if columns is not None else covariate_columns(table)
        absent = [c for c in columns if c not in table.columns]
        if absent or not columns:
            raise ValueError(f"columns={columns}: not in the table (absent {absent}); table columns: {list(table.columns)}")
        if estimator not in ("gmm", "kde"):
            raise ValueError(f"estimator={estimator!r}; allowed: 'gmm' (Gaussian mixture) or 'kde' (Gaussian kernel density)")
        if not (isinstance(components, int) and components >= 1):
            raise ValueError(f"components={components!r}; allowed: an integer >= 1")
        if bandwidth is not None and not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
            raise ValueError(f"bandwidth={bandwidth!r}; allowed: a number > 0 (in standard deviations), or None for Scott's rule")
        if not (isinstance(max_tries, int) and max_tries >= 1):
            raise ValueError(f"max_tries={max_tries!r}; allowed: an integer >= 1")
        complete = ~table[columns].apply(lambda column: column.map(is_missing)).any(axis=1).to_numpy()
        self.dropped = int((~complete).sum())  # rows left out for a missing value
        data = table.loc[complete, columns].reset_index(drop=True)
        self.continuous = [c for c in columns if pd.api.types.is_numeric_dtype(data[c])]
        self.categorical = [c for c in columns if c not in self.continuous]
        self.columns, self.estimator, self.components, self.max_tries = columns, estimator, components, max_tries
        values = data[self.continuous].to_numpy(dtype=float)
        self.bounds = {c: (float(data[c].min()), float(data[c].max())) for c in self.continuous}
        keys = [tuple(row) for row in data[self.categorical].astype(str).itertuples(index=False)]
        levels = sorted(set(keys))
        if not levels:
            raise ValueError("table: no complete row to fit a density on")
        self.levels = [dict(zip(self.categorical, level)) for level in levels]
        self.probabilities = np.array([keys.count(level) for level in levels], dtype=float) / len(keys)
        self.fits: list[dict[str, np.ndarray]] = []
        for level in levels:
            rows = values[[k == level for k in keys]]
            if not self.continuous:
                self.fits.append({})
                continue
            need = max(2, components) if estimator == "gmm" else 2
            if len(rows) < need:
                raise ValueError(f"table: only {len(rows)} complete rows with {dict(zip(self.categorical, level))}; need {need} to fit")
            # Standardised per level, so that the kernel bandwidth (Scott's rule: unit variance) fits each level's spread.
            mean, std = rows.mean(axis=0), rows.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            rows = (rows - mean) / std
            if estimator == "gmm":
                from synthbrain.cohort.distribution import fit_mixture  # scikit-learn, on first use

                fit = fit_mixture(rows, components, seed)
            else:
                kde = KernelDensity(kernel="gaussian", bandwidth=bandwidth if bandwidth is not None else "scott").fit(rows)
                fit = {"points": rows, "bandwidth": np.asarray(float(kde.bandwidth_))}
            self.fits.append({**fit, "mean": mean, "std": std})
        digest = hashlib.sha256(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        self.description = (
            f"Density(columns={columns}, rows={len(data)}, estimator={estimator!r}, components={components}, "
            f"bandwidth={bandwidth}, seed={seed}, sha256={digest.hexdigest()[:16]})"
        )

    def __repr__(self) -> str:
        return self.description

    def __call__(self, rng: np.random.Generator) -> dict[str, Any]:
        k = int(rng.choice(len(self.levels), p=self.probabilities))
        row: dict[str, Any] = dict(self.levels[k])
        fit = self.fits[k]
        if not self.continuous:
            return row
        low = (np.array([self.bounds[c][0] for c in self.continuous]) - fit["mean"]) / fit["std"]  # in standardised units
        high = (np.array([self.bounds[c][1] for c in self.continuous]) - fit["mean"]) / fit["std"]
        failure = f"{self!r}: no draw inside the observed range in max_tries={self.max_tries} tries; raise max_tries"
        if self.estimator == "gmm":
            try:
                from synthbrain.cohort.distribution import draw_mixture

                z = draw_mixture(fit, rng, low, high, max_tries=self.max_tries)
            except ValueError:
                raise RuntimeError(failure) from None
        else:
            for _ in range(self.max_tries):
                z = fit["points"][int(rng.integers(len(fit["points"])))] + rng.normal(0.0, float(fit["bandwidth"]), len(self.continuous))
                if np.all((z >= low) & (z <= high)):
                    break
            else:
                raise RuntimeError(failure)
        row.update({c: float(v) for c, v in zip(self.continuous, z * fit["std"] + fit["mean"])})
        return row

    def check(self, schema: CovariateSchema, extrapolate: bool = False) -> None:
        """Raise ``ValueError`` when a value this sampler can draw lies outside ``schema``'s range (unless ``extrapolate``)."""
        values = {c: [low, high] for c, (low, high) in self.bounds.items()}
        values.update({c: sorted({level[c] for level in self.levels}) for c in self.categorical})
        check_values(schema, values, extrapolate)


BOOKKEEPING = ("subject_id", "participant_id", "session_id", "seed", "index", "chunk")


def covariate_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a cohort table that may be covariates: all but identifiers and bookkeeping
    (:data:`BOOKKEEPING`, ``qc_*``). A sampler's columns are checked against a model's schema by
    :func:`check_sampler`, which names any the model does not know (then pass ``columns=``)."""
    return [c for c in table.columns if c not in BOOKKEEPING and not str(c).startswith("qc_")]


def _shares(name: str, given: Sequence[float] | Mapping[str, float] | None, keys: list[str], by_position: bool) -> list[float]:
    """One target proportion per bin (a list, by position) or level (a dict), normalised to sum 1."""
    if given is None:
        values = [1.0] * len(keys)
    elif by_position:
        values = [float(v) for v in given] if not isinstance(given, Mapping) else []
        if len(values) != len(keys):
            raise ValueError(f"proportions[{name!r}]={given!r}; allowed: a list of {len(keys)} numbers, one per bin {keys}")
    else:
        if not isinstance(given, Mapping) or sorted(map(str, given)) != keys:
            raise ValueError(f"proportions[{name!r}]={given!r}; allowed: a dict with one number per level {keys}")
        as_text = {str(k): v for k, v in given.items()}
        values = [float(as_text[k]) for k in keys]
    if any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"proportions[{name!r}]={given!r}; allowed: finite numbers >= 0, not all 0")
    return [v / sum(values) for v in values]


def check_values(schema: CovariateSchema, values: Mapping[str, Sequence[Any]], extrapolate: bool = False) -> None:
    """Raise a clear error for a covariate the schema does not know, or a value it does not allow."""
    unknown = sorted(set(values) - set(schema.names))
    if unknown:
        raise ValueError(f"condition sampler: unknown covariates {unknown}; the model knows {schema.names}")
    for name, column in values.items():
        covariate = schema[name]
        distinct = list(dict.fromkeys(v for v in column if not is_missing(v)))  # each bad value named once
        covariate.normalize(distinct, extrapolate=extrapolate or covariate.kind == CATEGORICAL)


def check_sampler(
    sampler: ConditionSampler, schema: CovariateSchema, extrapolate: bool = False, draws: int = 32, complete: bool = False
) -> None:
    """Check a sampler against a model's schema: its own ``check`` if it has one, then ``draws``
    draws from a fixed seed (which also catches callables returning something other than a dict).
    ``complete=True`` (a model without a covariate density) also requires every covariate in every draw."""
    if not callable(sampler):
        raise ValueError(f"cond_sampler={sampler!r}; allowed: a callable rng -> dict of covariates")
    if hasattr(sampler, "check"):
        sampler.check(schema, extrapolate)
    rng = np.random.default_rng(0)
    rows = [sampler(rng) for _ in range(draws)]
    bad = next((r for r in rows if not isinstance(r, Mapping)), None)
    if bad is not None:
        raise ValueError(f"cond_sampler returned {type(bad).__name__}; allowed: a dict of covariate name to value")
    names = sorted({k for r in rows for k in r})
    check_values(schema, {k: [r[k] for r in rows if k in r] for k in names}, extrapolate)
    if complete:
        missing = sorted({name for r in rows for name in schema.names if is_missing(r.get(name))})
        if missing:
            raise ValueError(
                f"cond_sampler leaves out {missing} in some draws, and the model has no covariate density to draw them from; "
                f"give all of {schema.names}"
            )


def describe(sampler: ConditionSampler | None) -> str | None:
    """A stable description of a sampler (its repr when it defines one, else its qualified name),
    used to tell whether a shard folder was made by the same dataset definition."""
    if sampler is None:
        return None
    if type(sampler).__repr__ is not object.__repr__:
        return repr(sampler)
    return f"{getattr(sampler, '__module__', '?')}.{getattr(sampler, '__qualname__', type(sampler).__qualname__)}"
