"""BIDS datasets with several T1w images per session (issue 32, fault 5: nipreps/fmriprep#1767,
#2227, bids-apps/HCPPipelines#43), chosen between with an entity filter like fMRIPrep's
--bids-filter-file; and subject ids that differ only in case (bids-specification#858)."""

import json

import numpy as np
import pandas as pd
import pytest

from synthbrain.cli import build_parser, main
from synthbrain.cohort import CohortError, read_bids, read_folder
from synthbrain.cohort.bids import check_bids_filter
from tests.helpers import tiny_labels, write_nifti

SUBJECTS = ["sub-01", "sub-02", "sub-03"]


def _two_t1w(root, names=("T1w", "rec-norm_T1w"), labels=("dseg",)):
    """Three subjects, each with the T1w images ``sub-XX_<name>`` (voxel value = its position + 1,
    to tell them apart) and label maps ``sub-XX_<label>``."""
    for sub in SUBJECTS:
        for k, name in enumerate(names):
            write_nifti(root / sub / "anat" / f"{sub}_{name}.nii.gz", np.full((10, 10, 10), k + 1, np.float32))
        for name in labels:
            write_nifti(root / "derivatives" / "dlmuse" / sub / "anat" / f"{sub}_{name}.nii.gz", tiny_labels())
    pd.DataFrame({"participant_id": SUBJECTS, "age": [50, 60, 70], "sex": ["F", "M", "F"]}).to_csv(
        root / "participants.tsv", sep="\t", index=False
    )
    return root


def test_t1w_and_rec_norm_t1w_are_refused_with_the_candidates_and_the_flag_that_chooses(tmp_path):
    _two_t1w(tmp_path)
    with pytest.raises(CohortError) as refused:
        read_bids(tmp_path)
    reason = next(p.reason for p in refused.value.problems if p.subject_id == "sub-01")
    assert reason == (
        "2 image files match this id: ['sub-01_T1w.nii.gz', 'sub-01_rec-norm_T1w.nii.gz']; they differ in rec ['(none)', 'norm']: "
        "choose with bids_filter={'t1w': {'rec': 'norm'}} (--bids-filter rec=norm, or --bids-filter-file FILE.json in fMRIPrep's form; "
        "None / 'rec=' for the one without rec)"
    )
    assert len(read_bids(tmp_path, on_error="skip")) == 0  # as reported; the message now says how to choose


@pytest.mark.parametrize(
    ("bids_filter", "chosen"),
    [
        ({"t1w": {"rec": "norm"}}, "rec-norm_T1w"),
        ({"t1w": {"reconstruction": "norm", "datatype": "anat", "suffix": "T1w"}}, "rec-norm_T1w"),  # fMRIPrep's spelling
        ({"t1w": {"rec": None}}, "T1w"),
        ({"t1w": {"rec": ["norm", "other"]}}, "rec-norm_T1w"),
    ],
)
def test_an_entity_filter_chooses_one_t1w_per_subject_and_the_choice_is_recorded(tmp_path, bids_filter, chosen):
    _two_t1w(tmp_path)
    cohort = read_bids(tmp_path, bids_filter=bids_filter)
    assert [s.image.name for s in cohort.subjects] == [f"{sub}_{chosen}.nii.gz" for sub in SUBJECTS] and not cohort.skipped
    assert cohort.subjects[0].info["t1w"] == {
        "file": f"sub-01_{chosen}.nii.gz",
        "entities": {"sub": "01", **({"rec": "norm"} if "rec" in chosen else {})},
        "candidates": ["sub-01_T1w.nii.gz", "sub-01_rec-norm_T1w.nii.gz"],
    }
    assert cohort.reading["bids_filter"] == check_bids_filter(bids_filter)
    json.dumps(cohort.reading)  # JSON-ready, as the manifest records it


