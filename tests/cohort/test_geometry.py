"""Image geometry is checked, not taken on trust: contradictory, degenerate or missing orientation
in a NIfTI header is a problem at read time (or a recorded, explicit choice)."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import CohortError, read_folder
from synthbrain.cohort.geometry import HeaderError, load_oriented, read_geometry
from tests.helpers import MUSE, write_nifti, write_nifti_header

SHAPE = (20, 24, 20)
TWO_MM = np.diag([2.0, 2.0, 2.0, 1.0])
MIRRORED = np.diag([-2.0, 2.0, 2.0, 1.0])
SINGULAR = np.diag([0.0, 2.0, 2.0, 1.0])
NAN = np.full((4, 4), np.nan)
# The label map below: 1950 brain voxels of which 81 ventricle voxels; at 2 mm (8 mm3 a voxel)
# that is 15.6 mL of brain and 0.648 mL of ventricles.
VENTRICLES_ML, BRAIN_ML = 81 * 8 / 1000, 1950 * 8 / 1000


def labels_20() -> np.ndarray:
    lab = np.zeros(SHAPE, np.int16)
    lab[5:15, 4:19, 3:16] = MUSE["cortex"]  # 10 x 15 x 13 = 1950 voxels
    lab[8:11, 8:11, 5:14] = MUSE["ventricle"]  # 3 x 3 x 9 = 81 voxels
    return lab


def image_20() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 100, SHAPE).astype(np.float32)


def cohort_folder(root, **header):
    """One subject whose image and label map both have the given header transforms."""
    write_nifti_header(root / "images" / "s01_T1.nii.gz", image_20(), **header)
    write_nifti_header(root / "labels" / "s01_seg.nii.gz", labels_20(), **header)
    pd.DataFrame({"subject_id": ["s01"], "age": [50], "sex": ["F"]}).to_csv(root / "participants.csv", index=False)
    return root


def read(root, **kw):
    return read_folder(root / "images", root / "participants.csv", labels=root / "labels", **kw)


def problems_of(root, **kw) -> str:
    with pytest.raises(CohortError) as info:
        read(root, **kw)
    return "\n".join(str(p) for p in info.value.problems)


def test_consistent_header_measures_volumes_at_its_voxel_size(tmp_path):
    subject = read(cohort_folder(tmp_path, qform=TWO_MM, sform=TWO_MM)).subjects[0]
    assert subject.covariates["ventricular_volume"] == pytest.approx(VENTRICLES_ML)  # 0.648 mL
    assert subject.covariates["brain_volume"] == pytest.approx(BRAIN_ML)  # 15.6 mL


@pytest.mark.parametrize("sform", [SINGULAR, NAN], ids=["singular", "nan"])
def test_broken_sform_with_a_valid_qform_uses_the_qform_and_says_so(tmp_path, sform):
    cohort = read(cohort_folder(tmp_path, qform=TWO_MM, sform=sform))
    subject = cohort.subjects[0]
    assert subject.covariates["ventricular_volume"] == pytest.approx(0.648)  # not 0.0 from the singular sform
    assert subject.covariates["brain_volume"] == pytest.approx(15.6)
    reason = "is singular" if sform is SINGULAR else "is not finite"
    said = [w for w in cohort.warnings if "s01_T1.nii.gz" in w and f"sform (code 1) {reason}" in w]
    assert said and "the valid qform (code 1) is used" in said[0]
    geometry = read_geometry(subject.image)
    assert geometry.source == "qform" and geometry.to_dict()["notes"]
    np.testing.assert_allclose(load_oriented(subject.image)[0].affine, TWO_MM)  # what prepare resamples with


@pytest.mark.parametrize(
    ("sform", "expected"),
    [(SINGULAR, "sform (code 1) is singular (determinant 0"), (NAN, "sform (code 1) is not finite: [[nan, nan, nan, nan]")],
    ids=["singular", "nan"],
)
def test_broken_sform_without_a_qform_is_a_problem_naming_file_and_matrix(tmp_path, sform, expected):
    root = cohort_folder(tmp_path, sform=sform)
    report = problems_of(root)
    assert "image header gives no trustworthy orientation: s01_T1.nii.gz" in report and expected in report
    assert "differs from (20, 24, 20)" not in report  # the old self-contradicting grid message
    # without a label map too (it used to pass and fail later in prepare with "SVD did not converge")
    with pytest.raises(CohortError, match="s01_T1.nii.gz") as info:
        read_folder(root / "images", root / "participants.csv", label_scheme=None, schema=_age_sex())
    assert expected in str(info.value)
    with pytest.raises(HeaderError, match="s01_T1.nii.gz"):
        load_oriented(root / "images" / "s01_T1.nii.gz")


def _age_sex():
    from synthbrain.cohort import CovariateSchema, default_schema

    return CovariateSchema([default_schema()["sex"], default_schema()["age"]])


def test_mirrored_sform_is_a_problem_until_one_transform_is_chosen(tmp_path):
    root = cohort_folder(tmp_path, qform=TWO_MM, sform=MIRRORED)
    report = problems_of(root)
    assert "qform and sform disagree (their handedness differs: qform RAS, sform LAS" in report
    assert "trust_header='qform' or 'sform'" in report
    by_qform = read(root, trust_header="qform")
    subject = by_qform.subjects[0]
    assert subject.trust_header == "qform" and subject.covariates["ventricular_volume"] == pytest.approx(0.648)
    assert any("the qform is used as asked" in w for w in by_qform.warnings)
    np.testing.assert_allclose(load_oriented(subject.image, "qform")[0].affine, TWO_MM)
    assert read_geometry(subject.image, "sform").axcodes == ("L", "A", "S")
    assert by_qform.reading["trust_header"] == "qform"


def test_identity_sform_on_a_2mm_image_is_reported_not_measured_8x_too_small(tmp_path):
    root = cohort_folder(tmp_path, sform=np.eye(4), pixdim=(2.0, 2.0, 2.0))
    report = problems_of(root)
    assert "voxel size from the sform (1, 1, 1) mm differs from the header's pixdim[1:4] (2, 2, 2) mm" in report
    # with the valid 2 mm qform beside it, the two disagree; trusting the qform gives the right volumes
    root = cohort_folder(tmp_path / "q", qform=TWO_MM, sform=np.eye(4))
    assert "qform and sform disagree (they place a voxel of the image up to" in problems_of(root)
    subject = read(root, trust_header="qform").subjects[0]
    assert subject.covariates["brain_volume"] == pytest.approx(15.6)
    # trusting the sform is the caller's explicit choice: accepted, the pixdim mismatch recorded
    cohort = read(root, trust_header="sform")
    assert cohort.subjects[0].covariates["brain_volume"] == pytest.approx(15.6 / 8)
    assert any("differs from the header's pixdim" in w and "the sform is used as asked" in w for w in cohort.warnings)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"pixdim": (2.0, 2.0, 2.0)}, "no orientation: qform_code and sform_code are both 0"),
        ({"qform": TWO_MM, "qform_code": 9}, "qform_code 9 is not a NIfTI xform code"),
        ({"qform": TWO_MM, "units": "meter"}, "spatial unit (xyzt_units) is 'meter'"),
        ({"qform": TWO_MM, "pixdim": (2.0, 0.0, 2.0)}, "its voxel sizes pixdim[1:4] [2.0, 0.0, 2.0] must all be > 0"),
        ({"sform": np.diag([2.0, 2.0, 2e-6, 1.0])}, "is singular (determinant 8e-06, condition number 1e+06)"),
    ],
    ids=["no-orientation", "invalid-code", "metres", "zero-pixdim", "near-singular"],
)
def test_other_unknown_or_unreliable_orientations_are_problems(tmp_path, header, expected):
    report = problems_of(cohort_folder(tmp_path, **header))
    assert expected in report and "s01_T1.nii.gz" in report


def test_impossible_qform_quaternion_is_named(tmp_path):
    path = write_nifti_header(tmp_path / "q.nii.gz", image_20(), qform=TWO_MM)
    header = nib.load(path).header.copy()
    header["quatern_b"], header["quatern_c"] = 0.9, 0.9  # b^2 + c^2 > 1: no rotation has it
    nib.save(nib.Nifti1Image(image_20(), None, header), path)
    with pytest.raises(HeaderError, match=r"q.nii.gz: qform \(code 1\) is invalid: quaternion"):
        read_geometry(path)


def test_small_disagreement_within_tolerance_is_accepted(tmp_path):
    nudged = TWO_MM.copy()
    nudged[:3, 3] = 0.05  # 0.05 mm: far below a tenth of a 2 mm voxel
    geometry = read_geometry(write_nifti_header(tmp_path / "a.nii.gz", image_20(), qform=TWO_MM, sform=nudged))
    assert geometry.source == "sform" and not geometry.notes


def test_label_map_affine_that_differs_names_both_matrices(tmp_path):
    root = cohort_folder(tmp_path, qform=TWO_MM, sform=TWO_MM)
    write_nifti_header(root / "labels" / "s01_seg.nii.gz", labels_20(), qform=np.diag([3.0, 3.0, 3.0, 1.0]))
    report = problems_of(root)
    assert "label map grid: its voxel-to-world affine (qform) [[3, 0, 0, 0]" in report and "by up to 1" in report


def test_files_written_by_nibabel_and_by_prepare_pass(tmp_path):
    """nibabel's default (sform code 2, qform code 0) and synthbrain's own outputs (both codes 4)."""
    from synthbrain import _io

    assert read_geometry(write_nifti(tmp_path / "a.nii.gz", image_20())).source == "sform"
    _io.save_nifti(tmp_path / "b.nii.gz", image_20(), TWO_MM)
    assert read_geometry(tmp_path / "b.nii.gz").source == "sform"


def test_bad_trust_value_names_the_argument(tmp_path):
    root = cohort_folder(tmp_path, qform=TWO_MM, sform=TWO_MM)
    with pytest.raises(ValueError, match=r"trust_header='best'; allowed: None .*\['sform', 'qform'\]"):
        read(root, trust_header="best")


def test_real_subject_with_a_mirrored_sform_is_caught(ixi, tmp_path):
    """IXI-HH: the same subject with its sform mirrored in x is refused; trusting the qform gives
    back its own geometry and the ventricular volume of participants.csv."""
    table = pd.read_csv(ixi / "participants.csv")
    sid = table["subject_id"].iloc[0]
    original = nib.load(ixi / "t1" / f"{sid}_T1.nii.gz")
    seg = nib.load(ixi / "seg" / f"{sid}_T1_DLMUSE.nii.gz")
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    for img, folder, name in ((original, "images", f"{sid}_T1.nii.gz"), (seg, "labels", f"{sid}_seg.nii.gz")):
        copy = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
        copy.set_qform(img.affine, code=1)
        copy.set_sform(mirror @ img.affine, code=1)
        (tmp_path / folder).mkdir(exist_ok=True)
        nib.save(copy, tmp_path / folder / name)
    pd.DataFrame({"subject_id": [sid], "age": [40], "sex": ["F"]}).to_csv(tmp_path / "participants.csv", index=False)
    assert "their handedness differs" in problems_of(tmp_path)
    subject = read(tmp_path, trust_header="qform").subjects[0]
    np.testing.assert_allclose(read_geometry(subject.image, "qform").affine, original.affine, atol=1e-4)
    expected_ml = float(table.loc[table["subject_id"] == sid, "ventricles"].iloc[0]) / 1000
    assert subject.covariates["ventricular_volume"] == pytest.approx(expected_ml, rel=1e-6)


def test_headers_are_checked_without_reading_the_voxels_too(tmp_path):
    root = cohort_folder(tmp_path, qform=TWO_MM, sform=MIRRORED)
    with pytest.raises(CohortError, match="their handedness differs"):
        read_folder(root / "images", root / "participants.csv", schema=_age_sex(), label_scheme=None, check_images=False)


def test_transforms_into_different_spaces_are_named_in_the_disagreement(tmp_path):
    """A scanner qform (code 1) beside an sform into MNI space (code 4): the standard allows it, but
    which one to measure with is the caller's choice."""
    to_mni = TWO_MM.copy()
    to_mni[:3, 3] = 10.0
    path = write_nifti_header(tmp_path / "a.nii.gz", image_20(), qform=TWO_MM, sform=to_mni, sform_code=4)
    with pytest.raises(HeaderError, match=r"they name different spaces, 1 = 'scanner' and 4 = 'mni'"):
        read_geometry(path)
    assert read_geometry(path, "sform").affine[0, 3] == 10.0 and read_geometry(path, "qform").affine[0, 3] == 0.0
