"""A model conditioned on other covariates than the default four (here age and sex only): every path
takes its covariate names from the model's schema (issue 19)."""

import pandas as pd
import pytest
import torch

from synthbrain import BrainGenerator, SyntheticBrainDataset, Uniform
from synthbrain.autoencoder.model import AutoencoderConfig
from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
from synthbrain.cli import main
from synthbrain.cohort.covariates import CovariateSchema
from synthbrain.diffusion.latents import cache_latents
from synthbrain.diffusion.model import DiffusionConfig
from synthbrain.diffusion.train import DiffusionTraining, train_diffusion
from synthbrain.evaluation.evaluate import evaluate
from synthbrain.evaluation.evaluators import EvaluatorSettings
from tests.helpers import make_prepared


@pytest.fixture(scope="module")
def age_sex_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("age-sex")
    prepared = make_prepared(root / "prepared", n=16)
    schema = CovariateSchema.load(prepared / "covariates.json")
    kept = CovariateSchema([schema["sex"], schema["age"]])
    kept.save(prepared / "covariates.json")  # a cohort prepared for a model of sex and age only
    ae = AutoencoderConfig(num_classes=8, channels=(8, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8)
    autoencoder = train_autoencoder(prepared, root / "ae", ae, AutoencoderTraining(steps=2, batch_size=2), device="cpu", progress=False)
    latents = cache_latents(autoencoder, prepared, root / "latents", progress=False)
    unet = DiffusionConfig(condition_dim=2, channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8)
    train_diffusion(latents, root / "dm", unet, DiffusionTraining(steps=2, batch_size=2), device="cpu", progress=False)
    folder = BrainGenerator.from_training(latents, root / "dm", defaults={"steps": 2}).save_pretrained(root / "model")
    return {"folder": folder, "prepared": prepared}


def test_generate_and_the_dataset_take_the_models_own_covariates(age_sex_model):
    model = BrainGenerator.from_pretrained(age_sex_model["folder"])
    assert model.schema.names == ["sex", "age"]
    out = model.generate(age=60.0, sex="F", n=2, seed=0)
    assert list(out.covariates.columns[:3]) == ["sex", "age", "seed"] and len(out) == 2
    drawn = model.generate(n=2, seed=1)  # left out: drawn from the training density of sex and age
    assert set(drawn.covariates["sex"]) <= {"F", "M"}
    with pytest.raises(ValueError, match=r"unknown keywords \['ventricular_volume'\]"):
        model.generate(ventricular_volume=20.0)
    item = SyntheticBrainDataset(3, Uniform(age=(30, 50)), model, device="cpu")[2]
    assert set(item["covariates"]) == {"sex", "age"} and 30 <= item["covariates"]["age"] <= 50


def test_the_command_line_takes_the_models_covariates(age_sex_model, tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["generate", "--model", str(age_sex_model["folder"]), "-n", "2", "--age", "55", "--sex", "M", "--out", str(out)]) == 0
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert table["age"].tolist() == [55.0, 55.0] and table["sex"].tolist() == ["M", "M"]
    code = main(["generate", "--model", str(age_sex_model["folder"]), "--brain-volume", "1200", "--out", str(tmp_path / "x")])
    assert code == 2 and "--brain-volume: not a covariate of this model; its covariates: --sex, --age" in capsys.readouterr().err


def test_evaluate_measures_the_models_covariates_only(age_sex_model, tmp_path):
    model = BrainGenerator.from_pretrained(age_sex_model["folder"])
    settings = EvaluatorSettings(segmenter_channels=(4, 8), segmenter_steps=2)
    summary = evaluate(model, age_sex_model["prepared"], tmp_path / "report", n=8, settings=settings, c2st_epochs=1, progress=False)
    assert summary["covariates"] == ["sex", "age"]
    assert {row["covariate"] for row in summary["conditioning"]} == {"age", "sex"}  # no volume rows: not the model's covariates
    assert torch.isfinite(torch.tensor([row["Pearson r"] for row in summary["conditioning"] if row["covariate"] == "age"])).any()
