"""``reader-study create``: draw real and synthetic volumes and write a blinded study folder.

Every volume, real or synthetic, goes through the same steps (:func:`blind_volume`), so the only
difference left between the classes is the image content:

1. on the same grid (the real cohort averaged onto the synthetic grid, as the model was trained;
   any other mismatch is an error naming both grids);
2. the same brain mask: label > 0 of the volume's own label map (the generator leaves a faint haze
   over the background, real prepared images are exactly 0 there), kept to its largest 26-connected
   component (a generated label map can hold stray labels far from the brain, at the grid's faces
   too, which would otherwise let the haze show there as specks);
3. the same intensity normalisation: the 0.5th and 99.5th percentiles inside the mask mapped to 0
   and 1 (:func:`synthbrain.preprocessing.intensity.robust_normalize`, as ``prepare`` does), then
   quantised to uint8 0-255;
4. written by one function (:func:`synthbrain.reader_study.study.write_case`): byte-identical
   headers, uncompressed, so every case file has the same size.

The cases get random ids (so neither names nor order say anything), the key goes to ``key/``, and
the cue check (:mod:`synthbrain.reader_study.cues`) runs on the finished folder before it is moved
into place; a file-level cue makes creation fail.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np

from synthbrain import __version__, _io
from synthbrain.preprocessing.intensity import robust_normalize
from synthbrain.reader_study import cues
from synthbrain.reader_study.study import (
    FORMAT,
    FORMAT_VERSION,
    KEY_DIR,
    KEY_FILE,
    STUDY_FILE,
    case_path,
    write_case,
)

PERCENTILES = (0.5, 99.5)
INTENSITY = (
    "brain mask (largest 26-connected component of label > 0 of each volume's own label map) applied; intensities inside the mask "
    "mapped from their "
    f"{PERCENTILES[0]}th-{PERCENTILES[1]}th percentiles to 0-1 and saturated; quantised to uint8 0-255; "
    "uncompressed NIfTI-1 with one header for all cases"
)
DEFAULT_TITLE = "Real or synthetic? A reader study of brain MRI"


def brain_mask(labels_positive: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool (X, Y, Z) mask (label > 0); ValueError if empty."""
    from scipy import ndimage

    components, count = ndimage.label(np.asarray(labels_positive, bool), structure=np.ones((3, 3, 3), bool))
    if count == 0:
        raise ValueError("mask is empty: the label map has no brain (label > 0)")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def blind_volume(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The intensity handling every case gets: ``image`` float (X, Y, Z), ``mask`` bool (X, Y, Z)
    (label > 0) -> uint8 (X, Y, Z): 0 outside the mask's largest connected component
    (:func:`brain_mask`), inside it the 0.5th-99.5th percentiles mapped to 0-255 and saturated
    beyond. Raises ValueError for an empty mask or a constant image inside it."""
    brain = brain_mask(mask)
    normalised, _, _ = robust_normalize(np.asarray(image, np.float32), brain, PERCENTILES, zero_outside=True)
    return np.rint(normalised * 255.0).astype(np.uint8)


def describe_grid(shape, affine: np.ndarray) -> str:
    """A grid in words: ``40x56x40 voxels of 4 mm, origin (-78, -127, -73) mm``."""
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    size = f"{spacing[0]:g} mm" if np.allclose(spacing, spacing[0]) else "x".join(f"{s:g}" for s in spacing) + " mm"
    origin = ", ".join(f"{o:g}" for o in np.asarray(affine)[:3, 3])
    return f"{'x'.join(map(str, shape))} voxels of {size}, origin ({origin}) mm"


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=1e-3)


class _Case(NamedTuple):
    """One drawn case before it gets its id: ``truth`` ("real" or "synthetic"), ``source`` (what the
    key records of it) and the blinded uint8 (X, Y, Z) ``volume``."""

    truth: str
    source: dict[str, Any]
    volume: np.ndarray


@dataclass(frozen=True)
class _Request:
    """The arguments of :func:`create_study`, checked; ``sampling`` without its None values."""

    real: str | os.PathLike
    out: Path
    synthetic: str | os.PathLike | None
    model_name: str | None
    n: int
    n_real: int
    n_synthetic: int
    synthetic_fraction: float
    seed: int
    title: str
    sampling: dict[str, Any]

    @property
    def synthetic_name(self) -> str:
        """The synthetic source in words, for errors about grids."""
        return str(self.synthetic) if self.synthetic is not None else f"model {self.model_name!r}"


@dataclass(frozen=True)
class _Draws:
    """What the seed decides besides the cases themselves: each drawn case's random id (in drawing
    order, before the shuffle of :func:`_assign_ids`), the study's id and the seed of the readers' order."""

    case_ids: list[str]
    study_id: str
    order_seed: int


@_io.writes_folder("out")  # checked empty and written by one process: a study is never replaced
def create_study(
    real: str | os.PathLike,
    out: str | os.PathLike,
    *,
    synthetic: str | os.PathLike | None = None,
    generator=None,
    model_name: str | None = None,
    n: int = 40,
    synthetic_fraction: float = 0.5,
    seed: int = 0,
    title: str | None = None,
    sampling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a blinded study folder ``out`` of ``n`` cases, ``n * synthetic_fraction`` of them
    synthetic (rounded half up), and return a summary with the cue check.

    ``real``: a prepared cohort folder (``synthbrain prepare``) with label maps; subjects are drawn
    without replacement. Synthetic volumes come from either ``synthetic``, a folder written by
    :meth:`synthbrain.GeneratedBrains.save` (``sub-*/anat/*_T1w.nii.gz`` with ``*_dseg.nii.gz``),
    drawn without replacement, or ``generator``, a :class:`synthbrain.BrainGenerator` that
    generates them (covariates drawn from its training distribution; ``sampling``: keyword
    arguments of ``generate``, e.g. :meth:`synthbrain.sampling.SamplingSettings.given`;
    ``model_name`` is recorded in the key). All draws (subjects, files, generation seeds, case
    ids, the study id, the readers' order seed) come from ``seed``:
    the same inputs and seed give a byte-identical folder (with a generator on a GPU, up to its
    own non-determinism).

    Raises ValueError for a bad argument (naming it, its value and what is allowed), an ``out``
    that exists and is not empty or that another process is writing
    (:class:`synthbrain._io.FolderInUseError`), too few subjects or files, volumes without label
    maps, real and synthetic volumes that cannot be brought onto the same grid (naming both
    grids), or a file cue found by the check (then nothing is written).
    """
    request = _check_request(real, out, synthetic, generator, model_name, n, synthetic_fraction, seed, title, sampling)
    # The order of the draws from rng is part of the output (the same seed gives the same folder): the synthetic
    # files or the generation seed, the real subjects, the case ids, the study id, the order seed, then the shuffle.
    rng = np.random.default_rng(request.seed)
    if synthetic is not None:
        files = _choose_files(Path(synthetic), request.n_synthetic, rng)
        shape, affine = _header_grid(files[0])
    else:
        generation_seed = int(rng.integers(0, 2**31 - 1))
        shape, affine = tuple(generator.image_grid.shape), generator.image_grid.affine
    cohort = _real_on_grid(Path(real), shape, affine, request.synthetic_name)
    chosen_real = _choose_subjects(cohort, request, rng)
    draws = _draw_ids(rng, request.n)

    cases = _real_cases(cohort, chosen_real, request.real)
    if synthetic is not None:
        cases += _folder_cases(files, synthetic, shape, affine)
    else:
        cases += _generated_cases(generator, request, generation_seed, shape, affine)
    assigned = _assign_ids(cases, draws.case_ids, rng)

    with _io.staged_folder(request.out, argument="out") as staging:
        entries = _write_cases(staging, assigned, affine)
        _io.write_json(staging / STUDY_FILE, _study_manifest(request, draws, shape, affine, entries))
        _io.write_json(staging / KEY_DIR / KEY_FILE, _study_key(request, draws, assigned, entries))
        check = _check_cues(staging, request.out)
    return {
        "out": str(request.out),
        "study_id": draws.study_id,
        "n_real": request.n_real,
        "n_synthetic": request.n_synthetic,
        "grid": describe_grid(shape, affine),
        "cues": check,
    }


