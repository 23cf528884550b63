"""Splitting a prepared cohort into disjoint parts (for example generator training, downstream
training pool, test), stratified by sex and age, each part itself a prepared cohort folder.

Each part folder holds the parent's manifest, covariate schema and label scheme, its own
``participants.tsv`` rows, and ``subjects/<id>`` as relative symbolic links into the parent, so
every later stage (``synthbrain train``, ``synthbrain evaluate``, the benchmarks) takes a part as
it takes a whole cohort, and nothing is copied. ``split.tsv`` in the output folder lists the part
of every subject; the same cohort, fractions and seed always give the same split.

Subjects without sex or age cannot be stratified, nor used by tasks that predict them; they go to
the first part (the generator's, whose autoencoder can still learn from their images).

A cohort prepared session by session (a ``participant_id`` column beside ``subject_id``, e.g. BIDS
read with ``session="all"``) is split by subject: all sessions of a subject go to the same part, so
no subject is on both sides of a split. Fractions then count subjects, not sessions; a subject's sex
and age for stratifying are those of its first session that has them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from synthbrain import _io
from synthbrain.preprocessing.prepared import PreparedCohort

STRATA = ("sex", "age")
GROUP = "participant_id"


def stratified_parts(table: pd.DataFrame, fractions: dict[str, float], *, seed: int, age_bins: int = 4) -> pd.Series:
    """Part name of each row of ``table`` (a Series on its index): rows with sex and age are split in
    the given fractions, stratified by sex x age quantile bin; the others go to the first part.

    With a ``participant_id`` column (several rows, e.g. sessions, per subject) the subjects are
    split instead, and every row goes to its subject's part.

    ``fractions``: part name → share; the first part also gets the rows without sex or age. Uses
    scikit-learn's ``train_test_split``, deterministic for ``seed``; ages are cut into up to ``age_bins``
    quantile bins (fewer for small cohorts). Raises ``ValueError`` for fewer than two fractions, one
    outside (0, 1), fractions not summing to 1, a missing ``sex`` or ``age`` column, or a part that would
    get fewer than 2 of the subjects with sex and age."""
    if len(fractions) < 2 or any(not 0 < f < 1 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"fractions={fractions}; allowed: two or more parts, each in (0, 1), summing to 1")
    missing = [c for c in STRATA if c not in table.columns]
    if missing:
        raise ValueError(f"table: no column {missing}; allowed: a participants table with {list(STRATA)}")
    if GROUP in table.columns:
        groups = table[GROUP].where(table[GROUP].notna(), table.get("subject_id", pd.Series(table.index, index=table.index)))
        groups = groups.astype(str)
        subjects = table.groupby(groups, sort=False)[list(STRATA)].first()  # first non-missing value of each column
        by_subject = _split_rows(subjects, fractions, seed=seed, age_bins=age_bins)
        return pd.Series(groups.map(by_subject).to_numpy(), index=table.index, dtype=object)
    return _split_rows(table, fractions, seed=seed, age_bins=age_bins)


def _split_rows(table: pd.DataFrame, fractions: dict[str, float], *, seed: int, age_bins: int) -> pd.Series:
    complete = table.dropna(subset=list(STRATA))
    names, shares = list(fractions), np.array(list(fractions.values()))
    counts = np.floor(shares * len(complete)).astype(int)
    counts[np.argsort(-(shares * len(complete) - counts))[: len(complete) - counts.sum()]] += 1  # largest remainders
    if (counts < 2).any():
        sizes = dict(zip(names, counts.tolist()))
        raise ValueError(f"fractions={fractions} of {len(complete)} subjects with sex and age give parts {sizes}; allowed: >= 2 each")
    bins = pd.qcut(complete["age"].rank(method="first"), q=min(age_bins, max(1, len(complete) // (4 * len(names)))), labels=False)
    strata = complete["sex"].astype(str) + ":" + bins.astype(str)
    parts = pd.Series(names[0], index=table.index, dtype=object)
    rest = complete.index.to_numpy()
    for name, count in zip(names[1:], counts[1:]):
        remaining = len(rest) - count
        rest, taken = train_test_split(rest, test_size=int(count), random_state=seed, stratify=strata.loc[rest] if remaining >= 2 else None)
        parts.loc[taken] = name
    return parts


@_io.writes_folder("out")
def split_prepared(prepared: str | Path, out: str | Path, fractions: dict[str, float], *, seed: int = 0) -> dict[str, Path]:
    """Write one prepared-cohort folder per part under ``out`` (``out/<part>``) and ``out/split.tsv``.
    Re-running with the same arguments rewrites the same split; an ``out`` holding another split
    is refused rather than mixed. Returns part name → folder. Each part folder is deleted and written
    again. Raises ``ValueError`` as :func:`stratified_parts` and :meth:`PreparedCohort.load
    <synthbrain.preprocessing.prepared.PreparedCohort.load>` do, and when ``out/split.tsv`` holds another split."""
    cohort = PreparedCohort.load(prepared)
    out = Path(out)
    parts = stratified_parts(cohort.table, fractions, seed=seed)
    listing = pd.DataFrame({"subject_id": cohort.table["subject_id"], "part": parts.to_numpy()})
    if GROUP in cohort.table.columns:  # sessions: say whose they are
        listing.insert(1, GROUP, cohort.table[GROUP].to_numpy())
    split_file = out / "split.tsv"
    if split_file.is_file():
        previous = pd.read_csv(split_file, sep="\t", dtype=str)
        if not previous.equals(listing.astype(str)):
            raise ValueError(f"out={str(out)!r} already holds a different split (split.tsv); choose another folder or delete it")
    folders = {}
    for name in fractions:
        folder = out / name
        if folder.exists():
            if not split_file.is_file():  # only a part this split wrote (split.tsv present) is ever replaced
                raise ValueError(f"out={str(out)!r}: {folder} exists but no split.tsv says this split wrote it; choose another folder")
            shutil.rmtree(folder)
        folders[name] = cohort.write_subset(folder, cohort.table[parts.to_numpy() == name])
    _io.write_table(split_file, listing)
    return folders
