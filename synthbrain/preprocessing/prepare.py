"""``synthbrain prepare``: a real cohort → a template-aligned, model-ready cohort folder.

For each subject, in parallel processes: reorient to RAS; register to the MNI template (rigid by
default: it keeps head size, so the volumes used as covariates stay true to the image); resample
the image (linear) and label map (nearest neighbour) onto a fixed grid; skull-strip with the label
map (or the template mask when a subject has none); normalise intensities to [0, 1]; map labels to
coarse classes. Outputs::

    out/
      params.json               what the folder was prepared with (a resumed run must match it)
      manifest.json             provenance, versions, grid, per-subject records, summary metrics
      participants.tsv          covariates in physical units + QC columns, one row per subject
      covariates.json           covariate schema fitted on this cohort
      label_scheme.json         the coarse classes (if any)
      skipped.tsv               subjects left out and why (on_error="skip")
      subjects/<id>/t1.nii.gz, labels.nii.gz, record.json
      qc/montage.png, qc/covariates.png

Each ``record.json`` (and the manifest's ``records``) keeps the header transform each source file
was read with (``header``: sform or qform, codes, axis codes, voxel size, matrix, and why it was
chosen; see :mod:`synthbrain.cohort.geometry`). A cohort read session by session (BIDS) keeps the
subject and the session apart: ``subject_id`` names the sample, ``participant_id`` and
``session_id`` (also columns of ``participants.tsv``) say whose and which session it is, and
``synthbrain split`` keeps every subject's sessions in one part. The manifest's ``reading`` says
how the cohort was read (layout, session choice, header trust).

Every file is written atomically and a subject counts as done only once its ``record.json`` exists,
so an interrupted run resumes where it stopped and never leaves a partial output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synthbrain import __version__, _io, overlap
from synthbrain.cohort.cohort import Cohort, Problem, SubjectRecord
from synthbrain.cohort.geometry import load_oriented
from synthbrain.cohort.labels import LabelScheme
from synthbrain.grid import Grid
from synthbrain.preprocessing import qc
from synthbrain.preprocessing.intensity import robust_normalize
from synthbrain.preprocessing.registration import KINDS, WINSORIZE, register, resample_to_grid
from synthbrain.preprocessing.template import FIELD_OF_VIEW_MM, make_grid, registration_template, template_mask_on_grid

OUTPUT_FILES = ("params.json", "manifest.json", "participants.tsv", "covariates.json", "label_scheme.json", "skipped.tsv")


@dataclass(frozen=True)
class PrepareParams:
    """How a cohort is prepared; a resumed run must use the same.

    ``spacing``: output grid spacing in mm (:func:`~synthbrain.preprocessing.template.make_grid`);
    ``field_of_view_mm``: the grid's minimum extent (x, y, z) in mm; ``registration``: ``"rigid"`` (keeps
    head size) or ``"affine"``; ``skull_strip``: set voxels outside the brain mask to 0; ``percentiles``:
    the intensity percentiles inside the brain mapped to 0 and 1; ``seed``: the registration's metric
    sampling seed; ``registration_spacing``: mm, the template's spacing for registration;
    ``registration_percentiles``: the percentiles of the non-zero voxels that registration clips the
    intensities to (:func:`~synthbrain.preprocessing.registration.registration_intensities`; the
    output keeps the original intensities). Raises ``ValueError`` for an unknown registration, a
    spacing or field of view ``make_grid`` refuses, a registration spacing outside [1, 8] mm, or
    percentiles not ``0 <= low < high <= 100``.
    """

    spacing: float = 2.0
    field_of_view_mm: tuple[float, float, float] = FIELD_OF_VIEW_MM
    registration: str = "rigid"
    skull_strip: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    seed: int = 0
    registration_spacing: float = 2.0  # mm; the template is resampled to it for registration
    registration_percentiles: tuple[float, float] = WINSORIZE

    def __post_init__(self) -> None:
        if self.registration not in KINDS:
            raise ValueError(f"registration={self.registration!r}; allowed: {list(KINDS)}")
        make_grid(self.spacing, self.field_of_view_mm)  # validates spacing and field of view
        if not (isinstance(self.registration_spacing, (int, float)) and 1.0 <= self.registration_spacing <= 8.0):
            raise ValueError(f"registration_spacing={self.registration_spacing!r}; allowed: mm in [1, 8]")
        for name in ("percentiles", "registration_percentiles"):
            lo, hi = getattr(self, name)
            if not (0.0 <= lo < hi <= 100.0):
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: 0 <= low < high <= 100")

    def to_dict(self, scheme: LabelScheme | None) -> dict[str, Any]:
        """The parameters as written to ``params.json``, with the label scheme ``scheme`` (or None) as its JSON form."""
        return {
            "spacing": self.spacing,
            "field_of_view_mm": list(self.field_of_view_mm),
            "registration": self.registration,
            "skull_strip": self.skull_strip,
            "percentiles": list(self.percentiles),
            "seed": self.seed,
            "registration_spacing": self.registration_spacing,
            "registration_percentiles": list(self.registration_percentiles),
            "label_scheme": scheme.to_dict() if scheme is not None else None,
        }


class PrepareError(RuntimeError):
    """Subjects failed to prepare (with ``on_error="raise"``); ``failures`` lists a :class:`Problem` per subject."""

    def __init__(self, failures: list[Problem]):
        self.failures = failures
        lines = "\n".join(f"  - {p}" for p in failures)
        super().__init__(
            f"{len(failures)} subject(s) failed to prepare (finished ones are kept; re-run to resume, or pass on_error='skip'):\n{lines}"
        )


@_io.writes_folder("out")
def prepare_cohort(
    cohort: Cohort,
    out: str | Path,
    params: PrepareParams | None = None,
    *,
    label_scheme: LabelScheme | str | None = "muse-coarse",
    workers: int | None = None,
    overwrite: bool = False,
    on_error: str = "raise",
    progress: bool = True,
) -> Path:
    """Prepare every subject of ``cohort`` into the folder ``out``; resume if it was started before.

    ``workers`` processes run in parallel (default: one per available CPU core). A folder prepared
    with other parameters is refused unless ``overwrite=True``, which deletes its previous outputs.
    One ``prepare`` writes ``out`` at a time (:func:`synthbrain._io.writes_folder`; another is a
    :class:`~synthbrain._io.FolderInUseError`).
    ``label_scheme``: a :class:`LabelScheme`, a built-in name or a JSON path, or None to keep the fine
    labels. Returns ``out``. Raises ``ValueError`` for a bad ``on_error`` or ``workers``, or an ``out``
    that is not empty and not a prepared cohort or was prepared with other parameters;
    :class:`PrepareError` when subjects fail and ``on_error="raise"`` (``"skip"`` lists them in
    ``skipped.tsv``).
    """
    params = params or PrepareParams()
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}; allowed: ['raise', 'skip']")
    if isinstance(label_scheme, str):
        label_scheme = LabelScheme.load(label_scheme)
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers={workers}; allowed: >= 1")
    out = Path(out)
    param_dict = params.to_dict(label_scheme)
    params_hash = hashlib.sha256(json.dumps(param_dict, sort_keys=True).encode()).hexdigest()[:16]
    _clear_or_refuse(out, overwrite)
    _io.claim_folder(
        out,
        "params.json",
        param_dict,
        argument="out",
        what="a cohort prepared with other parameters",
        hint="pass overwrite=True to start again, or choose another folder",
    )
    _io.remove_stale_temporaries(out)
    grid = make_grid(params.spacing, params.field_of_view_mm)

    todo = [s for s in cohort.subjects if _load_record(out, s, params_hash) is None]
    failures: list[Problem] = []
    bar = tqdm(total=len(cohort.subjects), initial=len(cohort.subjects) - len(todo), desc="prepare", unit="subject", disable=not progress)
    jobs = [(s, out, grid, params, label_scheme, params_hash) for s in todo]
    if workers == 1 or len(todo) <= 1:
        for job in jobs:
            failure = _run_one(job)
            failures += [failure] if failure else []
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_one, job) for job in jobs]
            for future in as_completed(futures):
                failure = future.result()
                failures += [failure] if failure else []
                bar.update()
    bar.close()
    if failures and on_error == "raise":
        raise PrepareError(failures)

    records = [r for s in cohort.subjects if (r := _load_record(out, s, params_hash)) is not None]
    _write_summary(out, cohort, records, [*cohort.skipped, *failures], param_dict, params_hash, grid, label_scheme)
    return out


def prepare_subject(record: SubjectRecord, grid: Grid, params: PrepareParams, scheme: LabelScheme | None) -> dict[str, Any]:
    """Preprocess one subject in memory; returns arrays (``image``, ``labels``) and measurements.

    ``image``: float32 ``grid.shape`` in [0, 1]; ``labels``: uint8 coarse classes (int16 fine labels
    when ``scheme`` is None), or None without a label map; ``volumes_on_grid_ml``: the scheme's
    ``coarse_volumes`` in mL, measured on the grid and scaled by the registration's Jacobian
    determinant back to the subject's native size; ``dice_template`` and ``dice_template_size_bound``:
    the brain mask's Dice with the template mask and the most its volume allows (NaN without labels);
    ``brain_outside_fraction``: the fraction of native brain voxels that land outside the grid;
    ``intensity_low``/``intensity_high``: the source intensities mapped to 0 and 1; ``registration``
    and ``header``: how the subject was aligned and read (``registration["flags"]``: the reasons
    :func:`~synthbrain.preprocessing.qc.registration_flags` gives, empty when it looks right).

    Each file is read with the header transform :func:`synthbrain.cohort.geometry.load_oriented`
    checks and chooses (``record.trust_header``); an untrustworthy header raises ``ValueError``.
    """
    img, geometry = load_oriented(record.image, getattr(record, "trust_header", None))
    img = nib.as_closest_canonical(img)
    data = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    fine = None
    header = {"image": geometry.to_dict(), "labels": None}
    if record.labels is not None:
        lab, lab_geometry = load_oriented(record.labels, getattr(record, "trust_header", None))
        header["labels"] = lab_geometry.to_dict()
        lab = nib.as_closest_canonical(lab)
        fine = np.rint(np.asarray(lab.dataobj)).astype(np.int32).reshape(lab.shape[:3])
    native_mask = fine > 0 if fine is not None else None

    moving = data * native_mask if (params.skull_strip and native_mask is not None) else data
    fixed, fixed_affine, fixed_mask = registration_template(params.registration_spacing)
    result = register(
        moving,
        img.affine,
        fixed,
        fixed_affine,
        params.registration,
        params.seed,
        fixed_mask,
        winsorize=params.registration_percentiles,
        name=str(record.image),
    )
    matrix = result.matrix_ras()  # template RAS mm -> subject RAS mm

    image = resample_to_grid(data, img.affine, grid, result.transform, labels=False)
    template_mask = template_mask_on_grid(grid)
    if fine is not None:
        fine_grid = resample_to_grid(fine, img.affine, grid, result.transform, labels=True)
        mask = fine_grid > 0
        mask_source = "labels"
    else:
        fine_grid, mask, mask_source = None, template_mask, "template"
    image, low, high = robust_normalize(image, mask, params.percentiles, zero_outside=params.skull_strip)
    out_labels = None
    measured = {}
    if fine_grid is not None:
        out_labels = scheme.remap(fine_grid) if scheme is not None else fine_grid.astype(np.int16)
        if scheme is not None:
            jacobian = abs(float(np.linalg.det(matrix[:3, :3])))
            measured = scheme.measure_coarse_volumes(out_labels, grid.voxel_volume_mm3 * jacobian)
    has_mask = fine_grid is not None
    dice = overlap.dice(mask, template_mask) if has_mask else float("nan")
    bound = qc.size_bound_dice(float(mask.sum()), float(template_mask.sum())) if has_mask else float("nan")
    flags = qc.registration_flags(matrix, dice, bound)
    return {
        "image": image.astype(np.float32),
        "labels": out_labels,
        "dice_template": dice,
        "dice_template_size_bound": bound,
        "brain_outside_fraction": _outside_fraction(native_mask, img.affine, matrix, grid) if native_mask is not None else float("nan"),
        "mask_source": mask_source,
        "intensity_low": low,
        "intensity_high": high,
        "registration": {
            "kind": result.kind,
            "metric": result.metric,
            "template_to_subject_ras": matrix.tolist(),
            "intensities_clipped_to": list(result.moving_range),
            "flags": flags,
        },
        "volumes_on_grid_ml": measured,
        "header": header,
    }


# --------------------------------------------------------------------------------------------------


def _init_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one process per core already
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _run_one(job) -> Problem | None:
    subject, out, grid, params, scheme, params_hash = job
    start = time.perf_counter()
    try:
        result = prepare_subject(subject, grid, params, scheme)
    except Exception as err:  # reported per subject; the other subjects go on
        return Problem(subject.subject_id, str(subject.image), f"preprocessing failed: {type(err).__name__}: {err}")
    folder = out / "subjects" / subject.subject_id
    _io.save_nifti(folder / "t1.nii.gz", result.pop("image"), grid.affine)
    labels = result.pop("labels")
    if labels is not None:
        _io.save_nifti(folder / "labels.nii.gz", labels, grid.affine)
    record = {
        "subject_id": subject.subject_id,
        "participant_id": subject.participant_id or subject.subject_id,
        "session_id": subject.session_id,
        "params_hash": params_hash,
        "trust_header": subject.trust_header,
        "image": "t1.nii.gz",
        "labels": "labels.nii.gz" if labels is not None else None,
        "source_image": str(subject.image),
        "source_image_sha256": _io.sha256_file(subject.image),
        "source_labels": str(subject.labels) if subject.labels else None,
        "source_labels_sha256": _io.sha256_file(subject.labels) if subject.labels else None,
        "covariates": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in subject.covariates.items()},
        "reading": subject.info,
        **result,
        "seconds": round(time.perf_counter() - start, 3),
    }
    _io.write_json(folder / "record.json", record)  # written last: its presence marks the subject done
    return None


def _load_record(out: Path, subject: SubjectRecord, params_hash: str) -> dict[str, Any] | None:
    """The finished record of ``subject`` in ``out``, or None when it must be (re)done: absent, made
    with other parameters, from other source files (another session, say) or another header trust."""
    folder = out / "subjects" / subject.subject_id
    try:
        record = _io.read_json(folder / "record.json", "the subject is not finished")
    except (OSError, ValueError):
        return None
    files = [record.get("image"), record.get("labels")]
    if record.get("params_hash") != params_hash or not all((folder / f).is_file() for f in files if f):
        return None
    same_sources = _same_source(record.get("source_image"), record.get("source_image_sha256"), subject.image) and _same_source(
        record.get("source_labels"), record.get("source_labels_sha256"), subject.labels
    )
    if not same_sources or record.get("trust_header") != subject.trust_header:
        return None
    return record


def _same_source(recorded: str | None, digest: str | None, path: Path | None) -> bool:
    """Whether a record's source file is ``path``: the same path, or the same content (a moved dataset)."""
    if recorded is None or path is None:
        return recorded is None and path is None
    if Path(recorded).resolve() == Path(path).resolve():
        return True
    return digest is not None and Path(path).is_file() and _io.sha256_file(path) == digest


