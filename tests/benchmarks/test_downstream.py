import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch

from synthbrain import BrainGenerator, Uniform
from synthbrain.datasets.appearance import AppearanceRandomizer
from synthbrain.preprocessing.split import split_prepared
from tests.helpers import load_benchmark, make_prepared, tiny_generator

PARTS = {"generator": 0.3, "pool": 0.3, "val": 0.15, "test": 0.25}


@pytest.fixture
def script(monkeypatch):
    return load_benchmark("downstream", monkeypatch)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    split = root / "split"
    split_prepared(make_prepared(root / "cohort", n=24), split, PARTS, seed=0)
    other = make_prepared(root / "other-site", n=5, seed=3)  # a second test cohort, never trained on
    model = tiny_generator(distribution=True, steps=2).save_pretrained(root / "model")
    return {"split": split, "other": other, "model": model}


def _table(out):
    return pd.read_csv(out.with_name(out.name + ".subjects.tsv.gz"), sep="\t", keep_default_na=False, na_values=["n/a"])


def test_quick_mode_end_to_end_and_resume_after_a_kill_gives_the_same_table(script, setup, tmp_path, monkeypatch):
    out = tmp_path / "downstream"
    argv = ["--model", str(setup["model"]), "--split", str(setup["split"]), "--test", str(setup["other"]), "--pretrained"]
    argv += [str(setup["model"]), "--quick", "--tasks", "segmentation,sex", "--out", str(out)]
    arms = ",".join([script.REAL, script.GENERATED, script.REAL_RANDOMIZED, script.SYNTH_ONLY, script.PRETRAINED])
    generator = BrainGenerator.from_pretrained(setup["model"])
    classes = list(generator.label_classes)
    parts = {name: script._load(setup["split"] / name, generator.image_grid, classes) for name in ("pool", "val", "test")}
    trained, train = [], script._train
    monkeypatch.setattr(script, "_train", lambda task, arm, chosen, *a: trained.append((task, arm, chosen)) or train(task, arm, chosen, *a))
    record = script.main([*argv, "--arms", arms])
    monkeypatch.setattr(script, "_train", train)
    table = _table(out)
    # every arm at (task, n, seed) trains on real-only's real subjects there: the n pool subjects drawn with (n, seed)
    keys = table[["task", "arm", "n", "seed"]].drop_duplicates().itertuples(index=False)  # in the order the runs were made
    chosen = {}
    for (task, arm, n, seed), (trained_task, trained_arm, subjects) in zip(keys, trained, strict=True):
        assert (trained_task, trained_arm) == (task, arm)
        if n:
            chosen.setdefault((task, n, seed), {})[arm] = subjects.tolist()
    assert {k for k, v in chosen.items() if v} == {(t, n, s) for t in ("segmentation", "sex") for n in (2, 4) for s in (0, 1)}
    for (task, n, seed), by_arm in chosen.items():
        assert by_arm[script.REAL] == script._subset(parts["pool"]["table"], n, seed).tolist() and len(by_arm[script.REAL]) == n
        assert all(subjects == by_arm[script.REAL] for subjects in by_arm.values()), (task, n, seed, by_arm)
    # scored on the test cohorts: the truth recorded per test subject is that subject's
    male = table[(table["metric"] == "male") & (table["cohort"] == script.SPLIT_TEST)].groupby("subject")["value"].first()
    assert male.tolist() == (parts["test"]["table"]["sex"] == "M").astype(float).tolist()
    runs = table[["task", "arm", "n", "seed"]].drop_duplicates()
    # real-only at every size, augmented arms at the smallest and largest, synthetic only once per seed
    seg = runs[runs["task"] == "segmentation"]
    assert sorted(seg[seg["arm"] == script.REAL]["n"].unique()) == [2, 4]
    assert sorted(seg[seg["arm"] == script.SYNTH_ONLY]["n"].unique()) == [0]
    assert len(runs[runs["task"] == "sex"]) == 2 * (2 + 2 + 1 + 2)  # 2 seeds x (real 2 sizes, generated 2, synthetic only 1, pretrained 2)
    assert (table.groupby(["task", "arm", "n", "seed"]).size() > 0).all()
    # the pretrained model's arm is scored on the other cohort only; every other arm on both
    assert set(table.loc[table["arm"] == script.PRETRAINED, "cohort"]) == {"other-site"}
    assert set(table.loc[table["arm"] == script.REAL, "cohort"]) == {script.SPLIT_TEST, "other-site"}
    dice = table[(table["metric"] == "dice") | table["metric"].str.startswith("dice,")]["value"].dropna()
    assert dice.between(0, 1).all() and len(dice)
    assert {f"dice, {s}" for s in script.SHIFTS} <= set(table["metric"])
    assert "ventricular volume error (mL)" in set(table["metric"])
    report = out.with_suffix(".md").read_text()
    assert "quick mode" in report and "Validity gate" in report and "Shifted-domain test" in report
    assert "## Guidance: which share or schedule" in report  # + generated (share 0.5) is a share arm
    assert "](downstream.png)" in report and out.with_suffix(".png").stat().st_size > 0
    # what was cut is named in the report itself: the age task and the arms not chosen
    line = next(line for line in report.splitlines() if line.startswith("**Not in this report**"))
    not_run = set(line.split(": ", 1)[1].rstrip(".").split("; "))
    assert {"task age", "segmentation: + randomized generated anatomy", "sex: + more real (upper reference)"} <= not_run
    assert not {"segmentation: real only", "sex: + generated", "sex: + pretrained model"} & not_run
    written = json.loads(out.with_suffix(".json").read_text())
    assert set(written["tasks"]) == {"segmentation", "sex"} and "gate" in written["tasks"]["segmentation"]
    assert {(g["task"], g["n"], g["best"]) for g in written["guidance"]} == {
        (t, n, script.GENERATED) for t in ("segmentation", "sex") for n in (2, 4)
    }
    for cell in written["tasks"]["segmentation"]["cells"]:  # bootstrap intervals stay inside Dice's range
        estimate = cell["estimate"]
        assert 0 <= estimate["low"] <= estimate["value"] <= estimate["high"] <= 1
    for cell in written["tasks"]["sex"]["cells"]:  # and inside AUC's
        estimate = cell["estimate"]
        assert np.isnan(estimate["value"]) or 0 <= estimate["low"] <= estimate["high"] <= 1
    assert record["sizes"] == [2, 4]

    # killed after some runs: a restart runs only the missing ones and gives the same table
    complete = _table(out)
    keys = complete[["task", "arm", "n", "seed"]].drop_duplicates()
    kept = keys.iloc[:-3]
    truncated = complete.merge(kept, on=["task", "arm", "n", "seed"])
    truncated.to_csv(out.with_name(out.name + ".subjects.tsv.gz"), sep="\t", index=False, na_rep="n/a", compression="gzip")
    trained = []
    original = script._train
    monkeypatch.setattr(script, "_train", lambda *a, **k: trained.append(a[:2]) or original(*a, **k))
    script.main([*argv, "--arms", arms])
    assert len(trained) == 3
    again = _table(out)
    key = ["task", "arm", "n", "seed", "cohort", "subject", "metric"]
    pd.testing.assert_frame_equal(
        again.sort_values(key).reset_index(drop=True), complete.sort_values(key).reset_index(drop=True), check_exact=False, atol=1e-6
    )
    # nothing left to run: the report is rewritten without generating or training anything
    monkeypatch.setattr(script.BrainGenerator, "generate", lambda *a, **k: pytest.fail("generated with no run left"))
    script.main([*argv, "--arms", arms])
    assert len(trained) == 3


