"""Deliberate breaks of core behaviours (issue 22), each applied to a throwaway copy of the checkout
and checked against the narrow test selection that should catch it. See docs/testing.md.

    python tools/breaks.py            # every break, one after the other
    python tools/breaks.py guidance   # breaks whose name contains "guidance"

Each break is a literal replacement in one file (it must match exactly once, so a break that no
longer applies is reported rather than silently skipped). The copy holds the files git tracks or
does not ignore (``tools/_checkout.py``); the tests run with ``python -m pytest`` from the copy's
root (so the copy's ``synthbrain`` is the one imported) under ``OMP_NUM_THREADS=1 nice -n 19``, and
the copy is deleted afterwards. A break is caught when pytest exits with failures (exit status 1);
the failing tests are printed.
Not part of the test suite and never run in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _checkout import copy_checkout

# name: (file, old text, new text, test selection)
BREAKS = {
    "generate ignores guidance_scale (always 1)": (
        "synthbrain/generator/model.py",
        'guidance = settings["guidance_scale"]',
        "guidance = 1.0",
        ["tests/generator/test_generate.py"],
    ),
    "generate ignores sampler (always DDIM)": (
        "synthbrain/generator/model.py",
        '                    settings["sampler"],\n',
        '                    "ddim",\n',
        ["tests/generator/test_generate.py"],
    ),
    "dataset's per-volume seed ignores the index": (
        "synthbrain/datasets/synthetic.py",
        "seeds = [draws.volume_seed(self.seed, i) for i in indices]",
        "seeds = [draws.volume_seed(self.seed, 0) for i in indices]",
        ["tests/generator/test_generate.py", "tests/datasets/test_synthetic.py"],
    ),
    "training checkpoint written straight to its file": (
        "synthbrain/training.py",
        "    with _io.atomic_path(path) as tmp:\n        torch.save(state, tmp)\n",
        "    torch.save(state, path)\n",
        ["tests/autoencoder/test_losses.py", "-k", "checkpoint_write"],
    ),
    "statistics: normal interval (ddof 0) over seed means instead of the bootstrap": (
        "synthbrain/evaluation/statistics.py",
        "    rows, columns = _indices(array.shape, resamples, seed)\n    resampled",
        "    means = np.nanmean(array, axis=1)\n"
        "    half = 1.96 * means.std(ddof=0) / np.sqrt(len(means))\n"
        "    return Estimate(float(np.nanmean(array)), float(np.nanmean(array) - half), float(np.nanmean(array) + half))\n"
        "    rows, columns = _indices(array.shape, resamples, seed)\n    resampled",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: bootstrap over seeds only (subjects fixed)": (
        "synthbrain/evaluation/statistics.py",
        "    columns = rng.integers(0, shape[1], size=(resamples, shape[1]))",
        "    columns = np.broadcast_to(np.arange(shape[1]), (resamples, shape[1]))",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: unpaired difference (a and b resampled independently)": (
        "synthbrain/evaluation/statistics.py",
        "    return bootstrap_mean(a - b, difference=True, **kwargs)",
        "    resamples, level, seed = kwargs.get('resamples', RESAMPLES), kwargs.get('level', 0.95), kwargs.get('seed', 0)\n"
        "    def draws(x, s):\n"
        "        r, c = _indices(x.shape, resamples, s)\n"
        "        return np.nanmean(x[r[:, :, None], c[:, None, :]], axis=(1, 2))\n"
        "    return _interval(float(np.nanmean(a) - np.nanmean(b)), draws(a, seed) - draws(b, seed + 1), level, True)",
        ["tests/evaluation/test_statistics.py", "tests/benchmarks/test_downstream.py"],
    ),
    "statistics: AUC without average ranks for ties": (
        "synthbrain/evaluation/statistics.py",
        "ranks = rankdata(scores, axis=-1)",
        'ranks = rankdata(scores, axis=-1, method="ordinal")',
        ["tests/evaluation/test_statistics.py"],
    ),
    "evaluate: synthetic realism row compares real A with itself": (
        "synthbrain/evaluation/evaluate.py",
        '("synthetic vs A", [features["synthetic"][s] for s in subsets])',
        '("synthetic vs A", [features["A"] for s in subsets])',
        ["tests/evaluation/test_evaluate.py"],
    ),
    "evaluate: synthetic conditioning compares requested with requested": (
        "synthbrain/evaluation/evaluate.py",
        '("synthetic, independent evaluator", requested[name], measured[name]),',
        '("synthetic, independent evaluator", requested[name], requested[name]),',
        ["tests/evaluation/test_evaluate.py"],
    ),
    "mixing rounds per batch": (
        "synthbrain/datasets/mixing.py",
        "    return [_round(before + (b + 1) * step) - _round(before + b * step) for b in range(num_batches)]",
        "    return [_round(step)] * num_batches",
        ["tests/datasets/test_mixing.py"],
    ),
    "DDIM off-by-one alpha": (
        "synthbrain/samplers/ddim.py",
        "schedule.alpha_bar(t), schedule.alpha_bar(t_prev)",
        "schedule.alpha_bar(t), schedule.alpha_bar(t_prev + 1)",
        ["tests/samplers", "tests/generator/test_generate.py"],
    ),
    "Fréchet distance without the covariance term": (
        "synthbrain/evaluation/metrics.py",
        "    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)",
        "    value = diff @ diff",
        ["tests/evaluation/test_metrics.py"],
    ),
}


def run(name: str) -> tuple[str, list[str]]:
    path, old, new, tests = BREAKS[name]
    scratch = Path(tempfile.mkdtemp(prefix="synthbrain-break-"))
    copy = scratch / "repo"
    try:
        copy_checkout(copy)
        text = (copy / path).read_text()
        if text.count(old) != 1:
            return "NOT APPLIED (the text to replace is not there exactly once)", []
        (copy / path).write_text(text.replace(old, new))
        command = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests]
        result = subprocess.run(command, cwd=copy, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        failed = sorted({m.group(1) for m in re.finditer(r"^FAILED (\S+)", result.stdout, re.M)})
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        verdict = {0: "NOT CAUGHT", 1: "caught"}.get(result.returncode, f"pytest exit {result.returncode}")
        return f"{verdict}: {summary}", failed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> int:
    names = [n for n in BREAKS if not argv or any(a.lower() in n.lower() for a in argv)]
    missed = 0
    for name in names:
        path, _, _, tests = BREAKS[name]
        verdict, failed = run(name)
        missed += not verdict.startswith("caught")
        print(f"## {name}\n   {path}; pytest {' '.join(tests)}\n   {verdict}")
        for test in failed:
            print(f"   - {test}")
        sys.stdout.flush()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
