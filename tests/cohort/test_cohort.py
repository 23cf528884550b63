import gzip

import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import CohortError, read_bids, read_folder
from tests.helpers import MUSE, tiny_labels, write_nifti


def read(f, **kw):
    return read_folder(f["images"], f["table"], labels=f["labels"], **kw)


def test_reads_folder_and_measures_volumes_from_labels(tiny_folder):
    cohort = read(tiny_folder)
    assert [s.subject_id for s in cohort.subjects] == ["s01", "s02", "s03"]
    s = cohort.subjects[1]
    assert s.covariates["sex"] == "M" and s.covariates["age"] == 40.0
    lab = tiny_labels()
    voxel_ml = 8 / 1000  # 2 mm voxels
    assert s.covariates["ventricular_volume"] == pytest.approx((lab == MUSE["ventricle"]).sum() * voxel_ml)
    assert s.covariates["brain_volume"] == pytest.approx((lab > 0).sum() * voxel_ml)
    assert s.covariates["intracranial_volume"] == pytest.approx((lab > 0).sum() * voxel_ml)
    assert not cohort.skipped and not cohort.warnings


def test_table_columns_and_units_take_precedence(tiny_folder):
    table = pd.read_csv(tiny_folder["table"])
    table["ventricles"] = [1000.0, 2000.0, 3000.0]  # mm3
    table.to_csv(tiny_folder["table"], index=False)
    cohort = read(tiny_folder, columns={"ventricular_volume": "ventricles"}, units={"ventricular_volume": "mm3"})
    assert [s.covariates["ventricular_volume"] for s in cohort.subjects] == pytest.approx([1.0, 2.0, 3.0])


def test_missing_covariate_column_without_labels_is_an_error(tiny_folder):
    with pytest.raises(ValueError, match="no column 'ventricular_volume'"):
        read_folder(tiny_folder["images"], tiny_folder["table"])


def test_missing_values_are_kept_and_reported(tiny_folder):
    table = pd.read_csv(tiny_folder["table"])
    table.loc[0, "age"] = np.nan
    table.to_csv(tiny_folder["table"], index=False)
    cohort = read(tiny_folder)
    assert len(cohort) == 3 and np.isnan(cohort.subjects[0].covariates["age"])
    assert any("s01" in w and "age" in w for w in cohort.warnings)


