import json
import math

import pytest

from synthbrain.generator.draws import volume_seeds
from tests.helpers import load_benchmark


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("sampler_quality", monkeypatch)


def test_sampler_quality_runs_in_tiny_mode_and_writes_its_table_and_figure(script, tmp_path):
    out = tmp_path / "quality"
    summary = script.main(["--tiny", "--n", "4", "--batch-size", "3", "--steps", "5,2", "--reference-steps", "5", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["command"] == summary["command"] and "--tiny" in written["command"]
    rows = {r["setting"]: r for r in written["rows"]}
    assert list(rows) == ["reference: ddim-5", "ddim-2", "ddim-5", "dpm++2m-2", "dpm++2m-5", "ddpm-2", "ddpm-5"]
    for name in ("reference: ddim-5", "ddim-5"):  # the reference against itself, and DDIM at its steps from the same noise
        assert rows[name]["RMSE vs reference"] == 0.0 and rows[name]["Dice vs reference"] == 1.0, name
    assert rows["ddim-5"]["Pearson r (ventricular volume)"] == rows["reference: ddim-5"]["Pearson r (ventricular volume)"]
    assert rows["ddim-2"]["RMSE vs reference"] > 0 and rows["ddim-2"]["Dice vs reference"] < 1
    metrics = ["RMSE vs reference", "Dice vs reference", "Pearson r (ventricular volume)", "ventricular volume MAE (mL)"]
    assert all(math.isfinite(r[k]) for r in rows.values() for k in metrics)
    assert all(0 <= r["Dice vs reference"] <= 1 and -1 <= r["Pearson r (ventricular volume)"] <= 1 for r in rows.values())
    assert all(r["UNet evaluations per volume"] == r["steps"] for r in rows.values())
    assert all("seconds per volume" in r for r in rows.values())  # timings are the benchmark's output, judged there as ratios
    assert len(written["covariates"]) == 4 and [c["seed"] for c in written["covariates"]] == volume_seeds(0, 4)
    assert written["ventricular_volume_unit"] == "mL"
    assert out.with_suffix(".png").stat().st_size > 0
    report = out.with_suffix(".md").read_text()
    assert report.startswith("# Sampler quality at fewer steps") and "**Tiny run:**" in report
    assert all(f"| {name} |" in report for name in rows) and "](quality.png)" in report


def test_sampler_quality_metrics(script):
    import numpy as np
    import torch

    images = torch.rand(2, 1, 4, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4, 4), dtype=torch.uint8)
    classes = ("background", "ventricles", "wm")
    other = labels.clone()
    other[1] = 0  # second volume: no foreground left
    rmse, dice = script.volume_metrics(images + 0.5, other, images, labels, classes)
    assert np.allclose(rmse, 0.5) and dice[0] == 1.0 and dice[1] == 0.0
    rmse, dice = script.volume_metrics(images, torch.zeros_like(labels), images, torch.zeros_like(labels), classes)
    assert np.all(rmse == 0) and np.all(dice == 1.0)  # no foreground in either: identical maps
    assert math.isnan(script.pearson(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])))
    assert script.pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1.0)


def test_sampler_quality_options_are_checked(script, tmp_path, capsys):
    out = ["--out", str(tmp_path / "quality")]
    for argv, message in [
        (["--tiny"], "--tiny needs --out"),  # a tiny run never replaces the real results under docs/benchmarks/
        (["--tiny", "--n", "2", *out], "--n 2: allowed: >= 3"),
        (["--tiny", "--batch-size", "0", *out], "--batch-size 0: allowed: an integer >= 1"),
        (["--tiny", "--samplers", "ddim,euler", *out], "unknown ['euler']; allowed: ['ddpm', 'ddim', 'dpm++2m']"),
        (["--tiny", "--steps", "5,5", *out], "expected distinct comma-separated values"),
        (["--tiny", "--steps", "5,x", *out], "expected comma-separated int values"),
        (["--tiny", "--steps", "5,2000", *out], "--steps: [2000] outside [1, 1000]"),
        (["--tiny", "--reference-steps", "0", *out], "--reference-steps: [0] outside [1, 1000]"),
        (["--tiny", "--reference-sampler", "ddpm", *out], "--reference-sampler 'ddpm': allowed: ['ddim', 'dpm++2m']"),
        (["--tiny", "--device", "nope", *out], "--device 'nope'"),
    ]:
        with pytest.raises(SystemExit):
            script.main(argv)
        assert message in capsys.readouterr().err, argv
