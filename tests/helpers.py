"""Helpers for tests: tiny NIfTI files written on the fly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHARED_IXI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ixi-hh"

# A few MUSE labels, one per coarse class, used to build tiny label maps.
MUSE = {"ventricle": 51, "csf": 1, "cortex": 100, "wm": 81, "deep": 59, "cerebellum": 38, "brainstem": 35}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) * [2, 2, 2, 1] if affine is None else affine), path)
    return path


def write_nifti_header(
    path: Path,
    data: np.ndarray,
    *,
    qform: np.ndarray | None = None,
    sform: np.ndarray | None = None,
    qform_code: int | None = None,
    sform_code: int | None = None,
    pixdim: tuple[float, float, float] | None = None,
    units: str | None = None,
) -> Path:
    """Write a NIfTI-1 file whose qform, sform, codes and pixdim are exactly as given, even singular,
    NaN, contradictory or with invalid codes (the bytes are written directly: nibabel would fix them
    on saving). A transform not given has code 0."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_xyzt_units(units or "mm")
    if qform is not None:
        header.set_qform(qform, code=1)  # also sets pixdim from it
    header["qform_code"] = (1 if qform is not None else 0) if qform_code is None else qform_code
    if sform is not None:
        for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
            header[name] = np.asarray(sform, dtype=np.float64)[row]
    header["sform_code"] = (1 if sform is not None else 0) if sform_code is None else sform_code
    if pixdim is not None:
        header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + np.asarray(data, dtype=header.get_data_dtype()).tobytes(order="F")
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def tiny_labels(shape=(10, 10, 10)) -> np.ndarray:
    """A blocky label map holding ventricle, white-matter and cortex MUSE labels."""
    lab = np.zeros(shape, dtype=np.int16)
    lab[2:8, 2:8, 2:8] = MUSE["cortex"]
    lab[3:7, 3:7, 3:7] = MUSE["wm"]
    lab[4:6, 4:6, 4:6] = MUSE["ventricle"]
    return lab


def rigid_matrix(angles_deg, shift_mm) -> np.ndarray:
    """4x4 RAS rigid transform: rotations about x, y, z (degrees) then a shift (mm)."""
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    matrix[:3, 3] = shift_mm
    return matrix


# Piecewise-constant intensity of each MUSE label in the synthetic subjects below.
TEMPLATE_SUBJECT_INTENSITY = {0: 0.0, MUSE["csf"]: 20.0, MUSE["cortex"]: 60.0, MUSE["wm"]: 100.0}


def template_subject(folder: Path, subject_id: str, motion: np.ndarray, spacing: float = 4.0) -> None:
    """A subject made from the MNI template: labels from its intensity bands, an image that is a
    function of the labels, both seen in a scanner frame moved by ``motion`` (template→scanner)."""
    import nibabel.processing

    from synthbrain.preprocessing.template import load_template

    template = nibabel.processing.resample_to_output(load_template(), voxel_sizes=spacing, order=1)
    t = np.asarray(template.dataobj, dtype=np.float32)
    labels = np.zeros(t.shape, np.int16)
    labels[t > 0] = MUSE["csf"]
    labels[t > 90] = MUSE["cortex"]
    labels[t > 170] = MUSE["wm"]
    image = np.vectorize(TEMPLATE_SUBJECT_INTENSITY.get)(labels).astype(np.float32)
    affine = motion @ template.affine
    write_nifti(folder / "images" / f"{subject_id}_T1.nii.gz", image, affine)
    write_nifti(folder / "labels" / f"{subject_id}_seg.nii.gz", labels, affine)


