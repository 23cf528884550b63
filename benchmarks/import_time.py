"""Start-up cost: seconds to ``import torch`` alone, to ``from synthbrain import BrainGenerator``, and
to the first generated volume with the embedded default model (imports, loading and one volume),
each in a fresh Python process, reported as medians of --runs and as ratios to ``import torch``.

    OMP_NUM_THREADS=1 python benchmarks/import_time.py --runs 5
    OMP_NUM_THREADS=1 python benchmarks/import_time.py --root /tmp/old-checkout --label before --out /tmp/import-before
    OMP_NUM_THREADS=1 python benchmarks/import_time.py --before /tmp/import-before.json   # both in one report

Each process times itself from its first statement (interpreter start-up, about the same for all,
is not counted) and imports ``synthbrain`` from --root (its ``PYTHONPATH`` and working directory),
which it checks. The measurements are interleaved (one of each per round) so that a machine whose
load changes affects all of them alike; the ratios, not the seconds, are what compares across machines.
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
    "first volume (default model)": "from synthbrain import BrainGenerator\n"
    "BrainGenerator.from_pretrained('default').generate(seed=0)",
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


def run(root: Path, runs: int) -> dict:
    """Medians over ``runs`` interleaved rounds, and each case's ratio to ``import torch``."""
    times = {name: [] for name in CASES}
    loaded = {}
    for _ in range(runs):
        for name, code in CASES.items():
            result = measure(code, root)
            times[name].append(result["seconds"])
            loaded[name] = result["loaded"]
    torch_median = statistics.median(times["import torch"])
    return {
        name: {
            "median_s": statistics.median(values),
            "runs_s": values,
            "ratio_to_import_torch": statistics.median(values) / torch_median,
            "heavy_modules_loaded": loaded[name],
        }
        for name, values in times.items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case (the median is reported)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose synthbrain is imported (default: this one)")
    parser.add_argument("--label", default="after", help="what --root is, in the report (e.g. before, after)")
    parser.add_argument("--before", type=Path, default=None, help="the JSON of an earlier run (e.g. on the previous code) to report beside")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/import-time"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit(f"--runs {args.runs}: allowed >= 1")
    record = {
        "command": "python benchmarks/import_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "platform": platform.platform(),
        },
        "runs": args.runs,
        "results": {args.label: run(args.root, args.runs)},
    }
    if args.before is not None:
        earlier = json.loads(args.before.read_text())
        record["results"] = {**earlier["results"], **record["results"]}
        record["earlier_command"] = earlier["command"]
    rows = [
        {
            "code": label,
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
        "volume on the CPU with its default sampling.\n\n"
        + markdown_table(pd.DataFrame(rows))
        + f"\n\nCommand: `{record['command']}`"
        + (f"; the earlier rows: `{record['earlier_command']}`." if args.before is not None else ".")
        + "\n"
    )
    _io.write_json(args.out.with_suffix(".json"), record)
    _io.write_text(args.out.with_suffix(".md"), text)
    print(text)
    return record


if __name__ == "__main__":
    main()
