"""generate(): the seed scheme, covariates as keywords, background, quality control, and known answers
for the sampling settings (each setting must reach the sampler: a generate that ignored one would fail)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from synthbrain import BrainGenerator, Fixed, SyntheticBrainDataset, Uniform, volume_seed
from synthbrain.generator import draws
from synthbrain.generator import qc as quality
from synthbrain.samplers import sample
from tests.helpers import tiny_generator

QUERY = {"sex": "F", "age": 50.0, "ventricular_volume": 20.0, "brain_volume": 1200.0}


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(distribution=True, steps=3)


def test_volume_seeds_are_pinned_and_never_shared_between_nearby_seeds():
    # known answers: the scheme must not change silently (it decides every generated volume)
    assert [volume_seed(0, i) for i in range(3)] == [volume_seed(0, 0), volume_seed(0, 1), volume_seed(0, 2)]
    assert volume_seed(0, 0) == int(np.random.SeedSequence(0, spawn_key=(0,)).generate_state(1, np.uint64)[0]) >> 1
    assert volume_seed(7, 3) == int(np.random.SeedSequence(7, spawn_key=(3,)).generate_state(1, np.uint64)[0]) >> 1
    first = {volume_seed(0, i) for i in range(1000)}
    second = {volume_seed(1, i) for i in range(1000)}
    assert len(first) == 1000 and not first & second  # seed + i would share 999 of them
    assert all(0 <= s < 2**63 for s in first)
    with pytest.raises(ValueError, match="seed=-1; allowed: an integer >= 0"):
        volume_seed(-1, 0)


def test_different_seeds_never_repeat_volumes_and_a_recorded_seed_reproduces_its_volume_alone(generator):
    base = generator.generate(QUERY, n=3, seed=0)
    shifted = generator.generate(QUERY, n=2, seed=1)  # with seed + i, these would be volumes 1 and 2 of seed 0
    for a in shifted.images:
        assert all((a - b).abs().max() > 1e-3 for b in base.images)
    for i in range(3):
        alone = generator.generate(QUERY, seed=[int(base.covariates["seed"][i])])
        torch.testing.assert_close(alone.images[0], base.images[i], atol=1e-5, rtol=0)
    assert base.provenance["seed_scheme"].startswith("volume i of seed s")


def test_covariates_as_keywords_equal_the_mapping_form_and_levels_are_canonical(generator):
    keywords = generator.generate(age=50.0, sex="female", ventricular_volume=20.0, brain_volume=1200.0, n=2, seed=0)
    mapping = generator.generate({"age": 50.0, "sex": "F", "ventricular_volume": 20.0, "brain_volume": 1200.0}, n=2, seed=0)
    torch.testing.assert_close(keywords.images, mapping.images)
    pd.testing.assert_frame_equal(keywords.covariates, mapping.covariates)
    assert keywords.covariates["sex"].tolist() == ["F", "F"]  # "female" is reported as the level it means
    listed = generator.generate(age=[30.0, 60.0], sex="M", seed=0)
    assert listed.covariates["age"].tolist() == [30.0, 60.0] and len(listed) == 2
    with pytest.raises(ValueError, match=r"unknown keywords \['weight'\]; the model's covariates are"):
        generator.generate(weight=70.0)
    with pytest.raises(ValueError, match="covariates and keywords"):
        generator.generate({"age": 50.0}, sex="F")


def test_dataset_item_is_generate_with_the_items_seed(generator):
    sampler = Uniform(age=(30, 60), sex=["F", "M"])
    dataset = SyntheticBrainDataset(6, sampler, generator, seed=9, device="cpu")
    assert dataset.item_seed(4) == volume_seed(9, 4)
    item = dataset[4]
    alone = generator.generate(cond_sampler=sampler, seed=[dataset.item_seed(4)])
    torch.testing.assert_close(item["image"], alone.images[0], atol=1e-5, rtol=0)
    assert item["covariates"] == {k: alone.covariates[k][0] for k in generator.schema.names}
    whole = generator.generate(cond_sampler=sampler, n=6, seed=9)  # the dataset's seed is generate's seed
    torch.testing.assert_close(item["image"], whole.images[4], atol=1e-5, rtol=0)


def test_equal_covariates_at_different_indices_get_different_noise(generator):
    dataset = SyntheticBrainDataset(4, Fixed(**QUERY), generator, seed=0, device="cpu")
    images = torch.stack([dataset[i]["image"] for i in range(4)])
    assert all((images[i] - images[j]).abs().max() > 1e-3 for i in range(4) for j in range(i))


def test_background_is_exactly_zero_and_raw_keeps_the_decoder_output(generator):
    out = generator.generate(QUERY, n=2, seed=3)
    raw = generator.generate(QUERY, n=2, seed=3, raw=True)
    background = (out.labels == 0).unsqueeze(1)
    assert background.any() and (out.images[background] == 0).all()
    assert (raw.images[background] > 0).any()  # the random tiny model's decoder leaves a haze there
    torch.testing.assert_close(out.images[~background], raw.images[~background])
    assert torch.equal(out.labels, raw.labels) and out.provenance["raw"] is False and raw.provenance["raw"] is True


def test_guidance_scale_and_sampler_reach_the_sampler(generator):
    """Each setting's image equals a direct call of the sampler on the same noise; a generate that
    ignored the setting would give the other image."""
    seeds = draws.volume_seeds(5, 1)
    table, _ = draws.resolve_covariates(generator.schema, generator.distribution, seeds, given=pd.DataFrame([QUERY]))
    condition = torch.from_numpy(generator.schema.normalize(table))
    noise = draws.initial_noise(seeds, generator.latent_shape)

    def direct(guidance, sampler):
        z = sample(lambda x, t: generator.unet.guided(x, t, condition, guidance), noise, generator.schedule, sampler, 3, spacing="trailing")
        return generator.autoencoder.decode(z / generator.latent_scale)[0].clamp(0, 1)

    images = {}
    for guidance, sampler in [(1.0, "ddim"), (3.0, "ddim"), (1.0, "dpm++2m")]:
        got = generator.generate(QUERY, seed=5, guidance_scale=guidance, sampler=sampler, timestep_spacing="trailing", raw=True)
        with torch.no_grad():
            torch.testing.assert_close(got.images, direct(guidance, sampler), atol=1e-5, rtol=0)
        assert got.provenance["guidance_scale"] == guidance and got.provenance["sampler"] == sampler
        images[(guidance, sampler)] = got.images
    assert (images[(1.0, "ddim")] - images[(3.0, "ddim")]).abs().max() > 1e-3
    assert (images[(1.0, "ddim")] - images[(1.0, "dpm++2m")]).abs().max() > 1e-3


def test_stochastic_samplers_give_each_volume_its_own_noise_whatever_the_batch(generator):
    together = generator.generate(QUERY, n=3, seed=4, sampler="ddpm", steps=4, batch_size=3)
    one_by_one = generator.generate(QUERY, n=3, seed=4, sampler="ddpm", steps=4, batch_size=1)
    torch.testing.assert_close(together.images, one_by_one.images, atol=1e-5, rtol=0)
    again = generator.generate(QUERY, n=3, seed=5, sampler="ddpm", steps=4)
    assert (again.images - together.images).abs().max() > 1e-3


def test_guidance_is_refused_on_a_model_trained_without_a_null_condition():
    from dataclasses import replace

    model = tiny_generator(distribution=True, steps=3)
    model.unet.config = replace(model.unet.config, classifier_free_guidance=False)
    with pytest.raises(ValueError, match="guidance_scale=3.0: this model was not trained with condition dropout"):
        model.generate(QUERY, guidance_scale=3.0)
    model.generate(QUERY, guidance_scale=1.0)  # no guidance: fine


def test_qc_measures_known_answers():
    image = torch.zeros(2, 1, 12, 12, 12)
    labels = torch.zeros(2, 12, 12, 12, dtype=torch.long)
    labels[:, 3:9, 3:9, 3:9] = 4  # a cube of bright tissue
    image[:, :, 3:9, 3:9, 3:9] = 0.8
    labels[1, 0, 5, 5] = 4  # one labelled voxel on the border, dark, and apart from the brain
    labels[1, 4:6, 4:6, 4:6] = 4
    image[1, 0, 4:6, 4:6, 4:6] = 0.0  # 8 voxels labelled tissue where the image is black
    table = quality.measure(image, labels)
    assert table["qc_border_labelled"].tolist() == [0, 1]
    assert table["qc_dark_labelled"].tolist() == [0, 9]
    assert table["qc_stray_fraction"][0] == 0 and table["qc_stray_fraction"][1] == pytest.approx(1 / 217)
    assert table["qc_pass"].tolist() == [True, False]


def test_qc_reject_draws_failing_subjects_again_from_a_recorded_seed(generator, monkeypatch):
    real_measure = quality.measure
    first_seed = volume_seed(11, 1)
    calls = []

    def fails_volume_one_once(images, labels):
        table = real_measure(images, labels)
        table["qc_pass"] = True
        if not calls:
            table.loc[1, "qc_pass"] = False
        calls.append(len(images))
        return table

    monkeypatch.setattr(quality, "measure", fails_volume_one_once)
    out = generator.generate(n=3, seed=11, qc="reject")
    assert calls == [3, 1] and out.covariates["qc_redraws"].tolist() == [0, 1, 0]
    assert out.covariates["seed"][1] == volume_seed(first_seed, 1)  # the redraw's seed, derived from the failing one
    monkeypatch.setattr(quality, "measure", real_measure)
    alone = generator.generate(seed=[int(out.covariates["seed"][1])])  # the recorded seed reproduces it alone
    torch.testing.assert_close(alone.images[0], out.images[1], atol=1e-5, rtol=0)
    assert alone.covariates.loc[0, "age"] == out.covariates.loc[1, "age"]  # covariates drawn from the new seed too
    with pytest.raises(ValueError, match="qc='sometimes'; allowed"):
        generator.generate(n=1, qc="sometimes")


def test_timestep_spacing_starts_at_the_noisiest_step_for_any_count():
    """The exact-noise toy problem: data x0 ~ N(2, 0.5^2), the exact noise prediction of that Gaussian;
    the sample mean must come back to 2 whatever the step count, which needs the first step at the
    noisiest timestep (leading spacing with 1 step would denoise raw noise at t=0)."""
    from synthbrain.samplers.schedule import NoiseSchedule

    schedule, mean, spread = NoiseSchedule(), 2.0, 0.5

    def model(x, t):
        abar = schedule.alpha_bar(t)
        variance = abar * spread**2 + 1 - abar
        return (1 - abar) ** 0.5 * (x - abar**0.5 * mean) / variance

    x_T = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (1, 2, 50, 501, 600):
        first = schedule.timesteps(steps, "trailing")[0]
        assert first == 999, steps
        out = sample(model, x_T, schedule, "ddim", steps)  # DDIM's default spacing
        assert abs(out.mean().item() - mean) < 0.03, (steps, out.mean().item())
    assert schedule.timesteps(50, "leading")[0] == 980  # the released model's 980, 960, ..., 0 stays available
    for steps in (1, 2, 501, 600):
        with pytest.raises(ValueError, match=f"num_steps={steps} with spacing='leading' starts at t="):
            schedule.timesteps(steps, "leading")
    assert math.isclose(schedule.timesteps(2, "linspace")[0], 999)


def test_models_saved_before_the_spacing_was_recorded_keep_their_sampling(tmp_path):
    import json

    from synthbrain.generator import INDEX

    folder = tiny_generator(distribution=True, steps=10).save_pretrained(tmp_path / "model")
    index = json.loads((folder / INDEX).read_text())
    assert index["defaults"]["timestep_spacing"] == "trailing"  # recorded now
    index["defaults"].pop("timestep_spacing")
    (folder / INDEX).write_text(json.dumps(index))
    assert BrainGenerator.from_pretrained(folder).defaults["timestep_spacing"] == "leading"  # as DDIM sampled in synthbrain 0.1


def _failing_once(monkeypatch, index):
    """quality.measure, except that volume ``index`` of the first call fails (and every other passes)."""
    real_measure, calls = quality.measure, []

    def measure(images, labels):
        table = real_measure(images, labels)
        table["qc_pass"] = True
        if not calls:
            table.loc[index, "qc_pass"] = False
        calls.append(len(images))
        return table

    monkeypatch.setattr(quality, "measure", measure)
    return calls


def test_a_redraw_keeps_the_given_covariates_and_every_setting_of_the_call(generator, monkeypatch):
    """The redraw of a failing volume is generated with the call's covariates (given ones stay, an
    extrapolated age included), sampling settings and raw output: the recorded seed with the same
    call reproduces it alone. A redraw that fell back to drawn covariates, the model's default
    settings or the masked output would give another volume."""
    settings = dict(steps=2, sampler="dpm++2m", guidance_scale=2.0, timestep_spacing="linspace", raw=True, extrapolate=True)
    given = {**QUERY, "age": [30.0, 95.0, 50.0], "brain_volume": [1100.0, 1200.0, 1300.0]}  # 95: outside the fitted ages
    calls = _failing_once(monkeypatch, 1)
    out = generator.generate(given, seed=11, qc="reject", **settings)
    assert calls == [3, 1] and out.covariates["qc_redraws"].tolist() == [0, 1, 0]
    assert out.covariates["age"].tolist() == [30.0, 95.0, 50.0] and out.covariates["brain_volume"][1] == 1200.0
    redrawn = int(out.covariates["seed"][1])
    assert redrawn == volume_seed(volume_seed(11, 1), 1)
    alone = generator.generate({**QUERY, "age": 95.0, "brain_volume": 1200.0}, seed=[redrawn], qc="measure", **settings)
    torch.testing.assert_close(alone.images[0], out.images[1], atol=1e-5, rtol=0)
    assert (out.images[1][(out.labels[1] == 0).unsqueeze(0)] > 0).any()  # raw: the decoder's haze kept in the redraw too
    first = generator.generate({**QUERY, "age": 95.0, "brain_volume": 1200.0}, seed=[volume_seed(11, 1)], qc="measure", **settings)
    assert (first.images[0] - out.images[1]).abs().max() > 1e-3  # the failing volume was replaced
    assert (out.labels[1] != alone.labels[0]).float().mean() < 0.01 < (out.labels[1] != first.labels[0]).float().mean()  # its labels too
