"""Reading a BIDS dataset into a :class:`~synthbrain.cohort.cohort.Cohort` (:func:`read_bids`).

The files are matched to ``participants.tsv`` by subject and session here; checking, measuring
and reporting problems is shared with :func:`~synthbrain.cohort.cohort.read_folder`
(:mod:`synthbrain.cohort.cohort`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from synthbrain.cohort.cohort import _SAMPLE_ID, NIFTI_SUFFIXES, Cohort, _assemble, _check_dir, _Found, _read_table
from synthbrain.cohort.covariates import CONTINUOUS, CovariateSchema, default_schema, is_missing
from synthbrain.cohort.geometry import check_trust
from synthbrain.cohort.labels import LabelScheme

_BIDS_ENTITIES = re.compile(r"(?:^|_)(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?_")
_BIDS_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def read_bids(
    root: str | Path,
    *,
    derivatives: str | None = None,
    label_suffix: str = "dseg",
    columns: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    schema: CovariateSchema | None = None,
    label_scheme: LabelScheme | str | None = "muse-coarse",
    on_error: str = "raise",
    check_images: bool = True,
    session: str | None = None,
    trust_header: str | None = None,
) -> Cohort:
    """Read a BIDS dataset: ``participants.tsv``, ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and label maps
    ``derivatives/<derivatives or any>/sub-*/[ses-*/]anat/*_<label_suffix>.nii[.gz]``.

    Subject ids are the ``participant_id`` values, ``sub-<label>`` (BIDS specification, "Modality
    agnostic files: participants file"); an id written without (or with an extra) ``sub-`` prefix is
    a problem whose message names the file it would have matched. The ``sex`` column may use the
    levels the specification recommends (``male``/``female``, ``m``/``f``, any case).

    Sessions (``ses-<label>``, BIDS "Sessions file"): with ``session=None`` (default) a subject must
    have one T1w image; several (sessions, runs) are a problem whose message says how to choose.
    ``session="<label>"`` (``"1"`` or ``"ses-1"``) reads that session of every subject (a subject
    without it is a problem), ``subject_id`` staying ``sub-<label>``. ``session="all"`` takes every
    session of every subject as its own sample, ``subject_id`` ``sub-<label>_ses-<label>``. Either
    way each sample keeps ``participant_id`` and ``session_id``, and a covariate column of
    ``sub-<label>/sub-<label>_sessions.tsv`` (``session_id`` column required; e.g. ``age``) gives
    the value at that session over ``participants.tsv`` (recorded in ``SubjectRecord.info``); a
    subject with several sessions whose sessions file lacks a value takes the ``participants.tsv``
    one, and a warning says so. Label maps are matched by subject and session. Other arguments as
    in :func:`read_folder`; ``session`` that is not None, ``"all"`` or a BIDS label is a
    ``ValueError`` naming it.
    """
    check_trust(trust_header)
    session = _check_session(session)
    root = Path(root)
    _check_dir("root", root)
    frame = _read_table(root / "participants.tsv", "participant_id")
    ids = frame["participant_id"].tolist()
    images = [p for p in root.glob("sub-*/**/anat/*_T1w.nii*") if p.name.endswith(NIFTI_SUFFIXES)]
    deriv_root = root / "derivatives"
    pattern = f"{derivatives or '*'}/sub-*/**/anat/*_{label_suffix}.nii*"
    label_files = [p for p in deriv_root.glob(pattern) if p.name.endswith(NIFTI_SUFFIXES)] if deriv_root.is_dir() else []
    if derivatives is not None and not (deriv_root / derivatives).is_dir():
        raise ValueError(f"derivatives={derivatives!r}: no folder {deriv_root / derivatives}")
    frame, id_column, found = _bids_samples(root, frame, images, label_files, session, columns or {}, schema or default_schema())
    for sid in set(ids):
        if not sid.startswith("sub-"):
            found.hints[sid] = found.hints.get(sid, "") + "; BIDS participant_id values are sub-<label>"
    cohort = _assemble(frame, id_column, found, columns, units, schema, label_scheme, on_error, check_images, trust_header)
    cohort.reading = {"layout": "bids", "root": str(root), "session": session, "trust_header": trust_header}
    return cohort


def _check_session(session: str | None) -> str | None:
    if session is None or session == "all":
        return session
    label = session.removeprefix("ses-") if isinstance(session, str) else None
    if label is None or not _BIDS_LABEL.match(label):
        raise ValueError(
            f"session={session!r}; allowed: None (one T1w image per subject), 'all' (each session its own sample) "
            "or a session label such as '1' or 'ses-1' (BIDS ses-<label>: letters and digits)"
        )
    return "ses-" + label


def _bids_entities(path: Path) -> tuple[str, str | None] | None:
    found = _BIDS_ENTITIES.search(path.name)
    return (found.group(1), found.group(2)) if found else None


def _belongs_bids(path: Path, sid: str) -> bool:
    entities = _bids_entities(path)
    return entities is not None and entities[0] == sid


def _group_bids(files: list[Path], known: set[str]) -> tuple[dict[tuple[str, str | None], list[Path]], list[Path]]:
    """Files by (participant_id, session_id) for known participants, and the others."""
    groups: dict[tuple[str, str | None], list[Path]] = defaultdict(list)
    orphans = []
    for path in sorted(files):
        entities = _bids_entities(path)
        if entities is not None and entities[0] in known:
            groups[entities].append(path)
        else:
            orphans.append(path)
    return groups, orphans


def _sessions_of(groups: dict[tuple[str, str | None], list[Path]], sid: str) -> list[str | None]:
    return sorted({ses for (sub, ses) in groups if sub == sid}, key=lambda s: (s is not None, s or ""))


def _bids_samples(
    root: Path,
    frame: pd.DataFrame,
    images: list[Path],
    label_files: list[Path],
    session: str | None,
    columns: Mapping[str, str],
    schema: CovariateSchema,
) -> tuple[pd.DataFrame, str, _Found]:
    """The samples of a BIDS dataset as a table with one row per sample, and their files.

    ``session=None``: one sample per participant, all its T1w images (more than one is a problem);
    a session label: one sample per participant, its images in that session; ``"all"``: one sample
    per participant and session. A sample with a session takes the covariates that the
    participant's ``sub-<label>_sessions.tsv`` gives for that session over those of participants.tsv.
    """
    ids = frame["participant_id"].tolist()
    known = set(ids)
    image_groups, image_orphans = _group_bids(images, known)
    label_groups, label_orphans = _group_bids(label_files, known)
    found = _Found({}, image_orphans, {}, label_orphans, bool(label_files), _belongs_bids)
    covariate_columns = {c.name: columns.get(c.name, c.name) for c in schema.covariates}
    continuous = {c.name for c in schema.covariates if c.kind == CONTINUOUS}
    rows = []
    for _, row in frame.iterrows():
        pid = row["participant_id"]
        sessions = _sessions_of(image_groups, pid)
        named = [s for s in sessions if s is not None]
        if session == "all":
            samples = [(f"{pid}_{ses}" if ses else pid, ses, [ses]) for ses in sessions or [None]]
        elif session is None:
            samples = [(pid, sessions[0] if len(sessions) == 1 else None, sessions)]
            if len(named) > 1:
                found.duplicate_hints[pid] = (
                    f"; they are in sessions {named}: pass session='<label>' (--session) to read one session, "
                    "or session='all' to take each session as its own sample"
                )
        else:
            samples = [(pid, session, [session])]
            if not image_groups.get((pid, session)) and sessions:
                found.hints[pid] = f"; it has no T1w image in session {session!r} (its sessions: {[s or '(none)' for s in sessions]})"
        table, reason = _sessions_table(root, pid) if named else ({}, None)
        for sample, ses, keys in samples:
            values = row.to_dict()
            from_sessions = []
            session_row = table.get(ses, {}) if ses else {}
            for name, column in covariate_columns.items():
                value = session_row.get(column)
                if value is not None and not is_missing(value):
                    values[column] = value
                    from_sessions.append(name)
                elif ses and len(named) > 1 and name in continuous and column in frame.columns and not is_missing(row[column]):
                    found.warnings.append(
                        f"subject {sample}: {name} {row[column]} from participants.tsv is used for session {ses} of {pid}, "
                        f"which has {len(named)} sessions ({pid}_sessions.tsv gives no {column!r} for {ses})"
                    )
            if reason:
                found.bad[sample].append(reason)
            values[_SAMPLE_ID] = sample
            rows.append(values)
            found.images[sample] = [p for key in keys for p in image_groups.get((pid, key), [])]
            label_keys = keys if session is not None else _sessions_of(label_groups, pid)  # session=None: any session
            found.labels[sample] = [p for key in label_keys for p in label_groups.get((pid, key), [])]
            info = {"covariates_from_sessions_tsv": from_sessions} if from_sessions else {}
            found.meta[sample] = {"participant_id": pid, "session_id": ses, "info": info}
    extra = sorted({k for r in rows for k in r} - set(frame.columns))
    samples_table = pd.DataFrame(rows, columns=[*frame.columns, *extra]).fillna("")  # a column only some sessions tables have
    return samples_table, _SAMPLE_ID, found


def _sessions_table(root: Path, pid: str) -> tuple[dict[str, dict[str, str]], str | None]:
    """``sub-<label>/sub-<label>_sessions.tsv`` as {session_id: row}, and a problem with it (or None)."""
    path = root / pid / f"{pid}_sessions.tsv"
    if not path.is_file():
        return {}, None
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return {}, f"{path.name} is unreadable ({type(err).__name__}: {err})"
    if "session_id" not in table.columns:
        return {}, f"{path.name}: no column 'session_id' (BIDS sessions file); columns: {list(table.columns)}"
    table["session_id"] = table["session_id"].str.strip()
    counts = table["session_id"].value_counts()
    if (counts > 1).any():
        return {}, f"{path.name}: session_id {sorted(counts.index[counts > 1])} appears in more than one row"
    return {r["session_id"]: r for r in table.to_dict("records")}, None
