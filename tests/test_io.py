import json

import nibabel as nib
import numpy as np
import pytest

from synthbrain import _io


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with _io.atomic_path(target) as tmp:
            tmp.write_text("{partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a.json"
    _io.write_json(target, {"x": 1})
    _io.write_json(target, {"x": np.float32(2.5), "y": np.arange(2)})
    assert json.loads(target.read_text()) == {"x": 2.5, "y": [0, 1]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_nifti_keeps_affine_and_space_code(tmp_path):
    affine = np.array([[2.0, 0, 0, -80], [0, 2, 0, -120], [0, 0, 2, -60], [0, 0, 0, 1]])
    _io.save_nifti(tmp_path / "v.nii.gz", np.ones((4, 5, 6), np.float32), affine)
    img = nib.load(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    assert int(img.header["sform_code"]) == 4 and int(img.header["qform_code"]) == 4


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".tmp-abc-t1.nii.gz").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    assert _io.remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.txt"]