def test_the_gate_passes_a_rising_learning_curve_and_fails_a_flat_one(script):
    rng = np.random.default_rng(0)

    def rows(gain: float) -> pd.DataFrame:
        out = []
        for n, level in ((4, 0.70), (40, 0.70 + gain)):
            for seed in range(5):
                for subject in range(20):
                    value = float(np.clip(level + rng.normal(0, 0.02), 0, 1))
                    out.append({"task": "segmentation", "arm": script.REAL, "n": n, "seed": seed, "cohort": script.SPLIT_TEST})
                    out[-1] |= {"subject": subject, "metric": "dice", "value": value}
        return pd.DataFrame(out)

    rising, flat = script._gate(rows(0.08), "segmentation", [4, 40]), script._gate(rows(0.0), "segmentation", [4, 40])
    assert rising["passed"] and rising["difference"]["low"] > 0
    assert not flat["passed"] and flat["difference"]["low"] <= 0 <= flat["difference"]["high"]
    assert "fails" in flat["text"] and "passes" in rising["text"]


def test_subsets_are_balanced_seeded_and_skip_subjects_without_covariates(script):
    table = pd.DataFrame({"sex": ["F"] * 10 + ["M"] * 4 + [None], "age": [50.0] * 15})
    pick = script._subset(table, 6, seed=0)
    assert len(set(pick)) == 6 and (table["sex"].iloc[pick] == "M").sum() == 3 and 14 not in pick
    assert np.array_equal(pick, script._subset(table, 6, seed=0)) and not np.array_equal(pick, script._subset(table, 6, seed=1))
    assert len(script._subset(table, 14, seed=0)) == 14  # every complete subject: one sex runs out first
    with pytest.raises(ValueError, match="n=15 real subjects asked for; the pool has 14"):
        script._subset(table, 15, seed=0)  # was an endless loop


