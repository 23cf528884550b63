"""Rigid or affine registration of a T1 image to the MNI template, and resampling onto a grid.

SimpleITK does the work: Mattes mutual information, a moments-based initial alignment, a
three-level pyramid and regular-step gradient descent with physical-shift scales. Both images are
registered on robust intensities (:func:`registration_intensities`: the non-zero voxels winsorised at
their 0.5th and 99.5th percentiles and mapped to [0, 1], as ANTs' ``--winsorize-image-intensities``
does), so that one outlying voxel can neither stretch the metric's histogram nor pull the moments
initialisation, and negative or zero-mean intensities (a z-scored image) register like any other;
the resampled output keeps the original intensities. Metric samples
are drawn from an explicit seed (ITK reserves seed 0 for "use the wall clock", so seed ``s`` is
passed to ITK as ``s + 1``), and the optimisation runs on one thread (ITK's multi-threaded metric
sums in a varying order): the same seed gives exactly the same transform. Parallelism comes from
preparing several subjects at once.

nibabel arrays index (i, j, k) with a voxel-to-RAS affine; ITK images index (x, y, z) in LPS mm.
:func:`to_sitk` is the one place where the two conventions meet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from synthbrain import seeding
from synthbrain.grid import Grid
from synthbrain.preprocessing.intensity import robust_normalize

KINDS = ("rigid", "affine")
WINSORIZE = (0.5, 99.5)  # percentiles of the non-zero voxels that registration clips the intensities to
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class RegistrationResult:
    """What :func:`register` found: ``transform`` (a SimpleITK ``Euler3DTransform`` or ``AffineTransform``)
    maps template (fixed) LPS mm points to subject (moving) LPS mm points, as ITK's resampling needs;
    ``metric`` is the final Mattes mutual information (negative; lower is better aligned); ``kind`` is
    ``"rigid"`` or ``"affine"``; ``moving_range``: the moving image's intensities (its units) that
    registration clipped to (:func:`registration_intensities`)."""

    transform: sitk.Transform  # maps template (fixed) LPS points to subject (moving) LPS points
    metric: float
    kind: str
    moving_range: tuple[float, float] = (float("nan"), float("nan"))  # the moving image's intensities clipped to

    def matrix_ras(self) -> np.ndarray:
        """The 4x4 template-RAS-mm → subject-RAS-mm matrix of the transform."""
        return transform_to_ras_matrix(self.transform)


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """An array indexed (i, j, k) with a (4, 4) voxel-to-RAS affine → an ITK image with the same geometry
    (spacing from the affine's column norms, direction and origin in LPS); the voxel dtype is kept."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    lps = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((_LPS @ affine[:3, 3]).tolist())
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """The voxels of an ITK image as a numpy array indexed (i, j, k) (the inverse of :func:`to_sitk`'s transpose)."""
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def register(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    kind: str = "rigid",
    seed: int = 0,
    fixed_mask: np.ndarray | None = None,
    *,
    winsorize: tuple[float, float] = WINSORIZE,
    name: str = "moving",
) -> RegistrationResult:
    """Find the ``kind`` transform that aligns ``moving`` to ``fixed`` (3D arrays, each with its (4, 4)
    voxel-to-RAS mm affine), with SimpleITK as the module docstring says; ``"affine"`` starts from the
    rigid result. Both images are registered on :func:`registration_intensities` with the
    percentiles ``winsorize``.

    ``seed`` (>= 0) fixes the metric's sample positions. ``name`` names the moving image (its file)
    in errors. Raises ``ValueError`` for an unknown ``kind``, a negative or non-integer ``seed``, and
    for an image that cannot be registered, naming ``name`` and its intensity range: non-finite
    voxels, no non-zero voxels, constant intensities, or an ITK failure (such as "All samples map
    outside moving image buffer").

    ``fixed_mask`` restricts where the metric is sampled (e.g. the template brain, dilated): on
    the IXI-HH subjects it gave the same brain-mask Dice as sampling the whole template, 2.4x faster.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; allowed: {list(KINDS)}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed={seed!r}; allowed: an integer >= 0")
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        moving_robust, low, high = registration_intensities(moving, name, winsorize)
        fixed_robust = registration_intensities(fixed, "the template", winsorize)[0]
        try:
            result = _register(moving_robust, moving_affine, fixed_robust, fixed_affine, kind, seed, fixed_mask)
        except RuntimeError as err:  # ITK's exceptions; the last line says what went wrong
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or ["unknown error"]
            reason = re.sub(r"^ITK ERROR:\s*|\(0x[0-9a-f]+\)", "", lines[-1])
            raise ValueError(
                f"{name}: cannot be registered to the template; its intensities span [{_range(moving)}] (registered on "
                f"[{low:g}, {high:g}], its non-zero voxels' {winsorize[0]:g}th-{winsorize[1]:g}th percentiles); ITK: {reason}"
            ) from None
        return RegistrationResult(result.transform, result.metric, result.kind, (low, high))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def registration_intensities(data: np.ndarray, name: str = "image", percentiles: tuple[float, float] = WINSORIZE):
    """The intensities an image is registered on: its non-zero voxels winsorised at their
    ``percentiles`` and mapped to [0, 1] (:func:`~synthbrain.preprocessing.intensity.robust_normalize`),
    zero voxels (background, or outside a skull-stripping mask) kept 0. Returns the float32 array
    (same shape) and the two intensities (the input's units) mapped to 0 and 1.

    Raises ``ValueError`` naming ``name`` and the intensity range for NaN or infinite voxels, an
    image without non-zero voxels, or non-zero intensities that are constant between the percentiles.
    """
    data = np.asarray(data, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f"{name}: {bad} voxels are NaN or infinite; registration needs finite intensities")
    nonzero = data != 0
    try:
        return robust_normalize(data, nonzero, percentiles, zero_outside=True)
    except ValueError as err:
        raise ValueError(f"{name}: cannot be registered; its intensities span [{_range(data)}]: {err}") from None


def _range(data: np.ndarray) -> str:
    return f"{float(np.min(data)):g}, {float(np.max(data)):g}" if np.size(data) else "no voxels"


def _register(moving, moving_affine, fixed, fixed_affine, kind, seed, fixed_mask) -> RegistrationResult:
    fixed_img = sitk.Cast(to_sitk(fixed, fixed_affine), sitk.sitkFloat32)
    moving_img = sitk.Cast(to_sitk(moving, moving_affine), sitk.sitkFloat32)
    rigid = sitk.CenteredTransformInitializer(
        fixed_img, moving_img, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    mask_img = to_sitk(fixed_mask.astype(np.uint8), fixed_affine) if fixed_mask is not None else None
    rigid, metric = _optimise(fixed_img, moving_img, rigid, seed, mask_img)
    if kind == "rigid":
        return RegistrationResult(rigid, metric, kind)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine, metric = _optimise(fixed_img, moving_img, affine, seed, mask_img)
    return RegistrationResult(affine, metric, kind)


def _optimise(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, seed: int, fixed_mask: sitk.Image | None
) -> tuple[sitk.Transform, float]:
    method = sitk.ImageRegistrationMethod()
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.25, seeding.itk_seed(seed))  # ITK's seed 0 would mean the wall clock
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([4.0, 2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    # Execute wraps the result in a composite transform; unwrap the single optimised transform.
    if transform.GetName() == "CompositeTransform":
        transform = sitk.CompositeTransform(transform).GetBackTransform()
    return transform, float(method.GetMetricValue())


def resample_to_grid(data: np.ndarray, affine: np.ndarray, grid: Grid, transform: sitk.Transform, *, labels: bool) -> np.ndarray:
    """Resample a subject-space array (with its (4, 4) voxel-to-RAS affine) onto ``grid`` through ``transform``
    (grid LPS points → subject LPS points, as :class:`RegistrationResult` gives): linear for images
    (float32 out), nearest neighbour for labels (the input dtype kept); ``grid.shape`` out, 0 outside
    the subject's field of view (SimpleITK ``Resample``)."""
    reference = sitk.Image([int(n) for n in grid.shape], sitk.sitkUInt8)
    reference.SetSpacing([grid.spacing] * 3)
    reference.SetDirection((_LPS).flatten().tolist())
    reference.SetOrigin((_LPS @ np.asarray(grid.origin)).tolist())
    source = to_sitk(data if labels else data.astype(np.float32), affine)
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.Resample(source, reference, transform, interpolator, 0.0, source.GetPixelID())
    return from_sitk(out)


def transform_to_ras_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 RAS mm matrix of an affine-family ITK transform (which works in LPS mm): the same
    mapping, conjugated by the LPS ↔ RAS flip ``diag(-1, -1, 1)``."""
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    center = np.asarray(transform.GetCenter())
    translation = np.asarray(transform.GetTranslation())
    offset = translation + center - matrix @ center
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = offset
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip
