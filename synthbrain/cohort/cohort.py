"""Reading a real cohort: T1 images, optional label maps and a participants table.

Two layouts are read:

* :func:`read_folder`: a folder of NIfTI images (``<subject_id>[_ or .]*.nii[.gz]``), an optional
  folder of label maps named the same way, and a CSV/TSV table with one row per subject.
* :func:`~synthbrain.cohort.bids.read_bids`: a BIDS dataset (``participants.tsv``, ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``,
  label maps as ``derivatives/*/sub-*/[ses-*/]anat/*_dseg.nii[.gz]``); a longitudinal one by one
  chosen session, or with every session as its own sample (ages from ``sub-*_sessions.tsv``).

Every problem is collected before anything is reported, so one run lists all of them. By default a
problem raises :class:`CohortError`; with ``on_error="skip"`` the affected subjects are left out and
listed in :attr:`Cohort.skipped` (write them with :meth:`Cohort.write_skipped`).

Every image and label map header is checked before anything is measured from it: its orientation
must be known and its qform and sform must agree, or the caller says which to trust
(``trust_header``); see :mod:`synthbrain.cohort.geometry`.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from synthbrain import _io
from synthbrain.cohort.covariates import CovariateSchema, default_schema, is_missing
from synthbrain.cohort.geometry import (
    HeaderError,
    HeaderGeometry,
    VoxelError,
    check_trust,
    check_voxel_form,
    load_image,
    read_geometry,
    read_header,
    voxels,
)
from synthbrain.cohort.labels import LabelScheme

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# The image files read, matched in any case (S01.NII.GZ as s01.nii.gz): NIfTI-1 or -2 single files,
# and NIfTI pairs named by their header (.hdr), whose voxels are in the .img of the same name.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr.gz", ".hdr")
_PAIR_PARTNERS = {".hdr": ".img", ".hdr.gz": ".img.gz", ".img": ".hdr", ".img.gz": ".hdr.gz"}
# Image files nibabel reads in other forms: refused by name, never passed over in silence.
OTHER_IMAGE_FORMATS = {
    ".mgz": "a FreeSurfer MGH image",
    ".mgh": "a FreeSurfer MGH image",
    ".mnc": "a MINC image",
    ".par": "a Philips PAR/REC image",
    ".nii.bz2": "a bzip2-compressed NIfTI",
    ".nii.zst": "a zstd-compressed NIfTI",
}
_ALLOWED_FORMS = "allowed: NIfTI-1 or -2 as .nii, .nii.gz or a .hdr/.img pair (any case of suffix)"
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SubjectRecord:
    """One sample: its image, optional label map and covariates in physical units (NaN if missing).

    ``subject_id`` names the sample (and its output folder). In a BIDS cohort ``participant_id`` is
    the subject (``sub-<label>``) and ``session_id`` the session (``ses-<label>``) the image is from;
    with every session its own sample, ``subject_id`` is ``<participant_id>_<session_id>``.
    ``trust_header`` is the header transform the caller chose to trust (None: the qform and sform
    must agree); ``info`` says where values came from (e.g. an age from ``sub-01_sessions.tsv``).
    """

    subject_id: str
    image: Path
    labels: Path | None
    covariates: dict[str, Any]
    participant_id: str | None = None
    session_id: str | None = None
    trust_header: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One reason a subject or file cannot be used: ``subject_id`` (None for a file with no table row),
    ``path`` (None when the problem is with the table row), and ``reason`` in words. ``str()`` gives
    ``subject <id> (<path>): <reason>``."""

    subject_id: str | None
    path: str | None
    reason: str

    def __str__(self) -> str:
        where = " ".join(x for x in (self.subject_id and f"subject {self.subject_id}", self.path and f"({self.path})") if x)
        return f"{where}: {self.reason}" if where else self.reason


