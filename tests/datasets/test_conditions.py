import pickle

import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import default_schema
from synthbrain.datasets import Density, Empirical, Fixed, Uniform, check_sampler

SCHEMA = default_schema().fit(
    pd.DataFrame({"sex": ["F", "M"], "age": [20.0, 80.0], "ventricular_volume": [5.0, 60.0], "brain_volume": [900.0, 1600.0]})
)
TABLE = pd.DataFrame(
    {
        "sex": ["F"] * 30 + ["M"] * 10,
        "age": np.r_[np.linspace(21, 39, 30), np.linspace(61, 79, 10)],
        "ventricular_volume": np.linspace(6, 59, 40),
        "brain_volume": np.linspace(901, 1599, 40),
    }
)


def test_fixed_and_uniform_draws_are_seeded_and_in_range():
    assert Fixed(sex="F", age=70)(np.random.default_rng(0)) == {"sex": "F", "age": 70}
    sampler = Uniform(age=(30, 50), sex=["F", "M"])
    draws = [sampler(np.random.default_rng([1, i])) for i in range(200)]
    assert all(30 <= d["age"] <= 50 for d in draws) and {d["sex"] for d in draws} == {"F", "M"}
    assert draws == [sampler(np.random.default_rng([1, i])) for i in range(200)]
    with pytest.raises(ValueError, match=r"age=\(50, 30\); allowed: a \(low, high\) range"):
        Uniform(age=(50, 30))
    with pytest.raises(ValueError, match="sex=3"):
        Uniform(sex=3)


def test_empirical_resamples_rows_and_jitters_inside_their_range():
    sampler = Empirical(TABLE, jitter=0.1)
    draws = pd.DataFrame([sampler(np.random.default_rng([0, i])) for i in range(300)])
    assert draws["age"].between(21, 79).all() and draws["ventricular_volume"].between(6, 59).all()
    assert not draws["age"].isin(TABLE["age"]).all()  # jittered, not copied
    exact = pd.DataFrame([Empirical(TABLE)(np.random.default_rng([0, i])) for i in range(50)])
    assert exact["age"].isin(TABLE["age"]).all()
    with_gap = TABLE.assign(age=TABLE["age"].where(TABLE.index != 3))
    assert Empirical(with_gap).dropped == 1
    with pytest.raises(ValueError, match="jitter=-1"):
        Empirical(TABLE, jitter=-1)
    with pytest.raises(ValueError, match="absent \\['weight'\\]"):
        Empirical(TABLE, columns=["weight"])


def test_balanced_target_draws_each_cell_equally_often():
    # 30 young women, 5 young men, 3 old women, 10 old men: balanced, each cell is drawn a quarter of the time.
    table = pd.DataFrame(
        {"sex": ["F"] * 30 + ["M"] * 5 + ["F"] * 3 + ["M"] * 10, "age": np.r_[np.linspace(21, 39, 35), np.linspace(61, 79, 13)]}
    )
    sampler = Empirical.balanced(table, {"age": [20, 40, 80]}, by=["sex"])
    draws = pd.DataFrame([sampler(np.random.default_rng([2, i])) for i in range(4000)])
    cells = draws.groupby([draws["age"] < 40, draws["sex"]]).size() / len(draws)
    assert len(cells) == 4 and np.allclose(cells, 0.25, atol=0.03)
    with pytest.raises(ValueError, match="only 2 of the 4 cells with a target > 0 hold rows"):  # no young men, no old women
        Empirical.balanced(TABLE, {"age": [20, 40, 80]}, by=["sex"])
    with pytest.raises(ValueError, match=r"bins\['age'\]=\[40, 20\]"):
        Empirical.balanced(table, {"age": [40, 20]})


