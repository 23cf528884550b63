"""The study folder: what ``reader-study create`` writes and ``serve`` / ``analyse`` read.

::

    STUDY/
      study.json          public: study id, title, grid, intensity handling, case ids with sha256
      cases/<id>.nii      the blinded volumes: uint8, uncompressed NIfTI-1, one header for all
      key/key.json        the truth: each case id -> real or synthetic, and where it came from
      key/cue_check.json  the cue check (also key/cue_check.md)
      answers.sqlite      the readers' answers (written by ``serve``; WAL mode)

The server serves from ``study.json`` and ``cases/`` only; it reads ``key/`` at start only to check
that it matches, and runs without it (the key may be moved off the reading machine while the study
runs and put back for the analysis). A case id is 8
lowercase hex digits; its file name is derived from the id, never read from a file or a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from synthbrain import _io

FORMAT = "synthbrain-reader-study"
FORMAT_VERSION = 1
STUDY_FILE = "study.json"
CASES_DIR = "cases"
KEY_DIR = "key"
KEY_FILE = "key.json"
DATABASE = "answers.sqlite"
CASE_ID = re.compile(r"[0-9a-f]{8}")
TRUTHS = ("real", "synthetic")
INCOMPLETE = "the study folder is incomplete"


def case_path(folder: Path, case_id: str) -> Path:
    """``folder/cases/<case_id>.nii``; ``case_id`` must be 8 lowercase hex digits (ValueError otherwise)."""
    if not (isinstance(case_id, str) and CASE_ID.fullmatch(case_id)):
        raise ValueError(f"case id {case_id!r}; allowed: 8 lowercase hex digits")
    return Path(folder) / CASES_DIR / f"{case_id}.nii"


def write_case(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    """Write one blinded case: ``volume`` uint8 (X, Y, Z), ``affine`` voxel -> MNI mm (4, 4).

    The one function that writes every case, real or synthetic: a fresh NIfTI-1 header with the
    same fields for all (qform and sform code 4 = MNI, mm units, empty description, cal 0-255, no
    scaling), uncompressed, so every case of a study has byte-identical headers and the same file
    size. Raises ValueError for another dtype or dimensionality.
    """
    if volume.dtype != np.uint8 or volume.ndim != 3:
        raise ValueError(f"volume: {volume.dtype} with {volume.ndim} dimensions; allowed: uint8 (X, Y, Z)")
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(volume, affine, header=header)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=4)
    image.set_sform(affine, code=4)
    image.header["descrip"] = b""
    image.header["aux_file"] = b""
    image.header["cal_min"], image.header["cal_max"] = 0.0, 255.0
    image.header.set_slope_inter(1.0, 0.0)
    _io.save_image(path, image)


def read_case(path: Path) -> np.ndarray:
    """A case as uint8 (X, Y, Z) in RAS+ orientation (the closest canonical one), read into memory
    (not memory-mapped: a file replaced later cannot pull the data away)."""
    image = nib.as_closest_canonical(nib.load(path, mmap=False))
    return np.asarray(image.dataobj, dtype=np.uint8)


@dataclass(frozen=True)
class Study:
    """A validated study folder (see the module docstring); ``cases`` maps case id -> sha256 (64 hex
    digits). ``grid``: the cases' grid as ``study.json`` records it; ``order_seed``: the seed of each
    reader's case order."""

    folder: Path
    study_id: str
    title: str
    grid: dict[str, Any]
    order_seed: int
    cases: dict[str, str]

    @property
    def case_ids(self) -> list[str]:
        """The case ids, sorted."""
        return sorted(self.cases)

    @property
    def database(self) -> Path:
        """The answers database, ``folder/answers.sqlite`` (it may not exist yet)."""
        return self.folder / DATABASE

    def case_file(self, case_id: str) -> Path:
        """``folder/cases/<case_id>.nii``, as :func:`case_path` (``ValueError`` for a malformed id)."""
        return case_path(self.folder, case_id)


