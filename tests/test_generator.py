import re

import numpy as np
import pandas as pd
import pytest
import torch

from synthbrain.generator import INDEX, BrainGenerator, volume_seed
from synthbrain.grid import Grid
from tests.helpers import tiny_generator

GRID = Grid((16, 16, 16), 4.0, (-30.0, -30.0, -30.0))
QUERY = {"sex": ["F", "M", "F"], "age": [30.0, 50.0, 70.0], "ventricular_volume": 20.0, "brain_volume": 1200.0}


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


def test_generates_images_labels_covariates_and_affine(generator):
    out = generator.generate(QUERY, seed=7)
    assert out.images.shape == (3, 1, 16, 16, 16) and out.labels.shape == (3, 16, 16, 16) and out.labels.dtype == torch.uint8
    assert 0 <= out.images.min() and out.images.max() <= 1 and int(out.labels.max()) < 8
    assert out.covariates["seed"].tolist() == [volume_seed(7, i) for i in range(3)]
    assert out.covariates["ventricular_volume"].tolist() == [20.0] * 3
    np.testing.assert_allclose(out.affine, GRID.affine)


def test_same_seed_same_volume_whatever_the_batch(generator):
    one_by_one = generator.generate(QUERY, seed=[3, 4, 5], batch_size=1)
    together = generator.generate(QUERY, seed=[3, 4, 5], batch_size=3)
    torch.testing.assert_close(one_by_one.images, together.images, rtol=1e-4, atol=1e-5)
    other = generator.generate(QUERY, seed=[13, 14, 15])
    assert not torch.allclose(other.images, together.images)
    dpm = generator.generate(QUERY, seed=[3, 4, 5], sampler="dpm++2m", batch_size=2)
    assert dpm.images.shape == together.images.shape


def test_round_trip_through_a_folder_gives_the_same_volumes(generator, tmp_path):
    generator.save_pretrained(tmp_path / "model")
    loaded = BrainGenerator.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(loaded.generate(QUERY, seed=1).images, generator.generate(QUERY, seed=1).images)
    assert loaded.label_classes == generator.label_classes and loaded.latent_shape == generator.latent_shape


def test_tampered_truncated_or_incomplete_folders_are_refused(generator, tmp_path):
    folder = generator.save_pretrained(tmp_path / "model")
    weights = folder / "unet" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 .* differs from the index"):
        BrainGenerator.from_pretrained(folder)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or was modified"):
        BrainGenerator.from_pretrained(folder)
    folder = generator.save_pretrained(tmp_path / "again")
    (folder / "autoencoder" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"autoencoder/config.json: missing; a component folder holds config.json"):
        BrainGenerator.from_pretrained(folder)
    (folder / INDEX).unlink()
    with pytest.raises(ValueError, match=f"no {INDEX}"):
        BrainGenerator.from_pretrained(folder)


def test_loads_a_hub_id_from_the_local_cache_offline(generator, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hub" / "models--synthbrain--tiny" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    generator.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--synthbrain--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--synthbrain--tiny" / "refs" / "main").write_text(snapshot.name)
    loaded = BrainGenerator.from_pretrained("synthbrain/tiny", cache_dir=tmp_path / "hub")
    torch.testing.assert_close(loaded.generate(QUERY, seed=2).images, generator.generate(QUERY, seed=2).images)
    with pytest.raises(ValueError, match="not found in the local Hub cache"):
        BrainGenerator.from_pretrained("synthbrain/absent", cache_dir=tmp_path / "hub")


def test_bad_requests_get_clear_errors(generator):
    with pytest.raises(ValueError, match=r"'age': values \[95.0, 95.0, 95.0\] years are outside the fitted range"):
        generator.generate({**QUERY, "age": 95.0})
    assert generator.generate({**QUERY, "age": 95.0}, extrapolate=True).images.shape[0] == 3
    with pytest.raises(ValueError, match=r"unknown \['weight'\]"):
        generator.generate({**QUERY, "weight": 70})
    with pytest.raises(ValueError, match="sampler='euler'"):
        generator.generate(QUERY, sampler="euler")
    with pytest.raises(ValueError, match="2 seeds for 3 volumes"):
        generator.generate(QUERY, seed=[1, 2])
    with pytest.raises(ValueError, match="no rows"):
        generator.generate(pd.DataFrame(columns=["sex", "age", "ventricular_volume", "brain_volume"]))
    with pytest.raises(ValueError, match="batch_size=0"):
        generator.generate(QUERY, batch_size=0)
    with pytest.raises(ValueError, match="not a folder, and not a Hub id"):
        BrainGenerator.from_pretrained("./nowhere")


