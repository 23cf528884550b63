"""Writing outputs (atomic files, one writer per folder, staged folders, claimed folders) and reading
JSON files and the dataclasses stored in them.

This module is the one owner of how synthbrain writes (every writer calls it):

- every file goes to a hidden temporary file in the destination folder first and is then moved
  into place with :func:`os.replace`, which is atomic on POSIX and Windows (:func:`atomic_path`,
  :func:`write_json`, :func:`write_table`, :func:`save_nifti`, :func:`save_image`, :func:`save_figure`);
- an output folder has one writer at a time: :func:`folder_lock` (or the :func:`writes_folder`
  decorator) holds an exclusive OS-level lock (``flock``) on a hidden lock file beside the folder,
  which the OS releases when its process ends, however it ends. A second writer is refused
  (:class:`FolderInUseError`, naming the owner's pid, host and command) or waits for it
  (``wait=True``). A killed job therefore never blocks a folder, and whatever a writer finds of
  another's under the lock (hidden ``.tmp-*`` files and staging folders) was left by a dead one
  and is deleted (:func:`remove_stale_temporaries`, :func:`staged_folder`);
- a whole folder is written by :func:`staged_folder`: into a hidden folder beside it, moved into
  place in one rename when complete;
- a folder resumed by later runs (a training run, a prepared cohort, a shard store) is tied to one
  configuration by :func:`claim_folder`.

Reading: :func:`read_json` is the one reader of a JSON object file (one wording for a missing,
unreadable or invalid file), and :func:`dataclass_from_dict` the one reader of a dataclass from its
JSON form (one wording for unknown keys).

A lock file lives in the folder's parent (``.<name>.synthbrain-lock``) and is deleted by its owner on
release. Locks are advisory: they guard synthbrain writers from one another, on one machine or on a
shared file system that supports ``flock`` (local disks and NFSv4 do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".synthbrain-lock"


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


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in the file ``path``; ``what`` says what should be there, for the error of a missing file.

    Raises ``ValueError`` naming ``path`` for a missing file (``"<path>: missing; <what>"``), one that
    cannot be read or is not UTF-8 (``unreadable``), text that is not JSON (``not valid JSON``) or JSON that is not an
    object.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: missing; {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON {type(data).__name__}; expected an object")
    return data


def dataclass_from_dict(cls: type, data: Mapping[str, Any], what: str, **convert: Callable[[Any], Any]) -> Any:
    """``cls(**data)`` for a dataclass ``cls``, with ``convert[name](data[name])`` in place of each
    value named in ``convert`` (e.g. ``channels=tuple`` for a JSON list); fields ``data`` leaves out take
    their defaults. Raises ``ValueError`` for keys that are not fields of ``cls``
    (``"<what>: unknown keys [...]; allowed: [...]"``), ``KeyError`` when a key named in ``convert`` is
    absent, and what ``cls`` raises for a bad value.
    """
    allowed = sorted(field.name for field in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; allowed: {allowed}")
    return cls(**{**data, **{name: function(data[name]) for name, function in convert.items()}})


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


class FolderInUseError(ValueError):
    """Another live process is writing the folder (see :func:`folder_lock`); ``owner`` is what it
    recorded: ``pid``, ``host``, ``started`` (UTC) and ``command``, as far as it could be read."""

    def __init__(self, message: str, owner: dict[str, Any]):
        super().__init__(message)
        self.owner = owner


_held: dict[str, list] = {}  # realpath -> [pid, thread id, fd, depth]: the locks this process holds
_held_guard = threading.Lock()


def _forget_locks_in_child() -> None:
    """A forked child (a worker process) holds none of its parent's locks: close its copies of their
    descriptors (the parent's lock stays), so that the child can neither keep one alive nor wait on it."""
    global _held_guard
    for entry in _held.values():
        with contextlib.suppress(OSError):
            os.close(entry[2])
    _held.clear()
    _held_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.synthbrain-lock`` beside it (the folder resolved)."""
    target = Path(os.path.realpath(folder))
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, argument: str = "folder", wait: bool = False) -> Iterator[None]:
    """Hold the one-writer lock of ``folder`` for the block (see the module docstring).

    The lock is an exclusive ``flock`` on :func:`lock_path` (created, with missing parent folders,
    and deleted on release); the OS drops it when the process ends, so a killed writer never blocks
    the folder. It is re-entrant in the thread that holds it; another thread or process is refused
    or, with ``wait=True``, waits. Raises :class:`FolderInUseError` (a ``ValueError``) naming
    ``argument``, the folder and the live owner's pid, host, start time and command, and
    ``ValueError`` when the lock file cannot be created (naming the reason)."""
    key = os.path.realpath(folder)
    me = (os.getpid(), threading.get_ident())
    with _held_guard:
        entry = _held.get(key)
        mine = entry is not None and (entry[0], entry[1]) == me
        if mine:
            entry[3] += 1
    if mine:
        try:
            yield
        finally:
            with _held_guard:
                entry[3] -= 1
        return
    path = lock_path(folder)
    fd = _acquire(path, str(folder), argument, wait)
    with _held_guard:
        _held[key] = [*me, fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        try:
            if fcntl is not None:  # deleted while still locked: a process waiting on it notices (see _acquire)
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def writes_folder(argument: str) -> Callable:
    """Decorator: the function holds :func:`folder_lock` on its argument ``argument`` while it runs
    (refusing a second writer). Under torchrun only rank 0 takes it (``RANK`` 0 or unset): the other
    ranks are the same job."""

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if int(os.environ.get("RANK", "0")) != 0:
                return func(*args, **kwargs)
            folder = signature.bind(*args, **kwargs).arguments[argument]
            with folder_lock(folder, argument=argument):
                return func(*args, **kwargs)

        return wrapper

    return decorate


def _acquire(path: Path, shown: str, argument: str, wait: bool) -> int:
    """Open and lock ``path``, record this process as its owner; return the descriptor."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{argument}={shown!r}: cannot create the folder {str(path.parent)!r} ({err.strerror})") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"{argument}={shown!r}: cannot create the lock file {str(path)!r} ({err.strerror})") from None
        if not _lock(fd, wait):
            owner = _owner(fd)
            os.close(fd)
            who = (
                f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}: {owner.get('command')}"
                if owner
                else "its owner is starting"
            )
            raise FolderInUseError(
                f"{argument}={shown!r} is being written by another synthbrain process ({who}); wait until it ends, or "
                f"choose another folder (the lock {str(path)!r} is released when that process ends)",
                owner,
            )
        try:  # the owner before us may have deleted the file on release after we opened it: lock the new one
            same = fcntl is None or os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv)[:500],
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(owner).encode("utf-8"))
    return fd


