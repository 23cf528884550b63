"""End to end on tiny data: a random tiny generator against a tiny prepared cohort. The numbers
mean nothing here; what is checked is that every section is computed, written and reused."""

import json

import numpy as np
import pytest
import torch

from synthbrain.cli import main
from synthbrain.evaluation.evaluate import evaluate, load_cohort_on_grid
from synthbrain.evaluation.evaluators import Evaluators, EvaluatorSettings
from synthbrain.evaluation.features import FeatureExtractor
from synthbrain.evaluation.metrics import frechet_distance
from tests.helpers import make_prepared, tiny_generator

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
    with pytest.raises((ValueError, RuntimeError, OSError)):
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
    summary = evaluate(generator, cohort, out, n=8, settings=TINY, c2st_epochs=1, progress=False)
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
        expected = accuracy["sex"]["auc"] >= thresholds["sex AUC"] if name == "sex" else (
            accuracy[name]["pearson_r"] >= thresholds["age r" if name == "age" else "volume r"]
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


def test_memorisation_baseline_uses_a_held_out_cohort_when_given(cohort, tmp_path):
    held_out = make_prepared(tmp_path / "held", n=4, seed=5)
    summary = evaluate(
        tiny_generator(distribution=True), cohort, tmp_path / "r", n=8, held_out=held_out, settings=TINY, c2st_epochs=1, progress=False
    )
    assert summary["memorisation"]["baseline"] == "held-out real subjects"


def test_evaluate_rejects_bad_input(cohort, tmp_path):
    generator = tiny_generator(distribution=True)
    with pytest.raises(ValueError, match="n="):
        evaluate(generator, cohort, tmp_path / "r", n=2)
    small = make_prepared(tmp_path / "small", n=4)
    with pytest.raises(ValueError, match=">= 8"):
        evaluate(generator, small, tmp_path / "r", n=8)


def test_cli_evaluate(cohort, tmp_path, capsys):
    folder = tiny_generator(distribution=True).save_pretrained(tmp_path / "model")
    args = ["--real", str(cohort), "-n", "8", "--segmenter-steps", "2", "--c2st-epochs", "1", "--out", str(tmp_path / "rep")]
    code = main(["evaluate", "--model", str(folder), *args])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.md").is_file()
