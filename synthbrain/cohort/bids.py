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
from typing import Any

import pandas as pd

from synthbrain.cohort.cohort import _SAMPLE_ID, Cohort, _assemble, _check_dir, _Found, _read_table, _stem, image_files
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
    bids_filter: Mapping[str, Mapping[str, Any]] | None = None,
) -> Cohort:
    """Read a BIDS dataset: ``participants.tsv``, ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and label maps
    ``derivatives/<derivatives or any>/sub-*/[ses-*/]anat/*_<label_suffix>.nii[.gz]``.

    Subject ids are the ``participant_id`` values, ``sub-<label>`` (BIDS specification, "Modality
    agnostic files: participants file"); an id written without (or with an extra) ``sub-`` prefix is
    a problem whose message names the file it would have matched. The ``sex`` column may use the
    levels the specification recommends (``male``/``female``, ``m``/``f``, any case).

    Image files are NIfTI in any form :func:`~synthbrain.cohort.cohort.read_folder` reads (any case of
    suffix, ``.hdr``/``.img`` pairs); a ``_T1w`` or label file in another format is a problem naming it.

    Several T1w images per subject and session (``T1w`` and ``rec-norm_T1w``, two runs, two
    acquisitions) are chosen between with ``bids_filter``, as fMRIPrep's ``--bids-filter-file``:
    ``{"t1w": {"rec": "norm", "run": 1}}`` keeps the T1w images whose entities have those values
    (:func:`check_bids_filter`: the entities ``acq``, ``ce``, ``rec``, ``run``, ``echo``, ``part``,
    ``chunk``, ``inv``, ``mt`` or pybids' long names such as ``reconstruction``; a value, a list of
    values any of which matches, or None for "without this entity"; ``run``/``echo``/``chunk``/``inv``
    compare as numbers, so 1 matches ``run-01``), and ``{"<label_suffix>": {...}}`` likewise the
    label maps. A subject left with more than one T1w image is a problem whose message lists them,
    the entities in which they differ and the filter that would choose one; one left with none,
    a problem listing its T1w images. The choice is recorded per sample in ``SubjectRecord.info``
    (``"t1w"``: the file, its entities and the candidates; ``prepare`` writes it to each subject's
    record) and the filter in ``Cohort.reading``. When several label maps match a sample, those
    whose entities contradict the chosen image's are left out and the ones sharing most of its
    entities kept (``sub-01_run-2_dseg`` for ``sub-01_run-2_T1w``).

    Sessions (``ses-<label>``, BIDS "Sessions file"): with ``session=None`` (default) a subject must
    have one T1w image left after ``bids_filter``; images in several sessions are a problem whose
    message says how to choose.
    ``session="<label>"`` (``"1"`` or ``"ses-1"``) reads that session of every subject (a subject
    without it is a problem), ``subject_id`` staying ``sub-<label>``. ``session="all"`` takes every
    session of every subject as its own sample, ``subject_id`` ``sub-<label>_ses-<label>``. Either
    way each sample keeps ``participant_id`` and ``session_id``, and a covariate column of
    ``sub-<label>/sub-<label>_sessions.tsv`` (``session_id`` column required; e.g. ``age``) gives
    the value at that session over ``participants.tsv`` (recorded in ``SubjectRecord.info``); a
    subject with several sessions whose sessions file lacks a value takes the ``participants.tsv``
    one, and a warning says so. Label maps are matched by subject and session. Other arguments as
    in :func:`read_folder`; ``session`` that is not None, ``"all"`` or a BIDS label, or a
    ``bids_filter`` that :func:`check_bids_filter` refuses, is a ``ValueError`` naming it.
    """
    check_trust(trust_header)
    session = _check_session(session)
    filters = check_bids_filter(bids_filter, label_suffix)
    root = Path(root)
    _check_dir("root", root)
    frame = _read_table(root / "participants.tsv", "participant_id")
    ids = frame["participant_id"].tolist()
    images, refused = image_files(p for p in root.glob("sub-*/**/anat/*") if p.is_file() and _stem(p).endswith("_T1w"))
    deriv_root = root / "derivatives"
    label_files: list[Path] = []
    if deriv_root.is_dir():
        found_labels = deriv_root.glob(f"{derivatives or '*'}/sub-*/**/anat/*")
        label_files, refused_labels = image_files(p for p in found_labels if p.is_file() and _stem(p).endswith(f"_{label_suffix}"))
        refused += refused_labels
    if derivatives is not None and not (deriv_root / derivatives).is_dir():
        raise ValueError(f"derivatives={derivatives!r}: no folder {deriv_root / derivatives}")
    frame, id_column, found = _bids_samples(
        root, frame, images, label_files, session, columns or {}, schema or default_schema(), filters, label_suffix
    )
    found.refused = refused
    for sid in set(ids):
        if not sid.startswith("sub-"):
            found.hints[sid] = found.hints.get(sid, "") + "; BIDS participant_id values are sub-<label>"
    cohort = _assemble(frame, id_column, found, columns, units, schema, label_scheme, on_error, check_images, trust_header)
    cohort.reading = {"layout": "bids", "root": str(root), "session": session, "trust_header": trust_header, "bids_filter": filters}
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


