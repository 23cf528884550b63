import nibabel as nib
import nibabel.processing
import numpy as np
import pytest

from synthbrain.preprocessing.registration import from_sitk, register, resample_to_grid, to_sitk
from synthbrain.preprocessing.template import Grid, load_template
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