def _check_request(real, out, synthetic, generator, model_name, n, synthetic_fraction, seed, title, sampling) -> _Request:
    """:func:`create_study`'s arguments checked and completed (case counts, default title); ValueError naming a bad one."""
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 2):
        raise ValueError(f"n={n!r}; allowed: an integer >= 2 (at least one real and one synthetic case)")
    if not (isinstance(synthetic_fraction, (int, float)) and 0.0 < synthetic_fraction < 1.0):
        raise ValueError(f"synthetic_fraction={synthetic_fraction!r}; allowed: a number strictly between 0 and 1")
    n_synthetic = int(math.floor(n * synthetic_fraction + 0.5))
    n_real = n - n_synthetic
    if not (1 <= n_synthetic <= n - 1):
        raise ValueError(
            f"synthetic_fraction={synthetic_fraction!r} with n={n}: gives {n_synthetic} synthetic and {n_real} real cases; "
            "allowed: a proportion that leaves at least one of each"
        )
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
    if (synthetic is None) == (generator is None):
        raise ValueError("give exactly one source of synthetic volumes: synthetic=<folder> (--synthetic) or generator (--model)")
    title = DEFAULT_TITLE if title is None else str(title).strip()
    if not (1 <= len(title) <= 200) or any(ch in title for ch in "<>"):
        raise ValueError(f"title={title!r}; allowed: 1-200 characters without < or >")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"out={str(out)!r} exists and is not empty; allowed: a new or empty folder (a study is never overwritten)")
    given = {k: v for k, v in (sampling or {}).items() if v is not None}
    return _Request(real, out, synthetic, model_name, n, n_real, n_synthetic, float(synthetic_fraction), seed, title, given)


