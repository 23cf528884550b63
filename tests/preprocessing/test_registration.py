import nibabel as nib
import nibabel.processing
import numpy as np
import pytest

from synthbrain.grid import Grid
from synthbrain.preprocessing.registration import from_sitk, register, resample_to_grid, to_sitk
from synthbrain.preprocessing.template import load_template
from tests.helpers import rigid_matrix


@pytest.fixture(scope="module")
def template_2mm():
    img = nibabel.processing.resample_to_output(load_template(), voxel_sizes=2.0, order=1)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def test_itk_geometry_matches_nibabel():
    affine = np.array([[0, 0, 2.0, -88], [-2.0, 0, 0, 118], [0, 2.0, 0, -135], [0, 0, 0, 1]])  # PSR like IXI
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    image = to_sitk(data, affine)
    for index in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(index))
        ras = nib.affines.apply_affine(affine, index)
        np.testing.assert_allclose(lps * [-1, -1, 1], ras)
        assert image[index] == data[index]
    np.testing.assert_array_equal(from_sitk(image), data)


@pytest.mark.parametrize("kind", ["rigid", "affine"])
def test_recovers_a_known_rotation_and_translation_within_one_voxel(template_2mm, kind):
    fixed, affine = template_2mm
    motion = rigid_matrix([9.0, -6.0, 12.0], [7.0, -10.0, 5.0])  # template RAS -> subject RAS
    # The subject is the template seen in a moved scanner frame: same voxels, moved affine.
    result = register(fixed, motion @ affine, fixed, affine, kind=kind, fixed_mask=fixed > 0)
    brain = nib.affines.apply_affine(affine, np.argwhere(fixed > 0)[::10])
    error = np.linalg.norm(nib.affines.apply_affine(result.matrix_ras(), brain) - nib.affines.apply_affine(motion, brain), axis=1)
    assert error.max() < 2.0, f"max error {error.max():.2f} mm is more than one 2 mm voxel"


def test_resampling_with_the_found_transform_undoes_the_motion(template_2mm):
    fixed, affine = template_2mm
    motion = rigid_matrix([0.0, 0.0, 15.0], [4.0, 0.0, 0.0])
    result = register(fixed, motion @ affine, fixed, affine, fixed_mask=fixed > 0)
    grid = Grid(fixed.shape, 2.0, tuple(affine[:3, 3]))
    back = resample_to_grid(fixed, motion @ affine, grid, result.transform, labels=False)
    inside = fixed > 0
    assert np.corrcoef(back[inside], fixed[inside])[0, 1] > 0.99
    labels = resample_to_grid((fixed > 100).astype(np.uint8), motion @ affine, grid, result.transform, labels=True)
    assert set(np.unique(labels)) <= {0, 1}


def test_same_seed_gives_the_same_transform(template_2mm):
    fixed, affine = template_2mm
    moved = rigid_matrix([4.0, 0.0, -3.0], [2.0, 5.0, 0.0]) @ affine
    a, b, c = (register(fixed, moved, fixed, affine, fixed_mask=fixed > 0, seed=s).matrix_ras() for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed is used


def test_unknown_kind_is_named(template_2mm):
    fixed, affine = template_2mm
    with pytest.raises(ValueError, match="kind='elastic'"):
        register(fixed, affine, fixed, affine, kind="elastic")
    with pytest.raises(ValueError, match="seed=-1"):
        register(fixed, affine, fixed, affine, seed=-1)


# ---------------------------------------------------------------------------------------------------
# Intensity outliers (issue 32, fault 2; ANTsPy#446, ANTs#652, SCT#826): registration works on robust
# intensities, so one hot voxel does not move it and a z-scored image registers like the original.


@pytest.fixture(scope="module")
def subject_4mm():
    """A skull-stripped T1 made from the template's tissue bands (tests/helpers.py intensities) at
    4 mm, seen in a moved scanner frame; the registration template at 4 mm; the brain's points (mm)."""
    from synthbrain.preprocessing.template import registration_template
    from tests.helpers import MUSE, TEMPLATE_SUBJECT_INTENSITY

    template = nibabel.processing.resample_to_output(load_template(), voxel_sizes=4.0, order=1)
    t = np.asarray(template.dataobj, dtype=np.float32)
    labels = np.zeros(t.shape, np.int16)
    labels[t > 0], labels[t > 90], labels[t > 170] = MUSE["csf"], MUSE["cortex"], MUSE["wm"]
    image = np.vectorize(TEMPLATE_SUBJECT_INTENSITY.get)(labels).astype(np.float32)
    motion = rigid_matrix([5.0, -4.0, 8.0], [6.0, -5.0, 3.0])
    brain_points = nib.affines.apply_affine(template.affine, np.argwhere(labels > 0))
    return image, motion @ template.affine, registration_template(4.0), brain_points, motion


def _register(image, affine, template, **kwargs):
    fixed, fixed_affine, fixed_mask = template
    return register(image, affine, fixed, fixed_affine, "rigid", 0, fixed_mask, **kwargs).matrix_ras()


def _displacement_mm(a, b, points):
    """How far two template -> subject transforms put each brain point apart (mm)."""
    return np.linalg.norm(nib.affines.apply_affine(a, points) - nib.affines.apply_affine(b, points), axis=1)


def test_one_hot_voxel_does_not_move_the_registration(subject_4mm):
    image, affine, template, brain, motion = subject_4mm
    clean = _register(image, affine, template)
    assert _displacement_mm(clean, motion, brain).max() < 4.0  # the motion is found within a voxel
    inside = np.argwhere(image > 0)
    for voxel in inside[np.random.default_rng(0).choice(len(inside), size=3, replace=False)]:
        hot = image.copy()
        hot[tuple(voxel)] = 30000.0  # one voxel, as in the reports
        moved = _displacement_mm(_register(hot, affine, template), clean, brain)
        assert moved.max() < 0.5, f"one hot voxel at {tuple(voxel)} moved the brain by up to {moved.max():.2f} mm"


def test_a_z_scored_image_registers_like_the_original(subject_4mm):
    image, affine, template, brain, _ = subject_4mm
    inside = image > 0
    z_scored = np.where(inside, (image - image[inside].mean()) / image[inside].std(), 0.0).astype(np.float32)
    assert z_scored[inside].min() < 0 and abs(z_scored[inside].mean()) < 1e-4  # negative, zero-mean intensities
    moved = _displacement_mm(_register(z_scored, affine, template), _register(image, affine, template), brain)
    assert moved.max() < 0.5


def test_an_image_that_cannot_be_registered_is_refused_naming_its_intensities(subject_4mm):
    image, affine, template, _, _ = subject_4mm
    scaled = np.diag([0.1, 0.1, 0.1, 1.0]) @ affine  # voxel sizes in cm read as mm: a head 2 cm wide
    with pytest.raises(ValueError, match=r"sub-01_T1w.nii.gz: cannot be registered to the template; its intensities span \[0, 100\]"):
        _register(image, scaled, template, name="sub-01_T1w.nii.gz")
    nan = image.copy()
    nan[10, 10, 10] = np.nan
    with pytest.raises(ValueError, match=r"sub-02: 1 voxels are NaN or infinite"):
        _register(nan, affine, template, name="sub-02")
    with pytest.raises(ValueError, match=r"sub-03: cannot be registered; its intensities span \[0, 0\]"):
        _register(np.zeros_like(image), affine, template, name="sub-03")


def test_registration_intensities_are_winsorised_non_negative_and_keep_the_background(subject_4mm):
    from synthbrain.preprocessing.registration import registration_intensities

    image = subject_4mm[0]
    shifted = np.where(image > 0, image - 1000.0, 0.0)  # negative intensities, background 0
    robust, low, high = registration_intensities(shifted)
    assert (low, high) == (-980.0, -900.0)  # the 0.5th and 99.5th percentiles of the non-zero voxels
    assert robust.min() == 0.0 and robust.max() == 1.0 and robust[image == 0].max() == 0.0
    np.testing.assert_allclose(robust[image > 0], (image[image > 0] - 20.0) / 80.0, atol=1e-6)


def test_qc_flags_a_registration_that_moved_more_than_it_should():
    from synthbrain.preprocessing.qc import registration_flags

    assert registration_flags(rigid_matrix([10.0, -5.0, 15.0], [20.0, -30.0, 40.0]), 0.80, 0.85) == []
    assert registration_flags(np.eye(4), float("nan"), float("nan")) == []  # no brain mask: the overlap is not judged
    (misaligned,) = registration_flags(np.eye(4), 0.70, 0.90)
    assert misaligned.startswith("Dice / size bound 0.778 < 0.9")
    (rotated,) = registration_flags(rigid_matrix([0.0, 0.0, 45.0], [0.0, 0.0, 0.0]), 0.85, 0.86)
    assert rotated == "rotation 45.0 deg > 30 deg"
    (scaled,) = registration_flags(np.diag([2.5, 1.0, 1.0, 1.0]), 0.85, 0.86)
    assert scaled == "scaling 1.00-2.50 outside [0.5, 2]"
    assert registration_flags(np.diag([-1.0, 1.0, 1.0, 1.0]), 0.85, 0.86) == ["the transform mirrors the brain (negative determinant)"]
