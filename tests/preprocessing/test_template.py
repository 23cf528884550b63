import nibabel as nib
import numpy as np
import pytest

from synthbrain.preprocessing.template import BRAIN_CENTRE_MM, Grid, load_template, make_grid, template_brain_mask


@pytest.mark.parametrize("spacing, shape", [(1, (160, 224, 160)), (2, (80, 112, 80)), (3, (56, 80, 56)), (4, (40, 56, 40))])
def test_grid_shapes_cover_the_reference_field_of_view(spacing, shape):
    grid = make_grid(spacing)
    assert grid.shape == shape
    assert all(n % 8 == 0 for n in grid.shape)
    centre = nib.affines.apply_affine(grid.affine, (np.asarray(shape) - 1) / 2)
    np.testing.assert_allclose(centre, BRAIN_CENTRE_MM)
    assert Grid.from_dict(grid.to_dict()) == grid


def test_averaging_the_2mm_grid_by_2_gives_the_4mm_grid():
    fine, coarse = make_grid(2.0), make_grid(4.0)
    averaged = Grid(tuple(n // 2 for n in fine.shape), 4.0, tuple(o + 1.0 for o in fine.origin))
    assert averaged == coarse


def test_template_brain_fits_in_the_1mm_grid():
    grid = make_grid(1.0)
    mask = template_brain_mask()
    points = nib.affines.apply_affine(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0))
    index = nib.affines.apply_affine(np.linalg.inv(grid.affine), points)
    assert (index > -0.5).all() and (index < np.asarray(grid.shape) - 0.5).all()


def test_template_is_the_1mm_mni_template():
    template = load_template()
    assert template.shape == (197, 233, 189)
    np.testing.assert_allclose(template.affine[:3, 3], [-98, -134, -72])
    assert nib.aff2axcodes(template.affine) == ("R", "A", "S")


@pytest.mark.parametrize("spacing", [0, -1, 12, "2"])
def test_bad_spacing_is_named(spacing):
    with pytest.raises(ValueError, match=f"spacing={spacing!r}"):
        make_grid(spacing)
