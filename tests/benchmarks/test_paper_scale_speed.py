import json
import math

import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("paper_scale_speed", monkeypatch)


def test_paper_scale_speed_runs_in_tiny_mode_and_writes_its_table(script, tmp_path):
    out = tmp_path / "speed"
    argv = ["--tiny", "--device", "cpu", "--precision", "bf16", "--no-compile", "--batch-size", "2", "--fast-steps", "4,2"]
    summary = script.main(argv + ["--warmup", "0", "--repeats", "1", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["command"] == summary["command"] and "--tiny" in written["command"]
    rows = written["rows"]
    assert [(r["sampler"], r["steps"], r["batch"], r["precision"]) for r in rows] == [
        ("ddim", 50, 1, "fp32"),  # reference route
        ("ddim", 50, 1, "fp32"),  # ours, the same work
        ("ddim", 50, 1, "bf16"),  # ours, precision only
        ("ddim", 50, 2, "bf16"),  # ours, every speed feature asked for
        ("dpm++2m", 4, 2, "bf16"),
        ("dpm++2m", 2, 2, "bf16"),
    ]
    assert rows[0]["route"].startswith("reference: MONAI LatentDiffusionInferer") and rows[0]["speed-up vs reference"] == 1.0
    assert rows[0]["max abs diff vs reference"] == 0.0
    assert all(r["route"].startswith("ours") for r in rows[1:])
    assert rows[3]["channels-last"] and not rows[3]["compiled"] and not rows[0]["channels-last"]
    # Timings are the benchmark's output, not something a test can judge: only that their columns are there.
    assert all({"seconds per volume", "speed-up vs reference", "TFLOP/s"} <= set(r) for r in rows)
    assert all(math.isfinite(r["max abs diff vs reference"]) and r["peak memory (GB)"] > 0 for r in rows)
    ceilings = written["matmul_ceiling_tflops"]  # measured in the same run
    assert set(ceilings) == {"bf16", "fp32"} and all(v > 0 for v in ceilings.values()) and written["complete"]
    assert written["fp32_rows_ceiling"] == "fp32" and written["peak_tflops_for_floor"] == ceilings["bf16"]
    for r in rows:
        ceiling = ceilings["bf16" if r["precision"] == "bf16" else "fp32"]
        assert r["of matmul ceiling"] == pytest.approx(r["TFLOP/s"] / ceiling)
    for r in rows:
        assert r["UNet evaluations per volume"] == r["steps"]
        assert r["TFLOP per volume"] == pytest.approx(r["steps"] * written["tflop"]["unet_step"] + written["tflop"]["decoder"])
    assert rows[1]["max abs diff vs reference"] < 1e-4  # our route in float32 reproduces MONAI's inferer
    assert 0 < rows[2]["max abs diff vs reference"] < 0.5  # bf16 changes the numbers, a little
    report = out.with_suffix(".md").read_text()
    assert report.startswith("# Speed at paper scale: tiny") and "**Tiny run:**" in report
    assert report.count("\n| reference: MONAI") == 1 and report.count("\n| ours") == 5


def test_paper_scale_speed_options_are_checked(script, tmp_path, capsys):
    out = ["--out", str(tmp_path / "speed")]
    for argv, message in [
        (["--tiny"], "--tiny needs --out"),  # a tiny run never replaces the real results under docs/benchmarks/
        (["--tiny", "--batch-size", "0", *out], "--batch-size 0: allowed: an integer >= 1"),
        (["--tiny", "--repeats", "0", *out], "--repeats 0"),
        (["--tiny", "--fast-steps", "10,0", *out], "'10,0': allowed: distinct integers in [1, 1000]"),
        (["--tiny", "--fast-steps", "ten", *out], "expected comma-separated integers"),
        (["--tiny", "--fast-sampler", "euler", *out], "--fast-sampler 'euler': allowed: ['ddpm', 'ddim', 'dpm++2m']"),
        (["--tiny", "--precision", "fp16", "--device", "cpu", *out], "--precision 'fp16': allowed: ['bf16', 'fp32']"),
        (["--tiny", "--compile-mode", "fast", *out], "--compile-mode 'fast'"),
        (["--tiny", "--device", "tpu", *out], "--device 'tpu'"),
        (["--tiny", "--peak-tflops", "0", *out], "--peak-tflops 0.0: allowed: a positive number"),
    ]:
        with pytest.raises(SystemExit):
            script.main(argv)
        assert message in capsys.readouterr().err, argv


def test_paper_scale_speed_keeps_the_rows_it_finished_when_stopped(script, tmp_path, monkeypatch):
    """The report is written after every row, so a run killed by a time limit (the GPU run's) keeps what it measured."""
    out = tmp_path / "speed"
    real_measure, calls = script.measure, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # our first row: as if the time limit struck here
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(script, "measure", stopping)
    with pytest.raises(KeyboardInterrupt):
        script.main(["--tiny", "--device", "cpu", "--no-compile", "--warmup", "0", "--repeats", "1", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())
    assert not written["complete"] and len(written["rows"]) == 1 and written["rows"][0]["route"].startswith("reference")
    assert written["fastest"] is None and "**Partial:** 1 of 5 rows" in out.with_suffix(".md").read_text()
