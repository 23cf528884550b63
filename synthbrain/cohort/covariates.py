"""Covariates: what each one means, its unit, how it is normalised, and where it is valid.

A :class:`CovariateSchema` is fitted on a training cohort (each continuous covariate min-max
scaled to [0, 1] over that cohort, as in Pinaya et al. 2022), saved as JSON beside the data or the
model, and used at generation time to turn physical values (years, "F"/"M", mL) into the model's
conditioning vector. Values outside the fitted range raise an error unless the caller passes
``extrapolate=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthbrain import _io

CONTINUOUS = "continuous"
CATEGORICAL = "categorical"

# Other spellings of categorical levels, matched like the levels themselves (case-insensitively,
# surrounding spaces ignored) by every covariate that has the level. These are the sex values the
# BIDS specification recommends for participants.tsv ("sex": male, m, M, MALE, Male / female, f, F,
# FEMALE, Female; Modality agnostic files, Participants file). Numeric codes such as 1/2 are not
# spellings: their meaning differs between datasets, so they stay errors.
LEVEL_SPELLINGS: dict[str, tuple[str, ...]] = {"F": ("female",), "M": ("male",)}

# Factors that convert a value in the key unit into the schema unit.
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "mL": {"mL": 1.0, "cm3": 1.0, "mm3": 1e-3, "L": 1e3},
    "years": {"years": 1.0, "months": 1.0 / 12.0, "days": 1.0 / 365.25},
}


@dataclass(frozen=True)
class Covariate:
    """One conditioning variable.

    ``name``: the column name in participant tables; ``unit``: the physical unit (``"years"``, ``"mL"``;
    ``""`` for a categorical); ``kind``: :data:`CONTINUOUS` or :data:`CATEGORICAL`. ``low``/``high`` are
    fitted on a training cohort (physical units) and map to 0 and 1 (None before fitting). For a
    categorical covariate, ``categories`` lists its levels; two levels encode as one channel
    (first level 0, second 1, e.g. sex F=0, M=1 as in the reference model), more levels one-hot.
    ``description``: free text. Raises ``ValueError`` for an unknown kind, a categorical with fewer than
    2 levels, a continuous one with levels, only one of ``low``/``high``, or not finite ``low <= high``.
    """

    name: str
    unit: str
    kind: str
    categories: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (CONTINUOUS, CATEGORICAL):
            raise ValueError(f"covariate {self.name!r}: kind={self.kind!r}; allowed: {CONTINUOUS!r}, {CATEGORICAL!r}")
        if self.kind == CATEGORICAL and len(self.categories) < 2:
            raise ValueError(f"covariate {self.name!r}: categories={self.categories!r}; a categorical covariate needs at least 2")
        if self.kind == CONTINUOUS and self.categories:
            raise ValueError(f"covariate {self.name!r}: a continuous covariate takes no categories")
        if (self.low is None) != (self.high is None):
            raise ValueError(f"covariate {self.name!r}: low and high must both be set or both be None")
        if self.low is not None and not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"covariate {self.name!r}: low={self.low}, high={self.high}; need finite low <= high")

    @property
    def fitted(self) -> bool:
        """Whether :meth:`normalize` can be used: always for a categorical, once ``low``/``high`` are set otherwise."""
        return self.kind == CATEGORICAL or self.low is not None

    @property
    def _in_unit(self) -> str:
        return f" in {self.unit}" if self.unit else ""

    @property
    def spellings(self) -> dict[str, tuple[str, ...]]:
        """Each level → every spelling accepted for it (any case), e.g. ``{"F": ("F", "female"), ...}``."""
        return {level: (level, *LEVEL_SPELLINGS.get(level, ())) for level in self.categories}

    @property
    def allowed(self) -> str:
        """What a value may be, for error messages: the levels (and their other accepted spellings),
        or the fitted range with its unit."""
        if self.kind == CATEGORICAL:
            return _levels_text(self)
        if self.low is None:
            return f"a finite number{self._in_unit}"
        return f"a number in [{self.low:g}, {self.high:g}]{' ' + self.unit if self.unit else ''}"

    @property
    def width(self) -> int:
        """Number of channels this covariate takes in the conditioning vector."""
        if self.kind == CONTINUOUS or len(self.categories) == 2:
            return 1
        return len(self.categories)

    def convert(self, values: np.ndarray, from_unit: str) -> np.ndarray:
        """Convert continuous values given in ``from_unit`` into this covariate's unit, by the factors of
        :data:`UNIT_FACTORS` (e.g. mm3, cm3 or L to mL; months or days to years, a year = 365.25 days).
        Raises ``ValueError`` for a unit with no factor to this one."""
        if from_unit == self.unit:
            return values
        factors = UNIT_FACTORS.get(self.unit, {})
        if from_unit not in factors:
            allowed = sorted(factors) or [self.unit]
            raise ValueError(f"covariate {self.name!r}: unit={from_unit!r}; allowed: {allowed}")
        return values * factors[from_unit]

    def parse(self, values: Iterable[Any]) -> np.ndarray:
        """Physical values → float array (categories as level indices); missing values become NaN.

        A categorical value matches a level or one of its :attr:`spellings`, case-insensitively
        (``"female"``, ``"F"`` and ``" f "`` are all level ``"F"``). Raises ``ValueError`` listing
        every value that is neither missing nor valid, and what is allowed.
        """
        out, bad = [], []
        for value in values:
            if is_missing(value):
                out.append(np.nan)
            elif self.kind == CATEGORICAL:
                index = _category_index(self.spellings, value)
                if index is None:
                    bad.append(value)
                out.append(np.nan if index is None else float(index))
            else:
                try:
                    number = math.inf if isinstance(value, (bool, np.bool_)) else float(value)  # True is not a number of years
                except (TypeError, ValueError):
                    number = math.inf
                if not math.isfinite(number):
                    bad.append(value)
                    number = np.nan
                out.append(number)
        if bad:
            allowed = _levels_text(self) if self.kind == CATEGORICAL else f"a finite number{self._in_unit}"
            if self.kind == CATEGORICAL and any(_is_number(v) for v in bad):
                allowed += " (numeric codes such as 1/2 are ambiguous: their meaning differs between datasets; write the level)"
            raise ValueError(f"covariate {self.name!r}: invalid values {bad[:10]}{' ...' if len(bad) > 10 else ''}; allowed: {allowed}")
        return np.asarray(out, dtype=np.float64)

    def check_range(self, parsed: np.ndarray, extrapolate: bool = False) -> None:
        """Raise ``ValueError`` if a parsed value lies outside the fitted [low, high] (relative tolerance
        1e-9), naming a unit in which the values would fit (e.g. mm3 given for mL). Categorical, unfitted
        covariates and ``extrapolate=True`` are never checked; NaN values pass."""
        if self.kind == CATEGORICAL or extrapolate or self.low is None:
            return
        tol = 1e-9 * max(1.0, abs(self.high - self.low))
        outside = parsed[(parsed < self.low - tol) | (parsed > self.high + tol)]
        if outside.size:
            hint = ""
            for unit, factor in UNIT_FACTORS.get(self.unit, {}).items():  # e.g. a volume given in mm3 instead of mL
                if factor != 1.0 and np.all((outside * factor >= self.low - tol) & (outside * factor <= self.high + tol)):
                    hint = f" (read as {unit} they would be inside: convert them to {self.unit})"
                    break
            raise ValueError(
                f"covariate {self.name!r}: values {outside[:10].tolist()} {self.unit} are outside the fitted range "
                f"[{self.low:g}, {self.high:g}] {self.unit}{hint}; pass extrapolate=True to allow them"
            )

    def normalize(self, values: Iterable[Any], extrapolate: bool = False) -> np.ndarray:
        """Physical values (N values, in :attr:`unit`) → (N, width) float32 array in [0, 1] (beyond it only
        when extrapolating; all 0 when ``low == high``); a two-level categorical as 0/1, more levels
        one-hot. Raises ``ValueError`` for an unfitted covariate, invalid or missing values, or values
        outside the fitted range without ``extrapolate``."""
        if not self.fitted:
            raise ValueError(f"covariate {self.name!r} is not fitted; call CovariateSchema.fit on a training table first")
        parsed = self.parse(values)
        if np.isnan(parsed).any():
            raise ValueError(
                f"covariate {self.name!r}: {int(np.isnan(parsed).sum())} missing values cannot be normalised (None, NaN or empty); "
                f"allowed: {self.allowed}"
            )
        self.check_range(parsed, extrapolate)
        if self.kind == CATEGORICAL:
            if self.width == 1:
                return parsed[:, None].astype(np.float32)
            return np.eye(len(self.categories), dtype=np.float32)[parsed.astype(int)]
        span = self.high - self.low
        scaled = (parsed - self.low) / span if span > 0 else np.zeros_like(parsed)
        return scaled[:, None].astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """(N, width) normalised values → (N,) physical values (float64 in :attr:`unit`, not clipped to the
        fitted range; for categoricals an object array of level names: 1 channel thresholded at 0.5,
        one-hot by argmax). Needs a fitted continuous covariate."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), self.width)
        if self.kind == CATEGORICAL:
            index = (x[:, 0] >= 0.5).astype(int) if self.width == 1 else x.argmax(axis=1)
            return np.asarray(self.categories, dtype=object)[index]
        return self.low + x[:, 0] * (self.high - self.low)


