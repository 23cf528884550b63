"""The GPU run of issue 18: one command for a bare GPU machine (docs/benchmarks/gpu.md says how to call it).

    bash benchmarks/gpu/run.sh --copy-to "$OUT"                      # on the GPU machine: results into docs/benchmarks/ and $OUT
    bash benchmarks/gpu/run.sh --tiny --results /tmp/rehearsal       # the CPU rehearsal (tests/benchmarks/test_gpu_rehearsal.py)
    python benchmarks/gpu/run.py --measure                           # here: the size of what the GPU run brings

Steps, in order, each in its own process with its own time limit (the whole within ``--budget`` seconds); a step
that fails or runs out of time is recorded and the next one runs:

1. install: the wheels brought in ``.whl/`` (only those: ``pip install --no-index --no-deps --target``), put on
   PYTHONPATH for the steps after it; skipped when ``.whl/`` holds none.
   Then a probe: Python, torch, CUDA, and the versions and places of the packages the steps import, as the
   steps see them (torchio and SimpleITK must be missing).
2. speed: ``benchmarks/paper_scale_speed.py`` at the paper's size on CUDA (random weights).
3. tests: the tests marked ``gpu`` (pytest ``-m gpu``), among them the CUDA DataLoader-worker test.
4. throughput: ``benchmarks/dataset_throughput.py --model default`` on CUDA, without the randomised-appearance
   rows (torchio, and with it SimpleITK, is not brought).
5. training: ``benchmarks/gpu/train_2mm.py``: the default recipe at 2 mm on the packed cohort
   (``.devdata/ixi-2mm-rigid.npz.xz``) for a fixed number of steps, and ``synthbrain evaluate`` on its samples;
   only when at least ``MIN_TRAINING_S`` seconds of the budget are left, and with what is left.

Results: eight files in ``--results`` (default ``docs/benchmarks/``; ``--tiny`` needs another folder), copied
to ``--copy-to`` after every step: ``gpu-run.json`` (each step's status, wall time, limit and command; the
machine; the gpu tests' outcomes; the bytes that arrived), ``gpu-run.log`` (every step's output),
``paper-scale-speed.{md,json}``, ``dataset-throughput-gpu.{md,json}``, ``training-2mm-gpu.{md,json}``.

``--tiny`` rehearses the same steps on a CPU in about a minute of CPU time: the tiny model of each
benchmark, a tiny cohort made on the fly, no ``torch.compile``; torchio and SimpleITK are made unimportable
(``benchmarks/gpu/absent/``), as they are on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CARRIED = (".whl", ".devdata")  # the git-ignored paths the run tool's `carry` brings
PACKED = ".devdata/ixi-2mm-rigid.npz.xz"
LIMIT_BYTES = 64 * 2**20  # what the run tool takes: the working tree and the carried paths together
MIN_TRAINING_S = 45
CAPS = {"probe": 60, "install": 90, "speed": 270, "tests": 100, "throughput": 80, "training": 240}
RESERVE_S = 5  # kept back from the budget for the summary
TINY_SLACK = 4  # --tiny: limits and budget x4; the rehearsal checks that the steps work, not how fast a busy CPU runs them
OUTPUTS = {
    "speed": ["paper-scale-speed.md", "paper-scale-speed.json"],
    "throughput": ["dataset-throughput-gpu.md", "dataset-throughput-gpu.json"],
    "training": ["training-2mm-gpu.md", "training-2mm-gpu.json"],
}
GPU_TESTS = ["tests/datasets/test_cuda.py", "tests/test_monai_bundle.py"]
# module: distribution, looked up without importing (imports cost seconds each on a loaded CPU)
PROBED = {
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "tqdm": "tqdm",
    "pytest": "pytest",
    "monai": "monai",
    "nibabel": "nibabel",
    "deepbet": "deepbet",  # brought for its network file (synthbrain.deepbet finds it by its distribution), never imported
}
ABSENT_THERE = ("torchio", "SimpleITK")  # not brought (SimpleITK alone is about 260 MB); the steps must not need them


def probe() -> dict[str, Any]:
    """The machine as the steps see it (run in a child process with the steps' environment)."""
    import importlib
    import importlib.metadata
    import importlib.util
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count()}
    import torch

    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gb": props.total_memory / 1e9, "capability": list(torch.cuda.get_device_capability(0))}
        info["cuda"] = torch.version.cuda
    packages: dict[str, dict[str, Any]] = {}
    for module, distribution in PROBED.items():
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = None
        spec = importlib.util.find_spec(module) if module != "deepbet" else None
        packages[module] = {"version": version, "from": _shown(Path(spec.origin).parent) if spec and spec.origin else None}
    for module in ABSENT_THERE:  # imported: in the rehearsal benchmarks/gpu/absent/ refuses them, as their absence does there
        try:
            imported = importlib.import_module(module)
            packages[module] = {"version": getattr(imported, "__version__", "?"), "from": _shown(Path(imported.__file__).parent)}
        except Exception as err:
            packages[module] = {"version": None, "error": f"{type(err).__name__}: {err}"[:200]}
    info["packages"] = packages
    return info


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def measure_brought(root: Path = ROOT) -> dict[str, Any]:
    """Bytes of what the run tool brings from the checkout ``root``: the working tree (tracked and untracked,
    not ignored, files: ``git ls-files -co --exclude-standard``) and the carried paths."""
    git = ["git", "ls-files", "-z", "-co", "--exclude-standard"]
    listed = subprocess.run(git, cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((root / os.fsdecode(p)).stat().st_size for p in listed if p and (root / os.fsdecode(p)).is_file())
    carried = {}
    for name in CARRIED:
        files = [p for p in (root / name).rglob("*") if p.is_file()] if (root / name).is_dir() else []
        carried[name] = {"bytes": sum(p.stat().st_size for p in files), "files": sorted(_rel(p, root) for p in files)}
    total = tree + sum(c["bytes"] for c in carried.values())
    return {"tree_bytes": tree, "carried": carried, "total_bytes": total, "limit_bytes": LIMIT_BYTES, "fits": total < LIMIT_BYTES}


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def arrived_bytes() -> dict[str, int]:
    """Bytes under the repository root as the run starts (.git left out), and under each carried path."""
    sizes = {name: 0 for name in ("all", *CARRIED)}
    for path in ROOT.rglob("*"):
        if ".git" in path.relative_to(ROOT).parts[:1] or not path.is_file():
            continue
        size = path.stat().st_size
        sizes["all"] += size
        top = path.relative_to(ROOT).parts[0]
        if top in CARRIED:
            sizes[top] += size
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the CPU rehearsal: tiny models, no compile, a cohort made on the fly")
    parser.add_argument("--results", type=Path, default=None, help="where the eight result files go (default docs/benchmarks)")
    parser.add_argument("--copy-to", type=Path, default=None, help="a folder to copy the result files into after every step ($OUT)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all steps together (default 540; 4x with --tiny)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--measure", action="store_true", help="print the size of what the GPU run brings, and exit")
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)  # write the probe's JSON there
    args = parser.parse_args(argv)
    if args.measure or args.probe is not None:
        return args
    if args.results is None:
        if args.tiny:
            parser.error("--tiny needs --results: docs/benchmarks/ holds the results of real runs only")
        args.results = ROOT / "docs" / "benchmarks"
    if args.budget is None:
        args.budget = 540.0 * (TINY_SLACK if args.tiny else 1)
    if args.budget < 60:
        parser.error(f"--budget {args.budget:g}: allowed: at least 60 seconds")
    return args


