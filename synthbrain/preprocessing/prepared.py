"""Reading a prepared cohort folder (what ``synthbrain prepare`` wrote), for the stages after it.

:class:`PreparedCohort` is the one reader of the folder's layout (``manifest.json``,
``participants.tsv``, ``covariates.json``, ``label_scheme.json``, ``subjects/<id>/{t1,labels}.nii.gz``);
the stages after ``prepare`` (training, latents, evaluation, splitting, the benchmarks) go through
it rather than open the files themselves. (``benchmarks/gpu/pack_cohort.py``, which packs the folder's
files as they are for another machine and unpacks them there, knows the layout too.)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from synthbrain import _io
from synthbrain.cohort.covariates import CovariateSchema
from synthbrain.cohort.labels import LabelScheme
from synthbrain.grid import Grid

MANIFEST, PARTICIPANTS, PARAMS = "manifest.json", "participants.tsv", "params.json"
COVARIATES, LABEL_SCHEME = "covariates.json", "label_scheme.json"
SUBJECTS, IMAGE, LABELS = "subjects", "t1.nii.gz", "labels.nii.gz"  # subjects/<id>/t1.nii.gz, subjects/<id>/labels.nii.gz
SHARED = (PARAMS, COVARIATES, LABEL_SCHEME, MANIFEST)  # what a part of a cohort (write_subset) shares with it


@dataclass
class PreparedCohort(torch.utils.data.Dataset):
    """A prepared cohort folder; also a map-style dataset of ``{"image", "labels", "subject_id"}``.

    With ``downsample=1`` the image is float32 (1, D, H, W) in [0, 1] and the labels int64 (D, H, W)
    coarse classes. With ``downsample=k`` both are averaged over k x k x k blocks: the labels become
    class fractions, float32 (C, D/k, H/k, W/k), so volumes stay exact (nearest-neighbour
    resampling to a coarse grid does not keep them). Averaging the centred 2 mm grid by 2 gives
    exactly the 4 mm grid of :func:`make_grid`.
    """

    root: Path
    table: pd.DataFrame
    schema: CovariateSchema
    grid: Grid
    label_scheme: LabelScheme | None
    downsample: int = 1

    @staticmethod
    def is_prepared(root: str | Path) -> bool:
        """Whether ``root`` holds a finished prepared cohort (its ``manifest.json``, written last)."""
        return (Path(root) / MANIFEST).is_file()

    @classmethod
    def load(cls, root: str | Path, downsample: int = 1) -> PreparedCohort:
        """Read the folder ``root`` (its manifest, ``participants.tsv``, covariate schema and label scheme;
        volumes are read per item). Raises ``ValueError`` when ``root`` has no ``manifest.json`` or
        ``downsample`` is not a positive integer dividing every axis of the grid."""
        root = Path(root)
        if not cls.is_prepared(root):
            raise ValueError(
                f"root={str(root)!r}: no manifest.json; not a finished prepared cohort (run synthbrain prepare, which resumes)"
            )
        manifest = _io.read_json(root / MANIFEST, "not a finished prepared cohort")
        scheme_path = root / LABEL_SCHEME
        scheme = LabelScheme.from_dict(_io.read_json(scheme_path, "a prepared cohort")) if scheme_path.is_file() else None
        ids = {"subject_id": str, "participant_id": str, "session_id": str}
        table = pd.read_csv(root / PARTICIPANTS, sep="\t", dtype=ids, na_values=["n/a"])
        grid = Grid.from_dict(manifest["grid"])
        if not (isinstance(downsample, int) and downsample >= 1 and all(n % downsample == 0 for n in grid.shape)):
            raise ValueError(f"downsample={downsample!r}; allowed: a positive integer dividing the grid shape {grid.shape}")
        return cls(root, table, CovariateSchema.load(root / COVARIATES), grid, scheme, downsample)

    def manifest(self) -> dict:
        """The folder's ``manifest.json`` as written by ``prepare`` (``grid``, ``params``, ``params_hash``,
        ``summary``, ``records``, ...), read afresh."""
        return _io.read_json(self.root / MANIFEST, "a prepared cohort's manifest")

    @property
    def class_names(self) -> list[str] | None:
        """The coarse label classes by index (0 is background), or None for a cohort without label maps."""
        return list(self.label_scheme.class_names) if self.label_scheme is not None else None

    @property
    def output_grid(self) -> Grid:
        """The grid of the items this dataset yields (:attr:`grid` averaged by :attr:`downsample`)."""
        k = self.downsample
        shift = (k - 1) * self.grid.spacing / 2
        return Grid(tuple(n // k for n in self.grid.shape), self.grid.spacing * k, tuple(o + shift for o in self.grid.origin))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def subject_ids(self) -> list[str]:
        """The ``subject_id`` column of :attr:`table`, in row (= item) order."""
        return self.table["subject_id"].tolist()

    def load_subject(self, subject_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The image (float32 (D, H, W) in [0, 1]) and coarse class map (integer (D, H, W), or None) of one
        subject, on :attr:`grid` (not downsampled). Raises ``KeyError`` for an unknown subject."""
        if subject_id not in set(self.subject_ids):
            raise KeyError(f"subject_id={subject_id!r} is not in {self.root}")
        return self._read(subject_id)

    def subject_folder(self, subject_id: str) -> Path:
        """The folder of one subject's volumes (``subjects/<id>``; not checked to exist)."""
        return self.root / SUBJECTS / subject_id

    def _read(self, subject_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        folder = self.subject_folder(subject_id)
        image = np.asarray(nib.load(folder / IMAGE).dataobj, dtype=np.float32)
        labels_path = folder / LABELS
        labels = np.asarray(nib.load(labels_path).dataobj) if labels_path.is_file() else None
        return image, labels

    def __getitem__(self, index: int) -> dict:
        subject_id = self.table["subject_id"].iat[index]  # no id list or membership check per item
        image, labels = self._read(subject_id)
        image = torch.from_numpy(image)[None]
        k = self.downsample
        item = {"image": F.avg_pool3d(image[None], k)[0] if k > 1 else image, "subject_id": subject_id}
        if labels is not None:
            labels = torch.from_numpy(labels.astype(np.int64))
            if k > 1:
                one_hot = F.one_hot(labels, self.label_scheme.num_classes).movedim(-1, 0).float()
                labels = F.avg_pool3d(one_hot[None], k)[0]
            item["labels"] = labels
        return item

    def complete(self) -> pd.DataFrame:
        """Rows with every covariate of the schema present (those a conditional model can train on)."""
        return self.table.dropna(subset=self.schema.names)

    def write_subset(self, folder: str | Path, rows: pd.DataFrame) -> Path:
        """Write ``folder``, a prepared cohort of some of this cohort's subjects: this cohort's manifest,
        parameters, covariate schema and label scheme (those present), ``participants.tsv`` of ``rows``
        (rows of :attr:`table`), and ``subjects/<id>`` as relative symbolic links into this cohort, so
        nothing is copied; the manifest last, so that an interrupted write is not taken for a finished
        cohort (:meth:`is_prepared`). ``folder`` may exist (empty) but not its ``subjects/`` (``FileExistsError``).
        Returns ``folder``."""
        folder = Path(folder)
        (folder / SUBJECTS).mkdir(parents=True)
        _io.write_table(folder / PARTICIPANTS, rows)
        links = (folder / SUBJECTS).resolve()
        for subject_id in rows["subject_id"]:
            target = self.subject_folder(subject_id).resolve()
            os.symlink(os.path.relpath(target, links), folder / SUBJECTS / subject_id, target_is_directory=True)
        for name in SHARED:  # MANIFEST last
            if (self.root / name).is_file():
                shutil.copyfile(self.root / name, folder / name)
        return folder