def test_save_writes_a_bids_like_dataset_with_affine_and_provenance(generator, tmp_path):
    import json

    import nibabel as nib

    folder = generator.save_pretrained(tmp_path / "model")
    out = BrainGenerator.from_pretrained(folder).generate(QUERY, seed=11)
    written = out.save(tmp_path / "synth")
    t1 = nib.load(written / "sub-synth00001" / "anat" / "sub-synth00001_T1w.nii.gz")
    dseg = nib.load(written / "sub-synth00001" / "anat" / "sub-synth00001_dseg.nii.gz")
    np.testing.assert_allclose(t1.affine, GRID.affine)
    np.testing.assert_allclose(np.asarray(t1.dataobj), out.images[1, 0].numpy())
    np.testing.assert_array_equal(np.asarray(dseg.dataobj), out.labels[1].numpy())
    table = pd.read_csv(written / "participants.tsv", sep="\t")
    assert table["participant_id"].tolist() == ["sub-synth00000", "sub-synth00001", "sub-synth00002"]
    assert table["seed"].tolist() == [volume_seed(11, i) for i in range(3)] and table["sex"].tolist() == ["F", "M", "F"]
    provenance = json.loads((written / "provenance.json").read_text())
    assert provenance["subjects"]["sub-synth00002"] == volume_seed(11, 2) and provenance["steps"] == 4 and provenance["sampler"] == "ddim"
    assert provenance["model"]["sha256"]["unet"] == json.loads((folder / INDEX).read_text())["components"]["unet"]["sha256"]
    assert pd.read_csv(written / "dseg.tsv", sep="\t")["name"].tolist()[:2] == ["background", "ventricles"]
    assert (written / "preview.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="exists and is not empty"):
        out.save(tmp_path / "synth")
    generator.generate({k: v[:1] if isinstance(v, list) else v for k, v in QUERY.items()}).save(tmp_path / "synth", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "synth").glob("sub-*")) == ["sub-synth00000"]
    with pytest.raises(ValueError, match="prefix='a-b'"):
        out.save(tmp_path / "other", prefix="a-b")


def test_cli_generate_with_a_saved_model(generator, tmp_path, capsys):
    from synthbrain.cli import main

    folder = generator.save_pretrained(tmp_path / "model")
    args = [
        "generate",
        "--model",
        str(folder),
        "-n",
        "2",
        "--age",
        "60",
        "--sex",
        "F",
        "--ventricular-volume",
        "25",
        "--brain-volume",
        "1100",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert len(list((tmp_path / "out").glob("sub-*/anat/*_T1w.nii.gz"))) == 2
    assert main(args) == 2 and "exists and is not empty" in capsys.readouterr().err
    assert main([*args[:-2], "--out", str(tmp_path / "o2"), "--age", "99"]) == 2 and "outside the fitted range" in capsys.readouterr().err
    assert main(["generate", "--model", str(folder), "--age", "60", "--out", str(tmp_path / "o3")]) == 2
    assert "missing ['sex', 'ventricular_volume', 'brain_volume'], and this model has no covariate distribution" in capsys.readouterr().err


def test_covariates_left_out_are_drawn_from_the_training_distribution(generator, tmp_path):
    from synthbrain.cohort.distribution import CovariateDistribution

    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 60)
    table = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], 60),
            "age": age,
            "ventricular_volume": 5 + 0.8 * (age - 20),
            "brain_volume": 1500 - 8 * (age - 20) + rng.normal(0, 20, 60),
        }
    )
    schema = generator.schema
    generator.schema = generator.schema.fit(table)
    generator.distribution = CovariateDistribution.fit(table, generator.schema, components=1)
    try:
        out = generator.generate(n=3, seed=5)
        assert out.covariates.columns.tolist()[:4] == generator.schema.names and out.images.shape[0] == 3
        old = generator.generate({"age": 78.0, "sex": "M"}, n=2, seed=5).covariates
        assert (old["age"] == 78.0).all() and (old["sex"] == "M").all() and (old["ventricular_volume"] > 40).all()
        pd.testing.assert_frame_equal(generator.generate(n=3, seed=5).covariates, out.covariates)  # per-volume seeds
        loaded = BrainGenerator.from_pretrained(generator.save_pretrained(tmp_path / "model"))
        pd.testing.assert_frame_equal(loaded.generate(n=3, seed=5).covariates, out.covariates)
    finally:
        generator.schema, generator.distribution = schema, None