def _clear_or_refuse(out: Path, overwrite: bool) -> None:
    """Before a non-empty ``out`` is claimed: ``overwrite`` deletes a previous preparation's outputs (and
    only those); without it, a folder that is not a prepared cohort is refused."""
    if out.exists() and any(out.iterdir()):
        if overwrite:
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
            for name in ("subjects", "qc"):
                shutil.rmtree(out / name, ignore_errors=True)
        elif not (out / "params.json").is_file():
            raise ValueError(
                f"out={str(out)!r} exists, is not empty and is not a prepared cohort; choose another folder or pass overwrite=True"
            )


def _write_summary(out, cohort, records, problems, param_dict, params_hash, grid, scheme) -> None:
    rows = []
    sessions = any(r.get("session_id") is not None for r in records)
    for r in records:
        ids = {"participant_id": r.get("participant_id") or r["subject_id"], "session_id": r.get("session_id")} if sessions else {}
        rows.append(
            {
                "subject_id": r["subject_id"],
                **ids,
                **r["covariates"],
                "has_labels": r["labels"] is not None,
                "dice_template": _measure(r["dice_template"]),
                "dice_template_size_bound": _measure(r.get("dice_template_size_bound")),
                "brain_outside_fraction": r["brain_outside_fraction"],
                "seconds": r["seconds"],
            }
        )
    table = pd.DataFrame(rows)
    _io.write_table(out / "participants.tsv", table)
    schema = cohort.schema.fit(table) if len(table) else cohort.schema
    schema.save(out / "covariates.json")
    if scheme is not None:
        _io.write_json(out / "label_scheme.json", scheme.to_dict())
    skipped = pd.DataFrame(
        [{"subject_id": p.subject_id or "", "path": p.path or "", "reason": p.reason} for p in problems],
        columns=["subject_id", "path", "reason"],
    )
    _io.write_table(out / "skipped.tsv", skipped)

    dice = table["dice_template"].dropna() if len(table) else pd.Series(dtype=float)
    alignment = (table["dice_template"] / table["dice_template_size_bound"]).dropna() if len(table) else pd.Series(dtype=float)
    summary = {
        "subjects": len(records),
        "participants": len({r.get("participant_id") or r["subject_id"] for r in records}),
        "skipped": len(problems),
        "dice_template": {
            "median": _stat(dice.median()),
            "min": _stat(dice.min()),
            "worst_subject": table.loc[dice.idxmin(), "subject_id"] if len(dice) else None,
        },
        "dice_over_size_bound": {
            "median": _stat(alignment.median()),
            "min": _stat(alignment.min()),
            "worst_subject": table.loc[alignment.idxmin(), "subject_id"] if len(alignment) else None,
        },
        "registration_flagged": {r["subject_id"]: r["registration"]["flags"] for r in records if r["registration"].get("flags")},
        "brain_outside_fraction_max": _stat(table["brain_outside_fraction"].max()) if len(table) else None,
        "seconds_per_subject_median": _stat(table["seconds"].median()) if len(table) else None,
    }
    manifest = {
        "synthbrain_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": param_dict,
        "params_hash": params_hash,
        "grid": grid.to_dict(),
        "template": "MNI ICBM 2009a symmetric, skull-stripped T1 (bundled; see synthbrain/preprocessing/templates)",
        "summary": summary,
        "reading": cohort.reading,
        "warnings": cohort.warnings,
        "records": records,
    }
    _write_qc(out, table, records, cohort, scheme, grid)
    _io.write_json(out / "manifest.json", manifest)