class CohortError(ValueError):
    """The cohort has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the cohort (pass on_error='skip' to leave those subjects out):\n{lines}")


@dataclass
class Cohort:
    """The samples read, their covariate schema, what was left out and why, warnings, and how the
    cohort was read (``reading``: layout, session choice, header trust; recorded by ``prepare``)."""

    subjects: list[SubjectRecord]
    schema: CovariateSchema
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reading: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.subjects)

    @property
    def has_sessions(self) -> bool:
        """Whether any sample records a session (then tables keep ``participant_id`` and ``session_id``)."""
        return any(s.session_id is not None for s in self.subjects)

    def table(self) -> pd.DataFrame:
        """One row per sample: id (with participant and session ids when any sample has a session),
        covariates (physical units), image and label paths."""
        rows = []
        for s in self.subjects:
            ids = {"participant_id": s.participant_id or s.subject_id, "session_id": s.session_id} if self.has_sessions else {}
            rows.append({"subject_id": s.subject_id, **ids, **s.covariates, "image": str(s.image), "labels": str(s.labels or "")})
        return pd.DataFrame(rows)

    def write_skipped(self, path: str | Path) -> None:
        """Write :attr:`skipped` as a table with columns ``subject_id``, ``path`` and ``reason`` (TSV for a
        ``.tsv`` suffix, else CSV; empty strings where a problem has no subject or path), atomically."""
        table = pd.DataFrame(
            [{"subject_id": p.subject_id or "", "path": p.path or "", "reason": p.reason} for p in self.skipped],
            columns=["subject_id", "path", "reason"],
        )
        _io.write_table(path, table)


def read_folder(
    images: str | Path,
    table: str | Path,
    *,
    labels: str | Path | None = None,
    id_column: str = "subject_id",
    columns: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    schema: CovariateSchema | None = None,
    label_scheme: LabelScheme | str | None = "muse-coarse",
    on_error: str = "raise",
    check_images: bool = True,
    trust_header: str | None = None,
) -> Cohort:
    """Read a cohort from a folder of images (and label maps) plus a participants table.

    Args:
        images: folder of ``<subject_id>*.nii[.gz]`` T1 images; a file belongs to the longest subject
            id that its name equals or starts with, followed by ``_`` or ``.``.
        table: CSV or TSV (by suffix) with one row per subject.
        labels: optional folder of label maps named like the images.
        id_column: the table column with subject ids.
        columns: schema covariate name → table column, where they differ (e.g.
            ``{"ventricular_volume": "ventricles"}``).
        units: covariate name → unit of its table column, where it differs from the schema's
            (e.g. ``{"ventricular_volume": "mm3"}``).
        schema: covariates to read; default: sex, age, ventricular and brain volume. Categorical
            values are matched case-insensitively, with the spellings of
            :data:`synthbrain.cohort.covariates.LEVEL_SPELLINGS` (sex ``female``/``male``).
        label_scheme: scheme whose ``volumes`` measure covariates missing from the table and whose
            classes every label must belong to; ``None`` disables both.
        on_error: ``"raise"`` (default) or ``"skip"`` subjects with problems.
        check_images: read every file in full to check its voxels (required to measure volumes from
            labels). The headers' orientation is checked either way.
        trust_header: which voxel-to-world transform of the NIfTI headers to use when a file's
            qform and sform disagree: ``"sform"`` or ``"qform"``; None (default) makes a
            disagreement a problem. See :mod:`synthbrain.cohort.geometry` for every check.

    Returns:
        a :class:`Cohort`. Raises :class:`CohortError` listing every problem (``on_error="raise"``),
        ``ValueError`` naming the argument for a bad argument.
    """
    check_trust(trust_header)
    images, table = Path(images), Path(table)
    _check_dir("images", images)
    if labels is not None:
        _check_dir("labels", Path(labels))
    frame = _read_table(table, id_column)
    ids = frame[id_column].tolist()
    image_paths, refused = _image_folder(images)
    label_paths, refused_labels = _image_folder(Path(labels)) if labels is not None else ([], [])
    image_matches, image_orphans = _match_by_prefix(image_paths, ids)
    label_matches, label_orphans = _match_by_prefix(label_paths, ids)
    found = _Found(image_matches, image_orphans, label_matches, label_orphans, labels is not None, _belongs_by_prefix)
    found.refused = refused + refused_labels
    cohort = _assemble(frame, id_column, found, columns, units, schema, label_scheme, on_error, check_images, trust_header)
    cohort.reading = {"layout": "folder", "images": str(images), "table": str(table), "trust_header": trust_header}
    return cohort


# --------------------------------------------------------------------------------------------------


@dataclass
class _Found:
    """Files matched to table ids, and what the matching learned about them."""

    images: dict[str, list[Path]]
    image_orphans: list[Path]
    labels: dict[str, list[Path]]
    label_orphans: list[Path]
    expect_labels: bool
    belongs: Callable[[Path, str], bool]  # would this file match this id (for hints on near misses)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> participant_id, session_id, info
    bad: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # problems found while matching
    hints: dict[str, str] = field(default_factory=dict)  # id -> more words for "no image file"
    duplicate_hints: dict[str, str] = field(default_factory=dict)  # id -> more words for "N image files match"
    label_hints: dict[str, str] = field(default_factory=dict)  # id -> more words for "N label maps match"
    warnings: list[str] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)  # image files in a form that is not read, and why


def _assemble(
    frame: pd.DataFrame,
    id_column: str,
    found: _Found,
    columns,
    units,
    schema,
    label_scheme,
    on_error,
    check_images,
    trust_header,
) -> Cohort:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; allowed: {list(ON_ERROR)}")
    schema = schema or default_schema()
    if isinstance(label_scheme, str):
        label_scheme = LabelScheme.load(label_scheme)
    columns, units = dict(columns or {}), dict(units or {})
    _check_mapping("columns", columns, schema.names)
    _check_mapping("units", units, schema.names)
    expect_labels = found.expect_labels

    measurable = set(label_scheme.volumes) if label_scheme is not None else set()
    for name in schema.names:
        column = columns.get(name, name)
        if column in frame.columns:
            continue
        if name in measurable and expect_labels and check_images:
            continue
        hint = " or give label maps and a label scheme to measure it" if name in measurable else ""
        shown = [c for c in frame.columns if c != _SAMPLE_ID]
        raise ValueError(
            f"table: no column {column!r} for covariate {name!r}; columns: {shown}; map one with columns={{{name!r}: ...}}{hint}"
        )

    ids = frame[id_column].tolist()
    problems: list[Problem] = []
    problems += [Problem(None, str(p), "image has no row in the table" + _orphan_hint(p, ids, found.belongs)) for p in found.image_orphans]
    problems += [
        Problem(None, str(p), "label map has no row in the table" + _orphan_hint(p, ids, found.belongs)) for p in found.label_orphans
    ]
    warnings: list[str] = list(found.warnings)
    bad: dict[str, list[str]] = defaultdict(list)
    for sid, reasons in found.bad.items():
        bad[sid].extend(reasons)
    by_length = sorted(set(ids), key=len, reverse=True)
    for path, reason in found.refused:  # a file of a subject makes the subject bad: which of its files was meant is unknown
        owner = next((sid for sid in by_length if found.belongs(path, sid)), None)
        if owner is None:
            problems.append(Problem(None, str(path), reason))
        else:
            bad[owner].append(f"{path.name}: {reason}")

    for sid in frame[id_column]:
        if not _SAFE_ID.match(sid):
            bad[sid].append("subject id may only hold letters, digits, '.', '_' and '-' (it names output folders)")
    counts = frame[id_column].value_counts()
    for sid in counts.index[counts > 1]:
        bad[sid].append(f"subject id appears in {counts[sid]} table rows")
    by_case: dict[str, list[str]] = defaultdict(list)
    for sid in dict.fromkeys(frame[id_column]):
        by_case[sid.lower()].append(sid)
    for same in (group for group in by_case.values() if len(group) > 1):
        for sid in same:
            bad[sid].append(
                f"subject id differs only in case from {[other for other in same if other != sid]}: their output folders would be "
                "one folder on a case-insensitive file system (macOS, Windows), and BIDS forbids such ids; rename one of them"
            )

    covariates: dict[str, dict[str, Any]] = defaultdict(dict)
    for c in schema.covariates:
        column = columns.get(c.name, c.name)
        if column not in frame.columns:
            continue
        for sid, raw in zip(frame[id_column], frame[column]):
            try:
                value = c.parse([raw])[0]
                if c.kind == "continuous" and c.name in units:
                    value = float(c.convert(np.asarray([value]), units[c.name])[0])
                covariates[sid][c.name] = c.categories[int(value)] if c.kind == "categorical" and not np.isnan(value) else value
            except ValueError as err:
                bad[sid].append(f"column {column!r}: {err}")

    pairs = []
    for sid in frame[id_column]:
        image_files = found.images.get(sid, [])
        if not image_files:
            near = _near_miss(sid, found.image_orphans, found.belongs)
            bad[sid].append(f"no image file for this table row{near}{found.hints.get(sid, '')}")
        elif len(image_files) > 1:
            names = [p.name for p in image_files]
            bad[sid].append(f"{len(image_files)} image files match this id: {names}{found.duplicate_hints.get(sid, '')}")
        lab = found.labels.get(sid, [])
        if len(lab) > 1:
            bad[sid].append(f"{len(lab)} label maps match this id: {[p.name for p in lab]}{found.label_hints.get(sid, '')}")
        elif not lab and expect_labels:
            warnings.append(f"subject {sid}: no label map; it is prepared without labels")
        if len(image_files) == 1 and len(lab) <= 1:
            pairs.append((sid, image_files[0], lab[0] if lab else None))

    def check(pair):
        if check_images:
            return pair[0], _check_files(pair[1], pair[2], label_scheme, trust_header)
        reasons: list[str] = []
        notes: list[str] = []
        for path, what in ((pair[1], "image"), (pair[2], "label map")):
            if path is not None and _geometry(path, what, trust_header, reasons, notes) is not None:  # headers only: cheap
                try:
                    check_voxel_form(read_header(path), path)  # what prepare will read, from the header
                except VoxelError as err:
                    reasons.append(f"{what} {err}")
        return pair[0], (reasons, {}, notes)

    if pairs:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for sid, (reasons, volumes, notes) in pool.map(check, pairs):
                bad[sid].extend(reasons)
                warnings.extend(f"subject {sid}: {note}" for note in notes)
                for name, value in volumes.items():
                    covariates[sid].setdefault(name, value)

    subjects = []
    for sid, image, lab in pairs:
        if bad.get(sid):
            continue
        values = {name: covariates[sid].get(name, np.nan) for name in schema.names}
        values.update({k: v for k, v in covariates[sid].items() if k not in values})
        missing = [name for name in schema.names if is_missing(values[name])]
        if missing:
            warnings.append(f"subject {sid}: missing {missing}")
        meta = found.meta.get(sid, {})
        subjects.append(
            SubjectRecord(
                sid,
                image,
                lab,
                values,
                participant_id=meta.get("participant_id"),
                session_id=meta.get("session_id"),
                trust_header=trust_header,
                info=meta.get("info", {}),
            )
        )

    for sid in dict.fromkeys(frame[id_column]):
        for reason in dict.fromkeys(bad.get(sid, [])):
            problems.append(Problem(sid, None, reason))
    if problems and on_error == "raise":
        raise CohortError(problems)
    return Cohort(subjects=subjects, schema=schema, skipped=problems, warnings=warnings)


def _check_files(
    image: Path, labels: Path | None, scheme: LabelScheme | None, trust: str | None
) -> tuple[list[str], dict[str, float], list[str]]:
    """Problems with an image and its label map, the volumes measured from the label map (mL), and
    notes on the header transforms chosen."""
    reasons: list[str] = []
    notes: list[str] = []
    img_geometry = _geometry(image, "image", trust, reasons, notes)
    if img_geometry is None:
        return reasons, {}, notes
    img, data = _load_checked(image, "image", reasons)
    if labels is None or img is None:
        return reasons, {}, notes
    lab_geometry = _geometry(labels, "label map", trust, reasons, notes)
    if lab_geometry is None:
        return reasons, {}, notes
    lab, lab_data = _load_checked(labels, "label map", reasons)
    if lab is None:
        return reasons, {}, notes
    if lab_data.shape != data.shape:
        reasons.append(f"label map grid {lab_data.shape} differs from its image grid {data.shape}: {labels.name}")
        return reasons, {}, notes
    difference = float(np.abs(lab_geometry.affine - img_geometry.affine).max())
    if not difference <= 1e-3:
        reasons.append(
            f"label map grid: its voxel-to-world affine ({lab_geometry.source}) {_rows(lab_geometry.affine)} differs from its image's "
            f"({img_geometry.source}) {_rows(img_geometry.affine)} by up to {difference:.3g} (more than 1e-3 mm): {labels.name}"
        )
        return reasons, {}, notes
    if not np.array_equal(lab_data, np.round(lab_data)) or lab_data.min() < 0:
        reasons.append(f"label map has non-integer or negative values: {labels.name}")
        return reasons, {}, notes
    lab_data = lab_data.astype(np.int64)
    if scheme is None:
        return reasons, {}, notes
    try:
        scheme.remap(lab_data)
    except ValueError as err:
        reasons.append(f"{labels.name}: {err}")
        return reasons, {}, notes
    return reasons, scheme.measure_volumes(lab_data, img_geometry.voxel_volume_mm3), notes


def _geometry(path: Path, what: str, trust: str | None, reasons: list[str], notes: list[str]) -> HeaderGeometry | None:
    """The checked header transform of ``path``; its problems go to ``reasons``, its notes to ``notes``."""
    try:
        geometry = read_geometry(path, trust)
    except HeaderError as err:
        reasons.append(f"{what} header gives no trustworthy orientation: {err}")
        return None
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, zlib.error) as err:
        reasons.append(f"{what} is unreadable or truncated: {path.name} ({type(err).__name__}: {err})")
        return None
    notes.extend(f"{what} {path.name}: {note}" for note in geometry.notes)
    return geometry


def _rows(matrix: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in np.asarray(matrix)[:3]) + "]"


def _load_checked(path: Path, what: str, reasons: list[str]):
    try:
        img = load_image(path)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, zlib.error) as err:
        reasons.append(f"{what} is unreadable or truncated: {path.name} ({type(err).__name__}: {err})")
        return None, None
    try:
        data = voxels(img, path)  # what prepare reads (load_oriented), so what passes here passes there
    except VoxelError as err:
        reasons.append(f"{what} {err}")
        return None, None
    except (EOFError, OSError, ValueError, zlib.error) as err:
        reasons.append(f"{what} is unreadable or truncated: {path.name} ({type(err).__name__}: {err})")
        return None, None
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            reasons.append(f"{what} has {n_bad} NaN/Inf voxels: {path.name}")
            return None, None
    return img, data


# --------------------------------------------------------------------------------------------------
# Ids that almost match: a participant_id without (or with an extra) "sub-" prefix.


def _id_alternatives(sid: str) -> list[str]:
    return [sid[4:]] if sid.startswith("sub-") and len(sid) > 4 else ["sub-" + sid]


def _near_miss(sid: str, orphans: list[Path], belongs: Callable[[Path, str], bool]) -> str:
    """'; <file> would match the id <alt>' for an unmatched file that the id written otherwise matches."""
    for alt in _id_alternatives(sid):
        files = [p.name for p in orphans if belongs(p, alt)]
        if files:
            return f"; {files[0]} would match the id {alt!r} (this row has {sid!r})"
    return ""


def _orphan_hint(path: Path, ids: list[str], belongs: Callable[[Path, str], bool]) -> str:
    for sid in dict.fromkeys(ids):
        for alt in _id_alternatives(sid):
            if belongs(path, alt):
                return f"; it would match the row {sid!r} written {alt!r}"
    return ""


# --------------------------------------------------------------------------------------------------
# BIDS: subjects and sessions.

_SAMPLE_ID = "_sample_id"  # the id column of the per-sample table built from participants.tsv


def _read_table(path: Path, id_column: str) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"table={str(path)!r}: no such file")
    sep = "\t" if path.suffix == ".tsv" else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if id_column not in frame.columns:
        raise ValueError(f"id_column={id_column!r}: not a column of {path.name}; columns: {list(frame.columns)}")
    frame[id_column] = frame[id_column].str.strip()
    if (frame[id_column] == "").any():
        rows = (frame.index[frame[id_column] == ""] + 2).tolist()
        raise ValueError(f"table {path.name}: empty subject id on line(s) {rows}")
    return frame


def image_suffix(name: str) -> str | None:
    """The image suffix of a file name, lower case (``.nii.gz`` for ``S01.NII.GZ``), among
    :data:`IMAGE_SUFFIXES`, the ``.img`` of a pair and :data:`OTHER_IMAGE_FORMATS`; None for other files."""
    lower = name.lower()
    known = sorted({*IMAGE_SUFFIXES, *_PAIR_PARTNERS, *OTHER_IMAGE_FORMATS}, key=len, reverse=True)
    return next((suffix for suffix in known if lower.endswith(suffix) and len(lower) > len(suffix)), None)


def image_files(files) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Sort ``files`` into the image files to read (:data:`IMAGE_SUFFIXES`, any case; a pair by its
    ``.hdr``) and those refused with a reason: a pair's half without the other half, and image files
    in other formats (:data:`OTHER_IMAGE_FORMATS`). Hidden files and other files are left out."""
    files = sorted(p for p in files if not p.name.startswith("."))
    present = {(p.parent, p.name.lower()) for p in files}
    images, refused = [], []
    for path in files:
        suffix = image_suffix(path.name)
        if suffix is None:
            continue
        stem = path.name[: -len(suffix)].lower()
        partner = _PAIR_PARTNERS.get(suffix)
        if partner is not None and (path.parent, stem + partner) not in present:
            half = "its header" if partner.startswith(".hdr") else "its voxels"
            refused.append((path, f"a NIfTI pair without {half} ({path.name[: -len(suffix)]}{partner} is missing); {_ALLOWED_FORMS}"))
        elif suffix in IMAGE_SUFFIXES:
            images.append(path)
        elif suffix in OTHER_IMAGE_FORMATS:
            refused.append((path, f"{OTHER_IMAGE_FORMATS[suffix]}; {_ALLOWED_FORMS}; convert it to NIfTI"))
    return images, refused


def _image_folder(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    return image_files(p for p in folder.iterdir() if p.is_file())


def _stem(path: Path) -> str:
    suffix = image_suffix(path.name)
    return path.name[: -len(suffix)] if suffix else path.name


def _belongs_by_prefix(path: Path, sid: str) -> bool:
    stem = _stem(path)
    return stem == sid or stem.startswith(sid + "_") or stem.startswith(sid + ".")


def _match_by_prefix(files: list[Path], ids: list[str]) -> tuple[dict[str, list[Path]], list[Path]]:
    known = sorted(set(ids), key=len, reverse=True)
    matches: dict[str, list[Path]] = defaultdict(list)
    orphans = []
    for path in files:
        owner = next((sid for sid in known if _belongs_by_prefix(path, sid)), None)
        if owner is None:
            orphans.append(path)
        else:
            matches[owner].append(path)
    return matches, orphans


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_dir(name: str, path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"{name}={str(path)!r}: no such folder")


def _check_mapping(name: str, mapping: dict[str, str], allowed: list[str]) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown covariates {unknown}; allowed: {allowed}")
