import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from synthbrain.autoencoder.model import AutoencoderConfig
from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
from synthbrain.components import load_component, load_config
from synthbrain.diffusion import train as train_module
from synthbrain.diffusion.latents import LatentCache, cache_latents
from synthbrain.diffusion.model import ConditionalUNet, DiffusionConfig
from synthbrain.diffusion.train import DiffusionTraining, train_diffusion
from synthbrain.samplers import NoiseSchedule
from tests.helpers import make_prepared

AE = AutoencoderConfig(num_classes=8, channels=(8, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8)
UNET = DiffusionConfig(
    latent_channels=3, condition_dim=4, channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8
)
STEPS = DiffusionTraining(steps=6, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3, ema_decay=0.9)


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    prepared = make_prepared(root / "prepared", n=5)
    autoencoder = train_autoencoder(prepared, root / "ae", AE, AutoencoderTraining(steps=2, batch_size=2), device="cpu", progress=False)
    return cache_latents(autoencoder, prepared, root / "latents", progress=False)


def test_latent_cache_holds_every_subject_and_normalised_covariates(latents):
    cache = LatentCache.load(latents)
    assert cache.latents.shape == (5, 3, 8, 8, 8) and cache.conditions.shape == (5, 4)
    assert cache.subject_ids == [f"p{i:02d}" for i in range(5)] and len(cache.complete()) == 5
    assert float(cache.conditions.min()) == 0.0 and float(cache.conditions.max()) == 1.0
    assert cache.scale == pytest.approx(1.0 / cache.latents.std().item())
    assert json.loads((latents / "latents.json").read_text())["autoencoder_sha256"]


def test_mirrored_latents_are_the_encodings_of_left_right_mirrored_subjects(latents, tmp_path):
    meta = json.loads((latents / "latents.json").read_text())
    prepared = meta["prepared"]
    out = cache_latents(meta["autoencoder"], prepared, tmp_path / "mirrored", mirror=True, progress=False)
    plain, mirrored = LatentCache.load(latents), LatentCache.load(out)
    assert mirrored.subject_ids == plain.subject_ids + [f"{s}:mirrored" for s in plain.subject_ids]
    torch.testing.assert_close(mirrored.latents[:5], plain.latents)
    torch.testing.assert_close(mirrored.conditions, torch.cat([plain.conditions, plain.conditions]))
    from synthbrain.autoencoder.model import BrainAutoencoder
    from synthbrain.preprocessing.prepared import PreparedCohort

    model = load_component(BrainAutoencoder, AutoencoderConfig, meta["autoencoder"]).eval()
    item = PreparedCohort.load(prepared)[2]
    with torch.no_grad():
        expected = model.encode(item["image"][None].flip(2), item["labels"][None].flip(1))[0]
    torch.testing.assert_close(mirrored.latents[5 + 2], expected[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mirrored.latents[5 + 2], plain.latents[2], atol=1e-3)  # the mirror is a different input
    assert json.loads((out / "latents.json").read_text())["mirrored"] is True


def test_trains_and_exports_ema_weights_and_schedule(latents, tmp_path):
    out = train_diffusion(latents, tmp_path / "run", UNET, STEPS, device="cpu", progress=False)
    model = load_component(ConditionalUNet, DiffusionConfig, out)
    assert model.config == UNET
    assert load_config(NoiseSchedule, tmp_path / "run" / "scheduler") == NoiseSchedule()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    raw = state["state"]["model"]
    assert any(not torch.equal(raw[k], v) for k, v in load_file(out / "model.safetensors").items())  # exported = EMA, not raw


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(latents, tmp_path, monkeypatch):
    reference = load_file(train_diffusion(latents, tmp_path / "a", UNET, STEPS, device="cpu", progress=False) / "model.safetensors")
    real, calls = train_module.drop_conditions, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "drop_conditions", dying)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(latents, tmp_path / "b", UNET, STEPS, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "drop_conditions", real)
    resumed = load_file(train_diffusion(latents, tmp_path / "b", UNET, STEPS, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)


def test_mismatched_model_and_bad_settings_are_named(latents, tmp_path):
    with pytest.raises(ValueError, match="condition_dim=5"):
        train_diffusion(
            latents,
            tmp_path / "x",
            DiffusionConfig(condition_dim=5, channels=(16, 32), attention_levels=(False, True), norm_num_groups=8),
            STEPS,
            device="cpu",
            progress=False,
        )
    with pytest.raises(ValueError, match="condition_dropout=2"):
        DiffusionTraining(condition_dropout=2)
    with pytest.raises(ValueError, match="no latents.json"):
        LatentCache.load(tmp_path)


def test_per_channel_latent_scaling_standardises_each_channel_and_the_generator_maps_back(latents, tmp_path):
    """Issue 30: latents standardised per channel for diffusion training ((z - mean_c) / std_c), recorded
    in the run, carried by the generator and its saved folder, and undone before decoding."""
    from dataclasses import replace

    from synthbrain.generator import BrainGenerator

    cache = LatentCache.load(latents)
    assert cache.scaling("global") == (cache.scale, 0.0)
    scale, shift = cache.scaling("per_channel")
    assert len(scale) == len(shift) == 3
    standardised = (cache.latents - torch.tensor(shift).reshape(1, -1, 1, 1, 1)) * torch.tensor(scale).reshape(1, -1, 1, 1, 1)
    per_channel = standardised.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3), atol=1e-5, rtol=0)
    assert max(scale) / min(scale) > 1.01  # the channels of these latents differ: a global factor would not do this

    plain = train_diffusion(latents, tmp_path / "global", UNET, STEPS, device="cpu", progress=False).parent
    assert "latent_scaling" not in json.loads((plain / "run.json").read_text())["training"]  # older runs keep their record
    run = train_diffusion(latents, tmp_path / "pc", UNET, replace(STEPS, latent_scaling="per_channel"), device="cpu", progress=False).parent
    assert json.loads((run / "run.json").read_text())["training"]["latent_scaling"] == "per_channel"

    generator = BrainGenerator.from_training(latents, run, defaults={"steps": 2})
    assert generator.latent_scale == pytest.approx(tuple(scale)) and generator.latent_shift == pytest.approx(tuple(shift))
    assert BrainGenerator.from_training(latents, plain).latent_shift == 0.0
    # sampled latents are mapped back with the inverse of the training map
    torch.testing.assert_close(generator._from_diffusion_space(standardised), cache.latents, atol=1e-5, rtol=1e-5)
    folder = generator.save_pretrained(tmp_path / "model")
    index = json.loads((folder / "synthbrain_generator.json").read_text())
    assert index["latent_scale"] == pytest.approx(scale) and index["latent_shift"] == pytest.approx(shift)
    loaded = BrainGenerator.from_pretrained(folder)
    assert (loaded.latent_scale, loaded.latent_shift) == (generator.latent_scale, generator.latent_shift)
    a, b = generator.generate(n=1, seed=3, progress=False), loaded.generate(n=1, seed=3, progress=False)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)


