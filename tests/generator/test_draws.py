"""The seed scheme's streams and the checks of seeds and sampling settings (synthbrain.generator.draws),
pinned where test_generate.py checks them only through generate (written for the mutants that
survived, docs/testing.md)."""

import math

import numpy as np
import pytest
import torch

from synthbrain.generator import draws


def test_each_purpose_of_a_volume_seed_has_its_own_pinned_stream():
    for purpose in (draws.CONDITION, draws.DENSITY, draws.SAMPLER, draws.APPEARANCE):
        expected = np.random.default_rng(np.random.SeedSequence(123, spawn_key=(purpose,))).integers(2**62, size=4)
        assert draws.stream(123, purpose).integers(2**62, size=4).tolist() == expected.tolist()
    firsts = {int(draws.stream(123, p).integers(2**62)) for p in (draws.CONDITION, draws.DENSITY, draws.SAMPLER, draws.APPEARANCE)}
    assert len(firsts) == 4  # never one stream shared by two purposes
    seed = int(np.random.default_rng(np.random.SeedSequence(123, spawn_key=(draws.SAMPLER,))).integers(2**63))
    assert draws.torch_stream(123, draws.SAMPLER).initial_seed() == seed
    # literal values, so that a change in how the streams are derived (or in numpy's seeding) is seen
    assert draws.stream(123, draws.CONDITION).integers(1000, size=3).tolist() == [739, 552, 43]
    assert draws.torch_stream(123, draws.SAMPLER).initial_seed() == 2434382007749116978


def test_volume_seed_refuses_a_bad_index_by_name():
    with pytest.raises(ValueError, match=r"^index=-1; allowed: an integer >= 0$"):
        draws.volume_seed(0, -1)
    with pytest.raises(ValueError, match=r"^index=1.0; allowed: an integer >= 0$"):
        draws.volume_seed(0, 1.0)


def test_volume_seeds_take_a_list_of_valid_seeds_only():
    top = 2**draws.SEED_BITS - 1
    assert draws.volume_seeds([0, top], 2) == [0, top]  # both ends of the range
    assert draws.volume_seeds(np.array([5, 6]), 2) == [5, 6]
    with pytest.raises(ValueError, match=r"^seed=\{1, 2\}; allowed: an integer >= 0, or a list of one seed per volume$"):
        draws.volume_seeds({1, 2}, 2)
    with pytest.raises(ValueError, match=r"^seed='12'; allowed"):
        draws.volume_seeds("12", 2)
    for bad in (-1, 2**draws.SEED_BITS, 1.5, True):
        with pytest.raises(ValueError, match=rf"^seed: values \[{bad!r}\]; allowed: integers >= 0 \(and below 2\*\*63\)$"):
            draws.volume_seeds([bad], 1)
    with pytest.raises(ValueError, match=r"^seed: values \[-1, -2, -3, -4, -5, -6, -7, -8, -9, -10\]; allowed"):  # the first 10 shown
        draws.volume_seeds(list(range(-1, -12, -1)), 11)
    with pytest.raises(ValueError, match=r"^seed: 2 seeds for 3 volumes; give one per volume or a single int$"):
        draws.volume_seeds([1, 2], 3)


def test_sampling_settings_are_checked_by_name_at_their_bounds():
    draws.check_sampling("ddim", 1, 0)  # guidance 0 (unconditional) and 0.5 are allowed
    draws.check_sampling("ddim", 1, 0.5, "leading")
    for args, message in (
        ((3, 1, 1.0), r"^sampler=3; allowed: \['ddpm', 'ddim', 'dpm\+\+2m'\]$"),
        (("dpm_solver", 1, 1.0), r"^sampler='dpm_solver'; allowed: \['ddpm', 'ddim', 'dpm\+\+2m'\]$"),
        (("ddim", 0, 1.0), r"^steps=0; allowed: an integer >= 1$"),
        (("ddim", 1, True), r"^guidance_scale=True; allowed: a finite number >= 0$"),
        (("ddim", 1, math.inf), r"^guidance_scale=inf; allowed: a finite number >= 0$"),
        (("ddim", 1, "2"), r"^guidance_scale='2'; allowed: a finite number >= 0$"),
        (("ddim", 1, -0.5), r"^guidance_scale=-0.5; allowed: >= 0$"),
        (("ddim", 1, 1.0, "odd"), r"^timestep_spacing='odd'; allowed: \['leading', 'linspace', 'trailing'\]$"),
    ):
        with pytest.raises(ValueError, match=message):
            draws.check_sampling(*args)
    with pytest.raises(ValueError, match=r"^defaults: steps=0; allowed"):
        draws.check_sampling("ddim", 0, 1.0, where="defaults: ")


def test_initial_noise_is_one_seeded_normal_draw_per_volume():
    noise = draws.initial_noise([3, 4], (2, 5))
    assert noise.shape == (2, 2, 5) and noise.dtype == torch.float32
    assert torch.equal(noise[1], torch.randn(2, 5, generator=torch.Generator().manual_seed(4)))