class Runner:
    """Runs the steps as child processes in their own process groups, each within its limit and the budget."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.start, self.started = args, time.monotonic(), time.time()
        self.results: Path = args.results
        self.results.mkdir(parents=True, exist_ok=True)
        self.work = args.work or Path(tempfile.mkdtemp(prefix="synthbrain-gpu-run-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = self.results / "gpu-run.log"
        self.log.write_text("")
        self.python_path = [str(ROOT)]
        if args.tiny:
            self.python_path.insert(0, str(HERE / "absent"))  # torchio and SimpleITK: absent on the GPU machine
        self.steps: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {
            "command": "bash benchmarks/gpu/run.sh" + (" --tiny" if args.tiny else "") + f" --results {_shown(args.results)}",
            "tiny": args.tiny,
            "budget_s": args.budget,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "arrived_bytes": arrived_bytes(),
            "machine": None,
            "steps": self.steps,
            "gpu_tests": None,
        }

    def left(self) -> float:
        return self.args.budget - RESERVE_S - (time.monotonic() - self.start)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        extra = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(self.python_path + ([extra] if extra else []))
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"})
        return env

    def run(self, name: str, command: list[str], *, skip: str | None = None, cap: float | None = None) -> dict[str, Any]:
        cap = min(cap if cap is not None else CAPS[name] * (TINY_SLACK if self.args.tiny else 1), self.left())
        step: dict[str, Any] = {"step": name, "command": " ".join(command).replace(str(self.work), "WORK"), "cap_s": round(cap, 1)}
        if skip is None and cap < 10:
            skip = f"only {max(cap, 0):.0f} s left for it"
        if skip is not None:
            step.update(status=f"skipped: {skip}", wall_s=0.0, returncode=None)
            return self._done(step)
        with self.log.open("a") as log:
            log.write(f"\n===== {name}: {step['command']} (limit {cap:.0f} s)\n")
            log.flush()
            start = time.monotonic()
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            try:
                code = process.wait(timeout=cap)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                self._stop(process)
                code, status = process.returncode, f"timed out after {cap:.0f} s"
            wall = time.monotonic() - start
            log.write(f"===== {name}: {status} in {wall:.1f} s\n")
        step.update(status=status, wall_s=round(wall, 2), returncode=code)
        return self._done(step)

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        """End the step's process group (the step and its own children, e.g. compile or DataLoader workers): SIGTERM, then SIGKILL."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def fresh(self, name: str) -> bool:
        """Whether the result file ``name`` was written by this run (not left from an earlier one, e.g. committed)."""
        path = self.results / name
        return path.is_file() and path.stat().st_mtime >= self.started - 1

    def _done(self, step: dict[str, Any]) -> dict[str, Any]:
        step["outputs"] = [f for f in OUTPUTS.get(step["step"], []) if self.fresh(f)]
        self.steps.append(step)
        print(f"{step['step']:<11} {step['status']:<30} {step['wall_s']:>7.1f} s (limit {step['cap_s']:.0f} s)", flush=True)
        self.write()
        return step

    def write(self) -> None:
        self.summary["total_wall_s"] = round(time.monotonic() - self.start, 2)
        text = json.dumps(self.summary, indent=2, allow_nan=False) + "\n"
        tmp = self.results / "gpu-run.json.partial"
        tmp.write_text(text)
        tmp.replace(self.results / "gpu-run.json")
        if self.args.copy_to is not None:
            self.args.copy_to.mkdir(parents=True, exist_ok=True)
            for name in ["gpu-run.json", "gpu-run.log", *[f for files in OUTPUTS.values() for f in files]]:
                if self.fresh(name):  # a report left from an earlier run never comes back as this run's
                    shutil.copyfile(self.results / name, self.args.copy_to / name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe is not None:
        args.probe.write_text(json.dumps(probe(), indent=2) + "\n")
        return 0
    if args.measure:
        sizes = measure_brought()
        print(json.dumps(sizes, indent=2))
        return 0 if sizes["fits"] else 1
    runner = Runner(args)
    python, results, work, tiny = sys.executable, args.results, runner.work, args.tiny

    # 1. install the brought wheels, only those; then the probe, with the steps' environment
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    site = work / "site"
    install = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"]
    install += ["--target", str(site), *[str(w.relative_to(ROOT)) for w in wheels]]
    step = runner.run("install", install, skip=None if wheels else "no wheels in .whl/")
    if step["status"] == "ok":
        runner.python_path.insert(0, str(site))
    step = runner.run("probe", [python, "benchmarks/gpu/run.py", "--probe", str(work / "probe.json")])
    if step["status"] == "ok":
        runner.summary["machine"] = json.loads((work / "probe.json").read_text())
        runner.write()

    commands = plan(tiny, results, work, python)
    runner.run("speed", commands["speed"])
    runner.run("tests", commands["tests"])
    runner.summary["gpu_tests"] = read_junit(work / "gpu-tests.xml")
    runner.write()
    runner.run("throughput", commands["throughput"])
    skip = None
    if not tiny and not (ROOT / PACKED).is_file():
        skip = f"no packed cohort at {PACKED} (benchmarks/gpu/pack_cohort.py pack; carry .devdata)"
    elif runner.left() < MIN_TRAINING_S:
        skip = f"{runner.left():.0f} s of the budget left (at least {MIN_TRAINING_S} s needed)"
    runner.run("training", commands["training"], skip=skip)

    runner.write()
    print(f"results: {_shown(results)}" + (f", copied to {args.copy_to}" if args.copy_to else ""), flush=True)
    return 0 if all(s["status"] == "ok" or s["status"].startswith("skipped") for s in runner.steps) else 1


def plan(tiny: bool, results: Path, work: Path, python: str = sys.executable) -> dict[str, list[str]]:
    """The commands of steps 2-5 (run from the repository root): the GPU run's, or with ``tiny`` the rehearsal's."""
    # 2. speed at the paper's size
    speed = [python, "benchmarks/paper_scale_speed.py", "--out", _shown(results / "paper-scale-speed")]
    if tiny:
        speed += ["--tiny", "--device", "cpu", "--no-compile", "--batch-size", "2", "--fast-steps", "4,2"]
        speed += ["--warmup", "0", "--repeats", "1"]
    else:
        # Batch 2, not the script's 4: at 1 mm a decoder batch of 3 or more holds tensors over 2^31 elements, where some CUDA
        # kernels have had 32-bit index limits (pytorch#144855, nearest upsampling); 2 stays under.
        speed += ["--device", "cuda", "--batch-size", "2"]
    # 3. the tests marked gpu
    tests = [python, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rA", f"--junitxml={work / 'gpu-tests.xml'}", *GPU_TESTS]
    # 4. the dataset's throughput with the default model
    throughput = [python, "benchmarks/dataset_throughput.py", "--no-randomized", "--out", _shown(results / "dataset-throughput-gpu")]
    if tiny:
        throughput += ["--tiny", "--n", "4", "--size", "50", "--batch-size", "2", "--chunk-size", "2", "--workers", "0", "--device", "cpu"]
    else:
        throughput += ["--model", "default", "--device", "cuda"]
    # 5. training at 2 mm
    training = [python, "benchmarks/gpu/train_2mm.py", "--work", str(work / "train-2mm"), "--out", _shown(results / "training-2mm-gpu")]
    training += ["--tiny", "--device", "cpu"] if tiny else ["--packed", PACKED, "--device", "cuda"]
    return {"speed": speed, "tests": tests, "throughput": throughput, "training": training}


def read_junit(path: Path) -> list[dict[str, Any]] | None:
    """Each test case of a pytest JUnit XML file: its id, outcome, seconds and message; None without the file."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return None
    cases = []
    for case in tree.iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind], (found.get("message") or "")[:500]
                break
        test = f"{case.get('classname')}::{case.get('name')}"
        cases.append({"test": test, "outcome": outcome, "seconds": float(case.get("time", 0)), "message": message})
    return cases


if __name__ == "__main__":
    sys.exit(main())