def test_bad_input_is_refused_before_any_training(script, setup, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "_train", lambda *a, **k: pytest.fail("trained despite bad input"))
    common = ["--model", str(setup["model"]), "--split", str(setup["split"]), "--quick", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="--tasks 'segmentation,height': unknown \\['height'\\]"):
        script.main([*common, "--tasks", "segmentation,height"])
    with pytest.raises(SystemExit, match="--arms 'real,magic': unknown \\['magic'\\]"):
        script.main([*common, "--arms", "real,magic"])
    for arm, message in (
        ("generated-1.5", r"--arms generated-1.5: a share of 1.5; allowed: generated-S with S in \[0, 1\]"),
        ("generated--0.1", r"--arms generated--0.1: a share of -0.1; allowed"),
        ("generated-half", r"--arms 'real,generated-half': unknown \['generated-half'\]"),
        ("generated-nan", r"--arms generated-nan: a share of nan; allowed"),
    ):
        with pytest.raises(SystemExit, match=message):
            script.main([*common, "--arms", f"real,{arm}"])
    with pytest.raises(SystemExit, match="--sizes 2,99: allowed 2 .. "):
        script.main([*common, "--sizes", "2,99"])
    no_val = tmp_path / "split-without-val"
    split_prepared(make_prepared(tmp_path / "c", n=12), no_val, {"generator": 0.4, "pool": 0.3, "test": 0.3}, seed=0)
    with pytest.raises(SystemExit, match="no part 'val'"):
        script.main(["--model", str(setup["model"]), "--split", str(no_val), "--quick", "--out", str(tmp_path / "y")])
    other_grid = make_prepared(tmp_path / "other-grid", n=4, shape=(24, 24, 24))
    with pytest.raises(SystemExit, match="other-grid"):
        script.main([*common, "--test", str(other_grid)])
    other_scheme = make_prepared(tmp_path / "other-scheme", n=4)
    scheme = (other_scheme / "label_scheme.json").read_text()
    (other_scheme / "label_scheme.json").write_text(scheme.replace('"brainstem"', '"brain_stem"'))  # another class name
    with pytest.raises(SystemExit, match=r"other-scheme: label classes \[.*'brain_stem'\]; allowed: the model's \[.*'brainstem'\]"):
        script.main([*common, "--test", str(other_scheme)])
    with pytest.raises(SystemExit, match="--pretrained: its arm is reported only on --test cohorts"):
        script.main([*common, "--pretrained", str(setup["model"])])
    # the package's device check (synthbrain.device.resolve_device), its wording, naming the flag
    with pytest.raises(SystemExit, match=r"^--device 'tpu0'; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'$"):
        script.main([*common, "--device", "tpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match=r"^--device 'cuda': CUDA is not available on this machine; allowed: 'cpu'$"):
            script.main([*common, "--device", "cuda"])


def test_gpu_runs_are_kept_apart_from_cpu_runs(script):
    args = script._parse(["--model", "m", "--split", "s"])
    cpu = script._config("segmentation", script.FULL, args, torch.device("cpu"))
    # mixing through MixedBatchSampler (issue 31) changed the floating-point path: a new hash, not v3's e0fce61b7b6a
    # (whose runs stay in the committed table); a change of this one would orphan the runs made with it
    assert cpu == "d668ffcb269b"
    assert cpu != script._config("segmentation", script.FULL, args, torch.device("cuda"))
    assert cpu != script._config("age", script.FULL, args, torch.device("cpu"))


def test_each_arm_trains_on_the_chosen_real_subjects_and_its_own_pool(script, setup, monkeypatch):
    """What each arm's network sees, spied at the augmentation of every training volume (and its
    model selection, at the validation score: on the validation part): the real
    volumes are exactly the chosen pool subjects with their own targets (all of them over the run,
    none for generated-only), the extra volumes come from the arm's own source with their own
    targets, in the arm's share (half of every batch; the first half of the steps for pretraining;
    all for generated-only). Each pool is what its arm says: generated volumes reproduce from their
    seeds, the randomised ones are renders of the generated label maps, the spread ones have
    covariates drawn uniformly over the model's range."""
    import argparse

    generator = BrainGenerator.from_pretrained(setup["model"])
    classes, affine = list(generator.label_classes), generator.image_grid.affine
    parts = {name: script._load(setup["split"] / name, generator.image_grid, classes) for name in ("generator", "pool", "val", "test")}
    marked = parts["pool"]["labels"].clone()  # the tiny cohort's label maps repeat; one marker voxel each makes them all differ
    for j in range(len(marked)):
        marked[j, 0, 0, j] = 1
    parts["pool"] = {**parts["pool"], "labels": marked}
    settings = {**script.QUICK, "synthetic": 4}
    args = argparse.Namespace(pretrained=str(setup["model"]))
    pools = script._synthetic_pools(generator, args, settings, classes, tuple(script.ARMS))

    def reproduced(pool, **kwargs):
        return torch.cat([generator.generate(seed=[int(s)], **kwargs).images for s in pool["table"]["seed"]])

    torch.testing.assert_close(pools["generated"]["images"], reproduced(pools["generated"]), atol=1e-5, rtol=0)
    schema = generator.schema
    uniform = Uniform(**{k: (schema[k].low, schema[k].high) for k in ("age", "ventricular_volume")}, sex=list(schema["sex"].categories))
    torch.testing.assert_close(pools["spread"]["images"], reproduced(pools["spread"], cond_sampler=uniform), atol=1e-5, rtol=0)
    torch.testing.assert_close(pools["pretrained"]["images"], reproduced(pools["pretrained"]), atol=1e-5, rtol=0)  # the same model here
    seeds = [set(pools[name]["table"]["seed"]) for name in ("generated", "spread", "pretrained")]
    assert not (seeds[0] & seeds[1] or seeds[0] & seeds[2] or seeds[1] & seeds[2])  # each pool its own draws
    assert torch.equal(pools["randomized"]["labels"], pools["generated"]["labels"])
    for i, labels in enumerate(pools["generated"]["labels"]):  # renders of the generated label maps
        render = AppearanceRandomizer()(labels, len(classes), affine, seed=20_000 + i)[0]
        torch.testing.assert_close(pools["randomized"]["images"][i], render)
    assert torch.equal(pools["both"]["images"][0::2], pools["generated"]["images"][0::2])  # alternating, as the sampler
    assert torch.equal(pools["both"]["images"][1::2], pools["randomized"]["images"][1::2])  # takes them in index order

    seen, validated = [], []
    augment, validation_score = script._augment, script._validation_score
    monkeypatch.setattr(script, "_augment", lambda image, target, task: seen.append((image, target)) or augment(image, target, task))

    def validation_spy(task, model, x_val, val, *a):
        validated.append(torch.equal(x_val, script._inputs(task, parts["val"])) and val["table"].equals(parts["val"]["table"]))
        return validation_score(task, model, x_val, val, *a)

    monkeypatch.setattr(script, "_validation_score", validation_spy)
    chosen = script._subset(parts["pool"]["table"], 3, seed=1)
    halves = {script.GENERATED, script.RANDOMIZED, script.REAL_RANDOMIZED, script.BOTH, script.SPREAD, script.UPPER, script.PRETRAINED}
    for task in ("segmentation", "sex"):
        real_x, real_y = script._inputs(task, parts["pool"]), script._targets(task, parts["pool"])
        for arm in script.TASK_ARMS[task]:
            _, source, use, _ = script.ARMS[arm]
            seen.clear()
            script._train(task, arm, chosen, parts, pools, settings, 1, len(classes), torch.device("cpu"))
            schedule, steps = script._plan(arm, settings["steps"][task])
            assert len(seen) == 4 * steps
            real = [next((j for j in range(len(real_x)) if torch.equal(x, real_x[j])), None) for x, _ in seen]
            extra = [k for k, j in enumerate(real) if j is None]
            for (_, y), j in zip(seen, real):
                if j is not None:
                    assert torch.equal(y, real_y[j]), (task, arm)  # each real volume with its own target
            shares = [schedule(t) for t in range(steps)]  # exact fractions, or floats read as the decimals they print as
            due = sum((x if isinstance(x, (int, Fraction)) else Fraction(str(x)) for x in shares), Fraction(0)) * 4
            assert len(extra) == math.floor(due + Fraction(1, 2)), (task, arm)
            if arm in halves:
                assert len(extra) == 2 * steps, (task, arm)  # a known answer: half of every batch of 4
            if use in ("pretrain", "first"):
                assert extra == list(range(len(extra)))  # the first steps
            if use != "only":
                assert {j for j in real if j is not None} == set(chosen.tolist()), (task, arm)
            if source == "real randomized":  # renders of the chosen real label maps
                assert all(any(torch.equal(seen[k][1], real_y[j]) for j in chosen) for k in extra), arm
                continue
            if not extra:
                continue
            part = parts["generator"] if source == "generator part" else pools[source]
            pool_x, pool_y = script._inputs(task, part), script._targets(task, part)
            for k in extra:
                x, y = seen[k]
                match = next((j for j in range(len(pool_x)) if torch.equal(x, pool_x[j])), None)
                assert match is not None and torch.equal(y, pool_y[match]), (task, arm)
    assert validated and all(validated)  # model selection on the validation part, never the test part


class _Levels(torch.nn.Module):
    """Segments by intensity: each voxel gets the class whose level (evenly spaced in [0, 1]) is nearest."""

    def __init__(self, num_classes):
        super().__init__()
        self.levels = torch.linspace(0, 1, num_classes)[None, :, None, None, None]

    def forward(self, x):
        return -((x - self.levels) ** 2)


class _MeanLogit(torch.nn.Module):
    """One output per volume from its mean intensity (a stand-in for the age and sex networks)."""

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3, 4)) - 0.2)[:, None] * 10