class CovariateSchema:
    """An ordered set of covariates; the order is the order of the conditioning vector, which is
    (N, :attr:`width`) float32, each covariate taking :attr:`Covariate.width` consecutive channels.
    Raises ``ValueError`` for no covariates or duplicate names. ``schema["age"]`` is the covariate
    called ``age`` (``KeyError`` for an unknown name)."""

    def __init__(self, covariates: Sequence[Covariate]):
        names = [c.name for c in covariates]
        if len(set(names)) != len(names):
            raise ValueError(f"covariates: duplicate names in {names}")
        if not names:
            raise ValueError("covariates: need at least one covariate")
        self.covariates = tuple(covariates)

    @property
    def names(self) -> list[str]:
        """The covariate names, in order."""
        return [c.name for c in self.covariates]

    @property
    def width(self) -> int:
        """Channels of the conditioning vector: the sum of the covariates' widths."""
        return sum(c.width for c in self.covariates)

    @property
    def fitted(self) -> bool:
        """Whether every covariate is fitted (see :attr:`Covariate.fitted`)."""
        return all(c.fitted for c in self.covariates)

    def __getitem__(self, name: str) -> Covariate:
        for covariate in self.covariates:
            if covariate.name == name:
                return covariate
        raise KeyError(f"unknown covariate {name!r}; known: {self.names}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CovariateSchema) and self.covariates == other.covariates

    def __repr__(self) -> str:
        return f"CovariateSchema({list(self.covariates)!r})"

    def fit(self, table: pd.DataFrame) -> CovariateSchema:
        """Return a copy whose continuous covariates are scaled to [0, 1] over ``table``'s values: ``low`` and
        ``high`` the minimum and maximum of each column, missing values ignored (min-max scaling as Pinaya
        et al. 2022). Raises ``ValueError`` for a missing column, a column with no values, or invalid values."""
        fitted = []
        for c in self.covariates:
            if c.name not in table.columns:
                raise ValueError(f"table: no column {c.name!r} to fit covariate {c.name!r}; columns: {list(table.columns)}")
            if c.kind == CONTINUOUS:
                values = c.parse(table[c.name])
                values = values[~np.isnan(values)]
                if values.size == 0:
                    raise ValueError(f"table: column {c.name!r} has no values to fit")
                c = replace(c, low=float(values.min()), high=float(values.max()))
            fitted.append(c)
        return CovariateSchema(fitted)

    def _columns(self, covariates: pd.DataFrame | Mapping[str, Any]) -> dict[str, list[Any]]:
        if isinstance(covariates, pd.DataFrame):
            columns = {k: covariates[k].tolist() for k in covariates.columns}
        else:
            columns = {k: list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series)) else [v] for k, v in covariates.items()}
        unknown = sorted(set(columns) - set(self.names))
        missing = sorted(set(self.names) - set(columns))
        if unknown or missing:
            raise ValueError(f"covariates: unknown {unknown}, missing {missing}; expected exactly {self.names}")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"covariates: columns have different lengths {sorted(lengths)}")
        return columns

    def normalize(self, covariates: pd.DataFrame | Mapping[str, Any], extrapolate: bool = False) -> np.ndarray:
        """Physical covariates (a table, or a mapping of name to scalar or list; exactly the schema's names,
        all of one length N) → (N, width) float32, as :meth:`Covariate.normalize`. Raises ``ValueError`` for
        unknown or missing names, columns of different lengths, or what :meth:`Covariate.normalize` refuses."""
        columns = self._columns(covariates)
        return np.concatenate([c.normalize(columns[c.name], extrapolate) for c in self.covariates], axis=1)

    def denormalize(self, x: np.ndarray) -> pd.DataFrame:
        """(N, width) conditioning vectors → a table of N rows of physical values, one column per covariate
        (see :meth:`Covariate.denormalize`). Raises ``ValueError`` for another shape."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"x: shape {x.shape}; expected (N, {self.width})")
        out, start = {}, 0
        for c in self.covariates:
            out[c.name] = c.denormalize(x[:, start : start + c.width])
            start += c.width
        return pd.DataFrame(out)

    def to_dict(self) -> dict[str, Any]:
        """``{"covariates": [each covariate's fields]}``, JSON-ready."""
        return {"covariates": [{**asdict(c), "categories": list(c.categories)} for c in self.covariates]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CovariateSchema:
        """The schema that :meth:`to_dict` wrote. Raises ``ValueError`` for keys other than ``covariates``,
        unknown covariate fields, or invalid covariates."""
        if set(data) != {"covariates"}:
            raise ValueError(f"covariate schema: keys {sorted(data)}; expected exactly ['covariates']")
        items = [{**item, "categories": tuple(item.get("categories", ()))} for item in data["covariates"]]
        return cls([_io.dataclass_from_dict(Covariate, item, f"covariate schema: {item.get('name')!r}") for item in items])

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically)."""
        _io.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CovariateSchema:
        """The schema saved at ``path`` by :meth:`save`. Raises ``ValueError`` as :meth:`from_dict` (and for
        a missing or invalid JSON file, :func:`synthbrain._io.read_json`)."""
        return cls.from_dict(_io.read_json(path, "a covariate schema written by CovariateSchema.save"))


def default_schema() -> CovariateSchema:
    """The reference model's four covariates, in its order, unfitted: sex (F/M), age (years), ventricular
    volume (mL) and brain volume (mL)."""
    return CovariateSchema(
        [
            Covariate("sex", "", CATEGORICAL, categories=("F", "M"), description="biological sex; F=0, M=1"),
            Covariate("age", "years", CONTINUOUS, description="age at scan"),
            Covariate("ventricular_volume", "mL", CONTINUOUS, description="lateral, inferior lateral, 3rd and 4th ventricles"),
            Covariate("brain_volume", "mL", CONTINUOUS, description="total brain tissue, CSF excluded"),
        ]
    )


def is_missing(value: Any) -> bool:
    """None, NaN, pandas NA, or an empty / "n/a" / "na" / "nan" string."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "n/a", "na", "nan")


def _category_index(spellings: Mapping[str, Sequence[str]], value: Any) -> int | None:
    text = str(value).strip().lower()
    for i, names in enumerate(spellings.values()):
        if any(name.lower() == text for name in names):
            return i
    return None


def _levels_text(covariate: Covariate) -> str:
    other = {level: names[1:] for level, names in covariate.spellings.items() if len(names) > 1}
    if not other:
        return f"one of {list(covariate.categories)} (any case)"
    spelled = ", ".join(f"{level} = {'/'.join(names)}" for level, names in other.items())
    return f"one of {list(covariate.categories)}, also spelled {spelled} (any case)"


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