def test_target_proportions_oversample_a_rare_range():
    # 40 subjects aged 21-79, only 5 of them over 70: the target draws half of all subjects from those 5.
    sampler = Empirical.target(TABLE.assign(age=np.linspace(21, 79, 40)), {"age": [20, 70, 80]}, proportions={"age": [0.5, 0.5]})
    draws = pd.DataFrame([sampler(np.random.default_rng([3, i])) for i in range(3000)])
    assert abs((draws["age"] > 70).mean() - 0.5) < 0.04
    # Proportions per level of a `by` column; cells with proportion 0 are never drawn.
    table = pd.DataFrame(
        {"sex": ["F"] * 30 + ["M"] * 5 + ["F"] * 3 + ["M"] * 10, "age": np.r_[np.linspace(21, 39, 35), np.linspace(61, 79, 13)]}
    )
    young_men = Empirical.target(table, {"age": [20, 40, 80]}, by=["sex"], proportions={"sex": {"F": 0.2, "M": 0.8}, "age": [1, 0]})
    draws = pd.DataFrame([young_men(np.random.default_rng([4, i])) for i in range(2000)])
    assert (draws["age"] < 40).all() and abs((draws["sex"] == "M").mean() - 0.8) < 0.04
    with pytest.raises(ValueError, match="only 1 of the 2 cells with a target > 0"):  # TABLE has no young men to draw
        Empirical.target(TABLE, {"age": [20, 40, 80]}, by=["sex"], proportions={"age": [1, 0]})
    with pytest.raises(ValueError, match=r"proportions\['age'\]=\[1\]; allowed: a list of 2 numbers"):
        Empirical.target(TABLE, {"age": [20, 40, 80]}, proportions={"age": [1]})
    with pytest.raises(ValueError, match=r"proportions\['sex'\]=\{'F': 1\}; allowed: a dict with one number per level \['F', 'M'\]"):
        Empirical.target(TABLE, by=["sex"], proportions={"sex": {"F": 1}})
    with pytest.raises(ValueError, match=r"proportions\['age'\]=\[-1, 2\]; allowed: finite numbers >= 0"):
        Empirical.target(TABLE, {"age": [20, 40, 80]}, proportions={"age": [-1, 2]})
    with pytest.raises(ValueError, match=r"proportions: \['weight'\] are neither in bins"):
        Empirical.target(TABLE, {"age": [20, 40, 80]}, proportions={"weight": [1, 1]})


def test_fitted_density_draws_new_combinations_inside_the_cohort_range():
    for estimator in ("gmm", "kde"):
        sampler = Density(TABLE, estimator=estimator)
        draws = pd.DataFrame([sampler(np.random.default_rng([5, i])) for i in range(400)])
        assert draws["age"].between(21, 79).all() and draws["brain_volume"].between(901, 1599).all()
        assert not draws["age"].isin(TABLE["age"]).any()  # drawn from the density, not copied rows
        assert abs((draws["sex"] == "F").mean() - 0.75) < 0.07  # 30 of the 40 rows are women
        women = draws[draws["sex"] == "F"]
        assert women["age"].max() < 50  # the joint distribution is kept: the table's women are all 21-39
        assert draws.equals(pd.DataFrame([sampler(np.random.default_rng([5, i])) for i in range(400)]))  # seeded
        assert repr(sampler) == repr(Density(TABLE, estimator=estimator))  # a stable description, for shard folders
        clone = pickle.loads(pickle.dumps(sampler))  # spawned DataLoader workers get a copy
        assert clone(np.random.default_rng([5, 0])) == sampler(np.random.default_rng([5, 0]))
        check_sampler(sampler, SCHEMA)
    assert repr(Density(TABLE)) != repr(Density(TABLE.assign(age=TABLE["age"] + 1)))
    with pytest.raises(ValueError, match="estimator='tree'; allowed: 'gmm'"):
        Density(TABLE, estimator="tree")
    with pytest.raises(ValueError, match=r"only 10 complete rows with \{'sex': 'M'\}; need 12 to fit"):
        Density(TABLE, components=12)
    with pytest.raises(ValueError, match="bandwidth=0; allowed: a number > 0"):
        Density(TABLE, estimator="kde", bandwidth=0)
    with pytest.raises(ValueError, match="outside the fitted range"):
        check_sampler(Density(TABLE.assign(age=TABLE["age"] + 10)), SCHEMA)


def test_samplers_are_checked_against_the_model_schema():
    check_sampler(Uniform(age=(30, 50)), SCHEMA)
    check_sampler(Empirical(TABLE), SCHEMA)
    check_sampler(lambda rng: {"age": float(rng.uniform(30, 40))}, SCHEMA)
    with pytest.raises(ValueError, match=r"unknown covariates \['weight'\]"):
        check_sampler(Fixed(weight=70), SCHEMA)
    with pytest.raises(ValueError, match="outside the fitted range"):
        check_sampler(Uniform(age=(10, 50)), SCHEMA)
    check_sampler(Uniform(age=(10, 50)), SCHEMA, extrapolate=True)
    with pytest.raises(ValueError, match="invalid values \\['X'\\]"):
        check_sampler(Fixed(sex="X"), SCHEMA)
    with pytest.raises(ValueError, match="returned float"):
        check_sampler(lambda rng: 3.0, SCHEMA)
    with pytest.raises(ValueError, match="cond_sampler=3"):
        check_sampler(3, SCHEMA)
