import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from synthbrain import _io
from synthbrain.cohort import CovariateSchema, LabelScheme, read_folder
from synthbrain.preprocessing import prepare as prepare_module
from synthbrain.preprocessing.prepare import PrepareError, PrepareParams, prepare_cohort
from synthbrain.preprocessing.prepared import PreparedCohort
from synthbrain.preprocessing.template import BRAIN_CENTRE_MM, make_grid
from tests.helpers import MUSE, TEMPLATE_SUBJECT_INTENSITY, rigid_matrix, subprocess_env, template_subject

FAST = PrepareParams(spacing=4.0, registration_spacing=4.0)
MOTIONS = {
    "a01": rigid_matrix([6, 0, -8], [5, -6, 3]),
    "a02": rigid_matrix([-5, 7, 4], [-4, 8, -2]),
    "a03": rigid_matrix([0, -9, 0], [2, 2, 9]),
}


@pytest.fixture(scope="module")
def template_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    for sid, motion in MOTIONS.items():
        template_subject(root, sid, motion)
    pd.DataFrame({"subject_id": list(MOTIONS), "age": [30.0, 50.0, 70.0], "sex": ["F", "M", "F"]}).to_csv(
        root / "participants.csv", index=False
    )
    return root


def cohort_of(root):
    return read_folder(root / "images", root / "participants.csv", labels=root / "labels")