def test_two_runs_are_chosen_by_number_with_their_own_label_maps(tmp_path):
    _two_t1w(tmp_path, names=("run-01_T1w", "run-02_T1w"), labels=("run-01_dseg", "run-02_dseg"))
    with pytest.raises(CohortError, match=r"they differ in run \['01', '02'\]: choose with bids_filter=\{'t1w': \{'run': '02'\}\}"):
        read_bids(tmp_path)
    cohort = read_bids(tmp_path, bids_filter={"t1w": {"run": 2}})
    assert [(s.image.name, s.labels.name) for s in cohort.subjects[:1]] == [("sub-01_run-02_T1w.nii.gz", "sub-01_run-02_dseg.nii.gz")]
    assert cohort.subjects[0].info["labels"]["file"] == "sub-01_run-02_dseg.nii.gz"
    assert [s.image.name for s in read_bids(tmp_path, bids_filter={"t1w": {"run": "1"}}).subjects][0] == "sub-01_run-01_T1w.nii.gz"


def test_a_filter_that_leaves_a_subject_no_t1w_names_the_filter_and_its_images(tmp_path):
    _two_t1w(tmp_path)
    (tmp_path / "sub-02" / "anat" / "sub-02_rec-norm_T1w.nii.gz").unlink()
    with pytest.raises(CohortError) as refused:
        read_bids(tmp_path, bids_filter={"t1w": {"rec": "norm"}})
    assert [str(p) for p in refused.value.problems] == [
        "subject sub-02: no image file for this table row; no T1w image matches bids_filter {'t1w': {'rec': 'norm'}} "
        "(its T1w images: ['sub-02_T1w.nii.gz'])"
    ]
    assert len(read_bids(tmp_path, bids_filter={"t1w": {"rec": "norm"}}, on_error="skip")) == 2


@pytest.mark.parametrize(
    ("bids_filter", "message"),
    [
        ({"bold": {"task": "rest"}}, r"bids_filter: query 'bold'; allowed: \['dseg', 't1w'\]"),
        ({"t1w": {"foo": "1"}}, r"bids_filter\['t1w'\]: entity 'foo'; allowed: \['acq', 'ce', 'chunk', 'echo', 'inv', 'mt', 'part', 'rec'"),
        ({"t1w": {"session": "1"}}, r"entity 'session'; allowed: .*choose the session with session= \(--session\)"),
        ({"t1w": {"run": "one"}}, r"bids_filter\['t1w'\]\['run'\]='one'; allowed: a non-negative integer"),
        ({"t1w": {"rec": "no-rm"}}, r"bids_filter\['t1w'\]\['rec'\]='no-rm'; allowed: a BIDS label"),
        ({"t1w": "rec-norm"}, r"bids_filter\['t1w'\]='rec-norm'; allowed: a mapping"),
    ],
)
def test_bad_filters_are_refused_naming_the_query_entity_and_value(tmp_path, bids_filter, message):
    _two_t1w(tmp_path)
    with pytest.raises(ValueError, match=message):
        read_bids(tmp_path, bids_filter=bids_filter)


def test_prepare_flags_choose_the_t1w(tmp_path, capsys):
    _two_t1w(tmp_path / "bids")
    base = ["prepare", "--bids", str(tmp_path / "bids"), "--out", str(tmp_path / "out")]
    from synthbrain.cli import _read_cohort

    for flags, chosen in ((["--bids-filter", "rec=norm"], "rec-norm_T1w"), (["--bids-filter", "rec="], "T1w")):
        cohort = _read_cohort(build_parser().parse_args([*base, *flags]), "raise")
        assert cohort.subjects[2].image.name == f"sub-03_{chosen}.nii.gz"
    (tmp_path / "filter.json").write_text(json.dumps({"t1w": {"rec": "norm"}}))
    cohort = _read_cohort(build_parser().parse_args([*base, "--bids-filter-file", str(tmp_path / "filter.json")]), "raise")
    assert cohort.subjects[0].image.name == "sub-01_rec-norm_T1w.nii.gz"
    assert main(base) == 2
    assert "--bids-filter rec=norm" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give one of them"):
        _read_cohort(build_parser().parse_args([*base, "--bids-filter", "rec=norm", "--bids-filter-file", "f.json"]), "raise")


