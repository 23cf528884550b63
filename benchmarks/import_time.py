"""Start-up cost: seconds to ``import torch`` alone, to ``from synthbrain import BrainGenerator``, and
to the first generated volume with the embedded default model (imports, loading and one volume),
each in a fresh Python process, reported as medians of --runs and as ratios to ``import torch``.

    OMP_NUM_THREADS=1 python benchmarks/import_time.py --runs 5
    OMP_NUM_THREADS=1 python benchmarks/import_time.py --checkout before=/tmp/old --checkout after=.   # two versions

Each process times itself from its first statement (interpreter start-up, about the same for all,
is not counted) and imports ``synthbrain`` from its --checkout (its ``PYTHONPATH`` and working
directory), which it checks. The measurements are interleaved (one of each case and checkout per
round) so that a machine whose load changes affects all of them alike; the ratios, not the seconds,
are what compares across machines. A copy of another version to compare with:
``git worktree add /tmp/old main`` (or ``tools/_checkout.py``'s ``copy_checkout`` before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
from _report import markdown_table

from synthbrain import _io

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("monai", "sklearn", "matplotlib", "torchio", "SimpleITK")
# name -> the code timed in a fresh process; each prints {"seconds": ..., "synthbrain": its file, "loaded": heavy modules loaded}
CASES = {
    "import torch": "import torch",
    "from synthbrain import BrainGenerator": "from synthbrain import BrainGenerator",
    "first volume (default model)": "from synthbrain import BrainGenerator\nBrainGenerator.from_pretrained('default').generate(seed=0)",
}
TEMPLATE = """\
import time
_start = time.perf_counter()
{code}
_seconds = time.perf_counter() - _start
import json, sys
_file = getattr(sys.modules.get("synthbrain"), "__file__", None)
print(json.dumps({{"seconds": _seconds, "synthbrain": _file, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(code: str, root: Path) -> dict:
    """One fresh process running ``code`` with ``synthbrain`` imported from ``root``; its own timing."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    script = TEMPLATE.format(code=code, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{code!r} failed in {root}:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["synthbrain"] is not None and not Path(result["synthbrain"]).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"imported {result['synthbrain']}, not the synthbrain of --root {root}")
    return result


def run(checkouts: dict[str, Path], runs: int) -> dict:
    """Per checkout, medians over ``runs`` interleaved rounds and each case's ratio to that
    checkout's ``import torch`` (measured in the same rounds)."""
    times = {label: {name: [] for name in CASES} for label in checkouts}
    loaded: dict[str, dict[str, list[str]]] = {label: {} for label in checkouts}
    for _ in range(runs):
        for name, code in CASES.items():
            for label, root in checkouts.items():
                result = measure(code, root)
                times[label][name].append(result["seconds"])
                loaded[label][name] = result["loaded"]
    out = {}
    for label, cases in times.items():
        torch_median = statistics.median(cases["import torch"])
        out[label] = {
            name: {
                "median_s": statistics.median(values),
                "runs_s": values,
                "ratio_to_import_torch": statistics.median(values) / torch_median,
                "heavy_modules_loaded": loaded[label][name],
            }
            for name, values in cases.items()
        }
    return out


def _checkout(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path, "synthbrain", "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PATH, PATH a checkout holding synthbrain/__init__.py")
    return label, Path(path).resolve()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case (the median is reported)")
    parser.add_argument(
        "--checkout",
        type=_checkout,
        action="append",
        help="LABEL=PATH: a checkout whose synthbrain is measured (repeatable; default: this one)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/import-time"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit(f"--runs {args.runs}: allowed >= 1")
    checkouts = dict(args.checkout or [("this checkout", ROOT)])
    record = {
        "command": "python benchmarks/import_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "platform": platform.platform(),
        },
        "runs": args.runs,
        "results": run(checkouts, args.runs),
    }
    rows = [
        {
            "checkout": label,
            "measure": name,
            "median (s)": f"{r['median_s']:.2f}",
            "ratio to import torch": f"{r['ratio_to_import_torch']:.2f}",
            "runs (s)": ", ".join(f"{s:.2f}" for s in r["runs_s"]),
            "heavy modules loaded": ", ".join(r["heavy_modules_loaded"]) or "none",
        }
        for label, results in record["results"].items()
        for name, r in results.items()
    ]
    text = (
        "# Start-up time: import and first volume against `import torch`\n\n"
        f"Fresh Python processes, {args.runs} interleaved runs per measure (median), "
        f"{record['machine']['cpus']} CPUs, OMP_NUM_THREADS={record['machine']['OMP_NUM_THREADS']}, "
        f"Python {record['machine']['python']}; the machine was shared with other jobs, so the ratios, not the seconds, "
        "are what compares. The first volume counts the imports, loading the embedded default model and generating one "
        "volume on the CPU with its default sampling. `heavy modules loaded` lists which of MONAI, scikit-learn, matplotlib, "
        "torchio and SimpleITK the process had loaded at the end. MONAI (1.x) imports every one of its modules from its "
        "package `__init__`, so importing a single network class costs the whole package: synthbrain can defer that cost to "
        "the first model it reads, not remove it.\n\n" + markdown_table(pd.DataFrame(rows)) + f"\n\nCommand: `{record['command']}`.\n"
    )
    _io.write_json(args.out.with_suffix(".json"), record)
    _io.write_text(args.out.with_suffix(".md"), text)
    print(text)
    return record


if __name__ == "__main__":
    main()
