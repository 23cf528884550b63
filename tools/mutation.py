"""Mutation testing of the core modules with mutmut 3 (issue 22), each module against a narrow test
selection. Not part of the test suite and never run in CI; see docs/testing.md.

    pip install "mutmut>=3.8,<4"                 # not a dependency of synthbrain, not in any extra
    python tools/mutation.py statistics           # one module (names in MODULES), tests as they are
    python tools/mutation.py metrics --tests-at 0226bc6   # the test files as they were at a commit
    python tools/mutation.py samplers --tests tests/samplers   # another test selection (here: without the generator's)
    python tools/mutation.py metrics --only 'synthbrain.evaluation.metrics.x_frechet_distance*'   # some functions only
    python tools/mutation.py evaluate --sample 40 --sample-seed 0   # 40 of the module's mutants drawn at random
    python tools/mutation.py prepare --without tests/preprocessing/test_prepare.py::test_x   # a test left out

``--sample N`` first generates the module's mutants only (mutmut's own generation, no test run), sorts
their names, draws N of them with ``numpy.random.default_rng(SEED)`` and runs those: the same N,
SEED and module code give the same names, whatever the tests. The surviving share of the sample
estimates the module's, printed with its 95 % Wilson interval. A file outside ``synthbrain/``
(``benchmarks/downstream.py``, imported by its tests as the top-level module ``downstream``) is
renamed in the copy to the dotted name mutmut derives from its path (``__name__`` set at its top),
so that the tests' calls reach its mutants.

Each run copies the checkout (the files git tracks or does not ignore) to a temporary folder, appends a ``[tool.mutmut]``
section to the copy's pyproject.toml (only the module's files mutated, only its tests run, one
worker), runs ``mutmut run --max-children 1`` there under ``OMP_NUM_THREADS=1 nice -n 19``, prints
the counts (killed, survived, no covering test, timeout, ...) and the surviving mutants with their
diffs, and deletes the copy (``--keep`` keeps it, to look at ``mutants/`` with ``mutmut browse``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _checkout import ROOT, copy_checkout
from scipy.stats import binomtest

MODULES = {
    "draws": (["synthbrain/generator/draws.py"], ["tests/generator", "tests/datasets/test_synthetic.py"]),
    # the seed functions that were in draws.py until issue 33 moved them (docs/testing.md)
    "seeding": (["synthbrain/seeding.py"], ["tests/test_seeding.py", "tests/generator", "tests/datasets/test_synthetic.py"]),
    "mixing": (["synthbrain/datasets/mixing.py"], ["tests/datasets/test_mixing.py", "tests/datasets/test_mixing_contracts.py"]),
    "samplers": (
        ["synthbrain/samplers/ddim.py", "synthbrain/samplers/dpm_solver.py", "synthbrain/samplers/schedule.py"],
        ["tests/samplers", "tests/generator/test_generate.py"],
    ),
    "statistics": (["synthbrain/evaluation/statistics.py"], ["tests/evaluation/test_statistics.py"]),
    "metrics": (["synthbrain/evaluation/metrics.py"], ["tests/evaluation/test_metrics.py", "tests/evaluation/test_metrics_contracts.py"]),
    # the orchestration modules (issue 35): each with its own tests, which hold the hand-over tests of issue 35
    "synthetic": (["synthbrain/datasets/synthetic.py"], ["tests/datasets/test_synthetic.py"]),
    "prepare": (["synthbrain/preprocessing/prepare.py"], ["tests/preprocessing/test_prepare.py"]),
    "evaluate": (["synthbrain/evaluation/evaluate.py"], ["tests/evaluation/test_evaluate.py"]),
    "model": (["synthbrain/generator/model.py"], ["tests/test_generator.py", "tests/generator", "tests/datasets/test_synthetic.py"]),
    "downstream": (["benchmarks/downstream.py"], ["tests/benchmarks/test_downstream.py", "tests/benchmarks/test_downstream_figure.py"]),
}

# mutmut's own generation step of ``mutmut run`` (mutmut 3.8), without its test runs; prints the mutant names
_GENERATE = """
import json, os
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, set_mutant_under_test, setup_source_paths
from mutmut.__main__ import store_lines_covered_by_tests, walk_mutatable_files
from mutmut.mutation.data import SourceFileMutationData
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); store_lines_covered_by_tests(); create_mutants(1)
names = []
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    names += list(data.exit_code_by_key)
print(json.dumps(names))
"""


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _rename_module(path: Path, name: str) -> None:
    """Set ``__name__`` of the module at ``path`` to ``name`` (after its docstring and ``__future__`` imports), so that its
    functions' ``__module__`` is the name mutmut gives its mutants although its tests import it under another name."""
    lines = path.read_text().splitlines(keepends=True)
    last_future = max((i for i, line in enumerate(lines) if line.startswith("from __future__ import")), default=None)
    if last_future is None:
        raise SystemExit(f"{path}: no 'from __future__ import' line to place the module name after")
    lines.insert(last_future + 1, f"__name__ = {name!r}  # mutation.py: mutmut's name for this file\n")
    path.write_text("".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(MODULES))
    parser.add_argument("--tests-at", help="a commit: use the module's test files as they were there")
    parser.add_argument("--tests", nargs="+", metavar="PATH", help="run these tests instead of the module's own selection")
    parser.add_argument("--without", nargs="+", default=[], metavar="TEST", help="leave these tests (pytest ids: tests/x.py::test_y) out")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--only", nargs="+", default=[], metavar="GLOB", help="only these mutants (mutmut names, e.g. 'm.x_f__mutmut_*')")
    parser.add_argument("--sample", type=int, metavar="N", help="run N of the module's mutants drawn at random (with --sample-seed)")
    parser.add_argument("--sample-seed", type=int, default=0, metavar="S", help="the seed of the --sample draw (default 0)")
    args = parser.parse_args()
    if args.sample is not None and (args.sample < 1 or args.only):
        parser.error(f"--sample must be a positive count and cannot be combined with --only; got --sample {args.sample}")
    files, tests = MODULES[args.module]
    tests = args.tests or tests
    copy = Path(tempfile.mkdtemp(prefix=f"synthbrain-mutation-{args.module}-")) / "repo"
    copy_checkout(copy)
    try:
        if args.tests_at:
            present = []
            for folder in tests:
                listed = subprocess.run(
                    ["git", "ls-tree", "-r", "--name-only", args.tests_at, "--", folder],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                shutil.rmtree(copy / folder) if (copy / folder).is_dir() else (copy / folder).unlink(missing_ok=True)
                if not listed:
                    print(f"{folder}: absent at {args.tests_at}; left out of the test selection")
                    continue
                present.append(folder)
                for path in listed:
                    (copy / path).parent.mkdir(parents=True, exist_ok=True)
                    (copy / path).write_bytes(
                        subprocess.run(["git", "show", f"{args.tests_at}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
                    )
            if not present:
                print(f"no tests of {args.module} at {args.tests_at}: every mutant survives")
                return 0
            tests = present
        sources = sorted({"synthbrain", *(f.split("/")[0] for f in files)})
        for file in files:
            if not file.startswith("synthbrain/"):  # imported by its tests by its file name; give it the path's dotted name
                _rename_module(copy / file, file.removesuffix(".py").replace("/", "."))
        with open(copy / "pyproject.toml", "a") as handle:
            handle.write(
                "\n[tool.mutmut]\n"
                f"source_paths = {_toml_list(sources)}\n"
                f"only_mutate = {_toml_list(files)}\n"
                f"pytest_add_cli_args_test_selection = {_toml_list([*tests, *(f'--deselect={t}' for t in args.without)])}\n"
                'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
                'process_isolation = "forkserver"\n'
                "use_git_change_detection = false\n"
                # mutmut's CPU-time limit is (tests' time + constant) * multiplier * 2; its constant of 1 s timed out
                # mutants of sub-second tests here, whose worker spends longer than that importing torch and the tests
                "timeout_constant = 60\n"
                "timeout_multiplier = 3\n"
            )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        mutmut = [sys.executable, "-m", "mutmut"]
        only = args.only
        if args.sample is not None:
            generated = subprocess.run(
                ["nice", "-n", "19", sys.executable, "-c", _GENERATE], cwd=copy, env=env, capture_output=True, text=True, check=True
            )
            names = sorted(json.loads(generated.stdout.strip().splitlines()[-1]))
            if args.sample > len(names):
                print(f"--sample {args.sample} is more than the module's {len(names)} mutants")
                return 2
            only = sorted(names[i] for i in np.random.default_rng(args.sample_seed).choice(len(names), args.sample, replace=False))
            print(f"{args.module}: {len(names)} mutants; sample of {args.sample} (seed {args.sample_seed}):", *only, sep="\n  ")
        start = time.monotonic()
        run = subprocess.run(
            ["nice", "-n", "19", *mutmut, "run", "--max-children", "1", *only], cwd=copy, env=env, capture_output=True, text=True
        )
        print(f"mutmut run: {time.monotonic() - start:.0f} s")
        spinner = re.compile(r"^\s*[\u2800-\u28ff]")  # mutmut's progress lines, which would push an error out of the tail
        shown = "\n".join(line for line in run.stdout.splitlines() if not spinner.match(line))
        print(shown[-6000:], run.stderr[-3000:], sep="\n")
        results = subprocess.run([*mutmut, "results", "--all", "true"], cwd=copy, env=env, capture_output=True, text=True).stdout
        counts: dict[str, int] = {}
        survivors = []
        for line in results.splitlines():
            match = re.match(r"\s*(\S+): (.+)$", line)
            if match and match.group(2) != "not checked":
                counts[match.group(2)] = counts.get(match.group(2), 0) + 1
                if match.group(2) in ("survived", "no tests"):
                    survivors.append(match.group(1))
        total = sum(counts.values())
        print(f"{args.module}: {total} mutants: {counts}")
        if total:
            low, high = binomtest(len(survivors), total).proportion_ci(confidence_level=0.95, method="wilson")
            print(
                f"surviving (survived or no covering test): {len(survivors)} of {total} = {len(survivors) / total:.1%}"
                f" (95 % Wilson interval {low:.1%} to {high:.1%})"
            )
        for name in survivors:
            shown = subprocess.run([*mutmut, "show", name], cwd=copy, env=env, capture_output=True, text=True).stdout
            print(f"\n### {name}\n{shown.strip()}")
        return 0
    finally:
        if args.keep:
            print(f"kept: {copy}")
        else:
            shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