# The entities that tell a subject's T1w images apart (BIDS "Anatomy imaging data"), by short name,
# with pybids' long names (what fMRIPrep's --bids-filter-file uses) as other spellings.
FILTER_ENTITIES = {
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "run": "run",
    "echo": "echo",
    "part": "part",
    "chunk": "chunk",
    "inv": "inversion",
    "mt": "mtransfer",
}
_INDEX_ENTITIES = ("run", "echo", "chunk", "inv")  # BIDS <index>: a number, so run 1 is run-01


def check_bids_filter(bids_filter: Mapping[str, Any] | None, label_suffix: str = "dseg") -> dict[str, dict[str, Any]]:
    """A BIDS filter (fMRIPrep's ``--bids-filter-file`` form, ``{"t1w": {"rec": "norm", "run": 1}}``)
    checked and written with short entity names, JSON-ready. Queries: ``"t1w"`` and ``label_suffix``
    (the label maps); entities: :data:`FILTER_ENTITIES` (short or long names); ``"datatype": "anat"``
    and the query's own ``"suffix"`` are accepted and add nothing. A value is a label (letters and
    digits), a number for ``run``/``echo``/``chunk``/``inv``, None (the entity must be absent) or a
    list of these (any matches). Raises ``ValueError`` naming the query, key and value otherwise
    (``session`` is chosen with ``session=``, not here)."""
    if bids_filter is None:
        return {}
    if not isinstance(bids_filter, Mapping):
        raise ValueError(f"bids_filter={bids_filter!r}; allowed: a mapping such as {{'t1w': {{'rec': 'norm', 'run': 1}}}}")
    queries = {"t1w": "T1w", label_suffix.lower(): label_suffix}
    long_names = {long: short for short, long in FILTER_ENTITIES.items()}
    out: dict[str, dict[str, Any]] = {}
    for query, entities in bids_filter.items():
        if query not in queries:
            raise ValueError(f"bids_filter: query {query!r}; allowed: {sorted(queries)} (the T1w images and the label maps)")
        if not isinstance(entities, Mapping):
            raise ValueError(f"bids_filter[{query!r}]={entities!r}; allowed: a mapping of entity to value, e.g. {{'rec': 'norm'}}")
        checked: dict[str, Any] = {}
        for key, value in entities.items():
            if (key, value) in (("datatype", "anat"), ("suffix", queries[query])):
                continue
            short = key if key in FILTER_ENTITIES else long_names.get(key)
            if short is None:
                hint = "; choose the session with session= (--session)" if key in ("ses", "session") else ""
                allowed = sorted(FILTER_ENTITIES) + sorted(long_names)
                raise ValueError(
                    f"bids_filter[{query!r}]: entity {key!r}; allowed: {allowed}, 'datatype': 'anat', 'suffix': {queries[query]!r}{hint}"
                )
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            checked[short] = [_filter_value(query, key, short, v) for v in values]
            if not isinstance(value, (list, tuple)):
                checked[short] = checked[short][0]
        out[query] = checked
    return out


def _filter_value(query: str, key: str, short: str, value: Any) -> Any:
    if value is None:
        return None
    if short in _INDEX_ENTITIES:
        text = str(value)
        if isinstance(value, bool) or not text.isdigit():
            raise ValueError(f"bids_filter[{query!r}][{key!r}]={value!r}; allowed: a non-negative integer (BIDS index), or None")
        return int(text)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _BIDS_LABEL.match(str(value)):
        raise ValueError(f"bids_filter[{query!r}][{key!r}]={value!r}; allowed: a BIDS label (letters and digits), or None (absent)")
    return str(value)


def file_entities(path: Path) -> dict[str, str]:
    """The ``key-value`` entities of a BIDS file name (``sub-01_rec-norm_T1w.nii.gz`` gives
    ``{"sub": "01", "rec": "norm"}``); the suffix and extension are left out."""
    parts = _stem(path).split("_")[:-1]
    return dict(part.split("-", 1) for part in parts if "-" in part)


