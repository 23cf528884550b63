import numpy as np
import pandas as pd
import pytest
import torch

from synthbrain.generator import INDEX, BrainGenerator
from synthbrain.preprocessing.template import Grid
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
    assert out.covariates["seed"].tolist() == [7, 8, 9] and out.covariates["ventricular_volume"].tolist() == [20.0] * 3
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
    with pytest.raises(ValueError, match="missing config.json"):
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
    with pytest.raises(Exception, match="(?i)offline|cannot find|not found|local"):
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
    assert table["seed"].tolist() == [11, 12, 13] and table["sex"].tolist() == ["F", "M", "F"]
    provenance = json.loads((written / "provenance.json").read_text())
    assert provenance["subjects"]["sub-synth00002"] == 13 and provenance["steps"] == 4 and provenance["sampler"] == "ddim"
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
        generator.distribution = None