@pytest.fixture(scope="module")
def with_density():
    return tiny_generator(distribution=True)


def test_a_condition_sampler_draws_each_volumes_covariates_from_its_seed(generator, with_density):
    from synthbrain.datasets import Fixed, Uniform

    out = with_density.generate(cond_sampler=Uniform(age=(30.0, 70.0), sex=["F", "M"]), n=4, seed=5)
    table = out.covariates
    assert out.images.shape[0] == 4 and table["seed"].tolist() == [volume_seed(5, i) for i in range(4)]
    assert table["age"].between(30, 70).all() and table["age"].nunique() == 4 and set(table["sex"]) <= {"F", "M"}
    low, high = with_density.schema["brain_volume"].low, with_density.schema["brain_volume"].high
    assert table["brain_volume"].between(low, high).all()  # left out by the sampler: drawn from the training density
    alone = with_density.generate(cond_sampler=Uniform(age=(30.0, 70.0), sex=["F", "M"]), seed=[volume_seed(5, 2)])
    pd.testing.assert_frame_equal(alone.covariates, table.iloc[[2]].reset_index(drop=True))  # volume 2 depends on its seed only
    torch.testing.assert_close(alone.images[0], out.images[2], rtol=1e-4, atol=1e-5)
    assert out.provenance["cond_sampler"].startswith("Uniform(") and out.provenance["drawn_from_training_distribution"] == [
        "ventricular_volume",
        "brain_volume",
    ]
    fixed = generator.generate(cond_sampler=Fixed(sex="M", age=40.0, ventricular_volume=30.0, brain_volume=1300.0), n=2)
    assert fixed.covariates[["sex", "age"]].values.tolist() == [["M", 40.0], ["M", 40.0]]
    assert fixed.provenance["drawn_from_training_distribution"] == []


def test_condition_sampler_errors(generator, with_density):
    from synthbrain.datasets import Fixed, Uniform

    with pytest.raises(ValueError, match=r"cond_sampler leaves out \['brain_volume', 'sex', 'ventricular_volume'\]"):
        generator.generate(cond_sampler=Uniform(age=(30.0, 70.0)), n=2)  # no density to draw the rest from
    with pytest.raises(ValueError, match=r"'age': values \[95.0\] years are outside the fitted range"):
        with_density.generate(cond_sampler=Fixed(age=95.0), n=2)
    with pytest.raises(ValueError, match=r"unknown covariates \['weight'\]"):
        with_density.generate(cond_sampler=Fixed(weight=70.0), n=2)
    with pytest.raises(ValueError, match="covariates and cond_sampler: give one or the other"):
        with_density.generate({"age": 50.0}, cond_sampler=Fixed(sex="F"), n=2)
    with pytest.raises(ValueError, match="a condition sampler; pass it as cond_sampler="):
        with_density.generate(Fixed(sex="F"), n=2)
    with pytest.raises(ValueError, match="cond_sampler returned list"):
        with_density.generate(cond_sampler=lambda rng: [50.0], n=2)


