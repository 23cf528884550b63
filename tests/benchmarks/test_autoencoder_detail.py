import json

import numpy as np
import pytest
import torch

from synthbrain.autoencoder.model import BrainAutoencoder
from synthbrain.components import save_component
from synthbrain.evaluation.metrics import buried_share, high_frequency_share
from tests.autoencoder.test_losses import TINY  # the tiny autoencoder of the loss tests
from tests.helpers import load_benchmark, make_prepared


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("autoencoder_detail", monkeypatch)


def test_reconstruct_decodes_the_posterior_mean_clamped_and_masked_by_the_decoded_labels():
    torch.manual_seed(0)
    model = BrainAutoencoder(TINY).eval()
    image, labels = torch.rand(2, 1, 16, 16, 16), torch.randint(0, 8, (2, 16, 16, 16))
    got, classes = model.reconstruct(image, labels)
    with torch.no_grad():
        mu, _ = model.encode(image, labels)
        decoded, logits = model.decode(mu)
    assert torch.equal(classes, logits.argmax(1))
    torch.testing.assert_close(got, decoded.clamp(0, 1) * (logits.argmax(1, keepdim=True) > 0), rtol=0, atol=0)
    again, _ = model.reconstruct(image, labels)
    assert torch.equal(got, again)  # no posterior noise


def test_autoencoder_detail_scores_reconstructions_against_the_real_subjects(script, tiny, tmp_path):
    prepared, _, folder = tiny
    out = tmp_path / "report" / "detail"
    result = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == json.loads(json.dumps(result))  # strict JSON, the same numbers
    assert written["subjects"] == 3 and written["grid"] == [16, 16, 16]
    # the real column is the metric on the real images inside their own brains, computed independently here
    from synthbrain.preprocessing.prepared import PreparedCohort

    cohort = PreparedCohort.load(prepared)
    images = torch.stack([cohort[i]["image"] for i in range(3)])
    brain = torch.stack([cohort[i]["labels"] > 0 for i in range(3)])[:, None]
    assert written["measures"]["high-frequency share"]["real"] == pytest.approx(float(np.mean(high_frequency_share(images, brain))))
    names = list(cohort.label_scheme.class_names)
    buried = buried_share(torch.stack([cohort[i]["labels"] for i in range(3)]), names.index("cortical_gm"), [0, names.index("csf")])
    assert written["measures"][script.BURIED]["real"] == pytest.approx(float(np.mean(buried)))
    for measure in written["measures"].values():
        if measure["real"]:
            assert measure["ratio"] == pytest.approx(measure["reconstructions"] / measure["real"])
        else:
            assert measure["ratio"] is None  # undefined against a real value of 0
    assert 0 <= written["label_dice"] <= 1 and np.isfinite(written["psnr_db"])
    assert out.with_suffix(".png").stat().st_size > 0 and "| high-frequency share |" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="allowed: >= 2"):
        script.main(["--autoencoder", str(folder), "--real", str(make_prepared(tmp_path / "one", n=1)), "--out", str(out)])


def test_autoencoder_detail_follows_a_run_at_its_latest_checkpoint(script, tmp_path):
    from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder

    prepared = make_prepared(tmp_path / "prepared", n=2)
    settings = AutoencoderTraining(steps=2, batch_size=2, checkpoint_every=1, log_every=1)
    folder = train_autoencoder(prepared, tmp_path / "run", TINY, settings, device="cpu", progress=False)
    exported = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "a")])
    followed = script.main(["--run", str(tmp_path / "run"), "--real", str(prepared), "--out", str(tmp_path / "b")])
    assert followed["training_step"] == 2 and exported["training_step"] is None
    assert followed["measures"] == exported["measures"]  # the last checkpoint holds the exported weights
    with pytest.raises(SystemExit, match="give one of --autoencoder FOLDER, --run RUN_DIR or --model GENERATOR"):
        script.main(["--real", str(prepared), "--out", str(tmp_path / "c")])


def test_autoencoder_detail_on_crops_measures_eight_crops_per_subject_each_reconstructed_alone(script, tiny, tmp_path):
    from synthbrain.evaluation.metrics import pairwise_distances
    from synthbrain.preprocessing.prepared import PreparedCohort

    prepared, model, folder = tiny
    result = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "c"), "--crop", "8,8,12"])
    assert result["crop"] == [8, 8, 12]
    cohort = PreparedCohort.load(prepared)
    # per axis the centred crop moved a quarter of its size either way, inside the grid: 8 of 16 -> 2, 6; 12 of 16 -> 0, 4
    starts = {8: (2, 6), 12: (0, 4)}
    regions = [(slice(d, d + 8), slice(h, h + 8), slice(w, w + 12)) for d in starts[8] for h in starts[8] for w in starts[12]]
    items = [cohort[i] for i in range(3)]
    crops = torch.stack([item["image"][(slice(None), *region)] for item in items for region in regions])
    labels = [item["labels"][region] for item in items for region in regions]
    brains = torch.stack([(crop_labels > 0)[None] for crop_labels in labels])
    measures = result["measures"]
    assert measures["high-frequency share"]["real"] == pytest.approx(float(np.mean(high_frequency_share(crops, brains))))
    same_place = np.concatenate([pairwise_distances(crops[k::8], brains[k::8]) for k in range(8)])
    assert measures["median pairwise L2"]["real"] == pytest.approx(float(np.median(same_place)))
    alone, decoded = zip(*(model.reconstruct(crop[None], crop_labels[None]) for crop, crop_labels in zip(crops, labels)))
    alone, decoded_brain = torch.cat(alone), torch.cat(decoded) > 0
    got = measures["high-frequency share"]["reconstructions"]
    assert got == pytest.approx(float(np.mean(high_frequency_share(alone, decoded_brain[:, None]))))  # each crop on its own
    assert "8 crops of [8, 8, 12] voxels" in (tmp_path / "c.md").read_text()
    assert script.BURIED not in measures  # a crop's faces are no brain surface
    whole_axis = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "w"), "--crop", "8,8,16"])
    assert whole_axis["regions_per_subject"] == 4 and "4 crops of [8, 8, 16]" in (tmp_path / "w.md").read_text()  # one start on that axis
    fractions = script.main(
        ["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "f"), "--crop", "4", "--downsample", "2"]
    )  # averaged to 8^3 with class-fraction labels; one edge for all three axes
    assert fractions["grid"] == [8, 8, 8] and fractions["crop"] == [4, 4, 4] and fractions["regions_per_subject"] == 8
    for bad in ("8,8,20", "8,8", "8,8,5"):
        with pytest.raises(SystemExit, match="--crop"):
            script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "d"), "--crop", bad])


