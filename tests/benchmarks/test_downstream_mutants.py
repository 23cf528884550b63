"""Known answers written for survivors of the mutation run on ``benchmarks/downstream.py``
(docs/testing.md, "The orchestration modules")."""

import re

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("downstream", monkeypatch)


def _rows(script, levels: dict[int, float], task: str = "segmentation", spread: float = 0.02) -> pd.DataFrame:
    """Real-only scores of ``task``'s headline metric on the split's test part: 20 subjects x 5 seeds per n, around ``levels[n]``."""
    rng = np.random.default_rng(0)
    out = []
    for n, level in levels.items():
        for seed in range(5):
            for subject in range(20):
                out.append({"task": task, "arm": script.REAL, "n": n, "seed": seed, "cohort": script.SPLIT_TEST})
                out[-1] |= {"subject": subject, "metric": script.HEADLINE[task], "value": float(level + rng.normal(0, spread))}
    return pd.DataFrame(out)


def test_the_gate_compares_the_largest_n_with_the_smallest_of_three(script):
    """With three sizes the gate is the largest against the smallest: flat from 4 to 20, rising at 40."""
    rows = _rows(script, {4: 0.70, 20: 0.70, 40: 0.80})
    gate = script._gate(rows, "segmentation", [4, 20, 40])
    difference = script._estimate(rows, "segmentation", script.REAL, 40, script.SPLIT_TEST, "dice", reference=(script.REAL, 4))
    assert gate["passed"] and gate["difference"] == difference.__dict__ and difference.low > 0.05
    assert gate["text"] == f"n=40 minus n=4: {script._cell(difference, signed=True)} (passes)"
    assert re.fullmatch(r"n=40 minus n=4: \+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\] \(passes\)", gate["text"])


def test_the_age_gate_passes_a_falling_error_and_fails_a_flat_one(script):
    """Age is scored by its absolute error, lower is better: the gate passes when the error at the
    largest n is lower than at the smallest, and fails a flat curve."""
    falling = script._gate(_rows(script, {4: 10.0, 40: 6.0}, "age", spread=0.5), "age", [4, 40])
    flat = script._gate(_rows(script, {4: 8.0, 40: 8.0}, "age", spread=0.5), "age", [4, 40])
    assert falling["passed"] and falling["difference"]["high"] < -3 and falling["text"].endswith("(passes)")
    assert not flat["passed"] and flat["difference"]["low"] < 0 < flat["difference"]["high"] < 1 and flat["text"].endswith("(fails)")


def test_the_gate_without_real_only_runs_is_not_passed(script):
    rows = _rows(script, {4: 0.70, 40: 0.80}).assign(arm=script.GENERATED)
    assert script._gate(rows, "segmentation", [4, 40]) == {"passed": False, "text": "not run (real-only runs missing)"}
