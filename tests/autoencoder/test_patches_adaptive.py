"""Patch training and the adaptive adversarial weight of the autoencoder (issue 30)."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from synthbrain.autoencoder import train as train_module
from synthbrain.autoencoder.losses import AutoencoderLossWeights, adaptive_adversarial_weight
from synthbrain.autoencoder.train import AutoencoderTraining, random_patches, train_autoencoder
from tests.autoencoder.test_losses import TINY  # the tiny autoencoder of the loss tests
from tests.helpers import make_prepared

PATCHED_GAN = AutoencoderTraining(
    steps=6,
    batch_size=2,
    checkpoint_every=2,
    log_every=1,
    learning_rate=1e-3,
    weights=AutoencoderLossWeights(adversarial=0.1),
    adversarial_warmup=2,
    adaptive_adversarial_weight=True,
    patch_size=(12, 16, 12),
    discriminator_channels=8,
    discriminator_layers=2,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    weight = torch.tensor([1.0, -2.0, 2.0], requires_grad=True)
    x = torch.tensor([3.0, 0.0, 4.0])
    reconstruction = (weight * x).sum()  # gradient x, norm 5
    adversarial = 10 * (weight * x).sum() + (weight * torch.tensor([0.0, 1.0, 0.0])).sum()  # gradient (30, 1, 40)
    got = adaptive_adversarial_weight(reconstruction, adversarial, weight)
    expected = 5.0 / (torch.tensor([30.0, 1.0, 40.0]).norm() + 1e-4)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not got.requires_grad
    (reconstruction + adversarial).backward()  # the graph is kept for the training step's backward
    zero_adversarial = (weight * 0).sum()
    assert adaptive_adversarial_weight((weight * x).sum(), zero_adversarial, weight, max_weight=7.0).item() == 7.0  # clamped


def test_random_patches_cut_the_same_window_from_image_and_labels_reproducibly():
    image = torch.arange(2 * 8 * 10 * 12, dtype=torch.float32).reshape(2, 1, 8, 10, 12)
    indices = image[:, 0].long()  # labels equal to the image: the crops must match voxel for voxel
    fractions = torch.stack([image[:, 0], -image[:, 0]], dim=1)
    a_image, a_labels = random_patches(image, indices, (4, 6, 8), torch.Generator().manual_seed(3))
    b_image, b_fractions = random_patches(image, fractions, (4, 6, 8), torch.Generator().manual_seed(3))
    assert a_image.shape == (2, 1, 4, 6, 8) and a_labels.shape == (2, 4, 6, 8) and b_fractions.shape == (2, 2, 4, 6, 8)
    assert torch.equal(a_image, b_image)  # same seed, same windows
    assert torch.equal(a_image[:, 0].long(), a_labels) and torch.equal(b_fractions[:, 0], a_image[:, 0])
    c_image, _ = random_patches(image, None, (4, 6, 8), torch.Generator().manual_seed(4))
    assert not torch.equal(a_image, c_image)
    whole, _ = random_patches(image, None, (8, 10, 12), torch.Generator().manual_seed(0))
    assert torch.equal(whole, image)
    with pytest.raises(ValueError, match=r"patch size \(9, 10, 12\) exceeds the volume \(8, 10, 12\)"):
        random_patches(image, None, (9, 10, 12), torch.Generator())


def test_patch_training_with_adaptive_weight_logs_it_and_resumes_bit_exactly_after_a_kill(prepared, tmp_path, monkeypatch):
    seen = []
    real_patches = train_module.random_patches
    monkeypatch.setattr(train_module, "random_patches", lambda *a: seen.append(real_patches(*a)[0].shape) or real_patches(*a))
    folder = train_autoencoder(prepared, tmp_path / "a", TINY, PATCHED_GAN, device="cpu", progress=False)
    reference = load_file(folder / "model.safetensors")
    assert seen and all(shape == (2, 1, 12, 16, 12) for shape in seen)  # the network saw patches, not 16^3 volumes
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert "adaptive_weight" not in history[1] and history[2]["adaptive_weight"] > 0  # from the end of the warm-up
    assert json.loads((tmp_path / "a" / "run.json").read_text())["training"]["patch_size"] == [12, 16, 12]

    real, calls = train_module.autoencoder_loss, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "autoencoder_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(prepared, tmp_path / "b", TINY, PATCHED_GAN, device="cpu", progress=False)
    monkeypatch.setattr(train_module, "autoencoder_loss", real)
    assert "crops" in torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["generators"]
    resumed = load_file(train_autoencoder(prepared, tmp_path / "b", TINY, PATCHED_GAN, device="cpu", progress=False) / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0)
    whole = AutoencoderTraining(**{**PATCHED_GAN.__dict__, "patch_size": None, "adaptive_adversarial_weight": False})
    other = load_file(train_autoencoder(prepared, tmp_path / "c", TINY, whole, device="cpu", progress=False) / "model.safetensors")
    assert any(not torch.equal(other[k], reference[k]) for k in reference)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"patch_size": (8, 8)}, r"patch_size=\(8, 8\); allowed: None \(whole volumes\) or a tuple of three integers >= 1"),
        ({"patch_size": (8, 0, 8)}, r"patch_size=\(8, 0, 8\); allowed"),
        ({"patch_size": [8, 8, 8]}, r"patch_size=\[8, 8, 8\]; allowed"),
        ({"weights": AutoencoderLossWeights(adversarial=0.1)}, r"adversarial_warmup=0 with weights.adversarial=0.1 and no init"),
        ({"adversarial_warmup": -1}, r"adversarial_warmup=-1; allowed: an integer >= 0"),
        ({"steps": 0}, r"steps=0; allowed: an integer >= 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(settings, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderTraining(**settings)
    with pytest.raises(ValueError, match=r"weights.adversarial=-0.1; allowed: a finite number >= 0"):
        AutoencoderLossWeights(adversarial=-0.1)
    with pytest.raises(ValueError, match=r"weights.perceptual=nan; allowed"):
        AutoencoderLossWeights(perceptual=float("nan"))


@pytest.mark.parametrize("patch", [(8, 12, 5), (18, 8, 8)])
def test_patches_that_do_not_fit_the_grid_or_the_downsampling_are_refused_before_training(prepared, tmp_path, patch):
    settings = AutoencoderTraining(steps=2, batch_size=2, patch_size=patch)
    message = rf"patch_size={re.escape(str(patch))}; allowed: at most the training grid \(16, 16, 16\) per axis and each a multiple"
    with pytest.raises(ValueError, match=message):
        train_autoencoder(prepared, tmp_path / "run", TINY, settings, device="cpu", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_patch_too_small_for_the_discriminator_is_refused_before_training(prepared, tmp_path):
    settings = AutoencoderTraining(**{**PATCHED_GAN.__dict__, "patch_size": (8, 8, 8)})
    with pytest.raises(ValueError, match=r"discriminator's 2 stride-2 layers do not fit a patch of \(8, 8, 8\) voxels"):
        train_autoencoder(prepared, tmp_path / "run", TINY, settings, device="cpu", progress=False)
