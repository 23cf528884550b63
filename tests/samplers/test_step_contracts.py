"""Boundaries and contracts of the schedule and the steps that the known-answer tests in
test_samplers.py do not pin (each was a surviving mutant, docs/testing.md)."""

import pytest
import torch

from synthbrain.samplers import NoiseSchedule, ddim, dpm_solver

REFERENCE = NoiseSchedule()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_train_timesteps": 1}, r"^num_train_timesteps=1; allowed: an integer >= 2$"),
        ({"num_train_timesteps": 2.0}, r"^num_train_timesteps=2.0; allowed: an integer >= 2$"),
        ({"prediction_type": "x0"}, r"^prediction_type='x0'; allowed: \['epsilon', 'v_prediction', 'sample'\]$"),
        ({"beta_start": 0.0}, r"^beta_start=0.0, beta_end=0.0205; need 0 < beta_start < beta_end < 1$"),
        ({"beta_start": 0.01, "beta_end": 0.01}, r"^beta_start=0.01, beta_end=0.01; need"),
        ({"beta_end": 1.0}, r"^beta_start=0.0015, beta_end=1.0; need"),
        ({"beta_end": 1.5}, r"^beta_start=0.0015, beta_end=1.5; need"),
    ],
)
def test_schedule_refuses_values_at_and_beyond_its_bounds_and_names_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(**kwargs)


def test_schedule_accepts_the_smallest_valid_values():
    two = NoiseSchedule(num_train_timesteps=2, beta_schedule="linear", beta_start=1e-4, beta_end=0.999)
    assert two.timesteps(2) == [1, 0]
    assert two.alpha_bar(1) == pytest.approx((1 - 1e-4) * (1 - 0.999))


def test_alpha_bar_is_defined_up_to_t_minus_one_and_one_at_the_clean_end():
    assert REFERENCE.alpha_bar(999) == float(REFERENCE.alphas_cumprod[999])
    assert REFERENCE.alpha_bar(-1) == 1.0
    with pytest.raises(ValueError, match=r"^timestep 1000 >= num_train_timesteps=1000$"):
        REFERENCE.alpha_bar(1000)


def test_timesteps_default_to_trailing_and_linspace_gives_the_count_asked_for():
    assert REFERENCE.timesteps(10) == REFERENCE.timesteps(10, "trailing")
    assert len(REFERENCE.timesteps(7, "linspace")) == 7


def test_leading_spacing_is_allowed_up_to_exactly_the_maximum_start_gap():
    schedule = NoiseSchedule(num_train_timesteps=20)  # the largest allowed gap: 0.1 * 20 = 2 steps below t=19
    assert schedule.timesteps(18, "leading")[0] == 17  # gap 2: allowed
    with pytest.raises(ValueError) as refused:  # gap 3
        schedule.timesteps(5, "leading")
    assert str(refused.value) == (
        "num_steps=5 with spacing='leading' starts at t=16, more than 10% of the schedule below its noisiest step t=19: "
        "the starting noise would be taken for a partly denoised sample; allowed: spacing 'trailing' or 'linspace' "
        "(they start at the noisiest step), or a step count for which 'leading' starts within 2 steps of it"
    )


def test_negative_eta_is_refused_by_name():
    x = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match=r"^eta=-0.5; allowed: >= 0$"):
        ddim.step(REFERENCE, x, 500, 480, x, eta=-0.5)


def test_deterministic_ddim_draws_no_random_numbers():
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    x = torch.randn(1, 2, 3)
    ddim.step(REFERENCE, x, 500, 480, x, eta=0.0, generator=generator)
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("t, t_prev", [(500, 480), (40, 0), (19, -1)])
def test_first_order_dpm_solver_step_is_ddim_and_returns_its_clean_estimate(t, t_prev):
    """Lu et al. 2022: DPM-Solver++ without a previous estimate is first order, which is DDIM (eta 0),
    down to t_prev = 0 (alpha_bar(0) < 1, not yet the clean end); both return the model's x0 estimate."""
    generator = torch.Generator().manual_seed(1)
    output, sample = torch.randn(2, 3, 4, generator=generator), torch.randn(2, 3, 4, generator=generator)
    expected_x0, _ = REFERENCE.split(output, sample, t)
    dpm, reference = dpm_solver.step(REFERENCE, output, t, t_prev, sample), ddim.step(REFERENCE, output, t, t_prev, sample)
    torch.testing.assert_close(dpm.prev_sample, reference.prev_sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dpm.pred_x0, expected_x0)
    torch.testing.assert_close(reference.pred_x0, expected_x0)
    if t_prev >= 0:
        assert not torch.allclose(dpm.prev_sample, expected_x0)  # t_prev = 0 is not the clean end
