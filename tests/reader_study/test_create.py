"""reader-study create: blinding, proportions, determinism, no file cue, the cue check, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from synthbrain import _io
from synthbrain.reader_study.create import blind_volume, create_study
from synthbrain.reader_study.cues import check_cues, sharpness
from synthbrain.reader_study.study import load_study, read_case, write_case
from tests.helpers import make_prepared, tiny_generator
from tests.reader_study.conftest import GRID, new_study


def _key(study: Path) -> dict:
    return json.loads((study / "key" / "key.json").read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_study_is_blinded(study):
    meta_text = (study / "study.json").read_text()
    meta, key = json.loads(meta_text), _key(study)
    ids = [c["id"] for c in meta["cases"]]
    assert ids == sorted(ids) and len(set(ids)) == 8
    assert all(len(i) == 8 and set(i) <= set("0123456789abcdef") for i in ids)
    assert sorted(p.name for p in (study / "cases").iterdir()) == [f"{i}.nii" for i in ids]
    # what the server reads names no truth and no source: no subject ids, no synthetic file names
    for word in ("truth", 'real"', 'synthetic"', "p00", "p01", "sub-", '"seed"'):
        assert word not in meta_text
    assert set(meta) >= {"study_id", "title", "grid", "cases", "order_seed"} and "seed" not in meta
    # the key holds the truth for exactly these cases, apart from them
    assert [c["id"] for c in key["cases"]] == ids
    truths = [c["truth"] for c in key["cases"]]
    assert sorted(truths) == ["real"] * 4 + ["synthetic"] * 4
    assert truths not in (sorted(truths), sorted(truths, reverse=True))  # ids do not group the classes
    sources = [c["source"] for c in key["cases"]]
    assert {s["subject_id"] for s in sources if "subject_id" in s} <= {f"p{i:02d}" for i in range(8)}
    assert all(s["file"].startswith("sub-synth") for s, t in zip(sources, truths) if t == "synthetic")


@pytest.mark.parametrize(("n", "fraction", "synthetic"), [(8, 0.25, 2), (5, 0.5, 3), (6, 0.5, 3), (7, 0.8, 6)])
def test_proportions(sources, tmp_path, n, fraction, synthetic):
    out = new_study(sources, tmp_path / "s", n=n, synthetic_fraction=fraction)
    truths = [c["truth"] for c in _key(out)["cases"]]
    assert len(truths) == n and truths.count("synthetic") == synthetic  # round(n * fraction), halves up
    assert _key(out)["n_real"] == n - synthetic


def test_same_seed_same_study_other_seed_other_draw(sources, tmp_path):
    a = new_study(sources, tmp_path / "a", seed=11)
    b = new_study(sources, tmp_path / "b", seed=11)
    c = new_study(sources, tmp_path / "c", seed=12)
    assert _files(a) == _files(b)  # byte for byte, cue report included
    assert [x["id"] for x in _key(a)["cases"]] != [x["id"] for x in _key(c)["cases"]]
    assert json.loads((a / "study.json").read_text())["study_id"] != json.loads((c / "study.json").read_text())["study_id"]


def test_no_file_size_header_background_or_range_cue(study, sources):
    key = _key(study)
    paths = [study / "cases" / f"{c['id']}.nii" for c in key["cases"]]
    sizes = {p.stat().st_size for p in paths}
    headers = {p.read_bytes()[:352] for p in paths}
    assert len(sizes) == 1 and len(headers) == 1  # although the sources differ in dtype (float32) and header
    header = nib.load(paths[0]).header
    assert header.get_data_dtype() == np.uint8 and header["descrip"].item() == b"" and int(header["sform_code"]) == 4
    np.testing.assert_allclose(nib.load(paths[0]).affine, GRID.affine)
    for entry, path in zip(key["cases"], paths):
        volume = read_case(path)
        assert volume.min() == 0 and volume.max() == 255
        if entry["truth"] == "synthetic":  # the generator's haze is gone: zero outside its own label map
            source = sources["synthetic"] / entry["source"]["file"]
            labels = np.asarray(nib.load(str(source).replace("_T1w", "_dseg")).dataobj)
            assert (np.asarray(nib.load(source).dataobj)[labels == 0] > 0).all()  # the input had haze everywhere
            assert (volume[labels == 0] == 0).all()
            assert volume[0, 0, 0] == 0 and volume[15, 7, 0] == 0 and labels[0, 0, 0] > 0  # stray labels do not show the haze
            assert entry["source"]["stray_label_voxels_removed"] == 2
        else:
            assert entry["source"]["stray_label_voxels_removed"] == 0
    result = check_cues(study)
    assert result["cues"] == [] and all(row["identical"] for row in result["identical"].values())
    assert (study / "key" / "cue_check.md").is_file() and "no cue found" in (study / "key" / "cue_check.md").read_text()


def _replace_case(study: Path, case_id: str, volume: np.ndarray, descrip: bytes = b"") -> None:
    """Overwrite a case (as a faulty pipeline would) and re-record its hash so the study stays valid."""
    path = study / "cases" / f"{case_id}.nii"
    if descrip:
        image = nib.Nifti1Image(volume.astype(np.float32), GRID.affine)  # as the generator's own files are
        image.header["descrip"] = descrip
        nib.save(image, path)
    else:
        write_case(path, volume, GRID.affine)
    digest = _io.sha256_file(path)
    for name in ("study.json", "key/key.json"):
        data = json.loads((study / name).read_text())
        for case in data["cases"]:
            if case["id"] == case_id:
                case["sha256"] = digest
        (study / name).write_text(json.dumps(data))


def test_cue_check_reports_file_and_haze_cues(sources, tmp_path):
    study = new_study(sources, tmp_path / "s", n=12)  # 6 + 6: enough for p < 0.01
    key = _key(study)
    synthetic = [c["id"] for c in key["cases"] if c["truth"] == "synthetic"]
    rng = np.random.default_rng(0)
    for case_id in synthetic:  # background haze and specks put back into the synthetic cases
        volume = read_case(study / "cases" / f"{case_id}.nii")
        haze = (volume == 0) & (rng.random(volume.shape) < 0.3)
        volume[haze] = rng.integers(1, 4, int(haze.sum()))
        _replace_case(study, case_id, volume)
    result = check_cues(study)
    flagged = {row["feature"] for row in result["features"] if row["flag"]}
    assert {"faint_share", "specks"} <= flagged and result["file_cues"] == []
    assert any("specks" in c for c in result["cues"])
    # a case written another way (float32, a description) is a file cue
    volume = read_case(study / "cases" / f"{synthetic[0]}.nii")
    _replace_case(study, synthetic[0], volume, descrip=b"synthbrain synthetic")
    result = check_cues(study)
    assert any(c.startswith("header") for c in result["file_cues"]) and any(c.startswith("file size") for c in result["file_cues"])


def test_sharpness_statistics_known_answers():
    volume = np.zeros((20, 20, 20), np.uint8)
    ramp = 50 + 3 * np.arange(20)[:, None, None]  # 3 grey levels per voxel along x
    volume[2:18, 2:18, 2:18] = np.broadcast_to(ramp, (20, 20, 20))[2:18, 2:18, 2:18]
    assert sharpness(volume)["gradient_mean"] == pytest.approx(3.0)  # 2 voxels in: central differences see the ramp only
    flat = np.where(volume > 0, 120, 0).astype(np.uint8)
    assert sharpness(flat) == {"gradient_mean": 0.0, "highfreq_share": 0.0}
    checker = (100 + 50 * (-1) ** np.indices((24, 24, 24)).sum(axis=0)).astype(np.uint8)  # voxel-scale detail only
    assert sharpness(checker)["highfreq_share"] > 0.95
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 20, (24, 24, 24)), 1, 255)
    blurred = np.clip(ndimage.gaussian_filter(noisy, 1.0), 1, 255)
    sharp, soft = sharpness(noisy.astype(np.uint8)), sharpness(blurred.astype(np.uint8))
    assert sharp["gradient_mean"] > 2 * soft["gradient_mean"] and sharp["highfreq_share"] > 2 * soft["highfreq_share"]
    assert all(np.isnan(v) for v in sharpness(np.pad(np.full((3, 3, 3), 9, np.uint8), 2)).values())  # no interior: not measured


def test_cue_check_flags_cases_that_differ_in_sharpness(sources, tmp_path):
    study = new_study(sources, tmp_path / "s", n=12)  # 6 + 6: enough for p < 0.01
    synthetic = [c["id"] for c in _key(study)["cases"] if c["truth"] == "synthetic"]
    before = {row["feature"]: row for row in check_cues(study)["features"]}
    for case_id in synthetic:  # blurred inside the same brain, the brightest voxel still 255 (no range cue): only sharpness changes
        volume = read_case(study / "cases" / f"{case_id}.nii")
        brain = volume > 0
        soft = np.clip(np.round(ndimage.gaussian_filter(volume.astype(float), 1.0)), 1, 255).astype(np.uint8)
        soft.flat[np.argmax(np.where(brain, soft, 0))] = 255
        volume[brain] = soft[brain]
        _replace_case(study, case_id, volume)
    result = check_cues(study)
    rows = {row["feature"]: row for row in result["features"]}
    assert result["file_cues"] == []
    for name in ("gradient_mean", "highfreq_share"):
        assert rows[name]["kind"] == "sharpness" and rows[name]["flag"] and rows[name]["auc"] == 0.0  # every synthetic case softer
        assert rows[name]["auc"] < before[name]["auc"]
        assert any(c.startswith(f"{name} (") and "differ in sharpness" in c for c in result["cues"])


def test_real_cohort_at_2mm_is_averaged_onto_the_synthetic_grid(sources, tmp_path):
    real = make_prepared(tmp_path / "real2mm", n=3, shape=(32, 32, 32))
    manifest = json.loads((real / "manifest.json").read_text())
    manifest["grid"] = {"shape": [32, 32, 32], "spacing": 2.0, "origin": [-31.0, -31.0, -31.0]}  # averages to GRID
    (real / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "s"
    create_study(real, out, synthetic=sources["synthetic"], n=6, seed=0)
    assert {read_case(p).shape for p in (out / "cases").iterdir()} == {(16, 16, 16)}
    manifest["grid"]["origin"] = [-40.0, -31.0, -31.0]
    (real / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"32x32x32 voxels of 2 mm, origin \(-40, -31, -31\).*16x16x16 voxels of 4 mm, origin \(-30, -30, -30\)"
    ):
        create_study(real, tmp_path / "t", synthetic=sources["synthetic"], n=6, seed=0)
    assert not (tmp_path / "t").exists()


def _blinded_source(case: dict, real_cohort) -> np.ndarray:
    """The blinded volume of the source a key entry names: a real subject of the prepared cohort or
    a synthetic file with its label map beside it."""
    source = case["source"]
    if case["truth"] == "real":
        image, labels = real_cohort.load_subject(source["subject_id"])
        return blind_volume(image, labels > 0)
    path = Path(source["folder"]) / source["file"]
    dseg = path.with_name(path.name.replace("_T1w.nii.gz", "_dseg.nii.gz"))
    return blind_volume(np.asarray(nib.load(path).dataobj, np.float32), np.asarray(nib.load(dseg).dataobj) > 0)


def test_each_case_file_holds_the_volume_its_key_names(study, sources):
    """Case files and key entries stay paired: every case file is the blinded volume of the real
    subject or synthetic file its key entry names (and its digest the file's), so the truth
    recorded for a case is the truth of what readers see."""
    from synthbrain.preprocessing.prepared import PreparedCohort

    real_cohort = PreparedCohort.load(sources["real"])
    key = _key(study)
    for case in key["cases"]:
        path = study / "cases" / f"{case['id']}.nii"
        np.testing.assert_array_equal(read_case(path), _blinded_source(case, real_cohort), err_msg=str(case["source"]))
        assert case["sha256"] == _io.sha256_file(path)
    volumes = [read_case(study / "cases" / f"{c['id']}.nii") for c in key["cases"]]
    assert all(not np.array_equal(a, b) for i, a in enumerate(volumes) for b in volumes[:i])  # no case repeats another


def test_synthetic_from_a_model(sources, tmp_path):
    out = tmp_path / "s"
    generator = tiny_generator(distribution=True, steps=2)
    summary = create_study(sources["real"], out, generator=generator, model_name="tiny", n=6, synthetic_fraction=0.5, seed=4)
    assert summary["n_synthetic"] == 3 and summary["cues"]["file_cues"] == []
    made = [c for c in _key(out)["cases"] if c["truth"] == "synthetic"]
    assert [c["source"]["model"] for c in made] == ["tiny"] * 3
    assert len({c["source"]["seed"] for c in made}) == 3 and all("age" in c["source"]["covariates"] for c in made)
    assert len({(out / "cases" / f"{c['id']}.nii").stat().st_size for c in _key(out)["cases"]}) == 1
    for case in made:  # each synthetic case is the volume its recorded seed and covariates give, blinded
        covariates = {k: case["source"]["covariates"][k] for k in generator.schema.names}
        again = generator.generate(covariates, seed=[case["source"]["seed"]])
        want = blind_volume(again.images[0, 0].numpy(), again.labels[0].numpy() > 0)
        got = read_case(out / "cases" / f"{case['id']}.nii").astype(int)
        assert np.abs(got - want).max() <= 1 and (got != want).mean() < 0.001  # a batch of 3 against 1: float rounding at most


def test_bad_input_is_named(sources, tmp_path):
    real, synthetic = sources["real"], sources["synthetic"]
    cases = [
        (dict(n=1), "n=1"),
        (dict(synthetic_fraction=1.0), "synthetic_fraction=1.0"),
        (dict(n=2, synthetic_fraction=0.1), "leaves at least one of each"),
        (dict(n=16, synthetic_fraction=0.25), "8 subjects; allowed: at least"),
        (dict(n=16, synthetic_fraction=0.9), "6 volumes"),
        (dict(seed=-1), "seed=-1"),
        (dict(title="<script>"), "title="),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            create_study(real, tmp_path / "x", synthetic=synthetic, **{"n": 8, **kwargs})
    with pytest.raises(ValueError, match="exactly one source"):
        create_study(real, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        create_study(real, tmp_path / "full", synthetic=synthetic, n=4)
    broken = tmp_path / "broken"
    shutil.copytree(synthetic, broken)
    for dseg in broken.glob("sub-*/anat/*_dseg.nii.gz"):
        dseg.unlink()
    with pytest.raises(ValueError, match="no label map"):
        create_study(real, tmp_path / "x", synthetic=broken, n=4)
    other = tmp_path / "other"  # synthetic volumes on another grid
    shutil.copytree(synthetic, other)
    for path in other.glob("sub-*/anat/*.nii.gz"):
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:12, :12, :12], image.affine), path)
    with pytest.raises(ValueError, match=r"16x16x16 voxels of 4 mm.*12x12x12 voxels of 4 mm"):
        create_study(real, tmp_path / "x", synthetic=other, n=4)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".tmp-*"))


def test_incomplete_or_mismatched_study_is_an_error_naming_what_is_missing(study, tmp_path):
    key = _key(study)
    first, second = key["cases"][0]["id"], key["cases"][1]["id"]
    broken = tmp_path / "missing-case"
    shutil.copytree(study, broken)
    (broken / "cases" / f"{first}.nii").unlink()
    with pytest.raises(ValueError, match=f"incomplete: missing 1 case file.*cases/{first}.nii"):
        load_study(broken)
    swapped = tmp_path / "swapped"
    shutil.copytree(study, swapped)
    a, b = swapped / "cases" / f"{first}.nii", swapped / "cases" / f"{second}.nii"
    a.rename(swapped / "tmp"), b.rename(a), (swapped / "tmp").rename(b)
    with pytest.raises(ValueError, match="differ from the sha256"):
        load_study(swapped)
    no_key = tmp_path / "no-key"
    shutil.copytree(study, no_key)
    shutil.rmtree(no_key / "key")
    load_study(no_key)  # serving works without the key (it may be kept elsewhere during the study)
    with pytest.raises(ValueError, match="missing key/key.json"):
        load_study(no_key, key="required")
    other = tmp_path / "other-key"
    shutil.copytree(study, other)
    wrong = _key(other)
    wrong["cases"] = wrong["cases"][1:]
    (other / "key" / "key.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=f"key does not match the cases: not in the key \\['{first}'\\]"):
        load_study(other)
    wrong = _key(study)
    wrong["study_id"] = "000000000000"
    (other / "key" / "key.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="the key is of study '000000000000'"):
        load_study(other, key="required")
    (other / "study.json").unlink()
    with pytest.raises(ValueError, match="study.json: missing"):
        load_study(other)