def _choose_files(folder: Path, needed: int, rng: np.random.Generator) -> list[Path]:
    """``needed`` of the folder's synthetic volumes, drawn without replacement, in the folder's (sorted) order."""
    files = _synthetic_files(folder, needed)
    return [files[i] for i in sorted(rng.choice(len(files), size=needed, replace=False).tolist())]


def _choose_subjects(cohort, request: _Request, rng: np.random.Generator) -> list[int]:
    """The indices of ``n_real`` subjects of the cohort, drawn without replacement, in the cohort's order."""
    if len(cohort) < request.n_real:
        raise ValueError(
            f"real={str(request.real)!r}: {len(cohort)} subjects; allowed: at least n - synthetic = {request.n_real} (lower --n)"
        )
    return sorted(rng.choice(len(cohort), size=request.n_real, replace=False).tolist())


def _draw_ids(rng: np.random.Generator, n: int) -> _Draws:
    """The ``n`` case ids (distinct, 8 hex digits), the study id (12 hex digits) and the readers' order seed."""
    case_ids = _unique_ids(rng, n)
    study_id = f"{int(rng.integers(0, 2**48)):012x}"
    return _Draws(case_ids, study_id, int(rng.integers(0, 2**62)))


def _real_cases(cohort, chosen: list[int], real: str | os.PathLike) -> list[_Case]:
    """The chosen subjects of the (grid-matched) cohort, blinded; the mask is label > 0 of each one's own labels."""
    cases = []
    for index in chosen:
        item = cohort[index]
        labels = item["labels"].numpy()
        mask = labels.argmax(axis=0) > 0 if labels.ndim == 4 else labels > 0
        source = {"cohort": str(real), "subject_id": str(item["subject_id"])}
        cases.append(_Case("real", source, _blind(item["image"].numpy()[0], mask, source, f"real subject {item['subject_id']!r}")))
    return cases


