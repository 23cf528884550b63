import math

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from synthbrain.samplers import NoiseSchedule, ddpm, get_sampler, sample

REFERENCE = NoiseSchedule()  # 1000 steps, scaled_linear 0.0015..0.0205, epsilon


def test_schedule_matches_monai_tables():
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205)
    torch.testing.assert_close(REFERENCE.alphas_cumprod.float(), monai.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_reference_ddim_timesteps_are_980_to_0():
    assert REFERENCE.timesteps(50, "leading") == list(range(980, -1, -20))
    assert REFERENCE.timesteps(50, "trailing")[:2] == [999, 979]
    assert REFERENCE.timesteps(50, "linspace")[0] == 999 and REFERENCE.timesteps(50, "linspace")[-1] == 0
    assert REFERENCE.timesteps(1000, get_sampler("ddpm").DEFAULT_SPACING) == list(range(999, -1, -1))
    assert REFERENCE.timesteps(10, get_sampler("dpm++2m").DEFAULT_SPACING)[0] == 999


def test_ddim_loop_equals_monai_at_the_released_timesteps():
    torch.manual_seed(0)
    weight = torch.randn(3, 3) * 0.3

    def model(x, t):  # a fixed toy epsilon-predictor that depends on t
        return torch.einsum("ij,bj...->bi...", weight, x) * math.cos(t / 700)

    x_T = torch.randn(2, 3, 4, 5, 4)
    ours = sample(model, x_T, REFERENCE, "ddim", 50, spacing="leading")
    monai = DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205, clip_sample=False)
    monai.set_timesteps(50)
    monai.timesteps = torch.arange(980, -1, -20)  # the released spacing; MONAI >= 1.6 would use linspace
    x = x_T.clone()
    for t in monai.timesteps:
        x, _ = monai.step(model(x, int(t)), int(t), x)
    # MONAI keeps its tables in float32, ours in float64: 50 steps differ by float32 rounding only.
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_stochastic_ddim_step_equals_monai_with_the_same_noise(eta):
    """eta > 0 (the noise term and its scale sigma, Song et al. 2021 eq. 16) against MONAI's DDIMScheduler:
    the same generator seed gives the same step, and the predicted clean sample is returned too."""
    from synthbrain.samplers import ddim

    monai = DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205, clip_sample=False)
    monai.set_timesteps(50)  # steps of 20
    x, eps = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    for t in (980, 500, 40):
        ours = ddim.step(REFERENCE, eps, t, t - 20, x, eta=eta, generator=torch.Generator().manual_seed(t))
        prev, x0 = monai.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours.prev_sample, prev, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.pred_x0, x0, rtol=1e-4, atol=1e-5)
        deterministic = ddim.step(REFERENCE, eps, t, t - 20, x, eta=0.0).prev_sample
        assert (ours.prev_sample - deterministic).abs().max() > 1e-3  # the noise is really added


def test_ddpm_step_equals_monai_with_the_same_noise():
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205, clip_sample=False)
    x, eps = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    for t in (999, 500, 1, 0):
        ours = ddpm.step(REFERENCE, eps, t, t - 1, x, generator=torch.Generator().manual_seed(t)).prev_sample
        theirs, _ = monai.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


# The analytic case: data ~ N(0, s^2). The exact noise predictor is eps(x_t) = sqrt(1-abar) x_t / v_t with
# v_t = abar s^2 + 1 - abar; the probability-flow ODE scales x by sqrt(v_t / v_T), and every sampler ends by
# returning the model's clean estimate E[x0 | x_t] = sqrt(abar) s^2 x_t / v_t at its last timestep.
S = 0.5


def _v(schedule, t):
    abar = schedule.alpha_bar(t)
    return abar * S**2 + 1 - abar


def _gaussian_model(schedule):
    def model(x, t):
        return (1 - schedule.alpha_bar(t)) ** 0.5 * x / _v(schedule, t)

    return model


def _ode_error(sampler, steps, spacing="trailing", schedule=REFERENCE):
    x_T = torch.linspace(-3, 3, 101, dtype=torch.float64)
    ts = schedule.timesteps(steps, spacing)
    first, last = ts[0], ts[-1]
    exact = x_T * schedule.alpha_bar(last) ** 0.5 * S**2 / math.sqrt(_v(schedule, first) * _v(schedule, last))
    return (sample(_gaussian_model(schedule), x_T, schedule, sampler, steps, spacing=spacing) - exact).abs().max().item()


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_converges_to_the_exact_ode_solution(spacing):
    errors = [_ode_error("ddim", n, spacing) for n in (10, 20, 50, 200, 1000)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0], errors


def test_dpm_solver_is_more_accurate_than_ddim_at_the_same_steps():
    for n in (10, 20, 50, 100):
        dpm, ddim_error = _ode_error("dpm++2m", n), _ode_error("ddim", n)
        assert dpm < ddim_error / 3 and dpm < 0.02, (n, dpm, ddim_error)