def test_prepare_records_the_chosen_t1w_per_subject(tmp_path, capsys):
    """One real preparation: the record of each subject names the file chosen and the candidates."""
    from tests.helpers import rigid_matrix, template_subject

    template_subject(tmp_path / "template", "c01", rigid_matrix([5, 0, 0], [0, 3, 0]))
    image = tmp_path / "template" / "images" / "c01_T1.nii.gz"
    root = tmp_path / "bids"
    for name in ("sub-01_T1w.nii.gz", "sub-01_rec-norm_T1w.nii.gz"):
        (root / "sub-01" / "anat").mkdir(parents=True, exist_ok=True)
        (root / "sub-01" / "anat" / name).write_bytes(image.read_bytes())
    label_folder = root / "derivatives" / "dlmuse" / "sub-01" / "anat"
    label_folder.mkdir(parents=True)
    (label_folder / "sub-01_dseg.nii.gz").write_bytes((tmp_path / "template" / "labels" / "c01_seg.nii.gz").read_bytes())
    pd.DataFrame({"participant_id": ["sub-01"], "age": [40.0], "sex": ["M"]}).to_csv(root / "participants.tsv", sep="\t", index=False)
    args = ["prepare", "--bids", str(root), "--spacing", "4", "--registration-spacing", "4", "--workers", "1"]
    args += ["--out", str(tmp_path / "out")]
    assert main([*args, "--bids-filter", "rec=norm"]) == 0
    record = json.loads((tmp_path / "out" / "subjects" / "sub-01" / "record.json").read_text())
    assert record["source_image"].endswith("sub-01_rec-norm_T1w.nii.gz")
    assert record["reading"]["t1w"]["candidates"] == ["sub-01_T1w.nii.gz", "sub-01_rec-norm_T1w.nii.gz"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["reading"]["bids_filter"] == {"t1w": {"rec": "norm"}}


# --- subject ids that differ only in case -----------------------------------------------------------


def test_folder_ids_that_differ_only_in_case_are_refused_naming_both(tiny_folder):
    rows = pd.read_csv(tiny_folder["table"], dtype=str)
    rows.loc[2, "subject_id"] = "S01"
    rows.to_csv(tiny_folder["table"], index=False)
    (tiny_folder["images"] / "s03_T1.nii.gz").rename(tiny_folder["images"] / "S01_T1.nii.gz")
    (tiny_folder["labels"] / "s03_T1_seg.nii.gz").rename(tiny_folder["labels"] / "S01_T1_seg.nii.gz")
    with pytest.raises(CohortError) as refused:
        read_folder(tiny_folder["images"], tiny_folder["table"], labels=tiny_folder["labels"])
    reasons = {p.subject_id: p.reason for p in refused.value.problems}
    assert set(reasons) == {"s01", "S01"}
    assert reasons["s01"].startswith("subject id differs only in case from ['S01']: their output folders would be one folder")
    assert reasons["S01"].startswith("subject id differs only in case from ['s01']")
    kept = read_folder(tiny_folder["images"], tiny_folder["table"], labels=tiny_folder["labels"], on_error="skip")
    assert [s.subject_id for s in kept.subjects] == ["s02"]


def test_bids_participant_ids_that_differ_only_in_case_are_refused(tmp_path):
    for sub in ("sub-S01", "sub-s01"):
        write_nifti(tmp_path / sub / "anat" / f"{sub}_T1w.nii.gz", np.ones((10, 10, 10), np.float32))
        write_nifti(tmp_path / "derivatives" / "dlmuse" / sub / "anat" / f"{sub}_dseg.nii.gz", tiny_labels())
    pd.DataFrame({"participant_id": ["sub-S01", "sub-s01"], "age": [50, 60], "sex": ["F", "M"]}).to_csv(
        tmp_path / "participants.tsv", sep="\t", index=False
    )
    with pytest.raises(CohortError, match=r"subject sub-S01: subject id differs only in case from \['sub-s01'\]"):
        read_bids(tmp_path)
