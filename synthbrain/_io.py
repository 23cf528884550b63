"""Atomic file writing: a reader never sees a half-written output.

Every file synthbrain writes goes to a hidden temporary file in the destination folder first and is
then moved into place with :func:`os.replace`, which is atomic on POSIX and Windows. An interrupted
job leaves at most hidden ``.tmp-*`` files behind, which :func:`remove_stale_temporaries` deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``), so writers that infer the format
    from the name write the right format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as TSV (``.tsv``) or CSV (any other suffix)."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=sep, index=False, na_rep="n/a")


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, mni: bool = True) -> None:
    """Save a 3D array with its voxel-to-RAS-mm affine (qform and sform both set).

    ``mni=True`` marks the space as MNI-152 (NIfTI xform code 4), else as scanner space (code 1).
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    code = 4 if mni else 1
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def save_figure(path: str | os.PathLike, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.tmp-*`` files left below ``folder`` by an interrupted job; return how many."""
    count = 0
    for tmp in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if tmp.is_file():
            tmp.unlink()
            count += 1
    return count


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table, floats with ``digits`` decimals."""
    cells = [[f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
