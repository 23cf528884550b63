"""Every form in which scanners and converters write a NIfTI image is read correctly by the cohort
readers, or refused naming the file and the rule; never accepted at reading and failing inside a
library later, when ``prepare`` loads it (issue 32, general rule). Known answers: the voxels that
``load_oriented`` (what ``prepare`` reads) gives back are the ones written, and the volumes measured
from the label map are the written label counts times the voxel volume."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import CohortError, read_bids, read_folder
from synthbrain.cohort.geometry import load_oriented
from tests.helpers import MUSE, tiny_labels

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
IMAGE = (np.arange(1000).reshape(10, 10, 10) % 7).astype(np.float32)
TABLE = {"subject_id": ["s01"], "age": [50], "sex": ["F"], "ventricular_volume": [1.0], "brain_volume": [2.0]}


def _write(path, data, *, klass=nib.Nifti1Image, dtype=None, endianness=None, slope=None):
    header = klass.header_class(endianness=endianness) if endianness else None
    img = klass(data, AFFINE, header, dtype=dtype or data.dtype) if klass is not nib.AnalyzeImage else klass(data, AFFINE)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, _, suffix = path.name.partition(".")
    lower = path.with_name(f"{stem}.{suffix.lower()}")
    nib.save(img, lower)  # then renamed as a scanner or converter may name it
    if lower != path:
        lower.rename(path)
        voxels = lower.with_name(lower.name.replace(".hdr", ".img"))
        if voxels.is_file():
            voxels.rename(path.with_name(path.name.replace(".HDR", ".IMG")))


def _cohort(tmp_path, name, **form):
    label_dtype = form.pop("label_dtype", np.int16)
    _write(tmp_path / "images" / f"s01{name}", form.pop("image", IMAGE).astype(form.get("dtype") or np.float32), **form)
    shared = {k: form[k] for k in ("klass", "endianness") if k in form}
    _write(tmp_path / "labels" / f"s01{name}", tiny_labels().astype(label_dtype), dtype=label_dtype, **shared)
    pd.DataFrame({"subject_id": ["s01"], "age": [50], "sex": ["F"]}).to_csv(tmp_path / "participants.csv", index=False)
    return read_folder(tmp_path / "images", tmp_path / "participants.csv", labels=tmp_path / "labels")


FORMS = {
    "nii": (".nii", {}),
    "nii.gz": (".nii.gz", {}),
    "NII.GZ": (".NII.GZ", {}),
    "Nii": (".Nii", {}),
    "hdr/img pair": (".hdr", {"klass": nib.Nifti1Pair}),
    "HDR/IMG pair": (".HDR", {"klass": nib.Nifti1Pair}),
    "hdr.gz/img.gz pair": (".hdr.gz", {"klass": nib.Nifti1Pair}),
    "NIfTI-2": (".nii.gz", {"klass": nib.Nifti2Image}),
    "NIfTI-2 pair": (".hdr", {"klass": nib.Nifti2Pair}),
    "big-endian": (".nii.gz", {"endianness": ">"}),
    "big-endian int16": (".nii", {"endianness": ">", "dtype": np.int16, "label_dtype": np.dtype(">i2")}),
    "scaled int16": (".nii.gz", {"dtype": np.int16, "slope": 0.5}),
    "(D, H, W, 1, 1)": (".nii.gz", {"image": IMAGE[..., None, None]}),
    **{
        np.dtype(t).name: (".nii.gz", {"dtype": t, "label_dtype": t if np.dtype(t).itemsize > 1 or t == np.uint8 else np.int16})
        for t in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64)
    },
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_nifti_form_is_read_and_loads_as_written(tmp_path, form):
    suffix, options = FORMS[form]
    cohort = _cohort(tmp_path, suffix, **options)
    subject = cohort.subjects[0]
    assert subject.image.name == f"s01{suffix}" and not cohort.skipped
    img, geometry = load_oriented(subject.image)  # what prepare reads
    scale = options.get("slope") or 1.0
    np.testing.assert_array_equal(np.asarray(img.dataobj, dtype=np.float64), IMAGE * scale)
    np.testing.assert_allclose(img.affine, AFFINE)
    nib.as_closest_canonical(img)  # prepare's next step
    labels, _ = load_oriented(subject.labels)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), tiny_labels())
    ventricle = (tiny_labels() == MUSE["ventricle"]).sum() * 8 / 1000
    assert subject.covariates["ventricular_volume"] == pytest.approx(ventricle)


REFUSED = {
    "complex": (".nii.gz", {"dtype": np.complex64}, "voxel data type complex64 is not real-valued; allowed: real-valued scalars"),
    "RGB": (
        ".nii.gz",
        {"image": np.zeros((10, 10, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), "dtype": None},
        "allowed: real-valued scalars",
    ),
    "two volumes": (".nii.gz", {"image": np.stack([IMAGE, IMAGE], -1)}, "not 3D: shape (10, 10, 10, 2); allowed: one 3D volume"),
    "Analyze 7.5": (".hdr", {"klass": nib.AnalyzeImage}, "an Analyze 7.5 header (no NIfTI magic), which holds no orientation"),
}


@pytest.mark.parametrize("form", list(REFUSED))
def test_forms_that_cannot_be_used_are_refused_naming_the_file_and_the_rule(tmp_path, form):
    suffix, options, rule = REFUSED[form]
    image = options.pop("image", IMAGE)
    dtype = options.pop("dtype", np.float32)
    _write(tmp_path / "images" / f"s01{suffix}", image if dtype is None else image.astype(dtype), **options)
    pd.DataFrame(TABLE).to_csv(tmp_path / "participants.csv", index=False)
    for check_images in (True, False):  # the header says it either way
        with pytest.raises(CohortError) as refused:
            read_folder(tmp_path / "images", tmp_path / "participants.csv", check_images=check_images)
        assert f"s01{suffix}" in str(refused.value) and rule in str(refused.value)


@pytest.mark.parametrize(
    ("files", "rule"),
    [
        (["s01.mgz"], "s01.mgz: a FreeSurfer MGH image; allowed: NIfTI-1 or -2 as .nii, .nii.gz or a .hdr/.img pair"),
        (["s01.img"], "s01.img: a NIfTI pair without its header (s01.hdr is missing)"),
        (["s01.hdr"], "s01.hdr: a NIfTI pair without its voxels (s01.img is missing)"),
        (["s01.nii.gz", "s01_aseg.mgz"], "s01_aseg.mgz: a FreeSurfer MGH image"),  # not passed over beside a NIfTI
    ],
)
def test_image_files_in_other_forms_are_refused_by_name_not_passed_over(tmp_path, files, rule):
    for name in files:
        if name.endswith(".mgz"):
            nib.save(nib.MGHImage(IMAGE, AFFINE), tmp_path / name)
        elif name.endswith((".img", ".hdr")):
            nib.save(nib.Nifti1Pair(IMAGE, AFFINE), tmp_path / "pair.hdr")
            keep, drop = ("pair.img", "pair.hdr") if name.endswith(".img") else ("pair.hdr", "pair.img")
            (tmp_path / keep).rename(tmp_path / name)
            (tmp_path / drop).unlink()
        else:
            nib.save(nib.Nifti1Image(IMAGE, AFFINE), tmp_path / name)
    pd.DataFrame(TABLE).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CohortError) as refused:
        read_folder(tmp_path, tmp_path / "t.csv")
    assert rule in str(refused.value)


def test_bids_reads_an_upper_case_suffix_and_refuses_other_formats_by_name(tmp_path):
    for sub in ("sub-01", "sub-02"):
        _write(tmp_path / sub / "anat" / f"{sub}_T1w.NII.GZ", IMAGE)
    table = {"participant_id": ["sub-01", "sub-02"], "age": [50, 60], "sex": ["F", "M"], "ventricular_volume": [1, 2]}
    pd.DataFrame({**table, "brain_volume": [3, 4]}).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    cohort = read_bids(tmp_path)
    assert [s.image.name for s in cohort.subjects] == ["sub-01_T1w.NII.GZ", "sub-02_T1w.NII.GZ"]
    nib.save(nib.MGHImage(IMAGE, AFFINE), tmp_path / "sub-02" / "anat" / "sub-02_T1w.mgz")
    with pytest.raises(CohortError, match=r"subject sub-02: sub-02_T1w.mgz: a FreeSurfer MGH image; allowed: NIfTI"):
        read_bids(tmp_path)
