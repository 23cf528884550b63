"""Known answers written for survivors of the mutation run on ``synthbrain/preprocessing/prepare.py``
(docs/testing.md, "The orchestration modules")."""

from synthbrain.preprocessing.prepare import OUTPUT_FILES, _clear_or_refuse


def test_overwrite_clears_an_interrupted_preparation_and_keeps_other_files(tmp_path):
    """``overwrite`` over a preparation that stopped before writing most of its outputs (only
    ``params.json``, a subject and a QC folder): its outputs are deleted, the missing ones are no
    error, and a file that is not an output stays."""
    out = tmp_path / "out"
    (out / "subjects" / "s1").mkdir(parents=True)
    (out / "subjects" / "s1" / "record.json").write_text("{}")
    (out / "qc").mkdir()
    (out / "params.json").write_text("{}")
    (out / "notes.txt").write_text("the user's")
    assert "params.json" in OUTPUT_FILES and "manifest.json" in OUTPUT_FILES
    _clear_or_refuse(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "the user's"