def _measure(value: float | None) -> float:
    """A record's QC measure as a float: NaN (no label map to measure it with) is stored in strict
    JSON as null and read back as None."""
    return float("nan") if value is None else float(value)


def _write_qc(
    out: Path, table: pd.DataFrame, records: list[dict], cohort: Cohort, scheme: LabelScheme | None, grid: Grid, max_rows: int = 12
) -> None:
    if not records:
        return

    # Worst-aligned subjects first (Dice relative to what their head size allows): those are the ones to look at.
    def alignment(r: dict) -> float:
        return float(np.nan_to_num(_measure(r["dice_template"]) / _measure(r.get("dice_template_size_bound")), nan=-1.0))

    ranked = sorted(records, key=lambda r: (alignment(r), r["subject_id"]))[:max_rows]
    images, labels, titles = [], [], []
    for r in ranked:
        folder = out / "subjects" / r["subject_id"]
        images.append(np.asarray(nib.load(folder / r["image"]).dataobj))
        labels.append(np.asarray(nib.load(folder / r["labels"]).dataobj) if r["labels"] else None)
        dice, bound = _measure(r["dice_template"]), _measure(r.get("dice_template_size_bound"))
        titles.append(
            f"{r['subject_id']}  Dice to template {dice:.3f} (size bound {bound:.3f})"
            if np.isfinite(dice)
            else f"{r['subject_id']}  no label map: template mask"
        )
    qc.montage(
        out / "qc" / "montage.png", images, labels, titles, scheme.num_classes if scheme else None, outline=template_mask_on_grid(grid)
    )
    qc.covariate_plots(out / "qc" / "covariates.png", table, cohort.schema, extra=["intracranial_volume", "dice_template"])


def _outside_fraction(native_mask: np.ndarray, native_affine: np.ndarray, template_to_subject: np.ndarray, grid: Grid) -> float:
    """Fraction of the subject's brain-mask voxels that land outside the output grid."""
    index = np.argwhere(native_mask)
    if not len(index):
        return float("nan")
    to_grid = np.linalg.inv(grid.affine) @ np.linalg.inv(template_to_subject) @ native_affine
    grid_index = nib.affines.apply_affine(to_grid, index)
    inside = np.all((grid_index > -0.5) & (grid_index < np.asarray(grid.shape) - 0.5), axis=1)
    return float(1.0 - inside.mean())


def _stat(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 4)
