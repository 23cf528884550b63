"""Known answers written for survivors of the mutation run on ``synthbrain/evaluation/evaluate.py``
(docs/testing.md, "The orchestration modules")."""

import re

import numpy as np
import pandas as pd
import pytest

from synthbrain.evaluation.evaluate import _split


def test_the_split_takes_eight_complete_subjects_and_refuses_seven():
    """The real halves A and B are drawn from the subjects with every covariate: 8 of them are enough
    (4 and 4), 7 are refused with the count and the bound; a subject without a covariate is in neither."""
    table = pd.DataFrame({"age": [30.0, 40, 50, np.nan, 60, 70, 80, 90, 20], "sex": ["F", "M", "F", "M", "M", "F", "M", "F", "M"]})
    complete, part_a, part_b = _split(table, ["age", "sex"], "cohort", seed=3)
    assert complete.tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    order = np.random.default_rng(3).permutation(complete)
    assert part_a.tolist() == sorted(order[:4]) and part_b.tolist() == sorted(order[4:])
    assert sorted([*part_a, *part_b]) == complete.tolist()
    with pytest.raises(ValueError, match=re.escape("real='cohort': 7 subjects with every covariate ['age', 'sex']; allowed: >= 8")):
        _split(table.drop(index=8), ["age", "sex"], "cohort", seed=3)
