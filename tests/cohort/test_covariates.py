import numpy as np
import pandas as pd
import pytest

from synthbrain.cohort import Covariate, CovariateSchema, default_schema


@pytest.fixture
def table():
    return pd.DataFrame(
        {
            "sex": ["F", "M", "M", "F"],
            "age": [20.0, 40.0, 60.0, 80.0],
            "ventricular_volume": [10.0, 20.0, 30.0, 50.0],
            "brain_volume": [1000.0, 1100.0, 1300.0, 1200.0],
        }
    )


def test_fit_maps_training_range_to_unit_interval(table):
    schema = default_schema().fit(table)
    x = schema.normalize(table)
    assert x.shape == (4, 4) and x.dtype == np.float32
    assert x[:, 0].tolist() == [0, 1, 1, 0]  # sex F=0, M=1 as in the reference model
    assert x[:, 1].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert x.min() == 0 and x.max() == 1


def test_normalise_then_denormalise_round_trips(table):
    schema = default_schema().fit(table)
    back = schema.denormalize(schema.normalize(table))
    assert back["sex"].tolist() == table["sex"].tolist()
    for name in ["age", "ventricular_volume", "brain_volume"]:
        assert back[name].to_numpy() == pytest.approx(table[name].to_numpy())


def test_json_round_trip_is_exact(table, tmp_path):
    schema = default_schema().fit(table)
    schema.save(tmp_path / "covariates.json")
    loaded = CovariateSchema.load(tmp_path / "covariates.json")
    assert loaded == schema
    np.testing.assert_array_equal(loaded.normalize(table), schema.normalize(table))


def test_out_of_range_raises_unless_extrapolating(table):
    schema = default_schema().fit(table)
    query = {"sex": "F", "age": 95.0, "ventricular_volume": 20.0, "brain_volume": 1100.0}
    with pytest.raises(ValueError, match=r"'age': values \[95.0\] years are outside the fitted range \[20, 80\]"):
        schema.normalize(query)
    x = schema.normalize(query, extrapolate=True)
    assert x[0, 1] == pytest.approx(75 / 60)


def test_bad_values_and_names_are_named(table):
    schema = default_schema().fit(table)
    good = {"sex": "F", "age": 30.0, "ventricular_volume": 20.0, "brain_volume": 1100.0}
    with pytest.raises(ValueError, match=r"'sex': invalid values \['other'\]; allowed: one of \['F', 'M'\], also spelled F = female"):
        schema.normalize({**good, "sex": "other"})
    with pytest.raises(ValueError, match=r"'age': invalid values \['old'\]; allowed: a finite number"):
        schema.normalize({**good, "age": "old"})
    with pytest.raises(ValueError, match=r"unknown \['weight'\], missing \[\]"):
        schema.normalize({**good, "weight": 70})
    with pytest.raises(ValueError, match=r"missing \['age'\]"):
        schema.normalize({k: v for k, v in good.items() if k != "age"})
    with pytest.raises(ValueError, match="missing values cannot be normalised"):
        schema.normalize({**good, "age": None})


def test_sex_is_case_insensitive_and_categorical_with_many_levels_is_one_hot():
    schema = default_schema()
    assert schema["sex"].parse(["f", " M "]).tolist() == [0.0, 1.0]
    site = Covariate("site", "", "categorical", categories=("A", "B", "C"))
    np.testing.assert_array_equal(site.normalize(["C", "A"]), [[0, 0, 1], [1, 0, 0]])
    assert site.denormalize(site.normalize(["B"])).tolist() == ["B"]


def test_unit_conversion():
    volume = default_schema()["ventricular_volume"]
    assert volume.convert(np.array([20000.0]), "mm3").tolist() == [20.0]
    assert volume.convert(np.array([1.5]), "L").tolist() == [1500.0]
    with pytest.raises(ValueError, match=r"unit='gallon'; allowed: \['L', 'cm3', 'mL', 'mm3'\]"):
        volume.convert(np.array([1.0]), "gallon")


def test_unfitted_and_invalid_definitions_raise():
    with pytest.raises(ValueError, match="not fitted"):
        default_schema().normalize({"sex": "F", "age": 30, "ventricular_volume": 20, "brain_volume": 1100})
    with pytest.raises(ValueError, match="kind='ordinal'"):
        Covariate("x", "", "ordinal")
    with pytest.raises(ValueError, match="need finite low <= high"):
        Covariate("x", "mL", "continuous", low=5.0, high=1.0)
    with pytest.raises(ValueError, match="duplicate names"):
        CovariateSchema([Covariate("x", "mL", "continuous")] * 2)
    with pytest.raises(ValueError, match="unknown keys"):
        CovariateSchema.from_dict({"covariates": [{"name": "x", "unit": "mL", "kind": "continuous", "scale": 2}]})


def test_fit_ignores_missing_values(table):
    table.loc[0, "age"] = np.nan
    schema = default_schema().fit(table)
    assert (schema["age"].low, schema["age"].high) == (40.0, 80.0)


