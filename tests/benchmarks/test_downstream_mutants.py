"""Known answers written for survivors of the mutation run on ``benchmarks/downstream.py``
(docs/testing.md, "The orchestration modules")."""

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("downstream", monkeypatch)


def _rows(script, levels: dict[int, float]) -> pd.DataFrame:
    """Real-only segmentation Dice on the split's test part: 20 subjects x 5 seeds per n, around ``levels[n]``."""
    rng = np.random.default_rng(0)
    out = []
    for n, level in levels.items():
        for seed in range(5):
            for subject in range(20):
                out.append({"task": "segmentation", "arm": script.REAL, "n": n, "seed": seed, "cohort": script.SPLIT_TEST})
                out[-1] |= {"subject": subject, "metric": "dice", "value": float(np.clip(level + rng.normal(0, 0.02), 0, 1))}
    return pd.DataFrame(out)


def test_the_gate_compares_the_largest_n_with_the_smallest_of_three(script):
    """With three sizes the gate is the largest against the smallest: flat from 4 to 20, rising at 40."""
    gate = script._gate(_rows(script, {4: 0.70, 20: 0.70, 40: 0.80}), "segmentation", [4, 20, 40])
    assert gate["passed"] and gate["text"].startswith("n=40 minus n=4: ")
    assert gate["difference"]["low"] > 0.05


def test_the_gate_without_real_only_runs_is_not_passed(script):
    rows = _rows(script, {4: 0.70, 40: 0.80}).assign(arm=script.GENERATED)
    assert script._gate(rows, "segmentation", [4, 40]) == {"passed": False, "text": "not run (real-only runs missing)"}