def bids_from_template_subjects(
    folder: Path, root: Path, sessions: dict[str, str], *, mirror_sform: bool = False, ages: list[float] | None = None
) -> Path:
    """A longitudinal BIDS dataset of one subject, sub-01, whose session ``ses`` holds the image and
    label map of template subject ``sessions[ses]`` (written by :func:`template_subject` under
    ``folder``), with the true qform and an sform that is the same or mirrored in x; ages per session
    in ``sub-01_sessions.tsv`` (participants.tsv holds the first)."""
    import pandas as pd

    mirror = np.diag([-1.0, 1.0, 1.0, 1.0]) if mirror_sform else np.eye(4)
    ages = ages or [60.0 + 2.5 * i for i in range(len(sessions))]
    for ses, sid in sessions.items():
        labels = root / "derivatives" / "dlmuse" / "sub-01" / ses / "anat" / f"sub-01_{ses}_dseg.nii.gz"
        targets = {
            folder / "images" / f"{sid}_T1.nii.gz": root / "sub-01" / ses / "anat" / f"sub-01_{ses}_T1w.nii.gz",
            folder / "labels" / f"{sid}_seg.nii.gz": labels,
        }
        for source, target in targets.items():
            img = nib.load(source)
            copy = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
            copy.set_qform(img.affine, code=1)
            copy.set_sform(mirror @ img.affine, code=1)
            target.parent.mkdir(parents=True, exist_ok=True)
            nib.save(copy, target)
    pd.DataFrame({"session_id": list(sessions), "age": ages}).to_csv(root / "sub-01" / "sub-01_sessions.tsv", sep="\t", index=False)
    pd.DataFrame({"participant_id": ["sub-01"], "age": [ages[0]], "sex": ["female"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    return root


def make_prepared(root: Path, n: int = 4, shape=(16, 16, 16), seed: int = 0) -> Path:
    """A small prepared-cohort folder written directly (no registration): blob-like brains with
    3 coarse classes whose ventricle size varies with the subject, and a fitted covariate schema."""
    import json

    import pandas as pd

    from synthbrain.cohort import LabelScheme, default_schema
    from synthbrain.grid import Grid

    rng = np.random.default_rng(seed)
    grid = Grid(tuple(shape), 4.0, (-30.0, -30.0, -30.0))
    scheme = LabelScheme.load("muse-coarse")
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt(xx**2 + yy**2 + zz**2)
    rows = []
    for i in range(n):
        vent = 0.15 + 0.1 * i / max(n - 1, 1)
        labels = np.zeros(shape, np.uint8)
        labels[radius < 0.9] = 3  # cortical grey matter
        labels[radius < 0.7] = 4  # white matter
        labels[radius < vent] = 1  # ventricles
        image = np.select([labels == 1, labels == 3, labels == 4], [0.1, 0.5, 0.9], 0.0).astype(np.float32)
        image = np.clip(image + rng.normal(0, 0.02, shape).astype(np.float32) * (labels > 0), 0, 1)
        sid = f"p{i:02d}"
        (root / "subjects" / sid).mkdir(parents=True)
        write_nifti(root / "subjects" / sid / "t1.nii.gz", image, grid.affine)
        write_nifti(root / "subjects" / sid / "labels.nii.gz", labels, grid.affine)
        volumes = scheme.measure_coarse_volumes(labels, grid.voxel_volume_mm3)
        rows.append({"subject_id": sid, "sex": "FM"[i % 2], "age": 20.0 + 10 * i, **volumes})
    table = pd.DataFrame(rows)
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    default_schema().fit(table).save(root / "covariates.json")
    (root / "label_scheme.json").write_text(json.dumps(scheme.to_dict()))
    (root / "manifest.json").write_text(json.dumps({"grid": grid.to_dict(), "records": []}))
    return root


def randomised(model):
    """Random weights where MONAI zero-initialises (output layers), so outputs depend on inputs."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.1)
    return model


TINY_CLASSES = ("background", "ventricles", "csf", "cortical_gm", "white_matter", "deep_gm", "cerebellum", "brainstem")
TINY_COHORT = {
    "sex": ["F", "M"] * 4,
    "age": [20.0, 80.0, 30, 40, 50, 60, 70, 35],
    "ventricular_volume": [5.0, 60.0, 10, 20, 30, 40, 25, 15],
}


def tiny_generator(*, distribution: bool = False, steps: int = 4):
    """A randomly initialised BrainGenerator on a 16^3 grid (4 mm), optionally with a covariate
    density fitted on a small table so covariates left out can be drawn."""
    import pandas as pd
    import torch

    from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
    from synthbrain.cohort import default_schema
    from synthbrain.cohort.distribution import CovariateDistribution
    from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
    from synthbrain.generator import BrainGenerator
    from synthbrain.grid import Grid
    from synthbrain.samplers import NoiseSchedule

    torch.manual_seed(0)
    table = pd.DataFrame({**TINY_COHORT, "brain_volume": [900.0, 1600.0, 1000, 1100, 1200, 1300, 1400, 1500]})
    schema = default_schema().fit(table)
    autoencoder = BrainAutoencoder(AutoencoderConfig(num_classes=8, channels=(8, 16), norm_num_groups=8))
    unet = randomised(
        ConditionalUNet(DiffusionConfig(channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8))
    )
    grid = Grid((16, 16, 16), 4.0, (-30.0, -30.0, -30.0))
    density = CovariateDistribution.fit(table, schema, components=1) if distribution else None
    return BrainGenerator(
        autoencoder,
        unet,
        NoiseSchedule(),
        schema,
        grid,
        latent_scale=1.0,
        label_classes=TINY_CLASSES,
        defaults={"steps": steps},
        distribution=density,
    )


def subprocess_env() -> dict[str, str]:
    """The environment for a Python subprocess that must import the ``synthbrain`` under test (the
    one this process imported), not the installed copy: a script's own folder, not the working
    directory, heads its ``sys.path``, and an editable install may point at another checkout."""
    import os

    import synthbrain

    root = str(Path(synthbrain.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def load_benchmark(name: str, monkeypatch):
    """Import ``benchmarks/<name>.py`` as a module (it imports its sibling ``_report``)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module(name)