def test_wrong_types_units_and_missing_values_name_covariate_value_and_what_is_allowed(generator, with_density):
    one = {"sex": "F", "age": 50.0, "ventricular_volume": 20.0, "brain_volume": 1200.0}
    with pytest.raises(ValueError, match=r"'sex': invalid values \[0, 1\]; allowed: one of \['F', 'M'\]"):
        generator.generate({**one, "sex": [0, 1]})
    with pytest.raises(ValueError, match=r"'sex': invalid values \['other'\]; allowed: one of \['F', 'M'\]"):
        generator.generate({**one, "sex": "other"})  # "female" is a spelling of F (BIDS); "other" is no level of this model
    with pytest.raises(ValueError, match=r"'age': invalid values \['70y'\]; allowed: a finite number in years"):
        generator.generate({**one, "age": "70y"})
    mm3 = r"'ventricular_volume': values \[20000.0\] mL are outside the fitted range \[[\d.]+, [\d.]+\] mL \(read as mm3"
    with pytest.raises(ValueError, match=mm3):
        generator.generate({**one, "ventricular_volume": 20000.0})
    with pytest.raises(ValueError, match=mm3):  # checked before the rest is drawn, so not a failed draw
        with_density.generate({"sex": "F", "ventricular_volume": 20000.0})
    with pytest.raises(ValueError, match=r"age=nan for volume 1 is missing; allowed: a number in \[20, 80\] years$"):
        generator.generate({**one, "age": [50.0, float("nan")]})
    with pytest.raises(ValueError, match=r"age=None for volume 0 is missing; .*leave 'age' out to draw it"):
        with_density.generate({"sex": "F", "age": None})  # not silently drawn in its place
    with pytest.raises(ValueError, match=r"unknown \['weight'\]"):
        with_density.generate({"sex": "F", "weight": 70.0})
    for bad, message in [
        ({"n": 0}, "n=0; allowed: an integer >= 1"),
        ({"n": -2}, "n=-2; allowed"),
        ({"n": True}, "n=True; allowed"),
        ({"n": 2.0}, "n=2.0; allowed"),
        ({"seed": -1}, "seed=-1; allowed: an integer >= 0"),
        ({"seed": "5"}, "seed='5'; allowed"),
        ({"seed": [1, True]}, r"seed: values \[True\]; allowed: integers >= 0"),
        ({"steps": 0}, "steps=0; allowed: an integer >= 1"),
        ({"guidance_scale": float("nan")}, "guidance_scale=nan; allowed: a finite number >= 0"),
        ({"guidance_scale": -1.0}, "guidance_scale=-1.0; allowed: >= 0"),
        ({"batch_size": True}, "batch_size=True; allowed"),
    ]:
        with pytest.raises(ValueError, match=message):
            generator.generate(one, **bad)
    with pytest.raises(ValueError, match="n=3: the covariates table has 1 rows"):
        generator.generate(pd.DataFrame([one]), n=3)


def test_float64_bfloat16_and_float16_generate_float32_images_close_to_float32(tmp_path):
    reference = tiny_generator().generate(QUERY, seed=4, raw=True)  # raw: a label flipped at the brain's edge would mask a voxel
    for dtype, tolerance in [(torch.float64, 1e-4), (torch.bfloat16, 0.1), (torch.float16, 0.02)]:
        model = tiny_generator().to("cpu", dtype)
        assert model.dtype == dtype
        out = model.generate(QUERY, seed=4, raw=True)
        assert out.images.dtype == torch.float32 and out.images.shape == reference.images.shape and out.provenance["dtype"] in str(dtype)
        assert (out.images - reference.images).abs().max() < tolerance, dtype
        assert (out.labels == reference.labels).float().mean() > 0.95, dtype
    assert next(tiny_generator().to(dtype=torch.float64).unet.parameters()).dtype == torch.float64
    back = tiny_generator().to(dtype=torch.float64).to(dtype=torch.float32)
    torch.testing.assert_close(back.generate(QUERY, seed=4, raw=True).images, reference.images)
    with pytest.raises(ValueError, match="dtype=torch.int8; allowed"):
        tiny_generator().to(dtype=torch.int8)


