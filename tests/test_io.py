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


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_written_is_strict_with_missing_values_as_null(tmp_path):
    target = tmp_path / "report.json"
    _io.write_json(target, {"r": float("nan"), "values": [1.0, np.float64("inf"), np.array([np.nan, 2.0])], "n": np.int64(3)})
    assert _strict_loads(target.read_text()) == {"r": None, "values": [1.0, None, [None, 2.0]], "n": 3}


def test_the_reports_and_model_files_in_the_repository_are_strict_json():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [*root.joinpath("docs").rglob("*.json"), *root.joinpath("synthbrain").rglob("*.json")]
    assert files
    for path in files:
        _strict_loads(path.read_text())  # jq, JavaScript and most JSON libraries refuse NaN and Infinity


def test_markdown_tables_show_a_dash_for_missing_values():
    import pandas as pd

    table = _io.markdown_table(pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", None]}))
    assert "nan" not in table.lower() and table.splitlines()[3] == "| - | - |"


def test_shown_paths_are_relative_below_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _io.shown_path(tmp_path / "runs" / "model") == "runs/model"
    assert _io.shown_path("/elsewhere/model") == "/elsewhere/model" and _io.shown_path("rel/x") == "rel/x"


def test_read_json_names_the_file_for_every_fault(tmp_path):
    path = tmp_path / "thing.json"
    with pytest.raises(ValueError, match=r"thing\.json: missing; a folder holds thing\.json$"):
        _io.read_json(path, "a folder holds thing.json")
    path.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match=r"thing\.json: not valid JSON \(Expecting"):
        _io.read_json(path, "x")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"thing\.json: a JSON list; expected an object"):
        _io.read_json(path, "x")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"thing\.json: unreadable \(.*utf-8"):
        _io.read_json(path, "x")
    path.write_text('{"a": [1, 2], "b": null}')
    assert _io.read_json(path, "x") == {"a": [1, 2], "b": None}


def test_dataclass_from_dict_refuses_unknown_keys_and_converts_named_fields():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Config:
        channels: tuple
        width: int = 3

    assert _io.dataclass_from_dict(Config, {"channels": [1, 2]}, "config", channels=tuple) == Config((1, 2), 3)
    assert _io.dataclass_from_dict(Config, {"channels": (1,), "width": 5}, "config") == Config((1,), 5)
    with pytest.raises(ValueError, match=r"^config: unknown keys \['depth', 'extra'\]; allowed: \['channels', 'width'\]$"):
        _io.dataclass_from_dict(Config, {"channels": [1], "extra": 1, "depth": 2}, "config")
    with pytest.raises(KeyError, match="channels"):
        _io.dataclass_from_dict(Config, {"width": 1}, "config", channels=tuple)


def test_a_claimed_folder_names_the_differing_keys_inside_sections(tmp_path):
    first = {"stage": "x", "training": {"lr": 1e-3, "precision": "bf16-mixed", "weights": {"kl": 1e-6}}, "grid": [1, 2]}
    _io.claim_folder(tmp_path, "run.json", first, argument="run_dir")
    _io.claim_folder(tmp_path, "run.json", first, argument="run_dir")  # the same configuration: accepted
    other = {"stage": "y", "training": {"lr": 1e-3, "weights": {"kl": 1e-7}}, "grid": {"shape": [1, 2]}}
    with pytest.raises(ValueError, match=r"holds .* \(differing: \['grid', 'stage', 'training\.precision', 'training\.weights\.kl'\]\)"):
        _io.claim_folder(tmp_path, "run.json", other, argument="run_dir")


def test_a_claimed_folder_from_an_earlier_version_resumes_when_a_new_setting_keeps_the_earlier_behaviour(tmp_path):
    earlier = {"stage": "x", "training": {"weights": {"kl": 1e-6}}}
    _io.claim_folder(tmp_path, "run.json", earlier, argument="run_dir")
    added = {"training.weights.dice": 0.0, "training.missing_section.key": 1}
    now = {"stage": "x", "training": {"weights": {"kl": 1e-6, "dice": 0.0}}}
    _io.claim_folder(tmp_path, "run.json", now, argument="run_dir", added=added)  # the earlier run resumes
    assert json.loads((tmp_path / "run.json").read_text()) == earlier  # its record is not rewritten
    with pytest.raises(ValueError, match=r"differing: \['training\.weights\.dice'\]"):
        _io.claim_folder(tmp_path, "run.json", now, argument="run_dir")  # without `added` the new key differs
    changed = {"stage": "x", "training": {"weights": {"kl": 1e-6, "dice": 0.5}}}
    with pytest.raises(ValueError, match=r"differing: \['training\.weights\.dice'\]"):
        _io.claim_folder(tmp_path, "run.json", changed, argument="run_dir", added=added)