@pytest.fixture(scope="module")
def prepared(template_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare_cohort(cohort_of(template_folder), out, FAST, workers=2, progress=False)
    return out


def test_outputs_are_on_the_mni_grid_with_its_affine(prepared):
    grid = make_grid(4.0)
    for sid in MOTIONS:
        for name in ("t1.nii.gz", "labels.nii.gz"):
            img = nib.load(prepared / "subjects" / sid / name)
            assert img.shape == grid.shape
            np.testing.assert_allclose(img.affine, grid.affine)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        t1 = np.asarray(nib.load(prepared / "subjects" / sid / "t1.nii.gz").dataobj)
        assert t1.min() == 0.0 and t1.max() == pytest.approx(1.0)


def test_registration_undoes_each_subjects_motion(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    brain = np.argwhere(np.ones((8, 8, 8))) * 15.0 - [52, 70, 40]  # points spread over the brain, mm
    for record in manifest["records"]:
        found = np.asarray(record["registration"]["template_to_subject_ras"])
        error = np.linalg.norm(
            nib.affines.apply_affine(found, brain) - nib.affines.apply_affine(MOTIONS[record["subject_id"]], brain), axis=1
        )
        assert error.max() < 4.0, (record["subject_id"], error.max())  # within one 4 mm voxel
        assert record["dice_template"] > 0.9 and record["brain_outside_fraction"] == 0.0


def test_labels_stay_aligned_with_the_image(prepared):
    scheme = LabelScheme.load("muse-coarse")
    for record in json.loads((prepared / "manifest.json").read_text())["records"]:
        folder = prepared / "subjects" / record["subject_id"]
        image = np.asarray(nib.load(folder / "t1.nii.gz").dataobj)
        labels = np.asarray(nib.load(folder / "labels.nii.gz").dataobj)
        low, high = record["intensity_low"], record["intensity_high"]
        for muse_label in (MUSE["cortex"], MUSE["wm"]):
            coarse = scheme.remap(np.array([muse_label]))[0]
            interior = ndimage.binary_erosion(labels == coarse)  # away from interpolated edges
            expected = np.clip((TEMPLATE_SUBJECT_INTENSITY[muse_label] - low) / (high - low), 0, 1)
            agree = np.abs(image[interior] - expected) < 0.05
            assert interior.sum() > 50 and agree.mean() > 0.95, (record["subject_id"], muse_label, agree.mean())


def test_tables_schema_manifest_and_qc_figures(prepared):
    table = pd.read_csv(prepared / "participants.tsv", sep="\t")
    assert table["subject_id"].tolist() == list(MOTIONS)
    assert {"age", "sex", "ventricular_volume", "brain_volume", "intracranial_volume", "dice_template"} <= set(table.columns)
    schema = CovariateSchema.load(prepared / "covariates.json")
    assert (schema["age"].low, schema["age"].high) == (30.0, 70.0)
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["summary"]["subjects"] == 3 and manifest["grid"]["shape"] == [40, 56, 40]
    recorded = [(r["source_image_sha256"], r.get("seconds")) for r in manifest["records"]]
    assert all(len(digest) == 64 and isinstance(spent, float) for digest, spent in recorded)
    for png in ("montage.png", "covariates.png"):
        assert (prepared / "qc" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(prepared.rglob(".tmp-*"))


def test_interrupted_run_leaves_no_partial_file_and_resumes(template_folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_save = prepare_module._io.save_nifti
    calls = []

    def dying_save(path, data, affine, **kw):
        calls.append(path)
        if len(calls) == 3:  # second subject's image: write half a file, then die
            with _io.atomic_path(path) as tmp:
                tmp.write_bytes(b"\x1f\x8b half a gzip")
                raise KeyboardInterrupt
        real_save(path, data, affine, **kw)

    monkeypatch.setattr(prepare_module._io, "save_nifti", dying_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_cohort(cohort_of(template_folder), out, FAST, workers=1, progress=False)
    monkeypatch.setattr(prepare_module._io, "save_nifti", real_save)

    first = out / "subjects" / "a01"
    assert sorted(p.name for p in first.iterdir()) == ["labels.nii.gz", "record.json", "t1.nii.gz"]
    assert not (out / "subjects" / "a02").exists() or not list((out / "subjects" / "a02").iterdir())
    assert not list(out.rglob(".tmp-*")) and not (out / "manifest.json").exists()
    done_at = (first / "record.json").stat().st_mtime_ns

    prepare_cohort(cohort_of(template_folder), out, FAST, workers=1, progress=False)
    assert (first / "record.json").stat().st_mtime_ns == done_at  # not redone
    assert json.loads((out / "manifest.json").read_text())["summary"]["subjects"] == 3


def test_resume_redoes_a_subject_whose_outputs_or_sources_changed_after_its_record(prepared, template_folder, tmp_path, monkeypatch):
    """A subject counts as done only while its record's files are all there and it was made from
    the same source files (by path, or by content when the dataset moved) and header trust: a
    record left without its label map or image, or made from another source file, is redone; a
    record whose source moved with the same content is kept. The manifest is complete after."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    subjects = out / "subjects"
    (subjects / "a02" / "labels.nii.gz").unlink()  # a crash between writes, or a user's clean-up
    (subjects / "a03" / "t1.nii.gz").unlink()
    moved = json.loads((subjects / "a01" / "record.json").read_text())
    moved["source_image"] = str(tmp_path / "elsewhere" / "a01_T1.nii.gz")  # same digest: the dataset moved
    _io.write_json(subjects / "a01" / "record.json", moved)
    real, redone = prepare_module.prepare_subject, []
    monkeypatch.setattr(prepare_module, "prepare_subject", lambda record, *a: redone.append(record.subject_id) or real(record, *a))
    prepare_cohort(cohort_of(template_folder), out, FAST, workers=1, progress=False)
    assert sorted(redone) == ["a02", "a03"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["subject_id"] for r in manifest["records"]] == list(MOTIONS) and manifest["summary"]["subjects"] == 3
    for sid in MOTIONS:
        assert sorted(p.name for p in (subjects / sid).iterdir()) == ["labels.nii.gz", "record.json", "t1.nii.gz"]
    again, first = (np.asarray(nib.load(root / "subjects" / "a02" / "labels.nii.gz").dataobj) for root in (out, prepared))
    np.testing.assert_array_equal(again, first)  # redone: the same output as the first run

    other = json.loads((subjects / "a01" / "record.json").read_text())
    other["source_image_sha256"] = "0" * 64  # made from another file, now gone from that path
    _io.write_json(subjects / "a01" / "record.json", other)
    header = json.loads((subjects / "a02" / "record.json").read_text())
    header["trust_header"] = "sform"  # read with another header transform than the cohort asks now
    _io.write_json(subjects / "a02" / "record.json", header)
    redone.clear()
    prepare_cohort(cohort_of(template_folder), out, FAST, workers=1, progress=False)
    assert sorted(redone) == ["a01", "a02"]


def test_killed_process_resumes_without_corrupt_files(template_folder, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "synthbrain.cli",
        "prepare",
        "--images",
        str(template_folder / "images"),
        "--labels",
        str(template_folder / "labels"),
        "--table",
        str(template_folder / "participants.csv"),
        "--out",
        str(out),
        "--spacing",
        "4",
        "--registration-spacing",
        "4",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    deadline = time.time() + 120
    while not (out / "subjects" / "a01" / "record.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"prepare exited with {proc.returncode} before it could be killed"
    assert (out / "subjects" / "a01" / "record.json").exists(), "no subject finished within 120 s"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # died by the signal, not by finishing first
    assert not (out / "manifest.json").exists()  # killed mid-run: the resume below has work left
    for nii in out.rglob("*.nii.gz"):
        if not nii.name.startswith(".tmp-"):
            np.asarray(nib.load(nii).dataobj)  # every visible output is complete
    assert subprocess.run(cmd, capture_output=True, env=subprocess_env()).returncode == 0
    assert len(json.loads((out / "manifest.json").read_text())["records"]) == 3
    assert not list(out.rglob(".tmp-*"))


def test_prepared_folder_reads_back(prepared):
    cohort = PreparedCohort.load(prepared)
    assert cohort.subject_ids == list(MOTIONS) and cohort.grid == make_grid(4.0)
    image, labels = cohort.load_subject("a02")
    assert image.shape == labels.shape == cohort.grid.shape and image.dtype == np.float32
    assert set(np.unique(labels)) <= set(range(cohort.label_scheme.num_classes))
    assert len(cohort.complete()) == 3 and cohort.schema.fitted
    with pytest.raises(KeyError, match="subject_id='zz'"):
        cohort.load_subject("zz")
    with pytest.raises(ValueError, match="no manifest.json"):
        PreparedCohort.load(prepared / "subjects")


def test_downsampled_items_keep_volumes_and_land_on_the_coarser_grid(prepared):
    fine = PreparedCohort.load(prepared)
    coarse = PreparedCohort.load(prepared, downsample=2)
    grid = coarse.output_grid  # the 4 mm test grid averaged by 2: same centre, 8 mm voxels
    assert grid.spacing == 8.0 and grid.shape == (20, 28, 20)
    np.testing.assert_allclose(nib.affines.apply_affine(grid.affine, (np.asarray(grid.shape) - 1) / 2), BRAIN_CENTRE_MM)
    item_fine, item_coarse = fine[0], coarse[0]
    assert item_coarse["image"].shape == (1, 20, 28, 20) and item_coarse["labels"].shape == (8, 20, 28, 20)
    torch.testing.assert_close(item_coarse["labels"].sum(0), torch.ones(20, 28, 20))
    for c in range(8):  # class volumes are exactly kept: 8 fine voxels per coarse voxel
        assert item_coarse["labels"][c].sum().item() * 8 == pytest.approx((item_fine["labels"] == c).sum().item())
    assert item_coarse["image"].mean().item() == pytest.approx(item_fine["image"].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="downsample=3"):
        PreparedCohort.load(prepared, downsample=3)


def test_other_parameters_are_refused_unless_overwriting(prepared, template_folder):
    other = PrepareParams(spacing=4.0, registration_spacing=4.0, registration="affine")
    with pytest.raises(ValueError, match=r"other parameters \(differing: \['registration'\]\)"):
        prepare_cohort(cohort_of(template_folder), prepared, other, workers=1, progress=False)


def test_overwrite_starts_again(template_folder, tmp_path):
    out = tmp_path / "out"
    cohort = cohort_of(template_folder)
    cohort.subjects = cohort.subjects[:1]
    prepare_cohort(cohort, out, FAST, workers=1, progress=False)
    prepare_cohort(
        cohort, out, PrepareParams(spacing=4.0, registration_spacing=4.0, skull_strip=False), workers=1, progress=False, overwrite=True
    )
    assert json.loads((out / "params.json").read_text())["skull_strip"] is False


def test_refuses_a_foreign_non_empty_folder(template_folder, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a prepared cohort"):
        prepare_cohort(cohort_of(template_folder), tmp_path, FAST, workers=1, progress=False)


def test_failed_subject_is_reported_and_others_are_kept(template_folder, tmp_path, monkeypatch):
    real = prepare_module.prepare_subject

    def flaky(record, *args):
        if record.subject_id == "a02":
            raise RuntimeError("registration diverged")
        return real(record, *args)

    monkeypatch.setattr(prepare_module, "prepare_subject", flaky)
    with pytest.raises(PrepareError, match="subject a02.*registration diverged"):
        prepare_cohort(cohort_of(template_folder), tmp_path / "strict", FAST, workers=1, progress=False)
    assert (tmp_path / "strict" / "subjects" / "a03" / "record.json").exists()
    prepare_cohort(cohort_of(template_folder), tmp_path / "skip", FAST, workers=1, progress=False, on_error="skip")
    skipped = pd.read_csv(tmp_path / "skip" / "skipped.tsv", sep="\t")
    assert skipped["subject_id"].tolist() == ["a02"]
    assert pd.read_csv(tmp_path / "skip" / "participants.tsv", sep="\t")["subject_id"].tolist() == ["a01", "a03"]


def test_longitudinal_bids_with_mirrored_sforms_prepared_by_the_qform(template_folder, tmp_path):
    """Two sessions of one subject whose sforms are mirrored in x: refused until the qform is chosen;
    then every session is its own sample, subject and session kept apart, the header recorded, and
    the registration undoes the true motion (the qform's), not a mirrored one."""
    from synthbrain.cohort import CohortError, read_bids
    from tests.helpers import bids_from_template_subjects

    root = bids_from_template_subjects(template_folder, tmp_path / "bids", {"ses-1": "a01", "ses-2": "a02"}, mirror_sform=True)
    with pytest.raises(CohortError, match="their handedness differs"):
        read_bids(root, session="all")
    cohort = read_bids(root, session="all", trust_header="qform")
    out = prepare_cohort(cohort, tmp_path / "out", FAST, workers=1, progress=False)

    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert table["subject_id"].tolist() == ["sub-01_ses-1", "sub-01_ses-2"]
    assert table["participant_id"].tolist() == ["sub-01", "sub-01"] and table["session_id"].tolist() == ["ses-1", "ses-2"]
    assert table["age"].tolist() == [60.0, 62.5] and table["sex"].tolist() == ["F", "F"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reading"]["session"] == "all" and manifest["reading"]["trust_header"] == "qform"
    assert manifest["summary"]["subjects"] == 2 and manifest["summary"]["participants"] == 1
    brain = np.argwhere(np.ones((8, 8, 8))) * 15.0 - [52, 70, 40]
    for record, sid in zip(manifest["records"], ("a01", "a02")):
        assert record["trust_header"] == "qform" and record["reading"] == {"covariates_from_sessions_tsv": ["age"]}
        header = record["header"]["image"]
        assert header["source"] == "qform" and "the qform is used as asked" in header["notes"][0]
        true_affine = nib.load(template_folder / "images" / f"{sid}_T1.nii.gz").affine
        np.testing.assert_allclose(header["affine"], true_affine, atol=1e-4)
        assert record["header"]["labels"]["source"] == "qform"
        found = np.asarray(record["registration"]["template_to_subject_ras"])
        error = np.linalg.norm(nib.affines.apply_affine(found, brain) - nib.affines.apply_affine(MOTIONS[sid], brain), axis=1)
        assert error.max() < 4.0, (sid, error.max())
    loaded = PreparedCohort.load(out)
    assert loaded.table["participant_id"].tolist() == ["sub-01", "sub-01"]


def test_one_hot_voxel_in_a_t1_file_does_not_move_its_preparation(template_folder, tmp_path):
    """Issue 32, fault 2, as reported: a T1 with one voxel set to 30000 is aligned as without it."""
    from synthbrain.preprocessing.prepare import prepare_subject

    record = cohort_of(template_folder).subjects[0]
    img = nib.load(record.image)
    data = np.asarray(img.dataobj, dtype=np.float32)
    hot = data.copy()
    hot[tuple(np.argwhere(data > 0)[len(np.argwhere(data > 0)) // 3])] = 30000.0
    path = tmp_path / "hot_T1.nii.gz"
    nib.save(nib.Nifti1Image(hot, img.affine), path)
    grid = make_grid(4.0)
    plain = prepare_subject(record, grid, FAST, None)
    outlier = prepare_subject(dataclasses.replace(record, image=path), grid, FAST, None)
    points = np.argwhere(np.ones((8, 8, 8))) * 15.0 - [52, 70, 40]  # spread over the brain, mm
    moved = [nib.affines.apply_affine(np.asarray(r["registration"]["template_to_subject_ras"]), points) for r in (plain, outlier)]
    assert np.linalg.norm(moved[0] - moved[1], axis=1).max() < 0.5
    assert outlier["registration"]["flags"] == [] and outlier["registration"]["intensities_clipped_to"] == [20.0, 100.0]


def test_a_registration_that_went_wrong_is_flagged(template_folder, prepared, monkeypatch):
    import SimpleITK as sitk

    from synthbrain.preprocessing import prepare as module
    from synthbrain.preprocessing.registration import RegistrationResult

    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["summary"]["registration_flagged"] == {}  # the good registrations pass
    assert all(r["registration"]["flags"] == [] for r in manifest["records"])
    turned = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, np.radians(50.0), (0.0, 0.0, 0.0))
    monkeypatch.setattr(module, "register", lambda *args, **kwargs: RegistrationResult(turned, -0.1, "rigid"))
    flags = module.prepare_subject(cohort_of(template_folder).subjects[0], make_grid(4.0), FAST, None)["registration"]["flags"]
    assert len(flags) == 2 and flags[0].startswith("Dice / size bound") and flags[1] == "rotation 50.0 deg > 30 deg"
