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


def test_spot_the_fake_hands_b_its_seed_and_epochs_to_the_positive_control(monkeypatch):
    """The positive control (real B against B blurred) is trained as the tests it vouches for: on B
    with B's label maps, the run's seed and its ``epochs`` (``c2st_epochs`` of :func:`evaluate`)."""
    import torch

    import synthbrain.evaluation.evaluate as evaluation

    class Stop(Exception):
        pass

    calls = []

    def spy(images, labels, **kwargs):
        calls.append((images, labels, kwargs))
        raise Stop

    monkeypatch.setattr(evaluation, "classifier_positive_control", spy)
    names = ("real (A)", "real (B)", "synthetic", "autoencoder reconstructions of B")
    sets = {name: (torch.full((2, 1, 4, 4, 4), float(i)), torch.full((2, 4, 4, 4), i)) for i, name in enumerate(names)}
    statistics = {name: np.full((2, 2), float(i)) for i, name in enumerate(names)}
    with pytest.raises(Stop):
        evaluation.spot_the_fake(sets, statistics, seed=7, epochs=3)
    ((images, labels, kwargs),) = calls
    assert images is sets["real (B)"][0] and labels is sets["real (B)"][1]
    assert kwargs == {"seed": 7, "sigma": evaluation.CONTROL_SIGMA, "epochs": 3}