def load_study(folder: str | Path, *, key: str = "optional", verify: bool = True) -> Study:
    """Read and check a study folder.

    ``key``: ``"required"`` (analysis), ``"optional"`` (serving: checked when present) or
    ``"ignore"``. ``verify``: compare every case file's
    sha256 with ``study.json``.

    Raises ValueError naming what is missing or wrong: no folder, no or malformed ``study.json``,
    missing case files, a case whose content differs from its recorded sha256, stray files in
    ``cases/``, no key (when required), or a key whose study id, case ids or hashes do not match.
    """
    if key not in ("required", "optional", "ignore"):
        raise ValueError(f"key={key!r}; allowed: 'required', 'optional' or 'ignore'")
    folder = Path(folder)
    shown = str(folder)
    if not folder.is_dir():
        raise ValueError(f"study={shown!r}: no such folder; allowed: a folder written by synthbrain reader-study create")
    meta = _io.read_json(folder / STUDY_FILE, INCOMPLETE)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"study={shown!r}: {STUDY_FILE} has format {meta.get('format')!r} version {meta.get('format_version')!r}; "
            f"allowed: {FORMAT!r} version {FORMAT_VERSION}"
        )
    try:
        cases = {str(c["id"]): str(c["sha256"]) for c in meta["cases"]}
        study = Study(folder, str(meta["study_id"]), str(meta["title"]), dict(meta["grid"]), int(meta["order_seed"]), cases)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"study={shown!r}: {STUDY_FILE} is incomplete ({err!r}); re-create the study") from None
    bad_ids = [c for c in cases if not CASE_ID.fullmatch(c)]
    if bad_ids or len(cases) != len(meta["cases"]) or len(cases) < 2:
        raise ValueError(f"study={shown!r}: {STUDY_FILE} lists invalid, repeated or too few case ids {bad_ids[:5]}")
    missing = [f"{CASES_DIR}/{c}.nii" for c in study.case_ids if not study.case_file(c).is_file()]
    if missing:
        raise ValueError(f"study={shown!r} is incomplete: missing {len(missing)} case file(s): {', '.join(missing[:10])}")
    present = {p.name for p in (folder / CASES_DIR).iterdir() if not p.name.startswith(_io.TMP_PREFIX)}
    stray = sorted(present - {f"{c}.nii" for c in cases})
    if stray:
        raise ValueError(f"study={shown!r}: {CASES_DIR}/ holds files that {STUDY_FILE} does not list: {', '.join(stray[:10])}")
    if verify:
        changed = [f"{CASES_DIR}/{c}.nii" for c in study.case_ids if _io.sha256_file(study.case_file(c)) != cases[c]]
        if changed:
            raise ValueError(f"study={shown!r}: case file(s) differ from the sha256 in {STUDY_FILE}: {', '.join(changed[:10])}")
    key_path = folder / KEY_DIR / KEY_FILE
    if key == "required" or (key == "optional" and key_path.exists()):
        check_key(study, read_key(folder))
    return study


def read_key(folder: str | Path) -> dict[str, Any]:
    """The key (``key/key.json``) of a study folder; ValueError when absent or malformed."""
    path = Path(folder) / KEY_DIR / KEY_FILE
    if not path.is_file():
        raise ValueError(
            f"study={str(folder)!r} is incomplete: missing {KEY_DIR}/{KEY_FILE} "
            "(the key; if it was moved away during the study, put it back)"
        )
    return _io.read_json(path, INCOMPLETE)


def check_key(study: Study, key: dict[str, Any]) -> None:
    """Raise ValueError unless ``key`` belongs to ``study``: same study id, the same case ids, each
    with a truth of ``real`` or ``synthetic`` and the sha256 of the case file the study lists."""
    shown = str(study.folder)
    if key.get("study_id") != study.study_id:
        raise ValueError(f"study={shown!r}: the key is of study {key.get('study_id')!r}, the cases of study {study.study_id!r}")
    try:
        entries = {str(c["id"]): c for c in key["cases"]}
    except (KeyError, TypeError):
        raise ValueError(f"study={shown!r}: {KEY_DIR}/{KEY_FILE} has no list of cases with ids") from None
    absent, extra = sorted(set(study.cases) - set(entries)), sorted(set(entries) - set(study.cases))
    if absent or extra:
        raise ValueError(f"study={shown!r}: the key does not match the cases: not in the key {absent[:10]}, not in the study {extra[:10]}")
    bad_truth = [c for c, e in entries.items() if e.get("truth") not in TRUTHS]
    if bad_truth:
        raise ValueError(f"study={shown!r}: key entries without a truth of {TRUTHS}: {bad_truth[:10]}")
    differ = [c for c, e in entries.items() if e.get("sha256") != study.cases[c]]
    if differ:
        raise ValueError(f"study={shown!r}: the key's sha256 differs from {STUDY_FILE} for case(s) {differ[:10]}")


def truth_table(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Case id -> key entry (``truth``, ``source``, ...), after checking the key against the study."""
    study = load_study(folder, key="required", verify=False)
    return {str(c["id"]): c for c in read_key(study.folder)["cases"]}