def test_bad_latent_scalings_are_named():
    from synthbrain.diffusion.latents import LATENT_SCALINGS
    from tests.helpers import tiny_generator

    with pytest.raises(ValueError, match=r"latent_scaling='channel'; allowed: \['global', 'per_channel'\]"):
        DiffusionTraining(latent_scaling="channel")
    arguments = tiny_generator().parts().arguments()
    for name, value in (("latent_scale", 0.0), ("latent_scale", [1.0, 2.0]), ("latent_shift", float("nan")), ("latent_scale", "1")):
        with pytest.raises(ValueError, match=rf"{name}=.*allowed: a finite number.*or a list of 3 \(one per latent channel\)"):
            type(tiny_generator())(**{**arguments, name: value})
    assert _diffusion_choices() == list(LATENT_SCALINGS)  # the flag's choices (written out, so --help loads no torch) are these


def _diffusion_choices():
    from synthbrain.cli import build_parser

    train = next(a for a in build_parser()._actions if a.choices and "train" in a.choices).choices["train"]
    diffusion = next(a for a in train._actions if a.choices and "diffusion" in a.choices).choices["diffusion"]
    return next(a.choices for a in diffusion._actions if a.dest == "latent_scaling")


def test_a_run_folder_moved_as_a_whole_still_finds_its_autoencoder_by_its_checksum(latents, tmp_path):
    import shutil

    from synthbrain.diffusion.latents import autoencoder_folder
    from synthbrain.generator import BrainGenerator

    meta = LatentCache.load(latents).meta
    run = tmp_path / "run"  # the layout of `synthbrain train autoencoder`: RUN/autoencoder beside RUN/latents
    shutil.copytree(meta["autoencoder"], run / "autoencoder")
    cached = cache_latents(run / "autoencoder", meta["prepared"], run / "latents", progress=False)
    diffusion = train_diffusion(cached, tmp_path / "dm", UNET, STEPS, device="cpu", progress=False).parent
    moved = tmp_path / "moved"
    run.rename(moved)
    assert autoencoder_folder(moved / "latents", LatentCache.load(moved / "latents").meta) == moved / "autoencoder"
    generator = BrainGenerator.from_training(moved / "latents", diffusion, defaults={"steps": 2})
    reference = BrainGenerator.from_training(latents, diffusion, defaults={"steps": 2})  # the same weights where they were cached
    for got, want in zip(generator.autoencoder.state_dict().values(), reference.autoencoder.state_dict().values()):
        assert torch.equal(got, want)
    weights = moved / "autoencoder" / "model.safetensors"
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="does not hold the autoencoder these latents were cached with"):
        BrainGenerator.from_training(moved / "latents", diffusion)
    shutil.rmtree(moved / "autoencoder")
    with pytest.raises(ValueError, match="is gone, and none is beside it"):
        BrainGenerator.from_training(moved / "latents", diffusion)
    # where the recorded folder is there, it is the one checked: changed weights there are refused, not replaced by others
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(meta["autoencoder"], tmp_path / "elsewhere" / "autoencoder")
    recorded = dict(meta, autoencoder=str(tmp_path / "elsewhere" / "autoencoder"))
    assert autoencoder_folder(latents, recorded) == tmp_path / "elsewhere" / "autoencoder"
    save_file(tensors, str(tmp_path / "elsewhere" / "autoencoder" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"elsewhere/autoencoder' does not hold .* \(sha256 [0-9a-f]{16}; recorded [0-9a-f]{16}\)"):
        autoencoder_folder(latents, recorded)
