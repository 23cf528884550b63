"""End to end on tiny data: a random tiny generator against a tiny prepared cohort. The numbers
mean nothing here; what is checked is that every section is computed, written and reused."""

import json
import re

import numpy as np
import pytest
import torch

from synthbrain.autoencoder.model import BrainAutoencoder
from synthbrain.cli import main
from synthbrain.evaluation.evaluate import evaluate, load_cohort_on_grid
from synthbrain.evaluation.evaluators import Evaluators, EvaluatorSettings
from synthbrain.evaluation.features import FeatureExtractor
from synthbrain.evaluation.metrics import frechet_distance
from tests.helpers import make_prepared, tiny_generator

VOLUMES = ("ventricular_volume", "brain_volume")  # the volume covariates of the default schema

TINY = EvaluatorSettings(segmenter_channels=(4, 8), segmenter_steps=3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("cohort") / "real", n=12)


def test_deepbet_features_are_deterministic_and_identical_sets_have_zero_distance():
    extractor = FeatureExtractor()
    volumes = torch.rand(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = extractor(volumes, 4.0), extractor(volumes, 4.0)
    assert a.shape == (3, 224) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert frechet_distance(np.concatenate([a, a]), np.concatenate([b, b])) == pytest.approx(0.0, abs=1e-6)
    assert not np.allclose(a[0], a[1])  # different volumes, different features
    with pytest.raises(ValueError, match="volumes: shape"):
        extractor(volumes[:, 0], 4.0)
    with pytest.raises(ValueError, match="spacing_mm="):
        extractor(volumes, 0.0)


def test_missing_feature_network_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'none.pt'} does not exist")):  # torch.jit.load's message
        FeatureExtractor(tmp_path / "none.pt")


def test_evaluators_round_trip_through_safetensors(cohort, tmp_path):
    generator = tiny_generator()
    real, images, fractions = load_cohort_on_grid(cohort, generator.image_grid)
    extractor = FeatureExtractor()
    judges = Evaluators.fit(images, fractions, real.table, real.label_scheme, 64.0, 4.0, extractor, TINY, fingerprint="x", progress=False)
    judges.save(tmp_path / "ev")
    again = Evaluators.load(tmp_path / "ev", extractor)
    first, first_map = judges.measure(images)
    second, second_map = again.measure(images)
    np.testing.assert_allclose(first.to_numpy(), second.to_numpy(), rtol=1e-6)
    assert torch.equal(first_map, second_map)
    score = again.score(*again.measure(images), fractions, real.table)
    assert set(score) >= {"median_dice", "ventricular_volume", "brain_volume", "age", "sex"}


def test_evaluate_writes_the_report_and_reuses_its_evaluators(cohort, tmp_path, monkeypatch):
    generator = tiny_generator(distribution=True)
    out = tmp_path / "report"
    fitted, fit = [], Evaluators.fit
    monkeypatch.setattr(Evaluators, "fit", classmethod(lambda cls, *a, **k: fitted.append(a) or fit(*a, **k)))
    summary = evaluate(generator, cohort, out, n=8, settings=TINY, c2st_epochs=1, progress=False)
    # the evaluators are trained on A (images, label fractions and table of A's subjects, in A's order) and on nothing else
    part_a, _, images, _, covariates = _real_halves(cohort, generator)
    ((got_images, got_fractions, got_table, *_),) = fitted
    fractions = load_cohort_on_grid(cohort, generator.image_grid)[2]
    assert torch.equal(got_images, images[part_a]) and torch.equal(got_fractions, fractions[part_a])
    assert got_table["subject_id"].tolist() == [f"p{i:02d}" for i in part_a]
    for name in ("report.md", "report.json", "synthetic.tsv", "montage.png", "conditioning.png", "nearest-neighbours.png"):
        assert (out / name).is_file(), name
    assert (out / "evaluators" / "evaluators.safetensors").is_file()
    report = (out / "report.md").read_text()
    for section in ("Realism", "Spot the fake", "Diversity", "Conditioning", "Label faithfulness", "Memorisation", "paper"):
        assert section in report
    assert [row["comparison"] for row in summary["realism"]] == ["real (B) vs A", "autoencoder reconstructions of B vs A", "synthetic vs A"]
    assert set(summary["c2st"]) == {"synthetic vs real", "autoencoder reconstructions of B vs real A", "real vs real (B vs A)"}
    # a row is reliable exactly when its evaluator reaches the threshold on real B; the report names the others first
    accuracy, thresholds = summary["evaluators"]["accuracy_on_B"], summary["reliability_thresholds"]
    for row in summary["conditioning"]:
        name = row["covariate"]
        if row["requested vs measured by"] == "synthetic, own label map":
            continue
        expected = (
            accuracy["sex"]["auc"] >= thresholds["sex AUC"]
            if name == "sex"
            else (accuracy[name]["pearson_r"] >= thresholds["age r" if name == "age" else "volume r"])
        )
        assert row["reliable"] == expected, row
    assert summary["unreliable"] and report.splitlines()[2].startswith("**Unreliable rows:")
    assert summary["memorisation"]["baseline"].startswith("each training subject")
    assert json.loads((out / "report.json").read_text())["n_synthetic"] == 8

    # a second run finds the saved evaluators and does not train them again
    monkeypatch.setattr(Evaluators, "fit", classmethod(lambda *a, **k: pytest.fail("evaluators retrained")))
    again = evaluate(generator, cohort, out, n=8, settings=TINY, c2st_epochs=1, progress=False)
    same = [json.dumps(x[k], sort_keys=True) for x in (again, summary) for k in ("evaluators", "realism", "conditioning")]
    assert same[:3] == same[3:]  # same seed, same report (compared as JSON: NaN equals NaN there)


