"""Previews and montages that read on their own (issue 34, point 6): plain views beside labelled ones,
one scale for every panel, a class legend, units in the titles, and no backend chosen at import."""

import subprocess
import sys

import numpy as np
import pytest

from synthbrain.figures import brain_rows, title_text
from tests.helpers import subprocess_env, tiny_generator


def _pixels_per_voxel(ax) -> tuple[float, float]:
    box = ax.get_window_extent()
    height, width = ax.images[0].get_array().shape
    return box.width / width, box.height / height


def test_every_panel_has_one_scale_plain_and_labelled_views_and_a_class_legend():
    rng = np.random.default_rng(0)
    shape = (12, 20, 8)  # three views of three different sizes
    images = [rng.random(shape) for _ in range(2)]
    labels = [rng.integers(0, 4, shape) for _ in range(2)]
    fig = brain_rows(images, labels, ["a: age 70 years", "b: age 45 years"], 2.0, ["background", "ventricles", "csf", "cortical_gm"])
    assert len(fig.axes) == 2 * 6
    scales = np.array([_pixels_per_voxel(ax) for ax in fig.axes])
    np.testing.assert_allclose(scales, scales[0, 0], rtol=1e-6)  # square voxels, the same size in every view and row
    for row in range(2):
        plain, labelled = fig.axes[6 * row : 6 * row + 3], fig.axes[6 * row + 3 : 6 * row + 6]
        assert all(len(ax.images) == 1 for ax in plain) and all(len(ax.images) == 2 for ax in labelled)
        for p, q in zip(plain, labelled):  # the same slice under the overlay
            np.testing.assert_array_equal(p.images[0].get_array(), q.images[0].get_array())
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ventricles", "csf", "cortical gm"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    texts = [t.get_text() for t in fig.texts]
    assert texts[:6] == ["axial", "coronal", "sagittal", "axial + labels", "coronal + labels", "sagittal + labels"]
    assert "a: age 70 years" in texts and "50 mm" in [t.get_text() for t in fig.axes[0].texts]


def test_without_label_maps_only_plain_views_and_no_legend():
    fig = brain_rows([np.zeros((8, 8, 8))], [None], ["x"], 4.0, None)
    assert len(fig.axes) == 3 and not fig.legends


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="class_names="):
        brain_rows([np.zeros((4, 4, 4))], [np.full((4, 4, 4), 3)], ["x"], 4.0, ["background", "a"])
    with pytest.raises(ValueError, match="allowed: one 3D shape"):
        brain_rows([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))], [None, None], ["x", "y"], 4.0)


def test_titles_carry_units_and_leave_out_seeds_and_quality_control():
    row = {"sex": "F", "age": 70.25, "ventricular_volume": 23.2815, "brain_volume": 1143.59, "seed": 12, "qc_pass": True}
    units = {"sex": "", "age": "years", "ventricular_volume": "mL", "brain_volume": "mL"}
    assert title_text("sub-1", row, units) == "sub-1: sex F, age 70.25 years, ventricular volume 23.28 mL, brain volume 1144 mL"


def test_the_preview_of_generated_brains_is_written_with_units(tmp_path):
    out = tiny_generator(distribution=True, steps=2).generate(age=[70, 45], sex=["F", "M"], seed=0)
    assert out.units["age"] == "years" and out.units["ventricular_volume"] == "mL"
    out.save(tmp_path / "synth")
    assert (tmp_path / "synth" / "preview.png").stat().st_size > 10_000


def test_importing_the_plotting_modules_chooses_no_backend():
    code = (
        "import matplotlib; before = matplotlib.get_backend(); "
        "import synthbrain.figures, synthbrain.evaluation.report, synthbrain.generator.output; "
        "print(before, matplotlib.get_backend())"
    )
    env = {**subprocess_env(), "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.split() == ["svg", "svg"], out.stdout + out.stderr