def _folder_cases(files: list[Path], synthetic: str | os.PathLike, shape, affine: np.ndarray) -> list[_Case]:
    """The chosen synthetic files, each checked on (shape, affine) with its label map, blinded."""
    cases = []
    for path in files:
        image, image_affine = _read_volume(path)
        dseg, dseg_affine = _read_volume(_dseg_of(path))
        if not (_same_grid(image.shape, image_affine, shape, affine) and _same_grid(dseg.shape, dseg_affine, image.shape, image_affine)):
            raise ValueError(
                f"synthetic={str(synthetic)!r}: {path.relative_to(synthetic)} is on {describe_grid(image.shape, image_affine)} "
                f"(label map {describe_grid(dseg.shape, dseg_affine)}); allowed: all on {describe_grid(shape, affine)}"
            )
        source = {"folder": str(synthetic), "file": path.relative_to(synthetic).as_posix()}
        cases.append(_Case("synthetic", source, _blind(image, dseg > 0, source, f"synthetic file {path.name!r}")))
    return cases


def _generated_cases(generator, request: _Request, generation_seed: int, shape, affine: np.ndarray) -> list[_Case]:
    """``n_synthetic`` volumes generated from ``generation_seed`` with the request's sampling settings, checked on
    (shape, affine) and blinded; the key records each one's seed and covariates."""
    model_name = request.model_name
    generated = generator.generate(n=request.n_synthetic, seed=generation_seed, **request.sampling)
    if generated.labels is None:
        raise ValueError(f"model {model_name!r} generates no label maps; allowed: a model with labels (the brain mask needs them)")
    if not _same_grid(generated.images.shape[2:], generated.affine, shape, affine):
        raise ValueError(
            f"model {model_name!r} generated {describe_grid(generated.images.shape[2:], generated.affine)}; "
            f"allowed: its image grid {describe_grid(shape, affine)}"
        )
    cases = []
    for i in range(request.n_synthetic):
        covariates = {k: _plain(v) for k, v in generated.covariates.iloc[i].items()}
        source = {"model": model_name, "seed": covariates.pop("seed", None), "covariates": covariates}
        mask = generated.labels[i].numpy() > 0
        cases.append(_Case("synthetic", source, _blind(generated.images[i, 0].numpy(), mask, source, f"synthetic volume {i}")))
    return cases


def _assign_ids(cases: list[_Case], case_ids: list[str], rng: np.random.Generator) -> list[tuple[str, _Case]]:
    """Each case with a random one of ``case_ids`` (a permutation drawn from ``rng``), sorted by id, so
    that neither the ids nor the order say which class a case is of."""
    order = rng.permutation(len(cases))
    return sorted(((case_ids[order[i]], case) for i, case in enumerate(cases)), key=lambda pair: pair[0])


def _write_cases(staging: Path, assigned: list[tuple[str, _Case]], affine: np.ndarray) -> list[dict[str, str]]:
    """Write each case file (:func:`write_case`) in id order, so file times say nothing either; the
    study's case entries ``{"id", "sha256"}`` in the same order."""
    entries = []
    for case_id, case in assigned:
        path = case_path(staging, case_id)
        write_case(path, case.volume, affine)
        entries.append({"id": case_id, "sha256": _io.sha256_file(path)})
    return entries


def _study_manifest(request: _Request, draws: _Draws, shape, affine: np.ndarray, entries: list[dict[str, str]]) -> dict[str, Any]:
    """``study.json``: what the server and the readers see (no truth, no source, no seed)."""
    affine = np.asarray(affine)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "study_id": draws.study_id,
        "title": request.title,
        "created_with": f"synthbrain {__version__}",
        "grid": {
            "shape": list(shape),
            "spacing": float(np.sqrt((affine[:3, 0] ** 2).sum())),
            "origin": [float(x) for x in affine[:3, 3]],
        },
        "intensity": INTENSITY,
        "n_cases": request.n,
        "order_seed": draws.order_seed,
        "cases": entries,
    }


def _study_key(request: _Request, draws: _Draws, assigned: list[tuple[str, _Case]], entries: list[dict[str, str]]) -> dict[str, Any]:
    """``key/key.json``: the arguments, and each case's truth, digest and source, in id order."""
    return {
        "study_id": draws.study_id,
        "seed": request.seed,
        "n": request.n,
        "synthetic_fraction": request.synthetic_fraction,
        "n_real": request.n_real,
        "n_synthetic": request.n_synthetic,
        "real": str(request.real),
        "synthetic": str(request.synthetic) if request.synthetic is not None else None,
        "model": request.model_name,
        "sampling": request.sampling,
        "percentiles": list(PERCENTILES),
        "cases": [
            {"id": case_id, "truth": case.truth, "sha256": entry["sha256"], "source": case.source}
            for (case_id, case), entry in zip(assigned, entries)
        ],
    }