def test_evaluate_rejects_bad_input(cohort, tmp_path):
    generator = tiny_generator(distribution=True)
    with pytest.raises(ValueError, match="n="):
        evaluate(generator, cohort, tmp_path / "r", n=2)
    small = make_prepared(tmp_path / "small", n=4)
    with pytest.raises(ValueError, match=">= 8"):
        evaluate(generator, small, tmp_path / "r", n=8)


def test_cli_evaluate(cohort, tmp_path, capsys):
    folder = tiny_generator(distribution=True).save_pretrained(tmp_path / "model")
    args = ["--real", str(cohort), "-n", "8", "--segmenter-steps", "2", "--segmenter-precision", "bf16-mixed", "--c2st-epochs", "1"]
    args += ["--out", str(tmp_path / "rep")]
    sampling = ["--steps", "2", "--sampler", "dpm++2m", "--guidance-scale", "2", "--timestep-spacing", "linspace"]
    code = main(["evaluate", "--model", str(folder), *args, *sampling])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.md").is_file()
    used = json.loads((tmp_path / "rep" / "report.json").read_text())["sampling"]  # as the generated volumes' provenance records
    assert used == {"sampler": "dpm++2m", "steps": 2, "guidance_scale": 2.0, "timestep_spacing": "linspace"}
    settings = json.loads((tmp_path / "rep" / "report.json").read_text())["evaluators"]["settings"]
    assert settings["segmenter_precision"] == "bf16-mixed"


def test_cli_evaluate_refuses_an_unknown_segmenter_precision_before_loading_anything(tmp_path, capsys):
    args = ["--model", str(tmp_path / "no-model"), "--real", str(tmp_path), "--segmenter-precision", "fp16", "--out", str(tmp_path / "r")]
    code = main(["evaluate", *args])
    assert code == 2
    assert "segmenter_precision='fp16'; allowed: ['auto', '32-true', 'bf16-mixed']" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---- known answers: stand-in generators ---------------------------------------------------------


class StandInGenerator:
    """In place of a BrainGenerator: ``generate`` returns the given volumes, label maps and
    covariates whatever it is asked; everything else (grid, classes, schema, autoencoder) is that
    of ``like``."""

    def __init__(self, like, images, labels, covariates):
        self.like = like
        self.images, self.labels, self.covariates = images, labels, covariates.reset_index(drop=True)

    def __getattr__(self, name):
        return getattr(self.like, name)

    def generate(self, *, n, seed, progress, **sampling):
        from synthbrain.generator.output import GeneratedBrains

        assert n == len(self.images)
        self.asked = {"n": n, "seed": seed, **sampling}
        provenance = {"model": "stand-in", "sampler": "none", "steps": 0, "guidance_scale": 1.0, "timestep_spacing": "none"}
        return GeneratedBrains(self.images, self.labels, self.covariates, self.image_grid.affine, self.label_classes, provenance)


def _real_halves(cohort, generator, seed=0):
    """The evaluation's split (evaluate: complete subjects, seeded permutation, halves A and B)
    with images, label maps (class indices) and covariates of the cohort on the model's grid."""
    real, images, fractions = load_cohort_on_grid(cohort, generator.image_grid)
    table = real.table.reset_index(drop=True)
    complete = np.flatnonzero(table[["sex", "age", *VOLUMES]].notna().all(axis=1).to_numpy())
    order = np.random.default_rng(seed).permutation(complete)
    part_a, part_b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    return part_a, part_b, images, fractions.argmax(1).to(torch.uint8), table[["sex", "age", *VOLUMES]]


