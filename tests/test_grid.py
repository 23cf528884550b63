"""Grid, the core type of synthbrain.grid, still importable from its former home."""

import numpy as np

from synthbrain.grid import Grid


def test_grid_lives_in_the_core_and_its_old_import_path_still_works():
    from synthbrain.preprocessing.template import Grid as FromTemplate
    from synthbrain.preprocessing.template import make_grid

    assert FromTemplate is Grid and isinstance(make_grid(4.0), Grid)
    grid = Grid((2, 3, 4), 2.0, (-1.0, -2.0, -3.0))
    np.testing.assert_array_equal(grid.affine, [[2, 0, 0, -1], [0, 2, 0, -2], [0, 0, 2, -3], [0, 0, 0, 1]])
    assert Grid.from_dict(grid.to_dict()) == grid and grid.voxel_volume_mm3 == 8.0
