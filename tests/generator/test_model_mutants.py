"""Known answers written for survivors of the mutation run on ``synthbrain/generator/model.py``
(docs/testing.md, "The orchestration modules")."""

import re

import pytest
import torch

from synthbrain import BrainGenerator
from synthbrain.samplers import SAMPLERS
from tests.helpers import tiny_generator


def test_another_sampler_gets_its_own_spacing_and_the_models_sampler_the_models():
    """The spacing handed to generation when none is given: the model's own for its own sampler, the
    sampler's ``DEFAULT_SPACING`` for another one. A model saved before the spacing was recorded
    samples DDIM with "leading" (synthbrain 0.1); asked for DPM-Solver++ it must not pass that on."""
    arguments = tiny_generator(steps=10).parts().arguments()
    legacy = BrainGenerator(**{**arguments, "defaults": {"steps": 10, "sampler": "ddim", "timestep_spacing": "leading"}})
    assert legacy.sampling_settings()["timestep_spacing"] == "leading"
    assert legacy.sampling_settings(sampler="ddim")["timestep_spacing"] == "leading"
    other = legacy.sampling_settings(sampler="dpm++2m")
    assert other == {"sampler": "dpm++2m", "steps": 10, "guidance_scale": 1.0, "timestep_spacing": SAMPLERS["dpm++2m"].DEFAULT_SPACING}
    assert other["timestep_spacing"] == "trailing"
    assert legacy.sampling_settings(sampler="dpm++2m", timestep_spacing="linspace")["timestep_spacing"] == "linspace"


def test_a_default_qc_mode_that_does_not_exist_is_refused_with_the_allowed_modes():
    arguments = tiny_generator().parts().arguments()
    message = "defaults: qc='sometimes'; allowed: ['measure', 'reject'] ('reject' only for a model with label maps)"
    with pytest.raises(ValueError, match=re.escape(message)):
        BrainGenerator(**{**arguments, "defaults": {"qc": "sometimes"}})
    with pytest.raises(ValueError, match=re.escape(message.replace("'sometimes'", "'reject'"))):
        BrainGenerator(**{**arguments, "label_classes": None, "defaults": {"qc": "reject"}})


def test_a_device_move_keeps_the_precision_set_before():
    """``to(device)`` without a dtype moves the model and leaves its weights' precision as it was."""
    generator = tiny_generator().to(dtype=torch.float64)
    generator.to("cpu")
    assert {p.dtype for module in (generator.autoencoder, generator.unet) for p in module.parameters()} == {torch.float64}
    generator.to("cpu", dtype=torch.bfloat16)  # bfloat16 weights are stored in bfloat16 (issue 33)
    generator.to("cpu")
    assert {p.dtype for module in (generator.autoencoder, generator.unet) for p in module.parameters()} == {torch.bfloat16}


def test_the_sampled_latents_reach_the_decoder_divided_by_the_latent_scale():
    """The diffusion model samples latents scaled by ``latent_scale`` (the autoencoder's latents
    times the scale); the decoder gets them divided by it. Two generators that differ only in the
    scale, at the same seed, hand the decoder the same latents divided by 1 and by 4."""
    arguments = tiny_generator(steps=2).parts().arguments()
    autoencoder, decoded = arguments["autoencoder"], []
    decode = autoencoder.decode
    autoencoder.decode = lambda z: decoded.append(z.clone()) or decode(z)
    for scale in (1.0, 4.0):
        generator = BrainGenerator(**{**arguments, "latent_scale": scale})
        generator.generate(n=1, seed=3, age=50.0, sex="F", brain_volume=1200.0, ventricular_volume=20.0)
    unscaled, scaled = decoded
    torch.testing.assert_close(scaled * 4.0, unscaled)
    assert unscaled.abs().max() > 0.1
