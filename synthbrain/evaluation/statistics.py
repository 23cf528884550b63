"""Intervals for benchmark results that stay inside a metric's range: a two-level bootstrap over
training seeds and test subjects (Efron & Tibshirani 1993, percentile intervals; resampling both
levels as for hierarchical data, Davison & Hinkley 1997, section 3.8).

A result is a matrix ``values`` (seeds, subjects): the score of each test subject under the network
trained with each seed (e.g. a subject's Dice). Resampling rows (seeds) and columns (subjects)
with replacement and taking the mean of each resample gives intervals that reflect both sources
of variation and, being means of values inside the metric's range, never leave it (Dice in
[0, 1], unlike a normal interval over three seeds). Comparisons of two arms are paired: the same
seeds and subjects are resampled for both, so the interval is that of the mean difference.
The AUC, a set-level metric, is recomputed on each resample instead of averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its two-sided percentile interval at ``level``; ``p`` is the two-sided
    bootstrap p-value of "no difference" (for differences; NaN otherwise)."""

    value: float
    low: float
    high: float
    p: float = float("nan")

    @property
    def excludes_zero(self) -> bool:
        """Whether the confidence interval lies wholly above or below 0."""
        return bool(self.low > 0 or self.high < 0)


def _matrix(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: shape {array.shape}; allowed: (seeds, subjects) with at least one of each")
    return array


def _indices(shape: tuple[int, int], resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, shape[0], size=(resamples, shape[0]))
    columns = rng.integers(0, shape[1], size=(resamples, shape[1]))
    return rows, columns


def _interval(point: float, draws: np.ndarray, level: float, difference: bool) -> Estimate:
    if not 0 < level < 1:
        raise ValueError(f"level={level}; allowed: a number in (0, 1)")
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return Estimate(point, float("nan"), float("nan"))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    p = float("nan")
    if difference:
        p = float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))
    return Estimate(float(point), float(low), float(high), p)


def bootstrap_mean(values, *, resamples: int = RESAMPLES, level: float = 0.95, seed: int = 0, difference: bool = False) -> Estimate:
    """The mean of ``values`` (seeds, subjects) (NaNs ignored) with its two-level bootstrap interval.
    ``difference=True`` also gives the bootstrap p-value of a zero mean (for a matrix of paired
    differences). Raises ``ValueError`` for a matrix of another shape or a level outside (0, 1)."""
    array = _matrix(values, "values")
    rows, columns = _indices(array.shape, resamples, seed)
    resampled = array[rows[:, :, None], columns[:, None, :]]  # (resamples, seeds, subjects)
    finite = np.isfinite(resampled)
    counts = finite.sum((1, 2))
    sums = np.where(finite, resampled, 0.0).sum((1, 2))
    draws = np.divide(sums, counts, out=np.full(len(sums), np.nan), where=counts > 0)
    return _interval(float(np.nanmean(array)), draws, level, difference)


def bootstrap_difference(a, b, **kwargs) -> Estimate:
    """Mean of ``a - b`` for paired matrices (seeds, subjects) (the same seeds and subjects), with
    its interval and p-value (:func:`bootstrap_mean` of the differences)."""
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape}, b {b.shape}; allowed: paired matrices of one shape (seeds, subjects)")
    return bootstrap_mean(a - b, difference=True, **kwargs)


def auc(truth, scores) -> np.ndarray:
    """Area under the ROC curve of ``scores`` (..., subjects) for binary ``truth`` (..., subjects)
    (broadcast), by the Mann-Whitney statistic on average ranks (ties count half), as
    ``sklearn.metrics.roc_auc_score``; NaN where one class is absent."""
    from scipy.stats import rankdata

    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    truth = np.broadcast_to(truth, scores.shape)
    ranks = rankdata(scores, axis=-1)
    positives = truth.sum(-1)
    negatives = truth.shape[-1] - positives
    u = np.where(truth, ranks, 0.0).sum(-1) - positives * (positives + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def bootstrap_auc(scores, truth, *, reference=None, resamples: int = RESAMPLES, level: float = 0.95, seed: int = 0) -> Estimate:
    """The AUC of ``scores`` (seeds, subjects) against binary ``truth`` (subjects,), averaged over
    seeds, with its two-level bootstrap interval (the AUC recomputed on each resample of seeds and
    subjects). With ``reference`` (paired scores of the same shape) the estimate is the AUC
    difference scores - reference, with its p-value. Resamples with one class only are dropped.
    Raises ``ValueError`` for mismatched shapes."""
    scores, truth = _matrix(scores, "scores"), np.asarray(truth, dtype=float)
    if truth.shape != (scores.shape[1],) or not np.isin(truth, (0, 1)).all():
        raise ValueError(f"truth: shape {truth.shape}; allowed: one 0/1 value per subject ({scores.shape[1]},)")
    other = None if reference is None else _matrix(reference, "reference")
    if other is not None and other.shape != scores.shape:
        raise ValueError(f"reference {other.shape}, scores {scores.shape}; allowed: paired matrices of one shape")

    def value(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:  # rows (R, S), columns (R, N) -> (R,)
        t = truth[columns][:, None, :]
        out = auc(t, scores[rows[:, :, None], columns[:, None, :]])
        if other is not None:
            out = out - auc(t, other[rows[:, :, None], columns[:, None, :]])
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.where(np.isfinite(out), out, np.nan), axis=1) if np.isfinite(out).any() else np.full(len(rows), np.nan)

    point = value(np.arange(scores.shape[0])[None], np.arange(scores.shape[1])[None])[0]
    rows, columns = _indices(scores.shape, resamples, seed)
    return _interval(float(point), value(rows, columns), level, difference=other is not None)