def _rows(summary, section, key):
    return {row[key]: row for row in summary[section]}


def _same(x, y):
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)  # NaN equals NaN


@pytest.fixture(scope="module")
def shared_evaluators(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluators")  # trained once on A, reused by the stand-in tests


def test_a_generator_returning_real_b_scores_exactly_as_real_b(cohort, tmp_path, shared_evaluators):
    """Synthetic = real B with its true covariates, in B's order: every synthetic row is computed on
    the same volumes as its real (B) row, so the two are equal, and they are not trivial (a real
    row is not a set compared with itself, nor requested values with themselves)."""
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    stand_in = StandInGenerator(like, images[part_b], labels[part_b], covariates.loc[part_b])
    summary = evaluate(
        stand_in, cohort, tmp_path / "r", n=len(part_b), evaluators=shared_evaluators, settings=TINY, c2st_epochs=1, progress=False
    )
    assert summary["real_subjects"]["B (baseline)"] == len(part_b)

    realism = _rows(summary, "realism", "comparison")
    assert _same(realism["synthetic vs A"] | {"comparison": None}, realism["real (B) vs A"] | {"comparison": None})
    assert realism["real (B) vs A"]["Fréchet distance"] > 1e-3  # B against A, not A against itself
    # the random autoencoder's reconstructions are not B: their row is their own
    assert abs(realism["autoencoder reconstructions of B vs A"]["Fréchet distance"] - realism["real (B) vs A"]["Fréchet distance"]) > 1e-3

    conditioning = {(r["covariate"], r["requested vs measured by"]): r for r in summary["conditioning"]}
    for covariate in (*VOLUMES, "age", "sex"):
        synthetic = conditioning[covariate, "synthetic, independent evaluator"]
        real = conditioning[covariate, "real (B), independent evaluator"]
        assert _same(synthetic, real | {"requested vs measured by": synthetic["requested vs measured by"]}), covariate
    for covariate in (*VOLUMES, "age"):  # the evaluators trained for 3 steps are far from exact on B
        assert conditioning[covariate, "real (B), independent evaluator"]["MAE"] > 0, covariate
    for covariate in VOLUMES:  # B's own label maps measure exactly B's table volumes (same 4 mm grid)
        own = conditioning[covariate, "synthetic, own label map"]
        assert own["MAE"] == pytest.approx(0, abs=1e-9) and own["bias"] == pytest.approx(0, abs=1e-9), covariate
    assert conditioning["ventricular_volume", "synthetic, own label map"]["Pearson r"] == pytest.approx(1.0)

    assert summary["diversity_ms_ssim"]["synthetic"] == summary["diversity_ms_ssim"]["real (B)"] < 0.999
    for row in summary["label_faithfulness_median_dice"]:
        assert _same(row["synthetic"], row["real (B)"]), row["class"]
    memorisation = summary["memorisation"]  # B is part of the training cohort: every volume is a copy
    assert memorisation["flagged"] == list(range(len(part_b))) and memorisation["synthetic_min"] == pytest.approx(0, abs=1e-6)
    assert memorisation["real_min"] > 0.1 and memorisation["ratio_synthetic_min"] == pytest.approx(0, abs=1e-6)


def test_a_collapsed_generator_has_no_diversity_and_is_flagged_as_a_copy(cohort, tmp_path, shared_evaluators):
    """One training subject repeated: pairwise MS-SSIM 1, recall 0 (the synthetic balls have radius
    0 and hold no A subject), and every volume flagged by distance and by ratio."""
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    n, one = 6, part_b[:1].repeat(6)
    stand_in = StandInGenerator(like, images[one], labels[one], covariates.loc[one])
    summary = evaluate(stand_in, cohort, tmp_path / "r", n=n, evaluators=shared_evaluators, settings=TINY, c2st_epochs=1, progress=False)
    assert summary["diversity_ms_ssim"]["synthetic"] == pytest.approx(1.0, abs=1e-5)
    assert summary["diversity_ms_ssim"]["real (B)"] < 0.999
    realism = _rows(summary, "realism", "comparison")
    assert realism["synthetic vs A"]["recall"] == 0.0 and realism["real (B) vs A"]["recall"] > 0
    memorisation = summary["memorisation"]
    assert memorisation["flagged"] == memorisation["ratio_flagged"] == list(range(n))
    assert memorisation["synthetic_median"] < 1e-6 < 0.1 < memorisation["real_min"]
    report = (tmp_path / "r" / "report.md").read_text()
    assert f"Synthetic volumes closer to a training subject than any real subject is: {n} (0, 1, 2, 3, 4, 5)" in report


def test_memorisation_baseline_is_computed_against_the_held_out_cohort(cohort, tmp_path, shared_evaluators):
    """A "held-out" cohort that holds the training subjects themselves: each is at distance 0 (and
    ratio 0) from the training set, so the baseline's minimum and median are 0 and no synthetic
    volume can be nearer. A baseline computed among the training subjects, or among the held-out
    subjects, would be above 0."""
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    stand_in = StandInGenerator(like, images[part_b], labels[part_b], covariates.loc[part_b])
    summary = evaluate(
        stand_in,
        cohort,
        tmp_path / "r",
        n=len(part_b),
        held_out=cohort,
        evaluators=shared_evaluators,
        settings=TINY,
        c2st_epochs=1,
        progress=False,
    )
    memorisation = summary["memorisation"]
    assert memorisation["baseline"] == "held-out real subjects"
    assert memorisation["real_min"] == memorisation["real_median"] == 0.0 and memorisation["ratio_real_min"] == 0.0
    assert memorisation["synthetic_min"] == pytest.approx(0, abs=1e-6) and memorisation["flagged"] == []


class IdentityAutoencoder(torch.nn.Module):
    """Encodes an image with its label fractions as they are and decodes them back: its
    reconstructions of real subjects are the subjects themselves."""

    def __init__(self, num_classes):
        super().__init__()
        self.config = type("Config", (), {"num_classes": num_classes})()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, image, labels):
        return torch.cat([image, labels], 1), None

    def decode(self, latent):
        return latent[:, :1], latent[:, 1:]

    reconstruct = BrainAutoencoder.reconstruct  # decode the posterior mean as generation does, on these encode/decode


