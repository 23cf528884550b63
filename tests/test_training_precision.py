"""Mixed precision of both training stages (``precision``, Lightning's names): bf16-mixed runs the
forward pass under bfloat16 autocast on any device, "auto" keeps CPU training in float32 as before
(and keeps the run records of runs written before the setting existed), bad names are refused."""

import contextlib
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from synthbrain import training
from synthbrain.autoencoder.train import AutoencoderTraining, discriminator_precision, train_autoencoder
from synthbrain.diffusion.latents import cache_latents
from synthbrain.diffusion.train import DiffusionTraining, train_diffusion
from tests.autoencoder.test_losses import TINY
from tests.autoencoder.test_patches_adaptive import PATCHED_GAN
from tests.diffusion.test_train import UNET
from tests.helpers import make_prepared

GAN = replace(PATCHED_GAN, steps=4, adaptive_adversarial_weight=False)  # the patch-training tests' run, fixed weight


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # the CUDA context is built, never entered
def test_autocast_follows_the_precision_on_cpu():
    conv, x = torch.nn.Conv3d(1, 2, 3), torch.rand(1, 1, 4, 4, 4)
    cpu = torch.device("cpu")
    for precision, dtype in (("auto", torch.float32), ("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)):
        with training.autocast(cpu, precision):
            assert conv(x).dtype == dtype, precision
    assert training.autocast(torch.device("cuda"), "auto").fast_dtype == torch.bfloat16
    assert training.autocast(torch.device("cuda"), "32-true").__class__ is contextlib.nullcontext
    with pytest.raises(ValueError, match=r"^precision='bf16'; allowed: \['auto', '32-true', 'bf16-mixed'\]$"):
        training.autocast(cpu, "bf16")


def test_the_discriminator_keeps_float32_under_bf16_mixed_on_cpu_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert discriminator_precision("bf16-mixed", cpu) == "32-true"
    assert [discriminator_precision(p, cuda) for p in training.PRECISIONS] == list(training.PRECISIONS)
    assert [discriminator_precision(p, cpu) for p in ("auto", "32-true")] == ["auto", "32-true"]


@pytest.mark.parametrize("cls", [AutoencoderTraining, DiffusionTraining])
@pytest.mark.parametrize("value", ["fp16", "16-mixed", None, 32])
def test_unknown_precisions_are_refused_naming_the_value(cls, value):
    with pytest.raises(ValueError, match=rf"^precision={value!r}; allowed: \['auto', '32-true', 'bf16-mixed'\]$"):
        cls(precision=value)


def test_bf16_mixed_autoencoder_training_differs_from_float32_and_resumes_bit_exactly(prepared, tmp_path, monkeypatch):
    """With the discriminator: the bf16 run is recorded as such, its weights differ from the float32 run's
    (autocast really ran), stay finite, and a killed bf16 run resumes to the same bits."""
    from synthbrain.autoencoder import train as train_module

    mixed = replace(GAN, precision="bf16-mixed")
    full = load_file(train_autoencoder(prepared, tmp_path / "fp32", TINY, GAN, device="cpu", progress=False) / "model.safetensors")
    reference = load_file(train_autoencoder(prepared, tmp_path / "a", TINY, mixed, device="cpu", progress=False) / "model.safetensors")
    assert json.loads((tmp_path / "a" / "run.json").read_text())["training"]["precision"] == "bf16-mixed"
    assert "precision" not in json.loads((tmp_path / "fp32" / "run.json").read_text())["training"]  # "auto": older runs resume
    assert all(torch.isfinite(w).all() for w in reference.values())
    assert any(not torch.equal(reference[k], full[k]) for k in full)
    assert "discriminator" in json.loads((tmp_path / "a" / "history.json").read_text())[-1]

    real_loss, calls = train_module.autoencoder_loss, []

    def dying_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # during step 4, after the discriminator started; the last checkpoint is step 2's
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "autoencoder_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(prepared, tmp_path / "b", TINY, mixed, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "autoencoder_loss", real_loss)
    resumed = load_file(train_autoencoder(prepared, tmp_path / "b", TINY, mixed, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"another configuration \(differing: \['training\.precision'\]\)"):  # one precision per run folder
        train_autoencoder(prepared, tmp_path / "b", TINY, replace(mixed, precision="32-true"), device="cpu", progress=False)


def test_bf16_mixed_diffusion_training_is_recorded_and_differs_from_float32(prepared, tmp_path):
    one_step = AutoencoderTraining(steps=1, batch_size=2)
    autoencoder = train_autoencoder(prepared, tmp_path / "ae", TINY, one_step, device="cpu", progress=False)
    latents = cache_latents(autoencoder, prepared, tmp_path / "latents", progress=False)
    unet = replace(UNET, latent_channels=TINY.latent_channels)
    steps = DiffusionTraining(steps=3, batch_size=2, checkpoint_every=3, log_every=1, learning_rate=1e-3, ema_decay=0.9)
    full = train_diffusion(latents, tmp_path / "fp32", unet, steps, device="cpu", progress=False)
    mixed = train_diffusion(latents, tmp_path / "bf16", unet, replace(steps, precision="bf16-mixed"), device="cpu", progress=False)
    assert "precision" not in json.loads((full.parent / "run.json").read_text())["training"]
    assert json.loads((mixed.parent / "run.json").read_text())["training"]["precision"] == "bf16-mixed"
    a, b = load_file(full / "model.safetensors"), load_file(mixed / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in b.values()) and any(not torch.equal(a[k], b[k]) for k in a)
