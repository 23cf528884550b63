"""The GPU run's CPU rehearsal: ``benchmarks/gpu/run.sh --tiny`` runs every step of the run prepared for the GPU
machine (tiny models, a tiny cohort made on the fly, torchio and SimpleITK unimportable as they are there), so
that the one GPU run does not fail on a typo; and the pieces it brings (the packed cohort) and measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_benchmark, make_prepared

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "gpu-run.json",
    "gpu-run.log",
    "paper-scale-speed.md",
    "paper-scale-speed.json",
    "dataset-throughput-gpu.md",
    "dataset-throughput-gpu.json",
    "training-2mm-gpu.md",
    "training-2mm-gpu.json",
}


@pytest.mark.timeout(2400)  # about 3 min on an idle 2-core CPU; the steps' own limits are 4x the GPU run's in --tiny
def test_rehearsal_runs_every_step_and_writes_the_eight_result_files(tmp_path):
    results, copies = tmp_path / "results", tmp_path / "out"
    command = ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--tiny", "--results", str(results), "--copy-to", str(copies)]
    done = subprocess.run(
        [*command, "--work", str(tmp_path / "work")], env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True
    )
    log = (results / "gpu-run.log").read_text() if (results / "gpu-run.log").is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-6000:]
    summary = json.loads((results / "gpu-run.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    for name in ("probe", "speed", "tests", "throughput", "training"):
        assert steps[name]["status"] == "ok", (name, steps[name], log[-6000:])
        assert 0 < steps[name]["wall_s"] <= steps[name]["cap_s"]
    assert steps["install"]["status"] in ("ok", "skipped: no wheels in .whl/")  # CI brings no wheels
    assert list(steps) == ["install", "probe", "speed", "tests", "throughput", "training"]
    assert {p.name for p in results.iterdir()} == FILES and {p.name for p in copies.iterdir()} == FILES
    assert summary["total_wall_s"] < summary["budget_s"] and summary["tiny"]
    # What the GPU machine lacks is absent in the rehearsal too.
    packages = summary["machine"]["packages"]
    assert packages["torchio"]["version"] is None and packages["SimpleITK"]["version"] is None
    assert packages["monai"]["version"] and packages["nibabel"]["version"]
    # The gpu tests were collected and run (skipped without CUDA), the DataLoader-worker test among them.
    tests = {t["test"].rsplit("::", 1)[-1]: t["outcome"] for t in summary["gpu_tests"]}
    assert {
        "test_cuda_generator_refuses_forked_workers_and_works_with_spawn",
        "test_cuda_dataset_delivers_the_cpu_volumes_on_the_host",
        "test_full_size_generate_equals_the_monai_core_reference",
    } <= set(tests)
    import torch

    if not torch.cuda.is_available():
        assert set(tests.values()) == {"skipped"}
    # Each step's own report, complete.
    speed = json.loads((results / "paper-scale-speed.json").read_text())
    assert speed["complete"] and "--tiny" in speed["command"] and len(speed["rows"]) == 5
    throughput = json.loads((results / "dataset-throughput-gpu.json").read_text())
    assert "--no-randomized" in throughput["command"] and not any("randomized" in r["setting"] for r in throughput["rows"])
    training = json.loads((results / "training-2mm-gpu.json").read_text())
    assert training["complete"] and [s["stage"] for s in training["stages"]] == [
        "unpack the cohort",
        "train autoencoder",
        "train diffusion",
        "evaluate",
    ]
    assert training["cohort"]["subjects"] == 12 and training["evaluation"]["n_synthetic"] == 8
    assert "## Evaluation" in (results / "training-2mm-gpu.md").read_text()
    assert str(tmp_path / "work") not in (results / "training-2mm-gpu.md").read_text()  # scratch paths shown as WORK


def test_packed_cohort_unpacks_into_a_folder_the_training_reads(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "gpu"))
    pack_cohort = load_benchmark("pack_cohort", monkeypatch)
    from synthbrain.preprocessing.prepared import PreparedCohort

    source = make_prepared(tmp_path / "source", n=3)
    description = pack_cohort.pack(source, tmp_path / "pack.npz.xz")
    assert description["subjects"] == 3 and description["labels"] and description["max_abs_quantisation_error"] <= 1 / 510 + 1e-7
    assert pack_cohort.main(["unpack", str(tmp_path / "pack.npz.xz"), str(tmp_path / "back")]) == 0
    before, after = PreparedCohort.load(source), PreparedCohort.load(tmp_path / "back")
    assert after.subject_ids == before.subject_ids and after.grid == before.grid and after.schema == before.schema
    for i in range(3):
        a, b = before[i], after[i]
        np.testing.assert_allclose(b["image"].numpy(), a["image"].numpy(), atol=1 / 510 + 1e-6, rtol=0)
        assert b["image"].dtype == a["image"].dtype and (b["labels"] == a["labels"]).all()
    for name in ("participants.tsv", "covariates.json", "label_scheme.json", "manifest.json"):
        assert (tmp_path / "back" / name).read_text() == (source / name).read_text()
    assert json.loads((tmp_path / "back" / "packed.json").read_text())["unpacked_from"] == "pack.npz.xz"
    assert pack_cohort.main(["unpack", str(tmp_path / "pack.npz.xz"), str(tmp_path / "back")]) == 2  # not empty: refused
    (tmp_path / "junk.npz.xz").write_bytes(b"not a pack")
    assert pack_cohort.main(["unpack", str(tmp_path / "junk.npz.xz"), str(tmp_path / "other")]) == 2
    assert pack_cohort.main(["pack", str(tmp_path / "back" / "subjects"), str(tmp_path / "x.npz.xz")]) == 2  # not a cohort


def test_what_the_gpu_run_brings_is_measured_against_the_run_tools_limit():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "run.py"), "--measure"], capture_output=True, text=True)
    if done.returncode not in (0, 1) or not done.stdout.startswith("{"):
        pytest.skip(f"no git checkout to measure: {done.stderr[-300:]}")
    sizes = json.loads(done.stdout)
    assert sizes["tree_bytes"] > 0 and set(sizes["carried"]) == {".whl", ".devdata"} and sizes["limit_bytes"] == 64 * 2**20
    assert sizes["total_bytes"] == sizes["tree_bytes"] + sum(c["bytes"] for c in sizes["carried"].values())
    assert sizes["fits"], f"the GPU run would bring {sizes['total_bytes'] / 2**20:.1f} MiB, over the 64 MiB the run tool takes"


def test_the_gpu_runs_own_arguments_are_accepted_by_its_scripts(tmp_path, monkeypatch, capsys):
    """The rehearsal runs the tiny commands; the GPU run's differ in their arguments, checked here against each
    script's parser: on a machine without CUDA only CUDA's absence (or the packed cohort's) may stop them."""
    import torch

    monkeypatch.chdir(ROOT)  # the run's commands are relative to the repository root, as run.py runs them
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "gpu"))
    run = load_benchmark("run", monkeypatch)
    assert Path(run.__file__).resolve() == ROOT / "benchmarks" / "gpu" / "run.py"
    commands = run.plan(False, ROOT / "docs" / "benchmarks", tmp_path / "work", "python3")
    assert not any("--tiny" in command for command in commands.values())
    assert commands["speed"][:2] == ["python3", "benchmarks/paper_scale_speed.py"]
    assert "docs/benchmarks/paper-scale-speed" in commands["speed"]  # the reports' commands show repository paths
    assert commands["tests"][-2:] == run.GPU_TESTS and all((ROOT / t).is_file() for t in run.GPU_TESTS)
    has_cuda = torch.cuda.is_available()
    speed = load_benchmark("paper_scale_speed", monkeypatch)
    if has_cuda:
        assert speed.parse_args(commands["speed"][2:]).batch_size == 2
    else:
        with pytest.raises(SystemExit):
            speed.parse_args(commands["speed"][2:])
        assert "CUDA is not available" in capsys.readouterr().err
    if not has_cuda:  # with CUDA this would run the benchmark
        throughput = load_benchmark("dataset_throughput", monkeypatch)
        with pytest.raises((AssertionError, RuntimeError, ValueError), match="(?i)cuda|nvidia"):
            throughput.main(commands["throughput"][2:])
    training = load_benchmark("train_2mm", monkeypatch)
    if (ROOT / run.PACKED).is_file():
        args = training.parse_args(commands["training"][2:])
        assert args.device == "cuda" and not args.tiny and args.ae_steps == 300
    else:
        with pytest.raises(SystemExit):
            training.parse_args(commands["training"][2:])
        assert "no such file" in capsys.readouterr().err


