"""``synthbrain evaluate``'s detail and variety section and its controlled spot-the-fake test, end to
end on tiny data with stand-in generators whose samples are known (real B itself; one subject repeated)."""

import json

import numpy as np
import pytest
import torch

from synthbrain.evaluation import evaluate as evaluate_module
from synthbrain.evaluation.evaluate import CONTROL_SIGMA, evaluate
from synthbrain.evaluation.evaluators import EvaluatorSettings
from synthbrain.evaluation.metrics import PositiveControl, TwoSampleTest, high_frequency_share, mean_gradient_magnitude
from tests.evaluation.test_evaluate import StandInGenerator, _real_halves
from tests.helpers import make_prepared, tiny_generator

TINY = EvaluatorSettings(segmenter_channels=(4, 8), segmenter_steps=3)
SETS = ["real (A)", "real (B)", "autoencoder reconstructions of B", "synthetic", "real (B) blurred (positive control)"]
COMPARISONS = ["synthetic vs real", "autoencoder reconstructions of B vs real A", "real vs real (B vs A)"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("cohort") / "real", n=12)


@pytest.fixture(scope="module")
def shared_evaluators(tmp_path_factory):
    return tmp_path_factory.mktemp("evaluators")


def _control(passed: bool, calls: list):
    """A stand-in for classifier_positive_control with a fixed verdict that records what it was given."""

    def control(real, brain, *, seed, sigma, **settings):
        calls.append({"real": real, "brain": brain, "seed": seed, "sigma": sigma, **settings})
        result = TwoSampleTest(0.9 if passed else 0.5, 0.6 if passed else 0.3, 1.0 if passed else 0.7, len(real), len(real), 0.5)
        return PositiveControl(result, passed, f"stand-in control {'passed' if passed else 'failed'}")

    return control


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_generator_returning_real_b_has_real_b_detail_and_a_passed_control_keeps_spot_the_fake(
    cohort, tmp_path, shared_evaluators, monkeypatch
):
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    stand_in = StandInGenerator(like, images[part_b], labels[part_b], covariates.loc[part_b])
    calls = []
    monkeypatch.setattr(evaluate_module, "classifier_positive_control", _control(True, calls))
    out = tmp_path / "r"
    summary = evaluate(stand_in, cohort, out, n=len(part_b), evaluators=shared_evaluators, settings=TINY, c2st_epochs=2, progress=False)

    # the control is run once, on real B against its blurred copy, inside B's label maps, at the run's settings
    (call,) = calls
    assert torch.equal(call["real"], images[part_b]) and torch.equal(call["brain"], labels[part_b][:, None] > 0)
    assert (call["seed"], call["sigma"], call["epochs"]) == (0, CONTROL_SIGMA, 2)

    written = _strict_json(out / "report.json")
    assert written["detail_variety"] == summary["detail_variety"] and set(written["detail_variety_definitions"]) >= {"brain", "ratios"}
    rows = {row["set"]: row for row in written["detail_variety"]}
    assert list(rows) == SETS
    real_b, synthetic = rows["real (B)"], rows["synthetic"]
    assert {k: v for k, v in synthetic.items() if k != "set"} == {k: v for k, v in real_b.items() if k != "set"}  # same volumes, same brain
    for measure in ("high-frequency share", "mean gradient", "pairwise L2 median"):
        assert real_b[f"{measure} / real (B)"] == synthetic[f"{measure} / real (B)"] == 1.0
        reconstructions = rows["autoencoder reconstructions of B"]
        assert reconstructions[f"{measure} / real (B)"] == pytest.approx(reconstructions[measure] / real_b[measure])
    brain_b = labels[part_b][:, None] > 0
    assert real_b["high-frequency share"] == pytest.approx(high_frequency_share(images[part_b], brain_b).mean())
    assert real_b["mean gradient"] == pytest.approx(mean_gradient_magnitude(images[part_b], brain_b).mean())
    assert real_b["pairwise L2 q1"] < real_b["pairwise L2 median"] < real_b["pairwise L2 q3"]
    blurred = rows["real (B) blurred (positive control)"]
    assert blurred["high-frequency share / real (B)"] < 1 and blurred["mean gradient / real (B)"] < 1

    assert written["c2st_control"]["passed"] is True and written["c2st_control"]["reason"] == "stand-in control passed"
    assert list(written["c2st"]) == COMPARISONS and all(row["reliable"] is True for row in written["c2st"].values())
    assert not any("spot the fake" in name for name in written["unreliable"])
    assert list(written["c2st_baseline"]) == [*COMPARISONS, "real (B) vs real (B) blurred (positive control)"]
    for row in written["c2st_baseline"].values():
        assert set(row) >= {"accuracy", "ci_low", "ci_high", "auc", "AUC high-frequency share alone", "AUC mean gradient alone"}
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1

    assert written["figures"]["raw slices"] == "raw-slices.png" and (out / "raw-slices.png").is_file()
    assert (out / "nearest-neighbours.png").is_file()
    report = (out / "report.md").read_text()
    assert "## Detail and variety" in report and "![raw mid-slices, samples above real subjects](raw-slices.png)" in report
    assert f"| high-frequency share (> 0.25 cycles/voxel) | {rows['real (A)']['high-frequency share']:.4g} |" in report
    assert f"{synthetic['mean gradient']:.4g} (1.00)" in report
    assert "Real B against B blurred, in this run: stand-in control passed." in report


def test_a_collapsed_generator_has_no_variety_and_a_failed_control_marks_spot_the_fake_unreliable(
    cohort, tmp_path, shared_evaluators, monkeypatch
):
    like = tiny_generator()
    part_a, part_b, images, labels, covariates = _real_halves(cohort, like)
    one = part_b[:1].repeat(6)
    stand_in = StandInGenerator(like, images[one], labels[one], covariates.loc[one])
    monkeypatch.setattr(evaluate_module, "classifier_positive_control", _control(False, []))
    summary = evaluate(stand_in, cohort, tmp_path / "r", n=6, evaluators=shared_evaluators, settings=TINY, c2st_epochs=1, progress=False)

    synthetic = {row["set"]: row for row in summary["detail_variety"]}["synthetic"]
    assert synthetic["pairwise L2 median"] == synthetic["pairwise L2 q1"] == synthetic["pairwise L2 q3"] == 0.0
    assert synthetic["pairwise L2 median / real (B)"] == 0.0
    brain = labels[one[:1]][:, None] > 0
    assert synthetic["high-frequency share"] == pytest.approx(high_frequency_share(images[one[:1]], brain)[0])

    assert summary["c2st_control"]["passed"] is False
    assert all(row["reliable"] is False for row in summary["c2st"].values())
    assert summary["unreliable"][0] == "spot the fake (its positive control failed)"
    report = (tmp_path / "r" / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Unreliable rows: spot the fake (its positive control failed)")
    assert "**Unreliable: the classifier cannot see (stand-in control failed).**" in report
    assert np.isfinite([row["accuracy"] for row in summary["c2st_baseline"].values()]).all()
