"""Known answers written for survivors of the mutation run on ``synthbrain/preprocessing/prepare.py``
(docs/testing.md, "The orchestration modules")."""

import json

import pandas as pd

from synthbrain.cohort import CovariateSchema, default_schema, read_folder
from synthbrain.preprocessing.prepare import OUTPUT_FILES, PrepareParams, _clear_or_refuse, prepare_cohort
from tests.helpers import rigid_matrix, template_subject


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


def test_a_subject_without_a_label_map_is_prepared_with_the_template_mask(tmp_path):
    """Mutants in the label-less path of ``prepare_subject`` and ``_run_one`` (the template as the
    mask, NaN Dice, no label digest) survived: no test prepared a subject without a label map. It
    also found a fault, fixed since: the QC page divided the record's ``dice_template`` (null)."""
    root = tmp_path / "cohort"
    template_subject(root, "a01", rigid_matrix([6, 0, -8], [5, -6, 3]))
    pd.DataFrame({"subject_id": ["a01"], "age": [30.0], "sex": ["F"]}).to_csv(root / "participants.csv", index=False)
    schema = default_schema()
    cohort = read_folder(root / "images", root / "participants.csv", schema=CovariateSchema([schema["sex"], schema["age"]]))
    out = tmp_path / "prepared"
    prepare_cohort(cohort, out, PrepareParams(spacing=4.0, registration_spacing=4.0), workers=1, progress=False)
    record = json.loads((out / "subjects" / "a01" / "record.json").read_text())
    assert record["mask_source"] == "template" and record["dice_template"] is None
    assert record["source_labels"] is None and record["source_labels_sha256"] is None and record["labels"] is None
    assert sorted(p.name for p in (out / "subjects" / "a01").iterdir()) == ["record.json", "t1.nii.gz"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["subjects"] == 1 and manifest["summary"]["dice_template"]["median"] is None
    assert (out / "qc" / "montage.png").stat().st_size > 0