def test_autoencoder_detail_in_windows_reconstructs_each_volume_window_by_window(script, tiny, tmp_path):
    from synthbrain.preprocessing.prepared import PreparedCohort

    prepared, model, folder = tiny
    result = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "w"), "--window", "8"])
    assert result["window"] == {"size": [8, 8, 8], "overlap": 0.5} and result["regions_per_subject"] == 1
    cohort = PreparedCohort.load(prepared)
    decoded, classes = zip(*(model.reconstruct(item["image"][None], item["labels"][None], (8, 8, 8), 0.5) for item in cohort))
    decoded, brains = torch.cat(decoded), (torch.cat(classes) > 0)[:, None]
    got = result["measures"]["high-frequency share"]["reconstructions"]
    assert got == pytest.approx(float(np.mean(high_frequency_share(decoded, brains))))
    assert "windows of [8, 8, 8] voxels (overlap 0.5" in (tmp_path / "w.md").read_text()
    whole = script.main(["--autoencoder", str(folder), "--real", str(prepared), "--out", str(tmp_path / "a")])
    assert whole["window"] is None and whole["measures"]["high-frequency share"]["reconstructions"] != pytest.approx(got)


def test_autoencoder_detail_of_a_generator_scores_its_samples_beside_its_reconstructions(script, tmp_path):
    from scipy import stats

    from synthbrain.cohort import LabelScheme
    from tests.helpers import tiny_generator

    prepared = make_prepared(tmp_path / "prepared", n=3)
    generator = tiny_generator(distribution=True, steps=2)
    folder = generator.save_pretrained(tmp_path / "generator")
    out = tmp_path / "g"
    result = script.main(["--model", str(folder), "--real", str(prepared), "-n", "3", "--seed", "5", "--out", str(out)])
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(result))  # strict JSON
    # the samples column is the metric on the generator's own samples (same seeds), inside their generated brains
    brains = generator.generate(n=3, seed=5)
    mask = (brains.labels > 0)[:, None]
    got = result["measures"]["high-frequency share"]
    assert got["samples"] == pytest.approx(float(np.mean(high_frequency_share(brains.images, mask))))
    assert got["samples_ratio"] == pytest.approx(got["samples"] / got["real"])
    # the reconstruction column is the generator's own autoencoder's
    save_component(generator.autoencoder, tmp_path / "ae")
    alone = script.main(["--autoencoder", str(tmp_path / "ae"), "--real", str(prepared), "--out", str(tmp_path / "a")])
    assert {k: (m["real"], m["reconstructions"]) for k, m in alone["measures"].items()} == {
        k: (m["real"], m["reconstructions"]) for k, m in result["measures"].items()
    }
    scheme = LabelScheme.load("muse-coarse")
    # buried cortical grey matter on the samples' own label maps, computed independently
    names = list(scheme.class_names)
    buried = buried_share(brains.labels, names.index("cortical_gm"), [0, names.index("csf")], margin=2)
    assert result["measures"][script.BURIED]["samples"] == pytest.approx(float(np.nanmean(buried)))
    measured = [scheme.measure_coarse_volumes(label.numpy(), generator.image_grid.voxel_volume_mm3) for label in brains.labels]
    r = stats.pearsonr(brains.covariates["ventricular_volume"], [m["ventricular_volume"] for m in measured])[0]
    summary = result["samples"]
    assert summary["requested_vs_own_label_volume"]["ventricular_volume"]["pearson_r"] == pytest.approx(r)
    assert summary["n"] == 3 and summary["sampling"]["steps"] == 2 and summary["seconds_per_volume"] > 0
    assert summary["sampling"]["dtype"] == "float32"
    half = script.main(["--model", str(folder), "--real", str(prepared), "-n", "2", "--dtype", "bfloat16", "--out", str(tmp_path / "h")])
    assert half["samples"]["sampling"]["dtype"] == "bfloat16" and "bfloat16)" in (tmp_path / "h.md").read_text()
    text = out.with_suffix(".md").read_text()
    assert "| measure | real | reconstructions | ratio | samples | samples / real |" in text and "3 volumes (seed 5" in text
    with pytest.raises(SystemExit, match="leave it out with --model"):
        script.main(["--model", str(folder), "--real", str(prepared), "--out", str(tmp_path / "bad"), "--crop", "8"])
    with pytest.raises(SystemExit):  # argparse's error: -n 1 cannot give pairs
        script.main(["--model", str(folder), "--real", str(prepared), "--out", str(tmp_path / "bad"), "-n", "1"])