def test_broken_model_folders_get_errors_naming_the_file(generator, tmp_path):
    import json

    def fresh(name):
        return generator.save_pretrained(tmp_path / name)

    def edit(path, change):
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    folder = fresh("unknown")
    edit(folder / INDEX, lambda d: {**d, "extra": 1})
    with pytest.raises(ValueError, match=rf"{INDEX}: unknown keys \['extra'\], missing keys \[\]"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("absent")
    edit(folder / INDEX, lambda d: {k: v for k, v in d.items() if k != "latent_scale"})
    with pytest.raises(ValueError, match=r"unknown keys \[\], missing keys \['latent_scale'\]"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("components")
    edit(folder / INDEX, lambda d: {**d, "components": {**d["components"], "vae": d["components"]["unet"]}})
    with pytest.raises(ValueError, match=r"components .*; expected exactly \['autoencoder', 'unet'\]"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("outside")
    edit(folder / INDEX, lambda d: {**d, "components": {**d["components"], "unet": {**d["components"]["unet"], "path": "../x"}}})
    with pytest.raises(ValueError, match=r"path '../x'; allowed: a folder inside"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("defaults")
    edit(folder / INDEX, lambda d: {**d, "defaults": {**d["defaults"], "stepz": 3}})
    with pytest.raises(ValueError, match=r"defaults: unknown keys \['stepz'\]"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("sampler")
    edit(folder / INDEX, lambda d: {**d, "defaults": {**d["defaults"], "sampler": "euler"}})
    with pytest.raises(ValueError, match="sampler='euler'"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("shape")
    edit(folder / INDEX, lambda d: {**d, "latent_shape": [3, 5, 5, 5]})
    with pytest.raises(ValueError, match=rf"latent_shape \[3, 5, 5, 5\] differs from {re.escape(str(list(generator.latent_shape)))}"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("scheduler")
    (folder / "scheduler" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"scheduler/config.json: missing"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("schedule-keys")
    edit(folder / "scheduler" / "config.json", lambda d: {**d, "clip_sample": True})
    with pytest.raises(ValueError, match=r"scheduler/config.json: noise schedule: unknown keys \['clip_sample'\]"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("schema")
    (folder / "covariates" / "covariates.json").unlink()
    with pytest.raises(ValueError, match=r"covariates/covariates.json: missing"):
        BrainGenerator.from_pretrained(folder)
    folder = fresh("json")
    (folder / "covariates" / "covariates.json").write_text("{")
    with pytest.raises(ValueError, match=r"covariates/covariates.json: not valid JSON"):
        BrainGenerator.from_pretrained(folder)


def test_saving_over_a_model_folder_leaves_no_stale_density(generator, with_density, tmp_path):
    folder = with_density.save_pretrained(tmp_path / "model")
    assert BrainGenerator.from_pretrained(folder).distribution is not None
    generator.save_pretrained(folder)
    assert BrainGenerator.from_pretrained(folder).distribution is None


def test_an_absent_hub_model_offline_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"name_or_path='synthbrain/absent': not found in the local Hub cache .*offline"):
        BrainGenerator.from_pretrained("synthbrain/absent", cache_dir=tmp_path / "hub")
    with pytest.raises(ValueError, match="not found in the local Hub cache"):
        BrainGenerator.from_pretrained("synthbrain/absent", cache_dir=tmp_path / "hub", local_files_only=True)


def test_save_is_all_or_nothing_and_overwrite_replaces_only_synthbrain_output(generator, tmp_path, monkeypatch):
    from synthbrain import _io

    out = generator.generate(QUERY, seed=1)
    real_save = _io.save_nifti
    calls = []

    def dies_on_the_third_file(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(_io, "save_nifti", dies_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        out.save(tmp_path / "synth")
    assert len(calls) == 3 and sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no hidden staging left
    monkeypatch.setattr(_io, "save_nifti", real_save)

    out.save(tmp_path / "synth")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "synth").rglob("*") if p.is_file()}
    calls.clear()
    monkeypatch.setattr(_io, "save_nifti", dies_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        generator.generate(QUERY, seed=2).save(tmp_path / "synth", overwrite=True)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "synth").rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # the previous set, intact
    monkeypatch.setattr(_io, "save_nifti", real_save)

    stale = tmp_path / ".tmp-0123456789ab-synth"  # what a killed save leaves
    (stale / "sub-synth00000").mkdir(parents=True)
    second = generator.generate(QUERY, seed=2)
    second.save(tmp_path / "synth", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
    assert len(list((tmp_path / "synth").glob("sub-*/anat/*_T1w.nii.gz"))) == 3
    assert pd.read_csv(tmp_path / "synth" / "participants.tsv", sep="\t")["seed"].tolist() == [volume_seed(2, i) for i in range(3)]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds files that synthbrain did not write"):
        out.save(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert out.save(tmp_path / "empty") == tmp_path / "empty" and (tmp_path / "empty" / "provenance.json").is_file()


def test_save_to_a_file_or_below_one_is_a_clear_error(generator, tmp_path):
    out = generator.generate(QUERY, seed=1)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match=r"folder='.*a-file' is a file"):
        out.save(tmp_path / "a-file")
    with pytest.raises(ValueError, match=r"folder='.*a-file/out': '.*a-file' is a file, not a folder"):
        out.save(tmp_path / "a-file" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_save_without_write_permission_is_a_clear_error(generator, tmp_path, monkeypatch):
    import os

    out = generator.generate(QUERY, seed=1)
    read_only = str(tmp_path / "read-only")
    os.mkdir(read_only)
    real_access = os.access
    # chmod does not stop root (as tests often run), so the permission answer is what is replaced here
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == read_only else real_access(path, mode))
    with pytest.raises(ValueError, match=r"folder='.*read-only/synth/new': no permission to write in '.*read-only'"):
        out.save(tmp_path / "read-only" / "synth" / "new")
    assert list((tmp_path / "read-only").iterdir()) == []


def test_provenance_records_model_hash_sampling_and_seed_per_subject(generator, tmp_path):
    import json

    folder = generator.save_pretrained(tmp_path / "model")
    out = BrainGenerator.from_pretrained(folder).generate(QUERY, seed=[4, 9, 2], sampler="dpm++2m", steps=3, guidance_scale=1.5)
    provenance = json.loads((out.save(tmp_path / "synth") / "provenance.json").read_text())
    index = json.loads((folder / INDEX).read_text())
    assert provenance["model"]["sha256"] == {k: v["sha256"] for k, v in index["components"].items()}
    assert (provenance["sampler"], provenance["steps"], provenance["guidance_scale"]) == ("dpm++2m", 3, 1.5)
    assert provenance["subjects"] == {"sub-synth00000": 4, "sub-synth00001": 9, "sub-synth00002": 2}
    assert provenance["extrapolate"] is False and provenance["dtype"] == "float32"
    assert (tmp_path / "synth" / "preview.png").stat().st_size > 1000


def test_cli_generate_bad_input_is_one_line_and_writes_nothing(generator, tmp_path, capsys, monkeypatch):
    from synthbrain.cli import main

    folder = generator.save_pretrained(tmp_path / "model")
    base = ["generate", "--model", str(folder), "--steps", "2", "--device", "cpu"]
    full = ["--sex", "F", "--age", "50", "--ventricular-volume", "20", "--brain-volume", "1200"]

    def fails(args, expected):
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    fails(["-n", "0", *full, "--out", str(tmp_path / "o")], "-n 0: the number of volumes must be >= 1")
    fails([*full[:1], "other", *full[2:], "--out", str(tmp_path / "o")], "'sex': invalid values ['other']; allowed: one of ['F', 'M']")
    fails([*full[:3], "120", *full[4:], "--out", str(tmp_path / "o")], "'age': values [120.0] years are outside the fitted range")
    fails([*full[:5], "20000", *full[6:], "--out", str(tmp_path / "o")], "read as mm3 they would be inside")
    (tmp_path / "a-file").write_text("x")
    fails([*full, "--out", str(tmp_path / "a-file" / "o")], "is a file, not a folder")
    assert not (tmp_path / "o").exists()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "x.txt").write_text("x")

    def must_not_run(*args, **kwargs):
        raise AssertionError("generated before the output folder was checked")

    monkeypatch.setattr(BrainGenerator, "generate", must_not_run)
    fails([*full, "--out", str(tmp_path / "done")], "exists and is not empty")
    if not torch.cuda.is_available():
        fails([*full, "--device", "cuda", "--out", str(tmp_path / "o")], "CUDA is not available")