def test_scores_are_of_each_test_cohort_its_truths_and_its_shifted_images(script, setup):
    """A network that segments by intensity: each test subject's Dice is that of its prediction on
    its own image against its own label map, under a shift on its shifted image (which changes the
    Dice somewhere), the ventricular volume error against its own volume; age and sex against its
    own table; the pretrained model's arm on the other cohorts only."""
    from synthbrain.evaluation.segmenter import dice_per_class
    from synthbrain.evaluation.shifts import SHIFTS, shifted_set

    generator = BrainGenerator.from_pretrained(setup["model"])
    grid, classes, cpu = generator.image_grid, list(generator.label_classes), torch.device("cpu")
    cohorts = {script.SPLIT_TEST: setup["split"] / "test", "other-site": setup["other"]}
    cohorts = {name: script._load(folder, grid, classes) for name, folder in cohorts.items()}
    shifted = {(name, shift): shifted_set(shift, c["images"], grid.affine, seed=7) for name, c in cohorts.items() for shift in SHIFTS}
    rows = script._score("segmentation", script.REAL, _Levels(len(classes)), cohorts, shifted, classes, grid, cpu)

    def got(name, metric):
        return rows[(rows["cohort"] == name) & (rows["metric"] == metric)].sort_values("subject")["value"].to_numpy()

    def dice(images, truth):
        predicted = _Levels(len(classes))(images).argmax(1)
        return np.array([np.nanmean(dice_per_class(t, p, len(classes))[1:]) for t, p in zip(truth.numpy(), predicted.numpy())])

    changed = False
    for name, cohort in cohorts.items():
        plain = dice(cohort["images"], cohort["labels"])
        np.testing.assert_allclose(got(name, "dice"), plain)
        predicted = _Levels(len(classes))(cohort["images"]).argmax(1)
        found = (predicted == classes.index("ventricles")).flatten(1).sum(1).numpy() * grid.voxel_volume_mm3 / 1000
        np.testing.assert_allclose(got(name, "ventricular volume error (mL)"), np.abs(found - cohort["ventricles_ml"].numpy()), rtol=1e-6)
        for shift in script.SHIFTS:
            under = dice(shifted[(name, shift)], cohort["labels"])
            np.testing.assert_allclose(got(name, f"dice, {shift}"), under)
            changed |= not np.allclose(under, plain)
    assert changed  # the shifts change this network's Dice: a score of the unshifted images would show
    pretrained = script._score("segmentation", script.PRETRAINED, _Levels(len(classes)), cohorts, shifted, classes, grid, cpu)
    assert set(pretrained["cohort"]) == {"other-site"}
    for task in ("age", "sex"):
        rows = script._score(task, script.REAL, _MeanLogit(), cohorts, shifted, classes, grid, cpu)
        for name, cohort in cohorts.items():
            out = _MeanLogit()(script._inputs(task, cohort))[:, 0].numpy()
            table = cohort["table"]
            if task == "age":
                error = np.abs(out * 20 + 50 - table["age"].to_numpy(float))
                np.testing.assert_allclose(got(name, "absolute error (years)"), error, rtol=1e-6)
            else:
                np.testing.assert_allclose(got(name, "p(male)"), 1 / (1 + np.exp(-out)), rtol=1e-6)
                np.testing.assert_array_equal(got(name, "male"), (table["sex"] == "M").to_numpy(float))


