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
import re
import shutil
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
    """Write ``text`` as UTF-8 to ``path`` atomically (:func:`atomic_path`), creating missing parent folders."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (RFC 8259): NaN and infinities become ``null``, numpy scalars and
    arrays plain numbers and lists, paths strings. Every JSON synthbrain writes goes through here."""
    write_text(path, json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (Python or numpy) replaced by None, recursively."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    return obj


def claim_folder(folder: str | os.PathLike, record: str, config: dict[str, Any], *, argument: str, write: bool = True) -> None:
    """Tie ``folder`` to one configuration, so that a job resumed there cannot mix two.

    The first call writes ``config`` as ``folder/record`` (when ``write``: the main process only,
    under torchrun); a later call with a different ``config`` is a ``ValueError`` naming
    ``argument``, the folder and the differing keys. Used by training runs (``run.json``), prepared
    cohorts (``params.json``) and dataset shard folders (``dataset.json``)."""
    path = Path(folder) / record
    config = json.loads(json.dumps(strict_json(config), default=_json_default))
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != config:
            changed = sorted(k for k in set(config) | set(previous) if previous.get(k) != config.get(k))
            raise ValueError(
                f"{argument}={str(folder)!r} holds a job with another configuration (differing: {changed}); choose another folder"
            )
    elif write:
        write_json(path, config)


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a table as TSV (``.tsv``) or CSV (any other suffix), without the index, missing values as
    ``n/a`` (as BIDS tables write them), atomically."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=sep, index=False, na_rep="n/a")


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, mni: bool = True) -> None:
    """Save a 3D array with its 4 x 4 voxel-to-RAS-mm affine as NIfTI-1 (nibabel), qform and sform both
    set, spatial units mm; the dtype of ``data`` is kept. The format follows the suffix (``.nii.gz``: gzipped).

    ``mni=True`` marks the space as MNI-152 (NIfTI-1 xform code 4, ``NIFTI_XFORM_MNI_152``), else as
    scanner space (code 1, ``NIFTI_XFORM_SCANNER_ANAT``).
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    code = 4 if mni else 1
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; when the block succeeds, it replaces
    ``target`` in one rename (a previous ``target`` is moved aside first and deleted only once the new
    one is in place, or restored if the rename fails). When the block fails, ``target`` is untouched
    and the staging folder is removed. Staging folders left by a killed job are removed by the next
    call for the same ``target``."""
    target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = re.compile(rf"{re.escape(TMP_PREFIX)}[0-9a-f]{{12}}-(old-)?{re.escape(target.name)}")
    for path in target.parent.iterdir():
        if stale.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    staging = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}"
    staging.mkdir()
    try:
        yield staging
        if target.is_dir() and any(target.iterdir()):
            old = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-old-{target.name}"
            os.replace(target, old)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            if target.is_dir():
                target.rmdir()
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def save_figure(path: str | os.PathLike, fig) -> None:
    """Save a matplotlib figure as PNG at the figure's own dpi, atomically (:func:`atomic_path`)."""
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


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a report should name it: relative to the working directory when it lies below
    it (reports never name a machine's absolute paths), else as given."""
    text = str(path)
    if os.path.isabs(text):
        try:
            relative = Path(text).resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            return text
        return str(relative)
    return text


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes as 64 lowercase hex digits, read ``chunk`` bytes at a time."""
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
    """A DataFrame as a Markdown table, floats with ``digits`` decimals, missing values as a dash."""
    cells = [[_cell(v, digits) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float | np.floating) else str(value)
