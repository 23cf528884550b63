"""The training cohort's covariate distribution, as a fitted density rather than stored rows.

For each level of one categorical covariate (sex), a Gaussian mixture over the normalised continuous
covariates (scikit-learn's ``GaussianMixture``, full covariances), plus the levels' frequencies.
:meth:`CovariateDistribution.sample` draws the covariates a caller did not give, conditionally on
the ones given (the mixture's exact Gaussian conditionals), from an explicit seed, and only inside
the schema's valid range (draws outside are redrawn).

:func:`fit_mixture` and :func:`draw_mixture` are the one implementation of a per-level Gaussian
mixture in the package; the condition sampler :class:`synthbrain.generator.conditions.Density`
uses them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.mixture import GaussianMixture

from synthbrain.cohort.covariates import CATEGORICAL, CONTINUOUS, CovariateSchema


@dataclass
class CovariateDistribution:
    """The density of a training cohort's covariates (see the module docstring).

    ``schema``: the fitted schema (exactly one categorical covariate); ``group``: the categorical
    covariate the mixtures are split by; ``group_probabilities``: each level's frequency among the
    complete rows; ``mixtures``: per level, a Gaussian mixture over the normalised continuous
    covariates in schema order (``weights`` [K], ``means`` [K][D], ``covariances`` [K][D][D], as lists).
    """

    schema: CovariateSchema
    group: str  # the categorical covariate the mixtures are split by
    group_probabilities: dict[str, float]
    mixtures: dict[str, dict[str, list]]  # level -> {"weights": [K], "means": [K][D], "covariances": [K][D][D]}

    @property
    def continuous(self) -> list[str]:
        """The continuous covariates, in schema order: the mixtures' dimensions."""
        return [c.name for c in self.schema.covariates if c.kind == CONTINUOUS]

    @classmethod
    def fit(cls, table: pd.DataFrame, schema: CovariateSchema, components: int = 2, seed: int = 0) -> CovariateDistribution:
        """Fit one ``components``-component mixture per level on the rows of ``table`` with every covariate
        of the fitted ``schema`` present (:func:`fit_mixture`, deterministic for ``seed``). Raises
        ``ValueError`` unless the schema has exactly one categorical covariate, or when a level has fewer
        than ``2 * components`` complete rows."""
        groups = [c for c in schema.covariates if c.kind == CATEGORICAL]
        if len(groups) != 1:
            raise ValueError(f"schema: needs exactly one categorical covariate to split by, has {[c.name for c in groups]}")
        group = groups[0]
        complete = table.dropna(subset=schema.names)
        names = [c.name for c in schema.covariates if c.kind == CONTINUOUS]
        scaled = np.concatenate([schema[n].normalize(complete[n]) for n in names], axis=1).astype(np.float64)
        levels = np.asarray([group.categories[int(i)] for i in group.parse(complete[group.name])])
        probabilities, mixtures = {}, {}
        for level in group.categories:
            rows = scaled[levels == level]
            if len(rows) < 2 * components:
                raise ValueError(f"table: only {len(rows)} complete rows with {group.name}={level!r}; need {2 * components} to fit")
            probabilities[level] = len(rows) / len(scaled)
            mixtures[level] = {k: v.tolist() for k, v in fit_mixture(rows, components, seed).items()}
        return cls(schema, group.name, probabilities, mixtures)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``group``, ``group_probabilities``, ``mixtures``), without the schema."""
        return {"group": self.group, "group_probabilities": self.group_probabilities, "mixtures": self.mixtures}

    @classmethod
    def from_dict(cls, data: dict[str, Any], schema: CovariateSchema) -> CovariateDistribution:
        """The distribution that :meth:`to_dict` wrote, for ``schema``. Raises ``ValueError`` unless ``data``
        has exactly the keys ``group``, ``group_probabilities`` and ``mixtures`` (their content is not checked)."""
        expected = {"group", "group_probabilities", "mixtures"}
        if set(data) != expected:
            raise ValueError(
                f"covariate distribution: unknown keys {sorted(set(data) - expected)}, missing keys {sorted(expected - set(data))}; "
                f"expected exactly {sorted(expected)}"
            )
        return cls(schema, data["group"], data["group_probabilities"], data["mixtures"])

    def sample(self, n: int, given: dict[str, Any] | None = None, seed: int = 0, max_tries: int = 1000) -> pd.DataFrame:
        """A table of ``n`` rows of physical covariates (schema columns and units); those in ``given``
        (scalars, physical units, any range) are fixed in every row, the rest drawn from the conditional
        density, inside the fitted range, with ``np.random.default_rng(seed)``. Raises ``ValueError`` for
        ``n`` < 1, unknown names in ``given``, or no draw inside the range in ``max_tries``."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n={n!r}; allowed: an integer >= 1")
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.schema.names))
        if unknown:
            raise ValueError(f"given: unknown covariates {unknown}; known: {self.schema.names}")
        rng = np.random.default_rng(seed)
        names = self.continuous
        observed = [i for i, name in enumerate(names) if name in given]
        x_obs = np.array([self.schema[names[i]].normalize([given[names[i]]], extrapolate=True)[0, 0] for i in observed])
        rows = []
        for _ in range(n):
            level = given.get(self.group)
            if level is None:
                levels = list(self.group_probabilities)
                level = levels[rng.choice(len(levels), p=np.asarray([self.group_probabilities[k] for k in levels]))]
            else:
                level = self.schema[self.group].categories[int(self.schema[self.group].parse([level])[0])]
            mixture = {k: np.asarray(v) for k, v in self.mixtures[level].items()}
            x = draw_mixture(mixture, rng, np.zeros(len(names)), np.ones(len(names)), observed, x_obs, max_tries)
            row = {self.group: level}
            row.update(
                {
                    name: given[name] if i in observed else float(self.schema[name].denormalize(x[i : i + 1, None])[0])
                    for i, name in enumerate(names)
                }
            )
            rows.append(row)
        return pd.DataFrame(rows)[self.schema.names]