@pytest.fixture(scope="module")
def training(setup):
    """What ``_train`` needs, from the tiny split and generator (quick settings, one synthetic pool)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import downstream as script
    finally:
        sys.path.pop(0)
    from synthbrain import BrainGenerator

    generator = BrainGenerator.from_pretrained(setup["model"])
    grid, classes = generator.image_grid, list(generator.label_classes)
    parts = {name: script._load(setup["split"] / name, grid, classes) for name in ("generator", "pool", "val")}
    args = script._parse(["--model", str(setup["model"]), "--split", str(setup["split"])])
    settings = dict(script.QUICK)
    pools = script._synthetic_pools(generator, args, settings, classes, (script.GENERATED,))
    chosen = script._subset(parts["pool"]["table"], 2, seed=0)
    return {"parts": parts, "pools": pools, "settings": settings, "chosen": chosen, "classes": len(classes)}


def _weights(script, training, arm, task="segmentation"):
    t = training
    model = script._train(task, arm, t["chosen"], t["parts"], t["pools"], t["settings"], 0, t["classes"], torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_share_of_0_is_the_real_only_run_bit_for_bit(script, training):
    # a share a named arm has is that arm (one label per arm in the report)
    assert script._arm_names("real,generated-0,generated-0.5,generated-0.10") == (
        script.REAL,
        "generated-0",
        script.GENERATED,
        script.SHARE_10,
    )
    assert "generated-0.5" not in script.ARMS and len({label for label, *_ in script.ARMS.values()}) == len(script.ARMS)
    for task in ("segmentation", "sex"):
        real, zero = _weights(script, training, script.REAL, task), _weights(script, training, "generated-0", task)
        assert all(torch.equal(real[k], zero[k]) for k in real)
    real, half = _weights(script, training, script.REAL), _weights(script, training, script.GENERATED)
    assert not all(torch.equal(real[k], half[k]) for k in real)  # mixing does change the network


def test_the_arms_schedules_give_their_planned_synthetic_totals(script, training, monkeypatch):
    seen = []
    original = script._augment
    monkeypatch.setattr(script, "_augment", lambda image, target, task: seen.append(image) or original(image, target, task))
    pool = training["pools"]["generated"]["images"]
    steps = training["settings"]["steps"]["segmentation"]  # 4
    # per arm: its steps and its synthetic total, the exact sum of share * batch size over the steps (rounded half up)
    for arm, total_steps, synthetic in (
        (script.SHARE_25, steps, 4),  # 0.25 of 16
        (script.SHARE_10, steps, 2),  # 0.1 of 16 = 1.6
        (script.LINEAR, steps, 5),  # 0.5 * (4 + 3 + 2 + 1) / 4 * 4 = 5
        (script.PRETRAIN, steps, 8),  # the first 2 of 4 steps
        (script.FIRST, steps + steps // 2, 8),  # 2 synthetic steps, then 4 real ones
        (script.REAL_LONG, steps + steps // 2, 0),  # its control: as many steps, real only
    ):
        seen.clear()
        schedule, planned = script._plan(arm, steps)
        assert planned == total_steps
        _weights(script, training, arm)
        assert len(seen) == 4 * total_steps
        from_pool = [any(torch.equal(image, p) for p in pool) for image in seen]
        assert sum(from_pool) == synthetic
        assert sum(float(schedule(t)) for t in range(total_steps)) * 4 == pytest.approx(synthetic, abs=0.5)
    seen.clear()
    _weights(script, training, script.FIRST)
    from_pool = [any(torch.equal(image, p) for p in pool) for image in seen]
    assert [sum(from_pool[4 * t : 4 * t + 4]) for t in range(6)] == [4, 4, 0, 0, 0, 0]  # synthetic first, then real


def test_generated_first_is_checked_against_real_only_trained_as_long(script):
    """The guidance does not credit generated images with the gain of generated-first's 1.5 times the steps."""
    # n = 4: generated-first gains 0.05, all of it from the longer training (real-long gains as much);
    # n = 40: generated-first gains 0.05, real-long nothing
    gains = {(script.REAL, 4): 0.0, (script.REAL, 40): 0.08, (script.FIRST, 4): 0.05, (script.REAL_LONG, 4): 0.05}
    gains |= {(script.FIRST, 40): 0.13, (script.REAL_LONG, 40): 0.08, (script.SHARE_10, 4): 0.0, (script.SHARE_10, 40): 0.08}
    rows = _runs(script, gains, seed=1)
    table, record = script._guidance(rows, ["segmentation"], {"segmentation": script._gate(rows, "segmentation", [4, 40])})
    first = script.ARMS[script.FIRST][0]
    assert [r["best setting"] for r in table] == [f"({first}: the longer training)", first]
    assert table[0]["guidance"] == (
        "no setting helps: train on real subjects only; "
        "generated first beats real only, but not real only trained as long: its gain is the longer training's"
    )
    assert table[1]["guidance"] == "helps (1 of 2 settings help)"
    assert not record[0]["significant"] and record[1]["significant"]
    assert record[0]["against_real_long"]["value"] == pytest.approx(0.0, abs=0.002)
    assert record[1]["against_real_long"]["value"] == pytest.approx(0.05, abs=0.002)
    assert script.REAL_LONG not in record[0]["calls"]  # a control, not a setting to recommend


