import numpy as np
import pytest

from synthbrain.cohort import LabelScheme
from tests.helpers import MUSE


@pytest.fixture
def muse():
    return LabelScheme.load("muse-coarse")


def test_builtin_scheme_has_the_issue_classes(muse):
    assert muse.class_names == ("background", "ventricles", "csf", "cortical_gm", "white_matter", "deep_gm", "cerebellum", "brainstem")
    assert set(muse.volumes) == {"ventricular_volume", "brain_volume", "intracranial_volume"}


def test_remap_sends_each_label_to_its_class(muse):
    labels = np.array([0, MUSE["ventricle"], MUSE["csf"], MUSE["cortex"], MUSE["wm"], MUSE["deep"], MUSE["cerebellum"], MUSE["brainstem"]])
    assert muse.remap(labels).tolist() == list(range(8))


def test_unmapped_labels_are_an_error_not_background(muse):
    with pytest.raises(ValueError, match=r"labels \[3, 999\]"):
        muse.remap(np.array([0, 3, 999, 51]))


def test_coarse_volumes_agree_with_fine_volumes(muse):
    rng = np.random.default_rng(1)
    all_labels = [label for group in muse.class_labels for label in group]
    fine = rng.choice(all_labels, size=(20, 20, 20))
    fine_v = muse.measure_volumes(fine, 8.0)
    coarse_v = muse.measure_coarse_volumes(muse.remap(fine), 8.0)
    assert coarse_v["ventricular_volume"] == pytest.approx(fine_v["ventricular_volume"])
    # Coarse brain volume also counts optic chiasm (69), which MUSE's TotalBrain leaves out.
    chiasm = (fine == 69).sum() * 8.0 / 1000
    assert coarse_v["brain_volume"] == pytest.approx(fine_v["brain_volume"] + chiasm)


def test_invalid_schemes_are_refused(tmp_path):
    base = {"name": "x", "classes": [{"index": 0, "name": "bg", "labels": [0]}, {"index": 1, "name": "a", "labels": [1, 2]}]}
    with pytest.raises(ValueError, match="label 2 is in both"):
        LabelScheme.from_dict({**base, "classes": base["classes"] + [{"index": 2, "name": "b", "labels": [2]}]})
    with pytest.raises(ValueError, match="class indices"):
        LabelScheme.from_dict({**base, "classes": [{"index": 0, "name": "bg", "labels": [0]}, {"index": 5, "name": "a", "labels": [1]}]})
    with pytest.raises(ValueError, match="unknown classes"):
        LabelScheme.from_dict({**base, "coarse_volumes": {"v": ["nope"]}})
    with pytest.raises(ValueError, match="label_scheme='nothing.json'"):
        LabelScheme.load("nothing.json")


def test_scheme_round_trips_through_dict(muse):
    assert LabelScheme.from_dict(muse.to_dict()) == muse
