"""Mutation testing of the core modules with mutmut 3 (issue 22), each module against a narrow test
selection. Not part of the test suite and never run in CI; see docs/testing.md.

    pip install "mutmut>=3.8,<4"                 # not a dependency of synthbrain, not in any extra
    python tools/mutation.py statistics           # one module (names in MODULES), tests as they are
    python tools/mutation.py metrics --tests-at 0226bc6   # the test files as they were at a commit
    python tools/mutation.py samplers --tests tests/samplers   # another test selection (here: without the generator's)
    python tools/mutation.py metrics --only 'synthbrain.evaluation.metrics.x_frechet_distance*'   # some functions only

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
from pathlib import Path

from _checkout import ROOT, copy_checkout

MODULES = {
    "draws": (["synthbrain/generator/draws.py"], ["tests/generator", "tests/datasets/test_synthetic.py"]),
    "mixing": (["synthbrain/datasets/mixing.py"], ["tests/datasets/test_mixing.py", "tests/datasets/test_mixing_contracts.py"]),
    "samplers": (
        ["synthbrain/samplers/ddim.py", "synthbrain/samplers/dpm_solver.py", "synthbrain/samplers/schedule.py"],
        ["tests/samplers", "tests/generator/test_generate.py"],
    ),
    "statistics": (["synthbrain/evaluation/statistics.py"], ["tests/evaluation/test_statistics.py"]),
    "metrics": (["synthbrain/evaluation/metrics.py"], ["tests/evaluation/test_metrics.py", "tests/evaluation/test_metrics_contracts.py"]),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(MODULES))
    parser.add_argument("--tests-at", help="a commit: use the module's test files as they were there")
    parser.add_argument("--tests", nargs="+", metavar="PATH", help="run these tests instead of the module's own selection")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--only", nargs="+", default=[], metavar="GLOB", help="only these mutants (mutmut names, e.g. 'm.x_f__mutmut_*')")
    args = parser.parse_args()
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
        with open(copy / "pyproject.toml", "a") as handle:
            handle.write(
                "\n[tool.mutmut]\n"
                'source_paths = ["synthbrain"]\n'
                f"only_mutate = {_toml_list(files)}\n"
                f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
                'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
                'process_isolation = "forkserver"\n'
                "use_git_change_detection = false\n"
            )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        mutmut = [sys.executable, "-m", "mutmut"]
        run = subprocess.run(
            ["nice", "-n", "19", *mutmut, "run", "--max-children", "1", *args.only], cwd=copy, env=env, capture_output=True, text=True
        )
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
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
            print(f"surviving (survived or no covering test): {len(survivors)} of {total} = {len(survivors) / total:.1%}")
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