def test_the_guidance_table_is_generated_from_the_runs(script):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, size=(5, 20))  # seeds x subjects, shared by the arms (paired)
    # (arm, n) -> the true gain over real-only
    gains = {
        (script.REAL, 4): 0.0,
        (script.REAL, 40): 0.08,
        (script.SHARE_10, 4): 0.05,
        (script.GENERATED, 4): 0.02,
        (script.SHARE_25, 4): 0.06,  # the best point estimate, but noisy over seeds: not significant, so not the advice
        (script.SHARE_10, 40): 0.08,
        (script.GENERATED, 40): 0.05,
    }
    rows = []
    for (arm, n), gain in gains.items():
        spread = np.array([[0.2], [-0.2], [0.2], [-0.2], [0.05]]) if arm == script.SHARE_25 else 0  # per seed
        values = np.clip(base + gain + spread + rng.normal(0, 0.002, base.shape), 0, 1)
        for (seed, subject), value in np.ndenumerate(values):
            rows.append({"task": "segmentation", "arm": arm, "n": n, "seed": seed, "cohort": script.SPLIT_TEST})
            rows[-1] |= {"subject": subject, "metric": "dice", "value": float(value)}
    rows = pd.DataFrame(rows)
    gates = {"segmentation": script._gate(rows, "segmentation", [4, 40])}
    table, record = script._guidance(rows, ["segmentation"], gates)
    assert [(r["real n"], r["best setting"]) for r in table] == [
        (4, "+ generated, share 0.1"),
        (40, "(+ generated, share 0.1: not significant)"),
    ]
    assert table[0]["guidance"] == "helps (2 of 3 settings help)"
    assert table[1]["guidance"] == 'no setting helps: train on real subjects only; hurts: "+ generated, share 0.5"'
    assert record[0]["difference"]["value"] == pytest.approx(0.05, abs=0.002) and record[0]["significant"]
    assert record[1]["calls"] == {script.SHARE_10: "no clear difference", script.GENERATED: "hurts"}
    failed = script._guidance(rows, ["segmentation"], {"segmentation": {"passed": False}})[0]
    assert [r["guidance"] for r in failed] == ["no verdict (gate failed)"] * 2