@pytest.mark.parametrize("sampler, kw", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_stochastic_samplers_reach_the_data_distribution(sampler, kw):
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(40000, generator=generator, dtype=torch.float64) * _v(REFERENCE, 999) ** 0.5
    x0 = sample(_gaussian_model(REFERENCE), x_T, REFERENCE, sampler, 1000, generator=generator, **kw)
    expected = REFERENCE.alpha_bar(0) ** 0.5 * S**2 / _v(REFERENCE, 0) ** 0.5  # std of E[x0 | x_0-step sample]
    assert x0.std().item() == pytest.approx(expected, rel=0.015)
    assert abs(x0.mean().item()) < 0.01


def test_same_generator_seed_gives_the_same_sample():
    model = _gaussian_model(REFERENCE)
    x_T = torch.randn(64, dtype=torch.float64)
    a = sample(model, x_T, REFERENCE, "ddpm", 20, generator=torch.Generator().manual_seed(3))
    b = sample(model, x_T, REFERENCE, "ddpm", 20, generator=torch.Generator().manual_seed(3))
    c = sample(model, x_T, REFERENCE, "ddpm", 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_parameterisations_round_trip(prediction_type):
    schedule = NoiseSchedule(prediction_type=prediction_type)
    x0, noise = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    t = torch.tensor([0, 10, 500, 999])
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.training_target(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        got_x0, got_eps = schedule.split(target[i : i + 1], x_t[i : i + 1], ti)
        torch.testing.assert_close(got_x0, x0[i : i + 1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_eps, noise[i : i + 1], rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sampler='euler'"):
        get_sampler("euler")
    with pytest.raises(ValueError, match="num_steps=0"):
        REFERENCE.timesteps(0)
    with pytest.raises(ValueError, match="spacing='odd'"):
        REFERENCE.timesteps(10, "odd")
    with pytest.raises(ValueError, match="beta_schedule='quadratic'"):
        NoiseSchedule(beta_schedule="quadratic")
    with pytest.raises(ValueError, match="unknown keys"):
        NoiseSchedule.from_dict({"num_train_timesteps": 10, "clip": True})
    assert NoiseSchedule.from_dict(REFERENCE.to_dict()) == REFERENCE


ZERO_SNR = NoiseSchedule(prediction_type="v_prediction", zero_terminal_snr=True)


def _gaussian_v_model(schedule):
    """The exact v-predictor for data ~ N(0, S^2): v = sqrt(abar) eps - sqrt(1 - abar) x0 with the exact
    posterior means of eps and x0 (finite at zero signal, where x0's mean is 0 and eps = x_t)."""

    def model(x, t):
        abar = schedule.alpha_bar(t)
        x0 = abar**0.5 * S**2 * x / _v(schedule, t)
        eps = (1 - abar) ** 0.5 * x / _v(schedule, t)
        return abar**0.5 * eps - (1 - abar) ** 0.5 * x0

    return model


def test_zero_terminal_snr_schedule_ends_in_pure_noise_and_keeps_the_first_step():
    base = NoiseSchedule(prediction_type="v_prediction")
    assert ZERO_SNR.alpha_bar(999) == 0.0 and base.alpha_bar(999) > 0
    assert ZERO_SNR.alpha_bar(0) == pytest.approx(base.alpha_bar(0), rel=1e-12)
    assert torch.all(ZERO_SNR.alphas_cumprod[1:] < ZERO_SNR.alphas_cumprod[:-1])  # still decreasing
    # Lin et al. 2024, Algorithm 1: sqrt(abar) is the base one shifted and scaled, so it stays linear in the base
    root, base_root = ZERO_SNR.alphas_cumprod.sqrt(), base.alphas_cumprod.sqrt()
    slope = (root[0] - root[-1]) / (base_root[0] - base_root[-1])
    torch.testing.assert_close(root, (base_root - base_root[-1]) * slope, rtol=0, atol=1e-12)
    assert NoiseSchedule.from_dict(ZERO_SNR.to_dict()) == ZERO_SNR
    with pytest.raises(ValueError, match=r"zero_terminal_snr=True with prediction_type='epsilon'.*allowed: prediction_type 'v_prediction'"):
        NoiseSchedule(zero_terminal_snr=True)
    with pytest.raises(ValueError, match=r"zero_terminal_snr=1; allowed: True or False"):
        NoiseSchedule(prediction_type="v_prediction", zero_terminal_snr=1)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "ddpm"])
def test_every_sampler_maps_pure_noise_to_the_data_distribution_on_a_zero_terminal_snr_schedule(sampler):
    """From exact noise N(0, 1) at the noisiest step (the true marginal there, now that no signal is
    left), the exact model's samples approach the exact answer: for the ODE samplers E[x0 | x_t] at the
    last timestep of the probability-flow ODE, whose x_t has the spread sqrt(v_t) (v_T = 1)."""
    x_T = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = 1000 if sampler == "ddpm" else 200
    x0 = sample(_gaussian_v_model(ZERO_SNR), x_T, ZERO_SNR, sampler, steps, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(x0).all()
    last = ZERO_SNR.timesteps(steps, "trailing")[-1]
    expected = ZERO_SNR.alpha_bar(last) ** 0.5 * S**2 / _v(ZERO_SNR, last) ** 0.5
    # measured: DDIM 1.4 % and DPM-Solver++ 0.2 % low; DDPM 2.1 % low (its plug-in posterior variance misses the
    # uncertainty of x0 given x_t, by more where steps are large, as near a zero-SNR end)
    tolerance = {"ddim": 0.02, "dpm++2m": 0.005, "ddpm": 0.03}[sampler]
    assert x0.std().item() / x_T.std().item() == pytest.approx(expected, rel=tolerance)
