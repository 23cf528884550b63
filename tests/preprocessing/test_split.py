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


def _sessions_table(subjects: int, seed: int = 0) -> pd.DataFrame:
    """1 to 3 sessions per subject, two years apart; sex per subject."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(subjects):
        sex, age = rng.choice(["F", "M"]), rng.uniform(20, 80)
        for k in range(int(rng.integers(1, 4))):
            rows.append({"subject_id": f"sub-{i:02d}_ses-{k + 1}", "participant_id": f"sub-{i:02d}", "sex": sex, "age": age + 2 * k})
    return pd.DataFrame(rows)


def test_sessions_of_one_subject_never_straddle_parts():
    table = _sessions_table(60)
    parts = stratified_parts(table, FRACTIONS, seed=1)
    per_subject = parts.groupby(table["participant_id"]).nunique()
    assert (per_subject == 1).all()  # every subject's sessions in one part
    subjects = parts.groupby(table["participant_id"]).first().value_counts().to_dict()
    assert subjects == {"generator": 24, "pool": 18, "test": 18}  # the fractions count subjects
    assert parts.equals(stratified_parts(table, FRACTIONS, seed=1))


def test_subject_missing_age_in_its_first_session_is_stratified_by_a_later_one():
    table = _sessions_table(40, seed=2)
    first = table.groupby("participant_id").head(1).index
    table.loc[first[:5], "age"] = np.nan  # the later sessions of multi-session subjects still have one
    parts = stratified_parts(table, FRACTIONS, seed=0)
    assert (parts.groupby(table["participant_id"]).nunique() == 1).all()


def test_split_of_a_session_cohort_keeps_subjects_whole(tmp_path, capsys):
    root = make_prepared(tmp_path / "cohort", n=12)
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    table.insert(1, "participant_id", [f"sub-{i // 2:02d}" for i in range(12)])
    table.insert(2, "session_id", [f"ses-{i % 2 + 1}" for i in range(12)])
    table["sex"] = ["F", "F", "M", "M"] * 3
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    folders = split_prepared(root, tmp_path / "split", {"a": 0.5, "b": 0.5}, seed=0)
    owners = {name: set(PreparedCohort.load(folder).table["participant_id"]) for name, folder in folders.items()}
    assert len(owners["a"]) == len(owners["b"]) == 3 and not owners["a"] & owners["b"]
    assert len(PreparedCohort.load(folders["a"])) == 6
    listing = pd.read_csv(tmp_path / "split" / "split.tsv", sep="\t")
    assert listing.columns.tolist() == ["subject_id", "participant_id", "part"]
    assert (listing.groupby("participant_id")["part"].nunique() == 1).all()
    assert main(["split", "--prepared", str(root), "--out", str(tmp_path / "s2"), "--parts", "x=0.5,y=0.5"]) == 0
    assert "x: 6 samples of 3 subjects" in capsys.readouterr().out


def test_a_part_folder_the_split_did_not_write_is_never_deleted(tmp_path):
    prepared = make_prepared(tmp_path / "cohort", n=8)
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "precious.txt").write_text("not from a split")
    with pytest.raises(ValueError, match="exists but no split.tsv says this split wrote it"):
        split_prepared(prepared, out, {"train": 0.5, "test": 0.5}, seed=0)
    assert (out / "train" / "precious.txt").read_text() == "not from a split"


def test_a_split_written_through_a_linked_folder_reads_its_subjects(tmp_path):
    """The output path goes through a symbolic link to a folder elsewhere (a runs/ link to a data disk):
    the subjects' relative links are computed from where they really lie, so they resolve."""
    import shutil

    root = make_prepared(tmp_path / "data" / "cohort", n=4)
    real = tmp_path / "elsewhere" / "at" / "another" / "depth"
    real.mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "runs").symlink_to(real, target_is_directory=True)
    shutil.copytree(root, real / "cohort")
    runs = tmp_path / "work" / "runs"
    folders = split_prepared(runs / "cohort", runs / "split", {"a": 0.5, "b": 0.5}, seed=0)
    for folder in folders.values():
        cohort = PreparedCohort.load(folder)
        assert cohort[0]["image"].shape == (1, 16, 16, 16)


def test_prepared_cohort_is_the_reader_of_its_folder_and_writes_a_subset_of_links(tmp_path):
    """Issue 33: the stages after prepare read the folder's layout only through PreparedCohort."""
    import json

    root = make_prepared(tmp_path / "c", n=4)
    assert PreparedCohort.is_prepared(root) and not PreparedCohort.is_prepared(tmp_path)
    cohort = PreparedCohort.load(root)
    assert cohort.manifest() == json.loads((root / "manifest.json").read_text())
    assert cohort.class_names == [c["name"] for c in json.loads((root / "label_scheme.json").read_text())["classes"]]
    assert cohort.subject_folder("p01") == root / "subjects" / "p01" and (cohort.subject_folder("p01") / "t1.nii.gz").is_file()
    rows = cohort.table.iloc[[2, 0]]
    part = PreparedCohort.load(cohort.write_subset(tmp_path / "part", rows))
    assert part.subject_ids == rows["subject_id"].tolist() and part.manifest() == cohort.manifest()
    assert (tmp_path / "part" / "subjects" / rows["subject_id"].iat[0]).is_symlink()
    image, labels = part.load_subject(rows["subject_id"].iat[0])
    assert np.array_equal(image, cohort.load_subject(rows["subject_id"].iat[0])[0]) and labels is not None
    with pytest.raises(FileExistsError):
        cohort.write_subset(tmp_path / "part", rows)  # never into an existing folder