def test_runs_of_other_configurations_stay_in_the_table(script, setup, tmp_path, monkeypatch):
    out = tmp_path / "downstream"
    table = out.with_name(out.name + ".subjects.tsv.gz")
    old = pd.DataFrame([{"config": "e0fce61b7b6a", "task": "sex", "arm": "real", "n": 2, "seed": 0, "cohort": "split test"}])
    old[["subject", "metric", "value"]] = [0, "p(male)", 0.25]
    old.to_csv(table, sep="\t", index=False, compression="gzip")
    fake = pd.DataFrame(
        [
            {"cohort": script.SPLIT_TEST, "subject": s, "metric": m, "value": v}
            for s in range(4)
            for m, v in (("p(male)", s / 4), ("male", s % 2))
        ]
    )
    monkeypatch.setattr(script, "_train", lambda *a, **k: None)
    monkeypatch.setattr(script, "_score", lambda *a, **k: fake.copy())
    argv = [
        "--model",
        str(setup["model"]),
        "--split",
        str(setup["split"]),
        "--quick",
        "--tasks",
        "sex",
        "--arms",
        "real",
        "--out",
        str(out),
    ]
    script.main(argv)
    written = _table(out)
    assert (written["config"] == "e0fce61b7b6a").sum() == 1 and len(written) == 1 + 2 * 2 * len(fake)  # 2 sizes x 2 seeds


def test_share_arms_run_at_every_size_for_segmentation_and_at_the_ends_for_age(script, setup, tmp_path, monkeypatch):
    def fake_score(task, arm, *args, **kwargs):
        return pd.DataFrame([{"cohort": script.SPLIT_TEST, "subject": s, "metric": script.HEADLINE[task], "value": 0.5} for s in range(3)])

    monkeypatch.setattr(script, "_train", lambda *a, **k: None)
    monkeypatch.setattr(script, "_score", fake_score)
    out = tmp_path / "downstream"
    argv = ["--model", str(setup["model"]), "--split", str(setup["split"]), "--quick", "--tasks", "segmentation,age"]
    script.main([*argv, "--sizes", "2,3,4", "--arms", f"real,{script.SHARE_10},{script.RANDOMIZED},generated-0.6", "--out", str(out)])
    runs = _table(out)[["task", "arm", "n", "seed"]].drop_duplicates()
    sizes = runs.groupby(["task", "arm"])["n"].apply(lambda n: sorted(set(n))).to_dict()
    assert sizes == {
        ("segmentation", script.REAL): [2, 3, 4],
        ("segmentation", script.SHARE_10): [2, 3, 4],
        ("segmentation", "generated-0.6"): [2, 3, 4],
        ("segmentation", script.RANDOMIZED): [2, 4],
        ("age", script.REAL): [2, 3, 4],
        ("age", script.SHARE_10): [2, 4],
        ("age", "generated-0.6"): [2, 4],
    }
    assert script._plan("generated-0.6", 10)[0](9) == pytest.approx(0.6)


