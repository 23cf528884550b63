import json

import numpy as np
import pandas as pd
import pytest

from synthbrain.preprocessing.split import split_prepared
from tests.helpers import load_benchmark, make_prepared, tiny_generator


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("downstream", monkeypatch)


def test_downstream_quick_mode_runs_every_task_and_arm(script, tmp_path, monkeypatch):
    split = tmp_path / "split"
    split_prepared(make_prepared(tmp_path / "cohort", n=18), split, {"generator": 0.34, "pool": 0.33, "test": 0.33}, seed=0)
    model = tiny_generator(distribution=True).save_pretrained(tmp_path / "model")
    out = tmp_path / "downstream"
    script.main(["--model", str(model), "--split", str(split), "--quick", "--out", str(out)])

    results = pd.read_csv(out.with_suffix(".tsv"), sep="\t")
    assert set(results["task"]) == set(script.TASKS)
    assert set(results["arm"]) == set(script.ARMS)
    pool = len(pd.read_csv(split / "pool" / "participants.tsv", sep="\t"))
    assert set(results.loc[results["arm"] == script.REAL, "n_real"]) == {4, pool}
    assert set(results.loc[results["arm"] == script.SYNTH_ONLY, "n_real"]) == {0}
    assert results.groupby(["task", "arm", "n_real"]).size().eq(3).all()  # 3 seeds in every cell
    assert np.isfinite(results["value"]).all()
    seg = results[results["task"] == "segmentation"]["value"]
    assert seg.between(0, 1).all()
    written = json.loads(out.with_suffix(".json").read_text())
    assert "--quick" in written["command"] and written["settings"]["seeds"] == 3
    summary = pd.DataFrame(written["summary"])
    assert (summary["ci95_low"] <= summary["mean"]).all() and (summary["mean"] <= summary["ci95_high"]).all()
    tests = pd.DataFrame(written["paired_tests"])
    assert set(tests["arm"]) == set(script.ARMS) - {script.REAL, script.SYNTH_ONLY}
    assert (tests["pairs"] == 6).all()  # 2 sizes x 3 seeds
    per_class = pd.DataFrame(written["dice_per_class"])  # one row per arm, one column per foreground class
    assert list(per_class["arm"]) == list(script.ARMS) and (per_class["runs"] == [6, 6, 6, 3, 6, 6]).all()
    assert [f"dice_{c}" for c in per_class.columns[2:]] == [c for c in results.columns if c.startswith("dice_")]
    compared = per_class[~per_class["arm"].isin([script.REAL, script.SYNTH_ONLY])].iloc[:, 2:]
    assert compared.map(lambda cell: ", p " in cell).all().all()  # each with its paired difference against real
    report = out.with_suffix(".md").read_text()
    assert "quick mode" in report and "](downstream.png)" in report and "## Segmentation Dice per class" in report
    assert out.with_suffix(".png").stat().st_size > 0

    # interrupted after some runs: a restart does only the missing ones and gives the same results
    runs = out.with_name("downstream.runs.tsv")
    pd.read_csv(runs, sep="\t").iloc[:-5].to_csv(runs, sep="\t", index=False)
    trained = []
    original = script._train
    monkeypatch.setattr(script, "_train", lambda *a, **k: trained.append(a[:2]) or original(*a, **k))
    script.main(["--model", str(model), "--split", str(split), "--quick", "--out", str(out)])
    assert len(trained) == 5
    again = pd.read_csv(out.with_suffix(".tsv"), sep="\t")
    pd.testing.assert_frame_equal(again, results)

    # nothing left to run: the report is rewritten without generating or training anything
    monkeypatch.setattr(script.BrainGenerator, "generate", lambda *a, **k: pytest.fail("generated with no run left"))
    script.main(["--model", str(model), "--split", str(split), "--quick", "--out", str(out)])
    assert len(trained) == 5
    pd.testing.assert_frame_equal(pd.read_csv(out.with_suffix(".tsv"), sep="\t"), results)


def test_tasks_run_one_after_another_share_the_report_until_their_settings_change(script, tmp_path):
    split = tmp_path / "split"
    split_prepared(make_prepared(tmp_path / "cohort", n=18), split, {"generator": 0.34, "pool": 0.33, "test": 0.33}, seed=0)
    model = tiny_generator(distribution=True).save_pretrained(tmp_path / "model")
    out = tmp_path / "downstream"
    common = ["--model", str(model), "--split", str(split), "--quick", "--sizes", "4", "--seeds", "2", "--out", str(out)]
    script.main([*common, "--tasks", "sex"])
    script.main([*common, "--tasks", "sex,age", "--report-only"])  # a report of what is done, marked incomplete
    assert set(pd.read_csv(out.with_suffix(".tsv"), sep="\t")["task"]) == {"sex"}
    assert f"{2 * len(script.ARMS)} of the {4 * len(script.ARMS)} runs of sex, age are not done" in out.with_suffix(".md").read_text()
    script.main([*common, "--tasks", "age"])
    assert "Incomplete" not in out.with_suffix(".md").read_text()
    assert set(pd.read_csv(out.with_suffix(".tsv"), sep="\t")["task"]) == {"sex", "age"}
    script.main([*common, "--tasks", "age", "--steps", "3"])  # other steps: every task's earlier runs no longer count
    results = pd.read_csv(out.with_suffix(".tsv"), sep="\t")
    assert set(results["task"]) == {"age"} and len(results) == 2 * len(script.ARMS)


def test_subsets_are_balanced_seeded_and_nested_in_the_pool(script):
    table = pd.DataFrame({"sex": ["F"] * 10 + ["M"] * 4})
    pick = script._subset(table, 6, seed=0)
    assert len(set(pick)) == 6 and (table["sex"].iloc[pick] == "M").sum() == 3
    assert np.array_equal(pick, script._subset(table, 6, seed=0))
    assert not np.array_equal(pick, script._subset(table, 6, seed=1))
    assert (table["sex"].iloc[script._subset(table, 12, seed=0)] == "M").sum() == 4  # all the pool has


def test_mixed_batches_hold_the_share_of_other_subjects(script):
    batches = script._mixed_batches(5, 7, 0.5, seed=0)
    drawn = [next(batches) for _ in range(20)]
    assert all(len(b) == 4 and sum(i >= 5 for i in b) == 2 for b in drawn)
    assert set(i for b in drawn for i in b) == set(range(12))
    only_real = script._mixed_batches(5, 7, 0.0, seed=0)
    assert all(max(next(only_real)) < 5 for _ in range(5))


def test_bad_arguments_are_refused(script, tmp_path):
    with pytest.raises(SystemExit):
        script.main(["--model", "x", "--split", str(tmp_path), "--tasks", "segmentation,height"])