def test_wrong_types_and_units_are_named_with_what_is_allowed(table):
    schema = default_schema().fit(table)
    good = {"sex": "F", "age": 30.0, "ventricular_volume": 20.0, "brain_volume": 1100.0}
    with pytest.raises(ValueError, match=r"'age': invalid values \['70y'\]; allowed: a finite number in years"):
        schema.normalize({**good, "age": "70y"})
    with pytest.raises(ValueError, match=r"'age': invalid values \[True\]; allowed: a finite number in years"):
        schema.normalize({**good, "age": True})  # float(True) would be 1 year
    with pytest.raises(ValueError, match=r"'sex': invalid values \[0\]; allowed: one of \['F', 'M'\]"):
        schema.normalize({**good, "sex": 0})
    with pytest.raises(
        ValueError,
        match=r"'ventricular_volume': values \[20000.0\] mL are outside the fitted range \[10, 50\] mL "
        r"\(read as mm3 they would be inside: convert them to mL\)",
    ):
        schema.normalize({**good, "ventricular_volume": 20000.0})
    with pytest.raises(ValueError, match=r"values \[500.0\] mL are outside the fitted range \[10, 50\] mL; pass extrapolate"):
        schema.normalize({**good, "ventricular_volume": 500.0})  # no unit makes 500 fit: no hint
    with pytest.raises(ValueError, match=r"'age': 1 missing values cannot be normalised .*; allowed: a number in \[20, 80\] years"):
        schema.normalize({**good, "age": float("nan")})


def test_schema_json_with_unknown_or_missing_top_level_keys_is_refused(table):
    data = default_schema().fit(table).to_dict()
    with pytest.raises(ValueError, match=r"keys \['covariates', 'version'\]; expected exactly \['covariates'\]"):
        CovariateSchema.from_dict({**data, "version": 2})
    with pytest.raises(ValueError, match=r"keys \[\]; expected exactly \['covariates'\]"):
        CovariateSchema.from_dict({})


@pytest.mark.parametrize("spelled", ["female", "FEMALE", "Female", " f ", "F"])
def test_bids_sex_spellings_map_to_the_levels(table, spelled):
    """BIDS participants.tsv recommends male/female (any case): the same levels as M/F."""
    schema = default_schema().fit(table)
    assert schema["sex"].parse([spelled]).tolist() == [0.0]
    assert schema["sex"].parse(["male", "MALE", "Male", "m"]).tolist() == [1.0] * 4
    good = {"age": 30.0, "ventricular_volume": 20.0, "brain_volume": 1100.0}
    np.testing.assert_array_equal(schema.normalize({**good, "sex": spelled}), schema.normalize({**good, "sex": "F"}))
    assert schema.denormalize(schema.normalize({**good, "sex": "male"}))["sex"].tolist() == ["M"]  # back as the level


@pytest.mark.parametrize("ambiguous", ["1", "2", 1, 2.0])
def test_numeric_sex_codes_stay_errors_listing_the_accepted_spellings(table, ambiguous):
    schema = default_schema().fit(table)
    with pytest.raises(ValueError) as info:
        schema["sex"].parse([ambiguous])
    message = str(info.value)
    assert "allowed: one of ['F', 'M'], also spelled F = female, M = male (any case)" in message
    assert "numeric codes such as 1/2 are ambiguous" in message
    with pytest.raises(ValueError, match=r"invalid values \['other'\]; allowed: one of \['F', 'M'\], also spelled"):
        schema["sex"].parse(["other"])  # a BIDS level this schema has no level for


def test_fit_and_density_take_spelled_levels(table):
    from synthbrain.cohort.distribution import CovariateDistribution

    spelled = table.assign(sex=["female", "Male", "MALE", "f"])
    schema = default_schema().fit(spelled)
    assert schema == default_schema().fit(table)
    np.testing.assert_array_equal(schema.normalize(spelled), schema.normalize(table))
    big = pd.concat([spelled] * 3, ignore_index=True)
    big["age"] = big["age"] + np.arange(len(big))
    density = CovariateDistribution.fit(big, default_schema().fit(big), components=1)
    assert density.sample(2, {"sex": "female"}, seed=0)["sex"].tolist() == ["F", "F"]


def test_condition_samplers_take_spelled_levels(table):
    """The samplers check their values through the schema, so female/male need no code of their own."""
    from synthbrain.generator.conditions import Empirical, Fixed, Uniform, check_sampler

    schema = default_schema().fit(table)
    check_sampler(Uniform(sex=["female", "male"], age=(30, 60)), schema)
    check_sampler(Fixed(sex="FEMALE", age=50.0), schema)
    check_sampler(Empirical(table.assign(sex=["female", "male", "Male", "F"])), schema)
    with pytest.raises(ValueError, match=r"invalid values \['2'\]; allowed: one of \['F', 'M'\], also spelled"):
        check_sampler(Fixed(sex="2", age=50.0), schema)


def test_generate_takes_female_with_the_embedded_model():
    from synthbrain import BrainGenerator
    from synthbrain.generator import DEFAULT_MODEL, INDEX

    if not (DEFAULT_MODEL / INDEX).is_file():
        pytest.skip(f"no embedded model at {DEFAULT_MODEL}")
    model = BrainGenerator.from_pretrained("default")
    out = model.generate({"sex": "female", "age": 70}, n=1, seed=3, steps=2, timestep_spacing="trailing")
    assert out.covariates.loc[0, "sex"] == "F" and out.covariates.loc[0, "age"] == 70.0