def test_reconstructions_are_of_b_and_each_set_reaches_its_comparison(cohort, tmp_path, shared_evaluators, monkeypatch):
    """An autoencoder that reconstructs exactly: its reconstructions of B score exactly as B itself
    (Fréchet distance, precision, recall, MMD against A); each spot-the-fake test is given the sets
    it names (a spy: with 6 volumes a side its accuracy is too coarse to tell sets apart); the
    evaluators' accuracy equals a direct call on B; generate gets the evaluation's n, seed and
    sampling settings."""
    from synthbrain.evaluation import evaluate as evaluate_module

    c2st_sets, c2st = [], evaluate_module.classifier_two_sample_test
    monkeypatch.setattr(evaluate_module, "classifier_two_sample_test", lambda a, b, **k: c2st_sets.append((a, b)) or c2st(a, b, **k))
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    real, _, fractions = load_cohort_on_grid(cohort, like.image_grid)
    stand_in = StandInGenerator(like, images[part_b], labels[part_b], covariates.loc[part_b])
    stand_in.autoencoder = IdentityAutoencoder(fractions.shape[1])
    sampling = {"steps": 2, "sampler": "dpm++2m", "guidance_scale": None, "timestep_spacing": "linspace"}
    summary = evaluate(
        stand_in,
        cohort,
        tmp_path / "r",
        n=len(part_b),
        seed=0,
        evaluators=shared_evaluators,
        settings=TINY,
        c2st_epochs=1,
        sampling=sampling,
        progress=False,
    )
    assert stand_in.asked == {"n": len(part_b), "seed": 0, "steps": 2, "sampler": "dpm++2m", "timestep_spacing": "linspace"}
    realism = _rows(summary, "realism", "comparison")
    reconstructions = realism["autoencoder reconstructions of B vs A"]
    assert _same(reconstructions | {"comparison": None}, realism["real (B) vs A"] | {"comparison": None})
    expected = {  # every real subject has every covariate here, so "real" is the whole cohort: A, then B
        "synthetic vs real": (torch.cat([images[part_a], images[part_b]]), images[part_b]),
        "autoencoder reconstructions of B vs real A": (images[part_a], images[part_b]),
        "real vs real (B vs A)": (images[part_a], images[part_b]),
    }
    assert list(summary["c2st"]) == list(expected) and len(c2st_sets) == 3
    for (name, (a, b)), (got_a, got_b) in zip(expected.items(), c2st_sets):
        assert torch.equal(got_a, a) and torch.equal(got_b, b), name
    judges = Evaluators.load(shared_evaluators, FeatureExtractor())
    table_b = real.table.reset_index(drop=True).loc[part_b].reset_index(drop=True)
    accuracy = judges.score(*judges.measure(images[part_b]), fractions[part_b], table_b)
    assert _same(summary["evaluators"]["accuracy_on_B"], accuracy)
