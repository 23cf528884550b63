"""What ``generate`` returns, :class:`GeneratedBrains`, and its writer: a BIDS-like dataset folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthbrain import __version__, _io


@dataclass
class GeneratedBrains:
    """Generated subjects on one grid.

    ``images``: (B, 1, D, H, W) float32 in [0, 1] (0 outside the brain unless generated with
    ``raw=True``); ``labels``: (B, D, H, W) uint8 class indices of ``label_classes`` (None for a
    model without label maps); ``covariates``: one row per subject, the physical covariates used
    (years, "F"/"M", mL) and the volume ``seed`` that reproduces it alone, plus the quality-control
    measures of :mod:`synthbrain.generator.qc` where label maps exist; ``affine``: voxel -> MNI mm
    (RAS) (4, 4), shared by every subject; ``provenance``: model hashes, sampler, steps, guidance
    scale, timestep spacing and every other setting; ``units``: each covariate's physical unit
    (``"years"``, ``"mL"``, ``""`` for a categorical one), for summaries and the preview's titles.

    For MONAI and torchio: :meth:`to_dicts` gives one MONAI-style dictionary per subject and
    :meth:`to_subjects` one ``torchio.Subject``, both with ``image`` and ``label`` (1, D, H, W) and
    the affine carried with them.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    covariates: pd.DataFrame
    affine: np.ndarray
    label_classes: tuple[str, ...] | None = None
    provenance: dict[str, Any] | None = None
    units: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        """A summary instead of the tensors: volumes, shapes, grid, covariates (ranges with units,
        counts of levels), quality control and the model and sampling that made them."""
        shape = tuple(self.images.shape)
        spacing = np.abs(np.diag(np.asarray(self.affine))[:3])
        mm = f"{spacing[0]:g}" if np.allclose(spacing, spacing[0]) else " x ".join(f"{v:g}" for v in spacing)
        classes = len(self.label_classes or ())
        labels = "no label maps" if self.labels is None else f"label maps {tuple(self.labels.shape)} of {classes} classes"
        lines = [
            f"GeneratedBrains: {len(self)} volumes, images {shape} {str(self.images.dtype).removeprefix('torch.')}, {labels}",
            f"  grid: {' x '.join(map(str, shape[2:]))} voxels of {mm} mm (MNI)",
            f"  covariates: {covariate_summary(self.covariates, self.units)}",
        ]
        if "qc_pass" in self.covariates:
            lines.append(f"  quality control: {int(self.covariates['qc_pass'].sum())} of {len(self)} pass")
        p = self.provenance or {}
        if p:
            name = model_name((p.get("model") or {}).get("path"))
            lines.append(f"  model: {name}; {p.get('sampler')}, {p.get('steps')} steps, guidance {p.get('guidance_scale')}")
        return "\n".join(lines)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dictionary per subject, as MONAI's dictionary transforms take them (e.g.
        ``RandAffined(keys=["image", "label"], mode=("bilinear", "nearest"))``, ``monai.data.Dataset``).

        ``"image"``: a :class:`monai.data.MetaTensor` (1, D, H, W) float32 in [0, 1] whose ``affine``
        (4, 4, float64) is :attr:`affine` (voxel -> MNI mm, RAS); MetaTensor is MONAI's carrier of the
        affine (what ``LoadImaged`` gives), so MONAI's spatial transforms keep it up to date, and there is
        no separate ``"affine"`` key to go stale. ``"label"``: the label map, a MetaTensor (1, D, H, W)
        uint8 with the same affine (absent for a model without label maps). Then every column of
        :attr:`covariates` (covariates in their units, ``seed``, the quality-control measures) as a
        Python scalar. The tensors share memory with :attr:`images` and :attr:`labels` (MONAI's
        transforms return new ones). Raises ``ValueError`` for a covariate column named ``image`` or ``label``."""
        from monai.data import MetaTensor

        affine = torch.as_tensor(np.asarray(self.affine), dtype=torch.float64)
        items = []
        for i, row in enumerate(self._rows()):
            item = {"image": MetaTensor(self.images[i], affine=affine.clone())}
            if self.labels is not None:
                item["label"] = MetaTensor(self.labels[i][None], affine=affine.clone())
            items.append({**item, **row})
        return items

    def to_subjects(self) -> list[Any]:
        """One :class:`torchio.Subject` per subject, for torchio's transforms and ``tio.SubjectsDataset``.

        ``image``: a ``tio.ScalarImage`` (1, D, H, W) float32 in [0, 1]; ``label``: a ``tio.LabelMap``
        (1, D, H, W) uint8 of class indices of :attr:`label_classes` (absent for a model without label
        maps), which torchio's spatial transforms resample with nearest-neighbour interpolation; both
        with :attr:`affine` (voxel -> MNI mm, RAS, torchio's convention). Every column of
        :attr:`covariates` is an attribute of the subject (``subject.age``, ``subject["seed"]``), as a
        Python scalar. The tensors share memory with :attr:`images` and :attr:`labels`. Raises
        ``ValueError`` for a covariate column named ``image`` or ``label``."""
        import torchio as tio

        affine = np.asarray(self.affine, dtype=np.float64)
        subjects = []
        for i, row in enumerate(self._rows()):
            images = {"image": tio.ScalarImage(tensor=self.images[i], affine=affine)}
            if self.labels is not None:
                images["label"] = tio.LabelMap(tensor=self.labels[i][None], affine=affine)
            subjects.append(tio.Subject(**images, **row))
        return subjects

    def _rows(self) -> list[dict[str, Any]]:
        """Each subject's row of :attr:`covariates` as Python scalars (no NumPy types, which collation and JSON dislike)."""
        clashes = [name for name in self.covariates.columns if name in ("image", "label")]
        if clashes:
            raise ValueError(f"covariates: columns {clashes} would replace the image or the label map; rename them")
        return [{k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()} for row in self.covariates.to_dict("records")]

    def save(self, folder: str | os.PathLike, *, prefix: str = "synth", overwrite: bool = False) -> Path:
        """Write a BIDS-like dataset: ``sub-<prefix><i>/anat/..._T1w.nii.gz`` and ``..._dseg.nii.gz``,
        ``participants.tsv``, ``dseg.tsv``, ``provenance.json``, ``dataset_description.json`` and
        ``preview.png``; return ``folder``.

        An existing non-empty folder is refused unless ``overwrite=True``, and even then only when
        it holds a previous synthbrain dataset (so a mistyped path never deletes other files). The
        dataset is written into a hidden folder beside ``folder`` and moved into place when complete
        (:func:`synthbrain._io.staged_folder`): an interrupted or failed save leaves the previous
        state. The folder is checked again and written under its writer lock (:func:`synthbrain._io.folder_lock`),
        so a dataset another process finished meanwhile is not replaced without ``overwrite``. Raises
        ``ValueError`` for a bad ``prefix`` or an output folder that cannot be used, and
        :class:`~synthbrain._io.FolderInUseError` (a ``ValueError``) while another process writes it."""
        if not (isinstance(prefix, str) and prefix.isalnum()):
            raise ValueError(f"prefix={prefix!r}; allowed: letters and digits only (it becomes part of BIDS subject labels)")
        check_output_folder(folder, overwrite)  # before the lock, which creates the parent folder
        with _io.folder_lock(folder):
            check_output_folder(folder, overwrite)
            with _io.staged_folder(folder) as staging:
                self._write(staging, prefix)
        return Path(folder)

    def _write(self, folder: Path, prefix: str) -> None:
        from synthbrain.figures import save_brain_rows, title_text  # matplotlib, when a dataset is written

        ids = [f"sub-{prefix}{i:05d}" for i in range(len(self.images))]
        for i, sid in enumerate(ids):
            anat = folder / sid / "anat"
            _io.save_nifti(anat / f"{sid}_T1w.nii.gz", self.images[i, 0].numpy().astype(np.float32), self.affine)
            if self.labels is not None:
                _io.save_nifti(anat / f"{sid}_dseg.nii.gz", self.labels[i].numpy().astype(np.uint8), self.affine)
        _io.write_table(
            folder / "participants.tsv", self.covariates.assign(participant_id=ids)[["participant_id", *self.covariates.columns]]
        )
        if self.label_classes:
            _io.write_table(folder / "dseg.tsv", pd.DataFrame({"index": range(len(self.label_classes)), "name": self.label_classes}))
        _io.write_json(
            folder / "provenance.json",
            {**(self.provenance or {}), "subjects": dict(zip(ids, self.covariates["seed"].tolist()))},
        )
        _io.write_json(
            folder / "dataset_description.json",
            {
                "Name": "synthbrain synthetic T1w volumes",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "synthbrain", "Version": __version__}],
            },
        )
        shown = min(len(ids), 8)
        spacing = float(np.abs(np.asarray(self.affine)[0, 0]))
        save_brain_rows(
            folder / "preview.png",
            [self.images[i, 0].numpy() for i in range(shown)],
            [self.labels[i].numpy() if self.labels is not None else None for i in range(shown)],
            [title_text(ids[i], self.covariates.iloc[i].to_dict(), self.units) for i in range(shown)],
            spacing,
            self.label_classes,
        )