def test_the_headline_table_gives_every_setting_per_n_against_real_only(script):
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.7, size=(5, 20))
    gains = {(script.REAL, 4): 0.0, (script.REAL, 40): 0.08, (script.GENERATED, 4): 0.03, (script.GENERATED, 40): 0.06}
    gains |= {(script.SHARE_10, 4): 0.01, (script.SHARE_10, 40): 0.09, (script.REAL_LONG, 40): 0.1, (script.UPPER, 40): 0.2}
    rows = []
    for (arm, n), gain in gains.items():
        for (seed, subject), value in np.ndenumerate(base + gain):
            rows.append({"task": "segmentation", "arm": arm, "n": n, "seed": seed, "cohort": script.SPLIT_TEST})
            rows[-1] |= {"subject": subject, "metric": "dice", "value": float(value)}
    [(task, table)] = script._headline(pd.DataFrame(rows), ["segmentation"])
    assert task == "segmentation"
    # real-only's value first, then the shares in increasing order and the control; other arms (upper) are not settings
    assert [r["setting"] for r in table] == [
        "real only (its value)",
        *(script.ARMS[a][0] for a in (script.SHARE_10, script.GENERATED, script.REAL_LONG)),
    ]
    assert table[0]["n = 4"] == script._cell(
        script._estimate(pd.DataFrame(rows), "segmentation", script.REAL, 4, script.SPLIT_TEST, "dice")
    )
    assert table[1]["n = 4"].startswith("+0.010 [") and table[1]["n = 40"].startswith("+0.010 [")
    assert table[2]["n = 4"].startswith("+0.030 [") and table[2]["n = 40"].startswith("-0.020 [")
    assert table[3] == {"setting": script.ARMS[script.REAL_LONG][0], "n = 4": "-", "n = 40": table[3]["n = 40"]}
    assert table[3]["n = 40"].startswith("+0.020 [")


def _runs(script, gains, seed=3):
    """Per-subject rows of ``gains`` ((arm, n) -> true gain over a shared base, seeds x subjects), almost noiseless."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.7, size=(5, 20))
    rows = []
    for (arm, n), gain in gains.items():
        for (seed_, subject), value in np.ndenumerate(np.clip(base + gain + rng.normal(0, 0.002, base.shape), 0, 1)):
            rows.append({"task": "segmentation", "arm": arm, "n": n, "seed": seed_, "cohort": script.SPLIT_TEST})
            rows[-1] |= {"subject": subject, "metric": "dice", "value": float(value)}
    return pd.DataFrame(rows)


def test_generated_first_is_not_recommended_where_its_control_did_not_run_or_it_beats_real_only_only_by_training_longer(script):
    # n = 10: generated-first helps but real-long did not run there; n = 40: it helps only as much as real-long,
    # while share 0.1 helps less but for real
    gains = {(script.REAL, 4): 0.0, (script.REAL, 10): 0.04, (script.REAL, 40): 0.08, (script.FIRST, 10): 0.09}
    gains |= {(script.SHARE_10, 10): 0.04, (script.FIRST, 40): 0.14, (script.REAL_LONG, 40): 0.14, (script.SHARE_10, 40): 0.1}
    rows = _runs(script, gains)
    table, record = script._guidance(rows, ["segmentation"], {"segmentation": script._gate(rows, "segmentation", [4, 40])})
    first, share = script.ARMS[script.FIRST][0], script.ARMS[script.SHARE_10][0]
    assert [r["real n"] for r in table] == [10, 40]
    assert table[0]["best setting"] == f"({first}: not checked)" and not record[0]["significant"]
    assert table[0]["guidance"] == (
        "no setting helps: train on real subjects only; "
        "generated first beats real only, but real only trained as long did not run at this n (not checked)"
    )
    assert table[0]["generated first vs real-only trained as long"] == "-" and record[0]["against_real_long"] is None
    assert table[1]["best setting"] == share and record[1]["best"] == script.SHARE_10
    assert table[1]["guidance"] == (
        "helps (1 of 2 settings help); "
        "generated first beats real only, but not real only trained as long: its gain is the longer training's"
    )
    assert record[1]["against_real_long"]["value"] == pytest.approx(0.0, abs=0.003)
    assert table[1]["generated first vs real-only trained as long"] == script._cell(
        script._estimate(rows, "segmentation", script.FIRST, 40, script.SPLIT_TEST, "dice", reference=(script.REAL_LONG, 40)), signed=True
    )
    assert record[1]["generated_first_set_aside"] == "the longer training" and record[1]["calls"][script.FIRST] == "helps"
    failed = {"segmentation": {"passed": False, "text": "fails"}}
    assert [r["guidance"] for r in script._guidance(rows, ["segmentation"], failed)[0]] == ["no verdict (gate failed)"] * 2