def fit_mixture(rows: np.ndarray, components: int, seed: int) -> dict[str, np.ndarray]:
    """A Gaussian mixture (scikit-learn, full covariances, ``reg_covar`` 1e-4, deterministic for a
    ``seed``) fitted on ``rows`` (N, D): ``weights`` (K,), ``means`` (K, D), ``covariances`` (K, D, D)."""
    gmm = GaussianMixture(components, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(rows)
    return {"weights": gmm.weights_, "means": gmm.means_, "covariances": gmm.covariances_}


def draw_mixture(
    mixture: dict[str, np.ndarray],
    rng: np.random.Generator,
    low: np.ndarray,
    high: np.ndarray,
    observed: list[int] | tuple[int, ...] = (),
    values: np.ndarray | None = None,
    max_tries: int = 1000,
) -> np.ndarray:
    """One draw (D,) from a mixture of :func:`fit_mixture`, conditionally on the dimensions
    ``observed`` having ``values`` (each component's exact Gaussian conditional, components
    re-weighted by the likelihood of the observed values), redrawn until every free dimension lies
    in [low, high]. Raises ``ValueError`` after ``max_tries`` draws outside."""
    weights, means, covs = mixture["weights"], mixture["means"], mixture["covariances"]
    dims = means.shape[1]
    o = np.asarray(observed, dtype=int)
    m = np.asarray([i for i in range(dims) if i not in set(o.tolist())], dtype=int)
    x_obs = np.asarray(values if values is not None else [], dtype=float)
    cond_means, cond_covs, log_w = [], [], np.log(weights)
    for k in range(len(weights)):
        mu, cov = means[k], covs[k]
        if len(o):
            gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
            cond_means.append(mu[m] + gain @ (x_obs - mu[o]))
            cond_covs.append(cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)])
            diff = x_obs - mu[o]
            _, logdet = np.linalg.slogdet(cov[np.ix_(o, o)])
            log_w[k] += -0.5 * (diff @ np.linalg.solve(cov[np.ix_(o, o)], diff) + logdet)
        else:
            cond_means.append(mu[m])
            cond_covs.append(cov[np.ix_(m, m)])
    probs = np.exp(log_w - log_w.max())
    probs /= probs.sum()
    x = np.empty(dims)
    x[o] = x_obs
    for _ in range(max_tries):
        k = rng.choice(len(probs), p=probs)
        x[m] = rng.multivariate_normal(cond_means[k], cond_covs[k]) if len(m) else []
        if len(m) == 0 or ((x[m] >= low[m]) & (x[m] <= high[m])).all():
            return x
    raise ValueError(f"could not draw covariates inside the valid range in {max_tries} tries given {dict(zip(o.tolist(), x_obs))}")
