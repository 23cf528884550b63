"""Which voxel-to-world transform of a NIfTI header to trust, checked before anything is measured.

A NIfTI-1/-2 header can hold two voxel-to-world transforms (NIfTI-1 standard, ``nifti1.h``, section
"3D image (volume) orientation and location in space"):

* the **qform** (``qform_code`` > 0): a rotation (quaternion ``quatern_b/c/d``), the voxel sizes
  ``pixdim[1:4]``, the handedness ``qfac = pixdim[0]`` and an offset;
* the **sform** (``sform_code`` > 0): a general affine, the rows ``srow_x/y/z``.

Readers such as nibabel use the sform when its code is set and the qform otherwise, without a
word when the two disagree, when the sform is singular or not finite, or when neither is set (then
left and right are unknown). A mirrored or degenerate transform silently mirrors the prepared
brain or scales every volume measured from a label map. :func:`resolve_geometry` decides instead:

* neither code set: no orientation, a problem;
* a code outside the NIfTI xform codes (0-5), a spatial unit other than mm (or unknown), a
  non-finite, singular (condition number > :data:`MAX_CONDITION`) or otherwise invalid transform
  (impossible quaternion, voxel sizes <= 0): a problem, naming the transform and its matrix;
* both set and valid but different (some voxel of the image lands more than
  :data:`AGREEMENT_VOXELS` of a voxel apart, or their handedness differs): a problem, unless the
  caller chose which to trust (``trust="sform"`` or ``"qform"``);
* one set and valid, the other set but invalid: the valid one is used, and that is recorded;
* the sform's voxel sizes differ from ``pixdim[1:4]`` (relative tolerance :data:`PIXDIM_RTOL`):
  a problem (an identity sform on a 2 mm image makes every volume 8x too small), unless the caller
  chose to trust the sform.

What was chosen and why is kept in :class:`HeaderGeometry` (``source``, ``notes``), which the
prepared cohort records per file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

TRUST = ("sform", "qform")
MAX_CONDITION = 1e4  # of the 3x3 voxel-to-mm matrix; MRI voxels are never 10^4 times longer one way than another
AGREEMENT_VOXELS = 0.1  # qform and sform agree when no voxel of the image moves more than this many (smallest) voxels
PIXDIM_RTOL = 1e-3  # relative tolerance between the sform's voxel sizes and pixdim[1:4]
_SPATIAL_UNITS_OK = ("unknown", "mm")  # NIfTI-1 xyzt_units; 'unknown' is read as mm, as every NIfTI reader does


class HeaderError(ValueError):
    """A file's header gives no trustworthy orientation; ``problems`` lists every reason."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = Path(path)
        self.problems = problems
        super().__init__(f"{self.path.name}: " + "; ".join(problems))


class VoxelError(ValueError):
    """A file's voxels are not one volume of real-valued scalars (see :func:`voxels`)."""


