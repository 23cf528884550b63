"""Reading a real cohort: T1 images, optional label maps and a participants table.

Two layouts are read:

* :func:`read_folder`: a folder of NIfTI images (``<subject_id>[_ or .]*.nii[.gz]``), an optional
  folder of label maps named the same way, and a CSV/TSV table with one row per subject.
* :func:`read_bids`: a BIDS dataset (``participants.tsv``, ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]``,
  label maps as ``derivatives/*/sub-*/[ses-*/]anat/*_dseg.nii[.gz]``).

Every problem is collected before anything is reported, so one run lists all of them. By default a
problem raises :class:`CohortError`; with ``on_error="skip"`` the affected subjects are left out and
listed in :attr:`Cohort.skipped` (write them with :meth:`Cohort.write_skipped`).
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from synthbrain import _io
from synthbrain.cohort.covariates import CovariateSchema, default_schema, is_missing
from synthbrain.cohort.labels import LabelScheme

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SubjectRecord:
    """One subject: its image, optional label map and covariates in physical units (NaN if missing)."""

    subject_id: str
    image: Path
    labels: Path | None
    covariates: dict[str, Any]


@dataclass(frozen=True)
class Problem:
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
    subjects: list[SubjectRecord]
    schema: CovariateSchema
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.subjects)

    def table(self) -> pd.DataFrame:
        """One row per subject: id, covariates (physical units), image and label paths."""
        rows = [{"subject_id": s.subject_id, **s.covariates, "image": str(s.image), "labels": str(s.labels or "")} for s in self.subjects]
        return pd.DataFrame(rows)

    def write_skipped(self, path: str | Path) -> None:
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
        schema: covariates to read; default: sex, age, ventricular and brain volume.
        label_scheme: scheme whose ``volumes`` measure covariates missing from the table and whose
            classes every label must belong to; ``None`` disables both.
        on_error: ``"raise"`` (default) or ``"skip"`` subjects with problems.
        check_images: read every file to check it (required to measure volumes from labels).
    """
    images, table = Path(images), Path(table)
    _check_dir("images", images)
    if labels is not None:
        _check_dir("labels", Path(labels))
    frame = _read_table(table, id_column)
    ids = frame[id_column].tolist()
    image_files = _nifti_files(images)
    label_files = _nifti_files(Path(labels)) if labels is not None else []
    image_matches, image_orphans = _match_by_prefix(image_files, ids)
    label_matches, label_orphans = _match_by_prefix(label_files, ids)
    return _assemble(
        frame,
        id_column,
        image_matches,
        image_orphans,
        label_matches,
        label_orphans,
        labels is not None,
        columns,
        units,
        schema,
        label_scheme,
        on_error,
        check_images,
    )


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
) -> Cohort:
    """Read a BIDS dataset: ``participants.tsv``, ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and label maps
    ``derivatives/<derivatives or any>/sub-*/[ses-*/]anat/*_<label_suffix>.nii[.gz]``.

    Subject ids are the ``participant_id`` values (``sub-<label>``). A subject with several T1w
    images (sessions, runs) is a duplicate problem. Other arguments as in :func:`read_folder`.
    """
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
    image_matches, image_orphans = _match_bids(images, ids)
    label_matches, label_orphans = _match_bids(label_files, ids)
    return _assemble(
        frame,
        "participant_id",
        image_matches,
        image_orphans,
        label_matches,
        label_orphans,
        bool(label_files),
        columns,
        units,
        schema,
        label_scheme,
        on_error,
        check_images,
    )


# --------------------------------------------------------------------------------------------------