def check_output_folder(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output folder that :meth:`GeneratedBrains.save` could not or must
    not write: a file, a non-empty folder without ``overwrite``, a non-empty folder that is not a
    previous synthbrain dataset, or a place without write permission (``ValueError`` naming it)."""
    path = Path(folder)
    shown = str(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"folder={shown!r} is a file; allowed: a new or empty folder, or a previous output with overwrite=True")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(
                f"folder={shown!r} exists and is not empty; pass overwrite=True (--overwrite) to replace a previous output, "
                "or choose another folder"
            )
        if not is_generated_dataset(path):
            raise ValueError(
                f"folder={shown!r} holds files that synthbrain did not write (no provenance.json and dataset_description.json "
                "from synthbrain); overwrite=True only replaces a previous synthbrain dataset, so choose another folder"
            )
    ancestor = Path(os.path.realpath(path)).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"folder={shown!r}: {str(ancestor)!r} is a file, not a folder; choose another output folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"folder={shown!r}: no permission to write in {str(ancestor)!r}; choose a writable folder")
    return path


def is_generated_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset written by :meth:`GeneratedBrains.save`."""
    try:
        description = _io.read_json(folder / "dataset_description.json", "a dataset written by GeneratedBrains.save")
        return (folder / "provenance.json").is_file() and description["GeneratedBy"][0]["Name"] == "synthbrain"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def covariate_summary(table: pd.DataFrame, units: dict[str, str] | None = None) -> str:
    """One line over the subjects: each covariate's range (with its unit) or its levels' counts;
    the volume seeds and quality-control columns are left out."""
    parts = []
    for name in table.columns:
        if name == "seed" or name.startswith("qc_"):
            continue
        column = table[name]
        unit = f" {(units or {}).get(name, '')}".rstrip()
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            low, high = column.min(), column.max()
            parts.append(f"{name} {low:.4g}{unit}" if low == high else f"{name} {low:.4g} to {high:.4g}{unit}")
        else:
            counts = column.astype(str).value_counts().sort_index()
            parts.append(f"{name} " + ", ".join(f"{level} {count}" for level, count in counts.items()))
    return "; ".join(parts)


def covariate_ranges(schema) -> str:
    """One line over a model's covariates (a :class:`~synthbrain.cohort.covariates.CovariateSchema`):
    levels of a categorical one, the training range and unit of a continuous one."""
    parts = []
    for c in schema.covariates:
        if c.categories:
            parts.append(f"{c.name} ({', '.join(c.categories)})")
        elif c.low is not None:
            parts.append(f"{c.name} {c.low:.4g} to {c.high:.4g}" + (f" {c.unit}" if c.unit else ""))
        else:
            parts.append(f"{c.name}" + (f" ({c.unit})" if c.unit else ""))
    return "; ".join(parts)


def model_name(path: str | os.PathLike | None) -> str:
    """How a summary names a model: its name for an embedded model (``default``, ``default-2mm``), else
    its folder (relative to the working directory when below it), or ``in memory`` for one never loaded
    from disk."""
    from synthbrain.model_folder import embedded_name

    if not path:
        return "in memory"
    return embedded_name(path) or _io.shown_path(path)