def _break(f, how):
    """Apply one kind of damage to the tiny cohort; return the text its report must contain."""
    img, lab, table = f["images"], f["labels"], f["table"]
    rows = pd.read_csv(table, dtype=str)
    if how == "missing image":
        (img / "s02_T1.nii.gz").unlink()
        return "no image file for this table row"
    if how == "image without row":
        write_nifti(img / "s99_T1.nii.gz", np.ones((10, 10, 10), np.float32))
        return "image has no row in the table"
    if how == "duplicate row":
        pd.concat([rows, rows.iloc[[0]]]).to_csv(table, index=False)
        return "appears in 2 table rows"
    if how == "two images for one id":
        write_nifti(img / "s01_T1_run-2.nii.gz", np.ones((10, 10, 10), np.float32))
        return "2 image files match this id"
    if how == "unreadable":
        (img / "s02_T1.nii.gz").write_bytes(b"this is not a nifti file")
        return "unreadable or truncated"
    if how == "truncated":
        data = (img / "s02_T1.nii.gz").read_bytes()
        (img / "s02_T1.nii.gz").write_bytes(data[: len(data) // 2])
        return "unreadable or truncated"
    if how == "not 3D":
        write_nifti(img / "s02_T1.nii.gz", np.ones((10, 10, 10, 3), np.float32))
        return "not 3D"
    if how == "NaN voxels":
        data = np.ones((10, 10, 10), np.float32)
        data[1, 2, 3], data[4, 5, 6] = np.nan, np.inf
        write_nifti(img / "s02_T1.nii.gz", data)
        return "2 NaN/Inf voxels"
    if how == "label grid differs":
        write_nifti(lab / "s02_T1_seg.nii.gz", tiny_labels((12, 10, 10)))
        return "label map grid (12, 10, 10) differs"
    if how == "label affine differs":
        write_nifti(lab / "s02_T1_seg.nii.gz", tiny_labels(), np.diag([3.0, 3.0, 3.0, 1.0]))
        return "label map grid"
    if how == "non-numeric covariate":
        rows.loc[1, "age"] = "forty"
        rows.to_csv(table, index=False)
        return "column 'age'"
    if how == "unknown category":
        rows.loc[1, "sex"] = "X"
        rows.to_csv(table, index=False)
        return "allowed: one of ['F', 'M']"
    if how == "unmapped label":
        bad = tiny_labels()
        bad[0, 0, 0] = 999
        write_nifti(lab / "s02_T1_seg.nii.gz", bad)
        return "labels [999]"
    if how == "unsafe id":
        rows.loc[1, "subject_id"] = "s02/.."
        rows.to_csv(table, index=False)
        return "subject id may only hold"
    raise AssertionError(how)


DAMAGE = [
    "missing image",
    "image without row",
    "duplicate row",
    "two images for one id",
    "unreadable",
    "truncated",
    "not 3D",
    "NaN voxels",
    "label grid differs",
    "label affine differs",
    "non-numeric covariate",
    "unknown category",
    "unmapped label",
    "unsafe id",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_each_problem_is_reported(tiny_folder, how):
    expected = _break(tiny_folder, how)
    with pytest.raises(CohortError, match="problem") as info:
        read(tiny_folder)
    assert any(expected in str(p) for p in info.value.problems), [str(p) for p in info.value.problems]
    assert expected in str(info.value)


@pytest.mark.parametrize("how", ["missing image", "truncated", "non-numeric covariate", "label grid differs"])
def test_skip_mode_leaves_the_subject_out_and_lists_why(tiny_folder, how):
    expected = _break(tiny_folder, how)
    cohort = read(tiny_folder, on_error="skip")
    assert [s.subject_id for s in cohort.subjects] == ["s01", "s03"]
    cohort.write_skipped(tiny_folder["root"] / "skipped.tsv")
    skipped = pd.read_csv(tiny_folder["root"] / "skipped.tsv", sep="\t")
    assert skipped["subject_id"].tolist() == ["s02"] and expected in skipped["reason"][0]


def test_all_problems_are_reported_at_once(tiny_folder):
    _break(tiny_folder, "missing image")
    _break(tiny_folder, "image without row")
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows.loc[2, "age"] = "old"
    rows.to_csv(tiny_folder["table"], index=False)
    with pytest.raises(CohortError) as info:
        read(tiny_folder)
    assert len(info.value.problems) == 3


def test_bad_arguments_name_the_argument(tiny_folder):
    with pytest.raises(ValueError, match="on_error='maybe'"):
        read(tiny_folder, on_error="maybe")
    with pytest.raises(ValueError, match="id_column='id'"):
        read(tiny_folder, id_column="id")
    with pytest.raises(ValueError, match="images="):
        read_folder(tiny_folder["root"] / "nowhere", tiny_folder["table"])
    with pytest.raises(ValueError, match=r"columns: unknown covariates \['weight'\]"):
        read(tiny_folder, columns={"weight": "w"})
    with pytest.raises(ValueError, match="unit='stone'"):
        read(tiny_folder, units={"age": "stone"})


def test_longest_id_wins_when_ids_share_a_prefix(tiny_folder):
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows.loc[2, "subject_id"] = "s01_b"
    rows.to_csv(tiny_folder["table"], index=False)
    (tiny_folder["images"] / "s03_T1.nii.gz").rename(tiny_folder["images"] / "s01_b_T1.nii.gz")
    (tiny_folder["labels"] / "s03_T1_seg.nii.gz").rename(tiny_folder["labels"] / "s01_b_T1_seg.nii.gz")
    cohort = read(tiny_folder)
    by_id = {s.subject_id: s.image.name for s in cohort.subjects}
    assert by_id["s01"] == "s01_T1.nii.gz" and by_id["s01_b"] == "s01_b_T1.nii.gz"


def _bids(root, sessions=False):
    rows = []
    for i, sub in enumerate(["sub-01", "sub-02"]):
        anat = root / sub / ("ses-1/anat" if sessions else "anat")
        write_nifti(anat / f"{sub}_T1w.nii.gz", np.ones((10, 10, 10), np.float32) * (i + 1))
        write_nifti(root / "derivatives" / "dlmuse" / sub / "anat" / f"{sub}_dseg.nii.gz", tiny_labels())
        rows.append({"participant_id": sub, "age": 50 + i, "sex": "F"})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)


def test_reads_bids(tmp_path):
    _bids(tmp_path)
    cohort = read_bids(tmp_path)
    assert [s.subject_id for s in cohort.subjects] == ["sub-01", "sub-02"]
    assert cohort.subjects[0].labels.name == "sub-01_dseg.nii.gz"
    assert cohort.subjects[1].covariates["ventricular_volume"] > 0


def test_bids_subject_with_two_t1w_images_is_a_duplicate(tmp_path):
    _bids(tmp_path, sessions=True)
    write_nifti(tmp_path / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii.gz", np.ones((10, 10, 10), np.float32))
    with pytest.raises(CohortError, match="2 image files match"):
        read_bids(tmp_path)


def test_bids_missing_derivatives_folder_is_named(tmp_path):
    _bids(tmp_path)
    with pytest.raises(ValueError, match="derivatives='fastsurfer'"):
        read_bids(tmp_path, derivatives="fastsurfer")


def test_gzip_truncation_is_detected_not_only_bad_magic(tiny_folder):
    # A gzip stream cut at a block boundary still opens; reading the voxels must fail.
    path = tiny_folder["images"] / "s03_T1.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 500]))
    with pytest.raises(CohortError, match="unreadable or truncated"):
        read(tiny_folder)