def _assemble(
    frame,
    id_column,
    image_matches,
    image_orphans,
    label_matches,
    label_orphans,
    expect_labels,
    columns,
    units,
    schema,
    label_scheme,
    on_error,
    check_images,
) -> Cohort:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; allowed: {list(ON_ERROR)}")
    schema = schema or default_schema()
    if isinstance(label_scheme, str):
        label_scheme = LabelScheme.load(label_scheme)
    columns, units = dict(columns or {}), dict(units or {})
    _check_mapping("columns", columns, schema.names)
    _check_mapping("units", units, schema.names)

    measurable = set(label_scheme.volumes) if label_scheme is not None else set()
    to_measure = []
    for name in schema.names:
        column = columns.get(name, name)
        if column in frame.columns:
            continue
        if name in measurable and expect_labels and check_images:
            to_measure.append(name)
            continue
        hint = " or give label maps and a label scheme to measure it" if name in measurable else ""
        raise ValueError(
            f"table: no column {column!r} for covariate {name!r}; columns: {list(frame.columns)}; "
            f"map one with columns={{{name!r}: ...}}{hint}"
        )

    problems: list[Problem] = []
    problems += [Problem(None, str(p), "image has no row in the table") for p in image_orphans]
    problems += [Problem(None, str(p), "label map has no row in the table") for p in label_orphans]
    warnings: list[str] = []
    bad: dict[str, list[str]] = defaultdict(list)

    for sid in frame[id_column]:
        if not _SAFE_ID.match(sid):
            bad[sid].append("subject id may only hold letters, digits, '.', '_' and '-' (it names output folders)")
    counts = frame[id_column].value_counts()
    for sid in counts.index[counts > 1]:
        bad[sid].append(f"subject id appears in {counts[sid]} table rows")

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
        found = image_matches.get(sid, [])
        if not found:
            bad[sid].append("no image file for this table row")
        elif len(found) > 1:
            bad[sid].append(f"{len(found)} image files match this id: {[p.name for p in found]}")
        lab = label_matches.get(sid, [])
        if len(lab) > 1:
            bad[sid].append(f"{len(lab)} label maps match this id: {[p.name for p in lab]}")
        elif not lab and expect_labels:
            warnings.append(f"subject {sid}: no label map; it is prepared without labels")
        if len(found) == 1 and len(lab) <= 1:
            pairs.append((sid, found[0], lab[0] if lab else None))

    if check_images:

        def check(pair):
            return pair[0], _check_files(pair[1], pair[2], label_scheme)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for sid, (reasons, volumes) in pool.map(check, pairs):
                bad[sid].extend(reasons)
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
        subjects.append(SubjectRecord(sid, image, lab, values))

    for sid in frame[id_column]:
        for reason in dict.fromkeys(bad.get(sid, [])):
            problems.append(Problem(sid, None, reason))
    if problems and on_error == "raise":
        raise CohortError(problems)
    return Cohort(subjects=subjects, schema=schema, skipped=problems, warnings=warnings)


def _check_files(image: Path, labels: Path | None, scheme: LabelScheme | None) -> tuple[list[str], dict[str, float]]:
    reasons: list[str] = []
    img, data = _load_checked(image, "image", reasons)
    if labels is None or img is None:
        return reasons, {}
    lab, lab_data = _load_checked(labels, "label map", reasons)
    if lab is None:
        return reasons, {}
    if lab_data.shape != data.shape or not np.allclose(lab.affine, img.affine, atol=1e-3):
        reasons.append(
            f"label map grid {lab_data.shape} differs from its image grid {data.shape} "
            f"(or their affines differ by more than 1e-3 mm): {labels.name}"
        )
        return reasons, {}
    if not np.array_equal(lab_data, np.round(lab_data)) or lab_data.min() < 0:
        reasons.append(f"label map has non-integer or negative values: {labels.name}")
        return reasons, {}
    lab_data = lab_data.astype(np.int64)
    if scheme is None:
        return reasons, {}
    try:
        scheme.remap(lab_data)
    except ValueError as err:
        reasons.append(f"{labels.name}: {err}")
        return reasons, {}
    voxel_mm3 = float(abs(np.linalg.det(img.affine[:3, :3])))
    return reasons, scheme.measure_volumes(lab_data, voxel_mm3)


def _load_checked(path: Path, what: str, reasons: list[str]):
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, zlib.error) as err:
        reasons.append(f"{what} is unreadable or truncated: {path.name} ({type(err).__name__}: {err})")
        return None, None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        reasons.append(f"{what} is not 3D: shape {data.shape} in {path.name}")
        return None, None
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            reasons.append(f"{what} has {n_bad} NaN/Inf voxels: {path.name}")
            return None, None
    return img, data


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


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES))


def _stem(path: Path) -> str:
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _match_by_prefix(files: list[Path], ids: list[str]) -> tuple[dict[str, list[Path]], list[Path]]:
    known = sorted(set(ids), key=len, reverse=True)
    matches: dict[str, list[Path]] = defaultdict(list)
    orphans = []
    for path in files:
        stem = _stem(path)
        owner = next((sid for sid in known if stem == sid or stem.startswith(sid + "_") or stem.startswith(sid + ".")), None)
        if owner is None:
            orphans.append(path)
        else:
            matches[owner].append(path)
    return matches, orphans


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BIDS_SUBJECT = re.compile(r"(?:^|_)(sub-[A-Za-z0-9]+)_")


def _match_bids(files: list[Path], ids: list[str]) -> tuple[dict[str, list[Path]], list[Path]]:
    known = set(ids)
    matches: dict[str, list[Path]] = defaultdict(list)
    orphans = []
    for path in sorted(files):
        found = _BIDS_SUBJECT.search(path.name)
        if found and found.group(1) in known:
            matches[found.group(1)].append(path)
        else:
            orphans.append(path)
    return matches, orphans


def _check_dir(name: str, path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"{name}={str(path)!r}: no such folder")


def _check_mapping(name: str, mapping: dict[str, str], allowed: list[str]) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown covariates {unknown}; allowed: {allowed}")
