"""SamplingSettings and the sampling flags every generating command shares (synthbrain.sampling)."""

from __future__ import annotations

import argparse

import pytest
import torch

from synthbrain.cli import main
from synthbrain.sampling import SAMPLER_NAMES, SPACINGS, SamplingSettings, add_sampling_arguments
from tests.helpers import tiny_generator


def test_the_names_are_those_of_the_samplers_and_the_schedule():
    from synthbrain.samplers import SAMPLERS
    from synthbrain.samplers.schedule import NoiseSchedule

    assert tuple(SAMPLERS) == SAMPLER_NAMES
    for spacing in SPACINGS:
        assert len(NoiseSchedule().timesteps(10, spacing)) == 10


def test_settings_are_checked_once_and_give_only_what_was_given():
    assert SamplingSettings().given() == {}
    assert SamplingSettings(steps=3, timestep_spacing="leading").given() == {"steps": 3, "timestep_spacing": "leading"}
    for kwargs, message in (
        ({"sampler": "euler"}, "sampler='euler'; allowed: ['ddpm', 'ddim', 'dpm++2m']"),
        ({"steps": 0}, "steps=0; allowed: an integer >= 1"),
        ({"steps": 2.5}, "steps=2.5; allowed: an integer >= 1"),
        ({"guidance_scale": -1.0}, "guidance_scale=-1.0; allowed: >= 0"),
        ({"guidance_scale": float("nan")}, "guidance_scale=nan; allowed: a finite number >= 0"),
        ({"timestep_spacing": "sideways"}, "timestep_spacing='sideways'; allowed: ['leading', 'linspace', 'trailing']"),
        ({"qc": "maybe"}, "qc='maybe'; allowed: ['measure', 'reject']"),
    ):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
            SamplingSettings(**kwargs)


def test_every_flag_reaches_the_settings():
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    argv = ["--sampler", "ddpm", "--steps", "7", "--guidance-scale", "2", "--timestep-spacing", "linspace", "--qc", "reject"]
    expected = {"sampler": "ddpm", "steps": 7, "guidance_scale": 2.0, "timestep_spacing": "linspace", "qc": "reject"}
    assert SamplingSettings.from_args(parser.parse_args(argv)).given() == expected


def test_evaluate_timestep_spacing_changes_the_samples(tmp_path, monkeypatch):
    """``synthbrain evaluate --timestep-spacing`` reaches generation (it was accepted and ignored)."""
    import synthbrain.evaluation.evaluate as evaluation

    folder = tiny_generator(distribution=True).save_pretrained(tmp_path / "model")
    calls = []
    monkeypatch.setattr(evaluation, "evaluate", lambda generator, *args, **kwargs: calls.append((generator, kwargs)))
    base = ["evaluate", "--model", str(folder), "--real", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "20"]
    assert main(base) == 0 and main([*base, "--timestep-spacing", "leading"]) == 0
    (generator, default), (_, leading) = calls
    assert default["sampling"] == {"steps": 20} and leading["sampling"] == {"steps": 20, "timestep_spacing": "leading"}
    first, second = (generator.generate(n=1, seed=0, **kw["sampling"]) for kw in (default, leading))
    assert (first.provenance["timestep_spacing"], second.provenance["timestep_spacing"]) == ("trailing", "leading")
    assert not torch.allclose(first.images, second.images)
