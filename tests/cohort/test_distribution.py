import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import default_schema
from synthbrain.cohort.distribution import CovariateDistribution


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(0)
    n = 400
    age = rng.uniform(20, 80, n)
    sex = rng.choice(["F", "M"], n, p=[0.6, 0.4])
    vent = 5 + 0.5 * (age - 20) + rng.normal(0, 3, n) + (sex == "M") * 5  # grows with age
    brain = 1400 - 3 * (age - 20) + rng.normal(0, 40, n) + (sex == "M") * 100
    table = pd.DataFrame({"sex": sex, "age": age, "ventricular_volume": vent, "brain_volume": brain})
    schema = default_schema().fit(table)
    return table, schema, CovariateDistribution.fit(table, schema)


def test_unconditional_draws_follow_the_cohort(cohort):
    table, schema, dist = cohort
    drawn = dist.sample(2000, seed=1)
    assert (drawn["sex"] == "F").mean() == pytest.approx(0.6, abs=0.05)
    for name in ("age", "ventricular_volume", "brain_volume"):
        assert drawn[name].mean() == pytest.approx(table[name].mean(), rel=0.05)
        assert drawn[name].between(schema[name].low, schema[name].high).all()  # only inside the valid range
    assert np.corrcoef(drawn["age"], drawn["ventricular_volume"])[0, 1] > 0.6  # the joint structure is kept


def test_draws_are_conditional_on_given_covariates(cohort):
    _, _, dist = cohort
    young = dist.sample(500, {"age": 25.0, "sex": "F"}, seed=2)
    old = dist.sample(500, {"age": 75.0, "sex": "F"}, seed=2)
    assert (young["age"] == 25.0).all() and (young["sex"] == "F").all()
    assert old["ventricular_volume"].mean() > young["ventricular_volume"].mean() + 15
    assert old["brain_volume"].mean() < young["brain_volume"].mean() - 100


def test_seeded_json_round_trip_and_errors(cohort):
    _, schema, dist = cohort
    again = CovariateDistribution.from_dict(dist.to_dict(), schema)
    pd.testing.assert_frame_equal(again.sample(5, seed=3), dist.sample(5, seed=3))
    assert not dist.sample(5, seed=3).equals(dist.sample(5, seed=4))
    with pytest.raises(ValueError, match=r"unknown covariates \['weight'\]"):
        dist.sample(2, {"weight": 3})
    with pytest.raises(ValueError, match="n=0"):
        dist.sample(0)


def test_json_with_unknown_or_missing_keys_is_refused(cohort):
    _, schema, dist = cohort
    data = dist.to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['components'\], missing keys \[\]"):
        CovariateDistribution.from_dict({**data, "components": 2}, schema)
    with pytest.raises(ValueError, match=r"unknown keys \[\], missing keys \['mixtures'\]"):
        CovariateDistribution.from_dict({k: v for k, v in data.items() if k != "mixtures"}, schema)
