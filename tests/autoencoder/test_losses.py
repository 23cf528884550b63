"""The perceptual and patch-adversarial terms of autoencoder training (issue 15)."""

import math
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from synthbrain.autoencoder import train as train_module
from synthbrain.autoencoder.losses import AdversarialLoss, AutoencoderLossWeights, PerceptualLoss, autoencoder_loss, make_discriminator
from synthbrain.autoencoder.model import AutoencoderConfig, BrainAutoencoder
from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
from tests.helpers import make_prepared, subprocess_env

TINY = AutoencoderConfig(num_classes=8, channels=(8, 16), latent_channels=3, num_res_blocks=1, norm_num_groups=8)
GAN = AutoencoderTraining(
    steps=6,
    batch_size=2,
    checkpoint_every=2,
    log_every=1,
    learning_rate=1e-3,
    weights=AutoencoderLossWeights(perceptual=0.5, adversarial=0.1),
    adversarial_warmup=2,
    discriminator_channels=8,
    discriminator_layers=2,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def _gradients(weights: AutoencoderLossWeights, perceptual=None, adversarial: bool = False):
    torch.manual_seed(0)
    model = BrainAutoencoder(TINY)
    image = torch.rand(2, 1, 16, 16, 16)
    labels = torch.randint(0, 8, (2, 16, 16, 16))
    out = model(image, labels, generator=torch.Generator().manual_seed(0))
    total = autoencoder_loss(out, image, labels, weights, perceptual)["total"]
    if adversarial:
        torch.manual_seed(1)
        total = total + weights.adversarial * AdversarialLoss().generator(make_discriminator(1, 8, 2)(out.image)[-1])
    return torch.autograd.grad(total, [p for p in model.parameters() if p.requires_grad])


def test_perceptual_distance_grows_with_blur_and_is_zero_for_identical_volumes():
    perceptual = PerceptualLoss()
    image = torch.rand(1, 1, 24, 24, 24)
    smooth = torch.nn.functional.avg_pool3d(image, 3, stride=1, padding=1)
    smoother = torch.nn.functional.avg_pool3d(smooth, 3, stride=1, padding=1)
    assert perceptual(image, image).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < perceptual(smooth, image).item() < perceptual(smoother, image).item()
    assert not any(p.requires_grad for p in perceptual.parameters())  # the feature network stays frozen


def test_perceptual_and_adversarial_terms_change_the_gradients_and_are_off_at_weight_zero():
    perceptual = PerceptualLoss()
    plain = _gradients(AutoencoderLossWeights())
    zero = _gradients(AutoencoderLossWeights(perceptual=0.0), perceptual)
    with_perceptual = _gradients(AutoencoderLossWeights(perceptual=1.0), perceptual)
    with_adversarial = _gradients(AutoencoderLossWeights(adversarial=0.5), adversarial=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, zero))
    assert any(not torch.allclose(a, b) for a, b in zip(plain, with_perceptual))
    assert any(not torch.allclose(a, b) for a, b in zip(plain, with_adversarial))
    out = autoencoder_loss(
        BrainAutoencoder(TINY)(torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 16, 16, 16, dtype=torch.long)),
        torch.rand(1, 1, 16, 16, 16),
        torch.zeros(1, 16, 16, 16, dtype=torch.long),
    )
    assert "perceptual" not in out  # weight 0: not even computed


def test_training_with_discriminator_logs_its_losses_and_resumes_bit_exactly_after_a_kill(prepared, tmp_path, monkeypatch):
    reference_folder = train_autoencoder(prepared, tmp_path / "a", TINY, GAN, device="cpu", progress=False)
    reference = load_file(reference_folder / "model.safetensors")
    history = [h for h in __import__("json").loads((tmp_path / "a" / "history.json").read_text())]
    assert "adversarial" not in history[1] and "discriminator" in history[2] and "perceptual" in history[0]  # after the warm-up
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "discriminator", "discriminator_optimizer"} <= set(saved["state"])

    real, calls = train_module.autoencoder_loss, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # during step 5; the last checkpoint is from step 4, after the warm-up
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "autoencoder_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(prepared, tmp_path / "b", TINY, GAN, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "autoencoder_loss", real)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = load_file(train_autoencoder(prepared, tmp_path / "b", TINY, GAN, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_checkpoint_and_an_exact_resume(prepared, tmp_path):
    """A real process killed by SIGKILL while torch.save writes the checkpoint: the previous
    checkpoint stays loadable, and the resumed run ends with the uninterrupted run's weights."""
    steps = AutoencoderTraining(steps=6, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3)
    reference = load_file(train_autoencoder(prepared, tmp_path / "a", TINY, steps, device="cpu", progress=False) / "model.safetensors")
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, torch
        from synthbrain import training
        from synthbrain.autoencoder.model import AutoencoderConfig
        from synthbrain.autoencoder.train import AutoencoderTraining, train_autoencoder
        real_save, saves = torch.save, []
        def save_then_die(obj, f, *args, **kwargs):
            saves.append(1)
            if len(saves) == 2:  # the checkpoint of step 4: half written, then killed
                with open(f, "wb") as handle:
                    handle.write(b"PK half a zip")
                    handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        torch.save = save_then_die
        config = AutoencoderConfig(**{TINY.to_dict()!r} | {{"channels": tuple({list(TINY.channels)!r})}})
        train_autoencoder({str(prepared)!r}, {str(tmp_path / "b")!r}, config,
                          AutoencoderTraining(steps=6, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3),
                          device="cpu", progress=False)
        """)
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])  # it died by the signal
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2  # the previous one, intact
    resumed = load_file(train_autoencoder(prepared, tmp_path / "b", TINY, steps, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)
    (tmp_path / "b" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a readable checkpoint .*; delete it to start the run again"):
        train_autoencoder(prepared, tmp_path / "b", TINY, steps, device="cpu", progress=False)


def test_bad_loss_settings_and_perceptual_networks_are_named_before_training(prepared, tmp_path):
    for name, value in (("perceptual", -0.1), ("adversarial", math.inf), ("kl", math.nan)):
        with pytest.raises(ValueError, match=f"weights.{name}={value!r}; allowed: a finite number >= 0"):
            AutoencoderLossWeights(**{name: value})
    with pytest.raises(ValueError, match="adversarial_criterion='wasserstein'"):
        AutoencoderTraining(adversarial_criterion="wasserstein")
    weights = AutoencoderLossWeights(perceptual=0.1)
    with pytest.raises(ValueError, match="perceptual network='.*nowhere.pt': no such file"):
        train_autoencoder(
            prepared, tmp_path / "x", TINY, AutoencoderTraining(weights=weights, perceptual_network=str(tmp_path / "nowhere.pt"))
        )
    not_torchscript = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, not_torchscript)
    with pytest.raises(ValueError, match="perceptual network='.*weights.pt': not a TorchScript file"):
        train_autoencoder(prepared, tmp_path / "x", TINY, AutoencoderTraining(weights=weights, perceptual_network=str(not_torchscript)))
    flat = tmp_path / "flat.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(1, 4, 3)), str(flat))  # a 2D network
    with pytest.raises(ValueError, match="perceptual network='.*flat.pt': does not take a 3D volume"):
        train_autoencoder(prepared, tmp_path / "x", TINY, AutoencoderTraining(weights=weights, perceptual_network=str(flat)))
    assert not (tmp_path / "x").exists()  # refused before anything was written