def test_results_left_from_an_earlier_run_are_not_brought_back_as_this_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "gpu"))
    run = load_benchmark("run", monkeypatch)
    results, copies = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    (results / "paper-scale-speed.md").write_text("committed by an earlier run")
    os.utime(results / "paper-scale-speed.md", (1e9, 1e9))
    runner = run.Runner(run.parse_args(["--tiny", "--results", str(results), "--copy-to", str(copies), "--work", str(tmp_path / "w")]))
    (results / "dataset-throughput-gpu.md").write_text("written by this run")
    step = runner.run("speed", [sys.executable, "-c", "pass"])
    assert step["status"] == "ok" and step["outputs"] == []
    assert {p.name for p in copies.iterdir()} == {"gpu-run.json", "gpu-run.log", "dataset-throughput-gpu.md"}
    failed = runner.run("throughput", [sys.executable, "-c", "raise SystemExit(3)"])
    assert failed["status"] == "failed (exit 3)" and failed["outputs"] == ["dataset-throughput-gpu.md"]
    skipped = runner.run("tests", [sys.executable, "-c", "pass"], cap=1)
    assert skipped["status"] == "skipped: only 1 s left for it"  # limits under 10 s are not worth starting
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    stopped = runner.run("training", [sys.executable, "-c", sleeper], cap=10)
    assert stopped["status"] == "timed out after 10 s" and stopped["wall_s"] < 40  # its process group ended, grandchild too
    summary = json.loads((copies / "gpu-run.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["speed", "throughput", "tests", "training"]
