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


# --- participants tables as BIDS writes them -------------------------------------------------------


def test_bids_sex_written_male_female_maps_to_m_f(tmp_path):
    _bids(tmp_path)
    table = pd.read_csv(tmp_path / "participants.tsv", sep="\t")
    table["sex"] = ["female", "MALE"]
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    cohort = read_bids(tmp_path)
    assert [s.covariates["sex"] for s in cohort.subjects] == ["F", "M"]
    assert cohort.table()["sex"].tolist() == ["F", "M"]


def test_folder_sex_written_male_female_maps_to_m_f(tiny_folder):
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows["sex"] = ["Female", "male", "f"]
    rows.to_csv(tiny_folder["table"], index=False)
    assert [s.covariates["sex"] for s in read(tiny_folder).subjects] == ["F", "M", "F"]


def test_numeric_sex_codes_are_an_error_listing_the_accepted_spellings(tiny_folder):
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows["sex"] = ["1", "2", "1"]
    rows.to_csv(tiny_folder["table"], index=False)
    with pytest.raises(CohortError) as info:
        read(tiny_folder)
    assert len(info.value.problems) == 3
    assert "column 'sex': covariate 'sex': invalid values ['1']; allowed: one of ['F', 'M'], also spelled F = female, M = male" in str(
        info.value
    )


@pytest.mark.parametrize(("written", "would_be"), [("01", "sub-01"), ("sub-sub-01", "sub-01")], ids=["without", "extra"])
def test_bids_participant_id_without_or_with_an_extra_prefix_says_what_would_match(tmp_path, written, would_be):
    _bids(tmp_path)
    table = pd.read_csv(tmp_path / "participants.tsv", sep="\t", dtype=str)
    table.loc[0, "participant_id"] = written
    table.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    with pytest.raises(CohortError) as info:
        read_bids(tmp_path)
    reasons = {(p.subject_id, p.reason) for p in info.value.problems}
    row = next(reason for sid, reason in reasons if sid == written)
    assert f"no image file for this table row; sub-01_T1w.nii.gz would match the id {would_be!r} (this row has {written!r})" in row
    image = next(p for p in info.value.problems if p.path and p.path.endswith("sub-01_T1w.nii.gz"))
    assert f"image has no row in the table; it would match the row {written!r} written {would_be!r}" in image.reason


def test_folder_id_with_a_sub_prefix_the_files_lack_says_what_would_match(tiny_folder):
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows.loc[1, "subject_id"] = "sub-s02"
    rows.to_csv(tiny_folder["table"], index=False)
    with pytest.raises(CohortError, match=r"s02_T1.nii.gz would match the id 's02' \(this row has 'sub-s02'\)"):
        read(tiny_folder)


def _longitudinal(root, sessions_tsv=True):
    """Four subjects, two sessions each (ses-1, ses-2) with label maps; ages per session in
    sub-*_sessions.tsv (participants.tsv holds the age at the first session)."""
    rows = []
    for i in range(4):
        sub = f"sub-{i + 1:02d}"
        for ses in ("ses-1", "ses-2"):
            write_nifti(root / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz", np.ones((10, 10, 10), np.float32) * (i + 1))
            write_nifti(root / "derivatives" / "dlmuse" / sub / ses / "anat" / f"{sub}_{ses}_dseg.nii.gz", tiny_labels())
        if sessions_tsv:
            pd.DataFrame({"session_id": ["ses-1", "ses-2"], "age": [40 + 10 * i, 42.5 + 10 * i]}).to_csv(
                root / sub / f"{sub}_sessions.tsv", sep="\t", index=False
            )
        rows.append({"participant_id": sub, "age": 40 + 10 * i, "sex": ["female", "male"][i % 2]})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)


def test_longitudinal_bids_without_a_session_choice_says_how_to_choose(tmp_path):
    _longitudinal(tmp_path)
    with pytest.raises(CohortError, match=r"they are in sessions \['ses-1', 'ses-2'\]: pass session='<label>'"):
        read_bids(tmp_path)


@pytest.mark.parametrize("session", ["2", "ses-2"])
def test_longitudinal_bids_one_session(tmp_path, session):
    _longitudinal(tmp_path)
    cohort = read_bids(tmp_path, session=session)
    assert [s.subject_id for s in cohort.subjects] == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert {s.session_id for s in cohort.subjects} == {"ses-2"} and cohort.reading["session"] == "ses-2"
    first = cohort.subjects[0]
    assert first.image.name == "sub-01_ses-2_T1w.nii.gz" and first.labels.name == "sub-01_ses-2_dseg.nii.gz"
    assert first.participant_id == "sub-01" and first.covariates["sex"] == "F"
    assert first.covariates["age"] == 42.5 and first.info == {"covariates_from_sessions_tsv": ["age"]}  # age at ses-2


def test_longitudinal_bids_chosen_session_missing_for_a_subject(tmp_path):
    _longitudinal(tmp_path)
    (tmp_path / "sub-03" / "ses-2" / "anat" / "sub-03_ses-2_T1w.nii.gz").unlink()
    with pytest.raises(CohortError, match=r"no T1w image in session 'ses-2' \(its sessions: \['ses-1'\]\)"):
        read_bids(tmp_path, session="2")
    cohort = read_bids(tmp_path, session="2", on_error="skip")
    assert [s.subject_id for s in cohort.subjects] == ["sub-01", "sub-02", "sub-04"]


def test_longitudinal_bids_every_session_its_own_sample_with_its_age(tmp_path):
    _longitudinal(tmp_path)
    cohort = read_bids(tmp_path, session="all")
    assert len(cohort) == 8 and not cohort.skipped
    ids = [(s.subject_id, s.participant_id, s.session_id) for s in cohort.subjects[:2]]
    assert ids == [("sub-01_ses-1", "sub-01", "ses-1"), ("sub-01_ses-2", "sub-01", "ses-2")]
    ages = {s.subject_id: s.covariates["age"] for s in cohort.subjects}
    assert ages["sub-02_ses-1"] == 50.0 and ages["sub-02_ses-2"] == 52.5  # from sub-02_sessions.tsv
    assert cohort.subjects[3].labels.name == "sub-02_ses-2_dseg.nii.gz"
    assert cohort.subjects[3].info == {"covariates_from_sessions_tsv": ["age"]}
    table = cohort.table()
    assert table[["participant_id", "session_id"]].iloc[3].tolist() == ["sub-02", "ses-2"]


def test_longitudinal_bids_without_sessions_tsv_uses_participants_age_and_warns(tmp_path):
    _longitudinal(tmp_path, sessions_tsv=False)
    cohort = read_bids(tmp_path, session="all")
    assert [s.covariates["age"] for s in cohort.subjects[:2]] == [40.0, 40.0]
    said = "sub-01_ses-2: age 40 from participants.tsv is used for session ses-2 of sub-01, which has 2 sessions"
    assert any(said in w for w in cohort.warnings)


def test_sessions_tsv_without_session_id_is_a_problem(tmp_path):
    _longitudinal(tmp_path)
    pd.DataFrame({"session": ["ses-1", "ses-2"], "age": [1, 2]}).to_csv(tmp_path / "sub-01" / "sub-01_sessions.tsv", sep="\t", index=False)
    with pytest.raises(CohortError, match=r"sub-01_sessions.tsv: no column 'session_id'"):
        read_bids(tmp_path, session="all")


def test_bad_session_argument_names_it(tmp_path):
    _bids(tmp_path)
    with pytest.raises(ValueError, match=r"session='ses-1/2'; allowed: None .* 'all' .* '1' or 'ses-1'"):
        read_bids(tmp_path, session="ses-1/2")