@dataclass(frozen=True)
class HeaderGeometry:
    """The transform chosen for one file.

    ``affine`` is the (4, 4) voxel-index (i, j, k) to world-mm (RAS+) matrix; ``source`` is
    ``"sform"`` or ``"qform"``; ``qform_code`` and ``sform_code`` are the header's codes (NIfTI-1 xform
    codes 0-5); ``pixdim`` is the header's ``pixdim[1:4]`` in mm; ``notes`` say what was decided and why
    (for example that a singular sform was passed over for the valid qform).
    """

    source: str
    affine: np.ndarray
    qform_code: int
    sform_code: int
    pixdim: tuple[float, float, float]
    notes: tuple[str, ...] = field(default=())

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """The direction each voxel axis points to, as nibabel's ``aff2axcodes`` gives it (e.g. ``("R", "A", "S")``)."""
        return tuple(nib.aff2axcodes(self.affine))

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """The voxel size along each voxel axis in mm: the column norms of the affine's 3 x 3 part."""
        return tuple(float(x) for x in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_volume_mm3(self) -> float:
        """The volume of one voxel in mm3: the absolute determinant of the affine's 3 x 3 part (exact for sheared grids)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: source, codes, axis codes, voxel size (mm), pixdim, the affine and the notes."""
        return {
            "source": self.source,
            "qform_code": self.qform_code,
            "sform_code": self.sform_code,
            "axcodes": "".join(self.axcodes),
            "voxel_size_mm": [round(v, 6) for v in self.voxel_size_mm],
            "pixdim": [round(v, 6) for v in self.pixdim],
            "affine": np.round(self.affine, 6).tolist(),
            "notes": list(self.notes),
        }


def check_trust(trust: str | None) -> None:
    """Raise ``ValueError`` unless ``trust`` is None, ``"sform"`` or ``"qform"``."""
    if trust is not None and trust not in TRUST:
        raise ValueError(f"trust_header={trust!r}; allowed: None (use them when they agree), {list(TRUST)}")


def read_header(path: str | Path) -> nib.Nifti1Header:
    """The header of a ``.nii``/``.nii.gz`` file as stored, without nibabel's silent fixes (an
    invalid ``qform_code`` set to 0, say). Raises ``ValueError`` if it is not a NIfTI-1/-2 header."""
    with nib.openers.ImageOpener(str(path)) as handle:
        block = handle.read(nib.Nifti2Header.sizeof_hdr)
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        if klass.may_contain_header(block):
            return klass(binaryblock=block[: klass.sizeof_hdr], check=False)
    if nib.AnalyzeHeader.may_contain_header(block):
        raise HeaderError(
            path,
            [
                "an Analyze 7.5 header (no NIfTI magic), which holds no orientation (left and right are unknown); "
                "allowed: NIfTI-1 or NIfTI-2; convert it to NIfTI with the image's real orientation"
            ],
        )
    raise ValueError(f"{Path(path).name}: not a NIfTI-1 or NIfTI-2 header (magic {block[344:348]!r})")


def resolve_geometry(header: nib.Nifti1Header, path: str | Path, trust: str | None = None) -> HeaderGeometry:
    """Choose the voxel-to-world transform of ``header`` (read from ``path``) as described in the
    module docstring. ``trust`` (``"sform"``, ``"qform"`` or None) names the transform to use when
    both are set and disagree. Raises :class:`HeaderError` listing every problem found."""
    check_trust(trust)
    problems: list[str] = []
    notes: list[str] = []
    shape = tuple(int(n) for n in header.get_data_shape()[:3])
    pixdim = tuple(float(x) for x in header["pixdim"][1:4])
    spatial_unit = _spatial_unit(header)
    if spatial_unit not in _SPATIAL_UNITS_OK:
        problems.append(f"spatial unit (xyzt_units) is {spatial_unit!r}; only mm (or unknown, read as mm) is supported")

    codes = {"qform": int(header["qform_code"]), "sform": int(header["sform_code"])}
    valid_codes = sorted(nib.nifti1.xform_codes.value_set())
    matrices: dict[str, np.ndarray] = {}
    invalid: dict[str, str] = {}
    for name, code in codes.items():
        if code not in valid_codes:
            problems.append(f"{name}_code {code} is not a NIfTI xform code (allowed: {valid_codes})")
        elif code > 0:
            matrix, reason = _qform(header) if name == "qform" else _sform(header)
            if reason is None:
                matrices[name] = matrix
            else:
                invalid[name] = reason
    if problems:
        raise HeaderError(path, problems)

    if not any(codes.values()):
        raise HeaderError(
            path,
            [
                "no orientation: qform_code and sform_code are both 0, so the axes (and left from right) are unknown "
                "(NIfTI-1 'method 1'); set a qform or sform with the image's real orientation"
            ],
        )

    if trust is not None:
        if codes[trust] == 0:
            raise HeaderError(path, [f"trust_header={trust!r} but {trust}_code is 0 (the header has no {trust})"])
        if trust in invalid:
            raise HeaderError(path, [f"trust_header={trust!r} but the {invalid[trust]}"])
        source = trust
        other = "qform" if trust == "sform" else "sform"
        if other in matrices:
            difference = _disagreement(matrices["qform"], matrices["sform"], shape)
            if difference:
                notes.append(f"qform and sform disagree ({difference}); the {trust} is used as asked (trust_header={trust!r})")
        elif other in invalid:
            notes.append(f"the {invalid[other]}; the {trust} is used as asked")
    else:
        if invalid and not matrices:
            raise HeaderError(path, [invalid[name] for name in ("sform", "qform") if name in invalid])
        if len(matrices) == 2:
            difference = _disagreement(matrices["qform"], matrices["sform"], shape)
            if difference:
                spaces = ""
                if codes["qform"] != codes["sform"]:  # e.g. scanner (1) vs MNI (4): the NIfTI-1 standard allows two spaces
                    spaces = (
                        f" (they name different spaces, {_space(codes['qform'])} and {_space(codes['sform'])}; "
                        "volumes are measured with the chosen one's voxel size)"
                    )
                raise HeaderError(
                    path,
                    [
                        f"qform and sform disagree ({difference}): qform (code {codes['qform']}, {_axcodes(matrices['qform'])}) "
                        f"{_matrix(matrices['qform'])}, sform (code {codes['sform']}, {_axcodes(matrices['sform'])}) "
                        f"{_matrix(matrices['sform'])}; choose the one to trust with trust_header='qform' or 'sform' "
                        f"(--trust-header){spaces}"
                    ],
                )
            source = "sform"
        else:
            source = next(iter(matrices))
            for name, reason in invalid.items():
                notes.append(f"the {reason}; the valid {source} (code {codes[source]}) is used")

    affine = matrices[source]
    if source == "sform":
        sizes = np.linalg.norm(affine[:3, :3], axis=0)
        if not np.allclose(sizes, np.abs(pixdim), rtol=PIXDIM_RTOL, atol=1e-6):
            message = (
                f"voxel size from the sform {_mm(sizes)} differs from the header's pixdim[1:4] {_mm(pixdim)} (sform {_matrix(affine)})"
            )
            if trust == "sform":
                notes.append(f"{message}; the sform is used as asked")
            else:
                hint = "; choose with trust_header='qform' or 'sform' (--trust-header)" if "qform" in matrices else ""
                raise HeaderError(path, [message + hint])
    return HeaderGeometry(source, affine, codes["qform"], codes["sform"], pixdim, tuple(notes))


def read_geometry(path: str | Path, trust: str | None = None) -> HeaderGeometry:
    """:func:`resolve_geometry` of the header of ``path``. Raises :class:`HeaderError` (a
    ``ValueError``) for an untrustworthy orientation, ``ValueError``/``OSError`` for an unreadable header."""
    return resolve_geometry(read_header(path), path, trust)


def load_oriented(path: str | Path, trust: str | None = None) -> tuple[nib.Nifti1Image, HeaderGeometry]:
    """The image of ``path`` with its checked transform as its affine (3D voxels in memory, as
    :func:`voxels` gives them: scaled by the header's ``scl_slope``/``scl_inter``, the dtype nibabel
    gives, float for scaled data), and the :class:`HeaderGeometry` that chose it. Raises as
    :func:`read_geometry` and :func:`voxels`."""
    geometry = read_geometry(path, trust)
    data = voxels(load_image(path), path)
    return nib.Nifti1Image(data, geometry.affine, dtype=data.dtype), geometry


def load_image(path: str | Path) -> nib.spatialimages.SpatialImage:
    """The NIfTI-1/-2 image of ``path`` (voxels not yet read): a single file (``.nii``, ``.nii.gz``) or
    a pair named by its header (``.hdr``, ``.hdr.gz``, voxels in the ``.img``/``.img.gz`` beside it),
    with any case of suffix (nibabel's own loader derives a lower-case name from ``s01.Nii``).
    Raises ``ValueError`` for another header, ``FileNotFoundError`` for a pair without its ``.img``."""
    path = Path(path)
    header = read_header(path)
    single = bytes(header["magic"]).startswith((b"n+1", b"n+2"))
    if isinstance(header, nib.Nifti2Header):
        klass = nib.Nifti2Image if single else nib.Nifti2Pair
    else:
        klass = nib.Nifti1Image if single else nib.Nifti1Pair
    if single:
        file_map = {"image": nib.fileholders.FileHolder(str(path))}
    else:
        lower = path.name.lower()
        wanted = lower[: lower.rindex(".hdr")] + ".img" + (".gz" if lower.endswith(".gz") else "")
        partner = next((p for p in path.parent.iterdir() if p.name.lower() == wanted), None)
        if partner is None:
            raise FileNotFoundError(f"{path.name}: a NIfTI pair header whose voxels ({wanted}, any case) are missing")
        file_map = {"header": nib.fileholders.FileHolder(str(path)), "image": nib.fileholders.FileHolder(str(partner))}
    return klass.from_file_map(file_map)


def voxels(img: nib.spatialimages.SpatialImage, path: str | Path) -> np.ndarray:
    """The voxels of a 3D image file: an integer or floating-point (D, H, W) array in native byte
    order, scaled by ``scl_slope``/``scl_inter`` (nibabel's ``dataobj``); trailing axes of length 1
    (``(D, H, W, 1)``, ``(D, H, W, 1, 1)``) are dropped. Raises :class:`VoxelError` (a ``ValueError``)
    naming the file for other data types (complex, RGB) and for more than one volume or fewer than 3
    axes; what nibabel raises for a truncated or unreadable file."""
    check_voxel_form(img.header, path)
    data = np.asanyarray(img.dataobj)
    return data.reshape(data.shape[:3]).astype(data.dtype.newbyteorder("="), copy=False)


def check_voxel_form(header: nib.Nifti1Header, path: str | Path) -> None:
    """Raise :class:`VoxelError` naming ``path`` unless its header (:func:`read_header`, or an
    image's) describes one 3D volume (trailing axes of length 1 allowed) of integer or floating-point
    voxels; what :func:`voxels` reads, checked without reading the voxels."""
    name = Path(path).name
    dtype = header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise VoxelError(f"{name}: voxel data type {dtype} is not real-valued; allowed: real-valued scalars (an integer or floating type)")
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise VoxelError(f"{name}: not 3D: shape {shape}; allowed: one 3D volume (trailing axes of length 1 are dropped)")


# --------------------------------------------------------------------------------------------------


def _qform(header) -> tuple[np.ndarray | None, str | None]:
    code = int(header["qform_code"])
    fixed = header.copy()
    qfac = float(fixed["pixdim"][0])
    fixed["pixdim"][0] = -1.0 if qfac < 0 else 1.0  # NIfTI-1: qfac is -1 when pixdim[0] < 0, else 1
    bcd = [float(header[k]) for k in ("quatern_b", "quatern_c", "quatern_d")]
    pixdim = [float(x) for x in header["pixdim"][1:4]]
    if not all(np.isfinite(bcd + pixdim)):
        return None, f"qform (code {code}) is not finite: quaternion (b, c, d) {bcd}, pixdim[1:4] {pixdim}"
    if min(pixdim) <= 0:
        return None, f"qform (code {code}) is singular or invalid: its voxel sizes pixdim[1:4] {pixdim} must all be > 0"
    try:
        matrix = fixed.get_qform()
    except (ValueError, nib.spatialimages.HeaderDataError) as err:
        return None, f"qform (code {code}) is invalid: quaternion (b, c, d) {bcd} ({err})"
    reason = _degenerate(matrix)
    return (matrix, None) if reason is None else (None, f"qform (code {code}) {reason}: {_matrix(matrix)}")


def _sform(header) -> tuple[np.ndarray | None, str | None]:
    code = int(header["sform_code"])
    matrix = header.get_sform()
    reason = _degenerate(matrix)
    return (matrix, None) if reason is None else (None, f"sform (code {code}) {reason}: {_matrix(matrix)}")


def _degenerate(matrix: np.ndarray) -> str | None:
    if not np.isfinite(matrix).all():
        return "is not finite"
    m = matrix[:3, :3]
    if np.linalg.norm(m, axis=0).min() == 0 or np.linalg.cond(m) > MAX_CONDITION:
        return f"is singular (determinant {np.linalg.det(m):.3g}, condition number {np.linalg.cond(m):.3g})"
    return None


def _disagreement(qform: np.ndarray, sform: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why two transforms disagree (handedness, or how far apart they put the image), or None."""
    dq, ds = np.linalg.det(qform[:3, :3]), np.linalg.det(sform[:3, :3])
    if np.sign(dq) != np.sign(ds):
        return f"their handedness differs: qform {_axcodes(qform)}, sform {_axcodes(sform)}, one is a mirror image of the other"
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape], indexing="ij")).reshape(3, -1).T
    distance = np.linalg.norm(nib.affines.apply_affine(qform, corners) - nib.affines.apply_affine(sform, corners), axis=1).max()
    voxel = min(np.linalg.norm(qform[:3, :3], axis=0).min(), np.linalg.norm(sform[:3, :3], axis=0).min())
    if distance > AGREEMENT_VOXELS * voxel:
        return f"they place a voxel of the image up to {distance:.3g} mm apart, more than {AGREEMENT_VOXELS:g} voxel"
    return None


def _spatial_unit(header) -> str:
    try:
        return header.get_xyzt_units()[0]
    except KeyError:
        return f"code {int(header['xyzt_units']) % 8}"


def _space(code: int) -> str:
    return f"{code} = {nib.nifti1.xform_codes.label[code]!r}"


def _axcodes(matrix: np.ndarray) -> str:
    return "".join(str(c) for c in nib.aff2axcodes(matrix))


def _matrix(matrix: np.ndarray) -> str:
    rows = ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in np.asarray(matrix)[:3])
    return f"[{rows}]"


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ") mm"