def _lock(fd: int, wait: bool) -> bool:
    """Lock ``fd`` exclusively; False when another holder has it and ``wait`` is False."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        else:  # Windows: a byte far past the owner record, so the record stays readable
            os.lseek(fd, 1 << 30, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
            return False
        raise
    return True


def _owner(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 4096).decode("utf-8"))
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def claim_folder(
    folder: str | os.PathLike,
    record: str,
    config: dict[str, Any],
    *,
    argument: str,
    write: bool = True,
    what: str = "a job with another configuration",
    hint: str = "choose another folder",
    error: type[ValueError] = ValueError,
    added: Mapping[str, Any] | None = None,
) -> None:
    """Tie ``folder`` to one configuration, so that a job resumed there cannot mix two.

    The first call writes ``config`` as ``folder/record`` (when ``write``: the main process only,
    under torchrun); a later call with a different ``config`` is a ``ValueError``
    "``argument``=FOLDER holds ``what`` (differing: KEYS); ``hint``" (of class ``error``; KEYS dotted where
    they differ inside a section, as ``training.precision``). With ``write``, the check and
    the write hold :func:`folder_lock` (waiting for another claim), so two jobs that start together
    cannot both claim it. ``added``: settings a later version introduced, as dotted keys (``training.weights.x``)
    and the value that reproduces the earlier behaviour: a record written before them, which lacks such a key,
    counts as holding that value, so runs started with an earlier version still resume. Used by training runs
    (``run.json``), prepared cohorts (``params.json``) and dataset shard folders (``dataset.json``)."""
    path = Path(folder) / record
    config = json.loads(json.dumps(strict_json(config), default=_json_default))
    with folder_lock(folder, argument=argument, wait=True) if write else contextlib.nullcontext():
        if path.is_file():
            previous = read_json(path, what)
            for dotted, value in (added or {}).items():
                *sections, key = dotted.split(".")
                section = previous
                for name in sections:
                    section = section.get(name) if isinstance(section, dict) else None
                if isinstance(section, dict):
                    section.setdefault(key, value)
            if previous != config:
                changed = _differing(previous, config)
                raise error(f"{argument}={str(folder)!r} holds {what} (differing: {changed}); {hint}")
        elif write:
            write_json(path, config)


def _differing(previous: dict, config: dict, prefix: str = "") -> list[str]:
    """The keys whose values differ between two records, sorted, dotted into sections that are dicts on both sides."""
    keys = []
    for key in sorted(set(previous) | set(config)):
        old, new = previous.get(key), config.get(key)
        if old != new:
            nested = isinstance(old, dict) and isinstance(new, dict)
            keys += _differing(old, new, f"{prefix}{key}.") if nested else [f"{prefix}{key}"]
    return keys


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
    save_image(path, img)


def save_image(path: str | os.PathLike, image: nib.spatialimages.SpatialImage) -> None:
    """Save a nibabel image (header as the caller made it) atomically (:func:`atomic_path`); the
    format follows the suffix. Every image file synthbrain writes goes through here."""
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, *, argument: str = "folder") -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; when the block succeeds, it replaces
    ``target`` in one rename (a previous ``target`` is moved aside first and deleted only once the new
    one is in place, or restored if the rename fails). When the block fails, ``target`` is untouched
    and the staging folder is removed.

    The whole holds :func:`folder_lock` on ``target`` (re-entrant: a caller that checked ``target``
    under the lock keeps it), so staging folders found beside ``target`` were left by a dead writer
    and are removed first. Raises :class:`FolderInUseError` naming ``argument`` when another live
    process writes ``target``."""
    target = Path(os.path.realpath(target))
    with folder_lock(target, argument=argument):
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
    """Delete ``.tmp-*`` files left below ``folder`` by an interrupted job; return how many. Call it
    only while holding :func:`folder_lock` on ``folder`` (a live writer's temporaries look the same)."""
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