def _matches(entities: Mapping[str, str], query: Mapping[str, Any]) -> bool:
    for short, wanted in query.items():
        have = entities.get(short)
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(short, have, option) for option in options):
            return False
    return True


def _same(short: str, have: str | None, wanted: Any) -> bool:
    if wanted is None or have is None:
        return wanted is None and have is None
    if short in _INDEX_ENTITIES:
        return have.isdigit() and str(wanted).isdigit() and int(have) == int(wanted)
    return have == str(wanted)


def _differing(files: list[Path]) -> dict[str, list[str | None]]:
    """The entities in which ``files`` differ (session included), each with its values in file order."""
    entities = [file_entities(p) for p in files]
    keys = sorted({k for e in entities for k in e} - {"sub"})
    return {k: [e.get(k) for e in entities] for k in keys if len({e.get(k) for e in entities}) > 1}


def _choice_hint(files: list[Path], label_suffix_query: str = "t1w") -> str:
    """How to choose one of ``files``: the entities in which they differ and a filter that picks the first."""
    differ = {k: v for k, v in _differing(files).items() if k != "ses"}
    if not differ:
        return ""
    key, values = next(iter(differ.items()))
    example = values[-1] if values[-1] is not None else None
    shown = ", ".join(f"{k} {[v if v is not None else '(none)' for v in vals]}" for k, vals in differ.items())
    flag_value = "" if example is None else example
    return (
        f"; they differ in {shown}: choose with bids_filter={{{label_suffix_query!r}: {{{key!r}: {example!r}}}}} "
        f"(--bids-filter {key}={flag_value}, or --bids-filter-file FILE.json in fMRIPrep's form; "
        f"None / '{key}=' for the one without {key})"
    )


def _closest(image: Path, labels: list[Path]) -> list[Path]:
    """The label maps made from ``image``: none of their :data:`FILTER_ENTITIES` (or session)
    contradicts the image's (a label map without ``run`` fits any run), and of those the ones
    sharing most of them."""
    wanted = file_entities(image)
    scored = []
    for path in labels:
        have = {k: v for k, v in file_entities(path).items() if k in FILTER_ENTITIES or k == "ses"}
        if all(_same(k, v, wanted.get(k)) for k, v in have.items()):
            scored.append((len(have), path))
    best = max((n for n, _ in scored), default=0)
    return [p for n, p in scored if n == best]


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
    filters: Mapping[str, Mapping[str, Any]],
    label_suffix: str,
) -> tuple[pd.DataFrame, str, _Found]:
    """The samples of a BIDS dataset as a table with one row per sample, and their files.

    Each sample's T1w images and label maps are those ``filters`` keeps (see :func:`read_bids`).
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
            candidates = [p for key in keys for p in image_groups.get((pid, key), [])]
            chosen = [p for p in candidates if _matches(file_entities(p), filters.get("t1w", {}))]
            if candidates and not chosen:
                found.hints[sample] = (
                    f"; no T1w image matches bids_filter {{'t1w': {dict(filters['t1w'])}}} (its T1w images: {[p.name for p in candidates]})"
                )
            elif len(chosen) > 1:
                in_sessions = sorted({_bids_entities(p)[1] for p in chosen} - {None})
                hint = (
                    f"; they are in sessions {in_sessions}: pass session='<label>' (--session) to read one session, "
                    "or session='all' to take each session as its own sample"
                    if len(in_sessions) > 1
                    else ""
                )
                found.duplicate_hints[sample] = hint + _choice_hint(chosen)
            found.images[sample] = chosen
            label_keys = keys if session is not None else _sessions_of(label_groups, pid)  # session=None: any session
            label_candidates = [p for key in label_keys for p in label_groups.get((pid, key), [])]
            labels = [p for p in label_candidates if _matches(file_entities(p), filters.get(label_suffix.lower(), {}))]
            if len(chosen) == 1 and len(labels) > 1:
                labels = _closest(chosen[0], labels)
            if len(labels) > 1:
                found.label_hints[sample] = _choice_hint(labels, label_suffix.lower())
            found.labels[sample] = labels
            info: dict[str, Any] = {"covariates_from_sessions_tsv": from_sessions} if from_sessions else {}
            if len(chosen) == 1 and (filters or len(candidates) > 1):  # the choice made among several, or by a filter
                info["t1w"] = {"file": chosen[0].name, "entities": file_entities(chosen[0]), "candidates": [p.name for p in candidates]}
            if len(labels) == 1 and len(label_candidates) > 1:
                info["labels"] = {"file": labels[0].name, "candidates": [p.name for p in label_candidates]}
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