def _check_cues(staging: Path, out: Path) -> dict[str, Any]:
    """The cue check (:func:`cues.check_cues`) of the staged folder, its report written into ``key/``;
    ValueError (and nothing written) when it finds a file cue."""
    check = cues.check_cues(staging)
    if check["file_cues"]:
        raise ValueError(f"out={str(out)!r}: the cue check found file cues, so the study is not written: {'; '.join(check['file_cues'])}")
    cues.write_cue_report(staging, check)
    return check


def _blind(image: np.ndarray, mask: np.ndarray, source: dict[str, Any], what: str) -> np.ndarray:
    """:func:`blind_volume`, recording in ``source`` (the key) how many stray mask voxels it left out."""
    try:
        volume = blind_volume(image, mask)
        source["stray_label_voxels_removed"] = int(np.asarray(mask, bool).sum() - brain_mask(mask).sum())
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    return volume


def _plain(value: Any) -> Any:
    """A table cell as strict JSON: numpy scalars to Python, NaN and None to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _unique_ids(rng: np.random.Generator, n: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < n:
        candidate = f"{int(rng.integers(0, 16**8)):08x}"
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _synthetic_files(folder: Path, needed: int) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(
            f"synthetic={str(folder)!r}: no such folder; allowed: a folder written by synthbrain generate (GeneratedBrains.save)"
        )
    files = sorted(folder.glob("sub-*/anat/*_T1w.nii.gz"))
    if len(files) < needed:
        raise ValueError(
            f"synthetic={str(folder)!r}: {len(files)} volumes (sub-*/anat/*_T1w.nii.gz); allowed: at least the {needed} synthetic cases "
            "asked for (generate more or lower --n / --synthetic-fraction)"
        )
    return files


def _dseg_of(path: Path) -> Path:
    dseg = path.with_name(path.name.replace("_T1w.nii.gz", "_dseg.nii.gz"))
    if not dseg.is_file():
        raise ValueError(f"{path}: no label map {dseg.name} beside it; the brain mask needs it (generate with a model that writes labels)")
    return dseg


def _load_3d(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    if len(image.shape) != 3:
        raise ValueError(f"{path}: shape {image.shape}; allowed: a 3D volume")
    return image


def _header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    image = _load_3d(path)
    return tuple(int(s) for s in image.shape), np.asarray(image.affine, float)


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = _load_3d(path)
    return np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.affine, float)


def _real_on_grid(real: Path, shape, affine: np.ndarray, synthetic_name):
    """The prepared cohort as a dataset averaged onto (shape, affine), or ValueError naming both grids."""
    from synthbrain.preprocessing.prepared import PreparedCohort

    cohort = PreparedCohort.load(real)
    if cohort.label_scheme is None:
        raise ValueError(
            f"real={str(real)!r}: a cohort without label maps; allowed: one prepared with --labels (the brain mask needs them)"
        )
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    factor = spacing[0] / cohort.grid.spacing
    k = int(round(factor))
    real_grid = describe_grid(cohort.grid.shape, cohort.grid.affine)
    mismatch = ValueError(
        f"real={str(real)!r} is on {real_grid}, synthetic {str(synthetic_name)!r} on {describe_grid(shape, affine)}; "
        "allowed: the same grid, or a real grid that averages onto the synthetic one by an integer factor"
    )
    if not (np.allclose(spacing, spacing[0]) and k >= 1 and abs(factor - k) < 1e-6 and all(s % k == 0 for s in cohort.grid.shape)):
        raise mismatch
    cohort = PreparedCohort.load(real, k)
    grid = cohort.output_grid
    if not _same_grid(grid.shape, grid.affine, shape, affine):
        raise mismatch
    return cohort
