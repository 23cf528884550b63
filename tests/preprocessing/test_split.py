import numpy as np
import pandas as pd
import pytest

from synthbrain.cli import main
from synthbrain.preprocessing.prepared import PreparedCohort
from synthbrain.preprocessing.split import split_prepared, stratified_parts
from tests.helpers import make_prepared

FRACTIONS = {"generator": 0.4, "pool": 0.3, "test": 0.3}


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 80, n)})


def test_parts_are_disjoint_sized_stratified_and_reproducible():
    table = _table(120)
    parts = stratified_parts(table, FRACTIONS, seed=3)
    assert parts.value_counts().to_dict() == {"generator": 48, "pool": 36, "test": 36}
    assert parts.equals(stratified_parts(table, FRACTIONS, seed=3))
    assert not parts.equals(stratified_parts(table, FRACTIONS, seed=4))
    for name in FRACTIONS:  # each part has about the cohort's sex ratio and age
        part = table[parts == name]
        assert abs((part["sex"] == "M").mean() - (table["sex"] == "M").mean()) < 0.1
        assert abs(part["age"].mean() - table["age"].mean()) < 5


def test_subjects_without_sex_or_age_go_to_the_first_part():
    table = _table(40)
    table.loc[[3, 7], "age"] = np.nan
    table.loc[11, "sex"] = np.nan
    parts = stratified_parts(table, FRACTIONS, seed=0)
    assert (parts.loc[[3, 7, 11]] == "generator").all()
    assert parts.value_counts().to_dict() == {"generator": 3 + 15, "pool": 11, "test": 11}


@pytest.mark.parametrize(
    "fractions", [{"a": 1.0}, {"a": 0.5, "b": 0.6}, {"a": 0.0, "b": 1.0}, {"a": 0.98, "b": 0.02}], ids=["one", "sum", "zero", "tiny"]
)
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions="):
        stratified_parts(_table(40), fractions, seed=0)


def test_split_writes_prepared_cohorts_that_load(tmp_path):
    root = make_prepared(tmp_path / "cohort", n=10)
    folders = split_prepared(root, tmp_path / "split", {"a": 0.6, "b": 0.4}, seed=0)
    loaded = {name: PreparedCohort.load(folder) for name, folder in folders.items()}
    ids = [set(cohort.subject_ids) for cohort in loaded.values()]
    assert len(ids[0]) == 6 and len(ids[1]) == 4 and not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(PreparedCohort.load(root).subject_ids)
    item = loaded["b"][0]  # subjects are read through the links
    assert item["image"].shape == (1, 16, 16, 16)
    listing = pd.read_csv(tmp_path / "split" / "split.tsv", sep="\t")
    assert set(listing.loc[listing["part"] == "b", "subject_id"]) == ids[1]
    # the same split again is fine; another one into the same folder is refused
    split_prepared(root, tmp_path / "split", {"a": 0.6, "b": 0.4}, seed=0)
    with pytest.raises(ValueError, match="different split"):
        split_prepared(root, tmp_path / "split", {"a": 0.6, "b": 0.4}, seed=1)


def test_cli_split(tmp_path, capsys):
    root = make_prepared(tmp_path / "cohort", n=10)
    assert main(["split", "--prepared", str(root), "--out", str(tmp_path / "s"), "--parts", "x=0.5,y=0.5"]) == 0
    assert "x: 5 subjects" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["split", "--prepared", str(root), "--out", str(tmp_path / "s"), "--parts", "x=half"])
