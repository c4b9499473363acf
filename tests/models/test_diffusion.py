"""The DDPM: schedules, ε- and v-prediction, min-SNR weighting, fixed-noise validation, the DDPM, DDIM and
DPM-Solver++ samplers, classifier-free guidance."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models import diffusion
from hcmbench.models.registry import build_model
from hcmbench.models.diffusion import (NoiseSchedule, ddim_loop, ddpm_loop, dpmpp_2m_loop, make_betas, min_snr_weights,
                                       spaced_timesteps, split_prediction)

TINY = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1)


def tiny(timesteps: int = 100, **settings):
    torch.manual_seed(0)
    return build_model("ddpm", image_size=32, timesteps=timesteps, **TINY, **settings)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n: int, brightness: float, seed: int) -> torch.Tensor:
    """Smooth images with mean ≈ `brightness`: a disc a little brighter than its surround, plus noise."""
    g = seeded(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.4).float() * 0.15
    return (brightness + disc + 0.05 * torch.randn(n, 1, 32, 32, generator=g)).clamp(-1, 1)


def train(model, images, labels, steps: int, lr: float = 2e-3) -> list[float]:
    opts = model.configure_optimizers(TrainConfig(lr=lr))
    return [model.training_step((images, labels), opts)["noise_mse"] for _ in range(steps)]


@pytest.fixture(scope="module")
def overfit():
    """A tiny unconditional model trained on one fixed batch, with its losses and the batch."""
    model = tiny()
    images, labels = blobs(8, -0.3, seed=1), torch.zeros(8, dtype=torch.long)
    losses = train(model, images, labels, steps=40)
    return model, losses, (images, labels)


@pytest.mark.parametrize("timesteps", [1000, 100, 20])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_alphas_cumprod_strictly_decrease_inside_unit_interval(schedule, timesteps):
    alpha_bar = NoiseSchedule(schedule, timesteps).alphas_cumprod
    assert alpha_bar.shape == (timesteps,)
    assert (alpha_bar > 0).all() and (alpha_bar < 1).all()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert alpha_bar[-1] < 0.001  # x_T is (almost) pure noise, for small T too


def test_add_noise_endpoints_and_schedule_rebuilt_not_stored():
    schedule = NoiseSchedule("linear", 1000)
    x0, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    start = schedule.add_noise(x0, noise, torch.zeros(4, dtype=torch.long))
    end = schedule.add_noise(x0, noise, torch.full((4,), 999))
    assert (start - x0).abs().max() < 0.05
    assert (end - noise).abs().max() < 0.05
    model = tiny(schedule="cosine")
    assert not any("alphas_cumprod" in k or "betas" in k for k in model.state_dict())
    assert torch.equal(tiny(schedule="cosine").schedule.alphas_cumprod, NoiseSchedule("cosine", 100).alphas_cumprod)
    with pytest.raises(HcmbenchError, match="schedule"):
        tiny(schedule="quadratic")


def test_noise_mse_falls_when_overfitting_one_batch(overfit):
    _, losses, _ = overfit
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.3 * first, (first, last)


def test_validation_score_is_lower_after_overfitting(overfit):
    model, _, batch = overfit
    assert model.validation_score([batch]) < 0.2 * tiny().validation_score([batch])


def test_ddim_is_deterministic_for_eta_zero_and_differs_from_ancestral(overfit):
    model, _, _ = overfit
    g = seeded(0)
    a = model.sample(2, rng=g, sampler="ddim", steps=5)
    # η = 0: the generator is used for x_T only, so it has moved by exactly one draw of that shape.
    g_ref = seeded(0)
    torch.randn(2, 1, 32, 32, generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())
    assert torch.equal(a, model.sample(2, rng=seeded(0), sampler="ddim", steps=5, eta=0.0))
    assert not torch.allclose(a, model.sample(2, rng=seeded(0), sampler="ddim", steps=5, eta=1.0))
    ancestral = model.sample(2, rng=seeded(0), sampler="ddpm", steps=5)
    assert (a - ancestral).abs().mean() > 0.01


def mixture_oracle(schedule: NoiseSchedule, points: list[torch.Tensor], weights: list[float]):
    """The exact ε-prediction for data that is one of `points` with probabilities `weights`."""
    def predict_noise(x, t):
        alpha_bar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        sq_dist = torch.stack([((x - alpha_bar.sqrt() * c) ** 2).flatten(1).sum(1) for c in points], 1)
        posterior = torch.softmax(-sq_dist / (2 * (1 - alpha_bar.flatten()[:, None])) + torch.tensor(weights).log(), 1)
        x0 = sum(posterior[:, i, None, None, None] * c for i, c in enumerate(points))
        return (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    return predict_noise


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_samplers_with_the_exact_noise_prediction_reproduce_a_two_point_distribution(schedule):
    noise_schedule = NoiseSchedule(schedule, 100)
    a = torch.full((1, 8, 8), 0.5)
    a[:, :4] = -0.3
    predict = mixture_oracle(noise_schedule, [a, -a], [0.75, 0.25])
    loops = {
        "ddpm": lambda x, g: ddpm_loop(predict, noise_schedule, x, spaced_timesteps(100, 100), g),
        "ddpm respaced": lambda x, g: ddpm_loop(predict, noise_schedule, x, spaced_timesteps(100, 10), g),
        "ddim": lambda x, g: ddim_loop(predict, noise_schedule, x, spaced_timesteps(100, 10), 0.0, g),
        "ddim eta 1": lambda x, g: ddim_loop(predict, noise_schedule, x, spaced_timesteps(100, 10), 1.0, g),
        "dpm++": lambda x, g: dpmpp_2m_loop(predict, noise_schedule, x, spaced_timesteps(100, 10)),
    }
    for name, loop in loops.items():
        g = seeded(0)
        out = loop(torch.randn(1000, 1, 8, 8, generator=g), g)
        to_a, to_b = (out - a).flatten(1).abs().amax(1), (out + a).flatten(1).abs().amax(1)
        assert torch.minimum(to_a, to_b).max() < 1e-3, name  # every sample lands on a data point
        assert 0.68 < (to_a < to_b).float().mean() < 0.84, name  # in about the right proportion


def test_ddim_with_eta_one_is_respaced_ancestral_sampling(overfit):
    model, _, _ = overfit
    ddim = model.sample(2, rng=seeded(0), sampler="ddim", steps=7, eta=1.0)
    ddpm = model.sample(2, rng=seeded(0), sampler="ddpm", steps=7)
    assert torch.allclose(ddim, ddpm, atol=1e-4)


@pytest.mark.parametrize("options", [
    dict(sampler="euler"), dict(sampler="ddim", steps=0), dict(sampler="ddim", steps=101), dict(steps=2.5),
    dict(sampler="ddim", eta=-0.1), dict(sampler="ddpm", eta=0.5), dict(guidance_scale=2.0),
])
def test_bad_sample_options_raise(options):
    with pytest.raises(HcmbenchError):
        tiny().sample(1, **options)


def test_class_conditional_samples_follow_labels_and_guidance_strengthens_them():
    # The cosine schedule and T = 100 let the tiny model learn the label's effect at high noise quickly.
    model = tiny(class_conditional=True, num_classes=2, schedule="cosine")
    assert model.conditional and not tiny().conditional
    images = torch.cat([blobs(4, -0.8, seed=2), blobs(4, 0.8, seed=3)])
    labels = torch.tensor([0] * 4 + [1] * 4)
    train(model, images, labels, steps=80, lr=1e-3)

    def contrast(guidance_scale: float) -> float:
        samples = model.sample(16, torch.tensor([0, 1] * 8), rng=seeded(0), sampler="ddim", steps=20,
                               guidance_scale=guidance_scale)
        return (samples[1::2].mean() - samples[0::2].mean()).item()

    guided, plain = contrast(4.0), contrast(1.0)
    assert guided > 0.8, guided
    assert 0 < plain < guided, (plain, guided)


# -- v-prediction, min-SNR weighting, DPM-Solver++ -----------------------------------------------------


def perturbed(model, scale: float = 0.05):
    """`model` with every parameter moved off its (partly zero) initial value, so that outputs are not trivial."""
    g = seeded(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_v_prediction_conversions_are_exact_inverses(schedule):
    noise_schedule = NoiseSchedule(schedule, 1000)
    g = seeded(3)
    x0, eps = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1, torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    x_t, v = noise_schedule.add_noise(x0, eps, t), noise_schedule.velocity(x0, eps, t)
    alpha_bar = noise_schedule.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    expected_v = alpha_bar.sqrt() * eps.double() - (1 - alpha_bar).sqrt() * x0.double()
    assert torch.allclose(v.double(), expected_v, atol=1e-6)
    x0_back, eps_back = split_prediction(v, x_t, noise_schedule.alphas_cumprod[t].view(-1, 1, 1, 1), "v")
    assert torch.allclose(x0_back, x0, atol=1e-5) and torch.allclose(eps_back, eps, atol=1e-5)
    # ε-prediction: ε̂ passes through, and x̂_0 is exact where √ᾱ is not tiny.
    x0_eps, eps_same = split_prediction(eps, x_t, noise_schedule.alphas_cumprod[t].view(-1, 1, 1, 1), "eps")
    assert eps_same is eps and torch.allclose(x0_eps[:4], x0[:4], atol=1e-4)
    with pytest.raises(HcmbenchError, match="prediction"):
        split_prediction(v, x_t, alpha_bar, "x0")


def test_min_snr_weights_match_the_formula_and_clamp_at_gamma():
    schedule, gamma = NoiseSchedule("linear", 1000), 5.0
    t = torch.tensor([0, 50, 150, 200, 400, 999])
    alpha_bar = torch.cumprod(1 - make_betas("linear", 1000), 0)[t]  # float64
    snr = alpha_bar / (1 - alpha_bar)
    assert snr[0] > 1000 and snr[-1] < 1e-3 and (snr > gamma).any() and (snr < gamma).any()
    assert torch.allclose(schedule.snr(t).double(), snr, rtol=1e-3)
    eps_w = min_snr_weights(schedule.snr(t), gamma, "eps").double()
    v_w = min_snr_weights(schedule.snr(t), gamma, "v").double()
    assert torch.allclose(eps_w, snr.clamp(max=gamma) / snr, rtol=1e-3)
    assert torch.allclose(v_w, snr.clamp(max=gamma) / (snr + 1), rtol=1e-3)
    # Both make the x_0 error's weight min(SNR, γ): γ at high SNR, SNR itself at low SNR.
    high = snr > gamma
    assert torch.allclose((eps_w * snr)[high], torch.tensor(gamma, dtype=torch.float64), rtol=1e-3)
    assert torch.allclose((v_w * (snr + 1))[high], torch.tensor(gamma, dtype=torch.float64), rtol=1e-3)
    assert (eps_w[~high] == 1).all() and torch.allclose(v_w[~high], (snr / (snr + 1))[~high], rtol=1e-3)
    assert min_snr_weights(torch.tensor([0.0]), gamma, "eps").item() == 1.0  # finite at SNR = 0


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_loss_is_the_min_snr_weighted_mean_of_per_sample_errors(prediction):
    model = perturbed(tiny(prediction=prediction, loss_weighting="min_snr", snr_gamma=2.0, dropout=0.0))
    reference = copy.deepcopy(model)
    images = blobs(8, -0.3, seed=1)
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    torch.manual_seed(5)
    logs = model.training_step((images, torch.zeros(8, dtype=torch.long)), opts)
    assert set(logs) == {"noise_mse", "loss"}
    # The same draws, in the same order, through the network as it was before the step.
    torch.manual_seed(5)
    t = torch.randint(0, 100, (8,))
    noise = torch.randn_like(images)
    alpha_bar = torch.cumprod(1 - make_betas("linear", 100), 0)[t].float().view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * images + (1 - alpha_bar).sqrt() * noise
    with torch.no_grad():
        out = reference.unet(x_t, t)
    target = noise if prediction == "eps" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * images
    snr = (alpha_bar / (1 - alpha_bar)).flatten()
    weights = snr.clamp(max=2.0) / (snr if prediction == "eps" else snr + 1)
    errors = ((out - target) ** 2).flatten(1).mean(1)
    assert logs["loss"] == pytest.approx((weights * errors).mean().item(), rel=1e-4)
    assert abs(logs["loss"] - errors.mean().item()) > 0.05 * errors.mean().item()  # the weights matter
    eps = out if prediction == "eps" else (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * out
    assert logs["noise_mse"] == pytest.approx(((eps - noise) ** 2).mean().item(), rel=1e-4)


def test_plain_eps_prediction_logs_only_the_noise_mse():
    model = tiny(prediction="eps", loss_weighting="none")
    batch = blobs(4, -0.3, seed=1), torch.zeros(4, dtype=torch.long)
    assert set(model.training_step(batch, model.configure_optimizers(TrainConfig()))) == {"noise_mse"}


def test_defaults_are_v_prediction_with_min_snr_and_ancestral_sampling_unless_a_sampler_is_named(monkeypatch):
    model = tiny()
    assert (model.prediction, model.loss_weighting) == ("v", "min_snr")
    used = []
    for loop in ("ddpm_loop", "ddim_loop", "dpmpp_2m_loop"):
        monkeypatch.setattr(diffusion, loop, lambda *args, _name=loop: used.append(_name) or args[2])
    model.sample(1, rng=seeded(0))
    tiny(prediction="eps").sample(1, rng=seeded(0))
    model.sample(1, rng=seeded(0), sampler="dpm++", steps=3)
    model.sample(1, rng=seeded(0), sampler="ddim", steps=3)
    assert used == ["ddpm_loop", "ddpm_loop", "dpmpp_2m_loop", "ddim_loop"]


@pytest.mark.parametrize("settings", [dict(prediction="v"), dict(loss_weighting="min_snr"),
                                      dict(prediction="v", loss_weighting="min_snr")])
def test_v_prediction_and_min_snr_train_with_finite_losses(settings):
    model = tiny(**settings)
    images, labels = blobs(4, -0.3, seed=1), torch.zeros(4, dtype=torch.long)
    before = model.validation_score([(images, labels)])
    opts = model.configure_optimizers(TrainConfig(lr=2e-3))
    logs = [model.training_step((images, labels), opts) for _ in range(20)]
    assert all(set(step) == {"noise_mse", "loss"} for step in logs)
    assert all(math.isfinite(v) for step in logs for v in step.values())
    first, last = (sum(step["noise_mse"] for step in part) / 8 for part in (logs[:8], logs[-8:]))
    assert last < 0.9 * first, (first, last)
    assert model.validation_score([(images, labels)]) < 0.6 * before


def single_image_oracle(schedule: NoiseSchedule, image: torch.Tensor, prediction: str):
    """The exact network output (ε or v) for data that is always `image`: (x_t − √ᾱ·x_0)/√(1−ᾱ), or its v."""
    def output(x, t, labels=None):
        alpha_bar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x - alpha_bar.sqrt() * image) / (1 - alpha_bar).sqrt()
        return eps if prediction == "eps" else alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * image
    return output


def known_image(value: float = 0.5) -> torch.Tensor:
    image = torch.full((1, 32, 32), value)
    image[:, :16] = -0.4
    image[:, 10:20, 5:9] = 0.9
    return image


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_every_sampler_recovers_a_single_known_image_from_the_exact_prediction(prediction):
    model = tiny(prediction=prediction)
    image = known_image()
    model.unet.forward = single_image_oracle(model.schedule, image, prediction)
    for sampler in ("ddpm", "ddim", "dpm++"):
        samples = model.sample(4, rng=seeded(0), sampler=sampler, steps=3)
        assert (samples - image).abs().max() < 1e-3, sampler
    # The validation score is the ε error, also for v-prediction: zero for the exact prediction.
    assert model.validation_score([(image.expand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))]) < 1e-8


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_guidance_combines_the_outputs_of_either_parameterisation(prediction):
    # The conditional output is exact for image a, the unconditional one for image b: guided with w,
    # x̂_0 is b + w·(a − b) at every step, so every sampler ends there.
    model = tiny(prediction=prediction, class_conditional=True, num_classes=2)
    a, b = known_image(0.5), known_image(0.2) * 0.5
    exact_a = single_image_oracle(model.schedule, a, prediction)
    exact_b = single_image_oracle(model.schedule, b, prediction)
    null = model.num_classes

    def output(x, t, labels):
        return torch.where((labels == null).view(-1, 1, 1, 1), exact_b(x, t), exact_a(x, t))

    model.unet.forward = output
    for sampler in ("ddpm", "ddim", "dpm++"):
        samples = model.sample(2, torch.tensor([0, 1]), rng=seeded(0), sampler=sampler, steps=4,
                               guidance_scale=1.5)
        assert (samples - (b + 1.5 * (a - b)).clamp(-1, 1)).abs().max() < 1e-3, sampler


def gaussian_oracle(schedule: NoiseSchedule, std: float, prediction: str):
    """The exact output for data x_0 ~ N(0, std²·I): x̂_0 = E[x_0 | x_t] = std²·√ᾱ/(ᾱ·std² + 1 − ᾱ)·x_t."""
    def output(x, t):
        alpha_bar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        x0 = std**2 * alpha_bar.sqrt() / (alpha_bar * std**2 + 1 - alpha_bar) * x
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return eps if prediction == "eps" else alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    return output


def test_dpm_solver_is_a_second_order_solver_of_the_probability_flow_ode():
    # For Gaussian data the probability-flow ODE is solved exactly: (x_t − √ᾱ_t·μ)/√(ᾱ_t·s² + 1 − ᾱ_t)
    # stays constant, and the samplers' last step returns E[x_0 | x at t = 0]. On steps evenly spaced in
    # log-SNR, DDIM's error falls as 1/steps (first order), DPM-Solver++(2M)'s as 1/steps².
    schedule, std = NoiseSchedule("linear", 1000), 0.3
    alpha_bar = schedule.alphas_cumprod.double()
    log_snr = (alpha_bar / (1 - alpha_bar)).log()
    x_T = 0.5 * torch.randn(64, 1, 4, 4, generator=seeded(0))
    z = x_T.double() / (alpha_bar[-1] * std**2 + 1 - alpha_bar[-1]).sqrt()
    x_end = (alpha_bar[0] * std**2 + 1 - alpha_bar[0]).sqrt() * z
    exact = std**2 * alpha_bar[0].sqrt() / (alpha_bar[0] * std**2 + 1 - alpha_bar[0]) * x_end

    def errors(steps: int, prediction: str) -> tuple[float, float]:
        targets = torch.linspace(log_snr[-1].item(), log_snr[0].item(), steps)
        timesteps = sorted({int((log_snr - v).abs().argmin()) for v in targets}, reverse=True)
        predict = gaussian_oracle(schedule, std, prediction)
        ddim = ddim_loop(predict, schedule, x_T, timesteps, 0.0, None, prediction)
        dpm = dpmpp_2m_loop(predict, schedule, x_T, timesteps, prediction)
        return (ddim.double() - exact).abs().max().item(), (dpm.double() - exact).abs().max().item()

    (ddim_20, dpm_20), (ddim_80, dpm_80) = errors(20, "eps"), errors(80, "eps")
    assert 3 < ddim_20 / ddim_80 < 5, (ddim_20, ddim_80)  # first order: a quarter of the error
    assert dpm_20 / dpm_80 > 10, (dpm_20, dpm_80)  # second order: a sixteenth
    assert dpm_80 < 0.002 and dpm_80 < ddim_80 / 10, (dpm_80, ddim_80)
    assert errors(80, "v") == pytest.approx((ddim_80, dpm_80), abs=1e-5)  # the same ODE, whatever the network predicts


def test_dpm_solver_steps_are_lu_et_al_updates_on_an_uneven_grid():
    # A "network" whose x̂_0 is c_t + x_t/10, with c_t known, on steps of unequal log-SNR length (r ≠ 1):
    # the loop's result is the last x̂_0, hence reveals every step, which are recomputed here in float64.
    # The first x̂_0 lies mostly above 1, where the loop clips it.
    schedule, timesteps = NoiseSchedule("cosine", 100), [99, 70, 60, 20, 5]
    offsets = {99: 1.5, 70: -0.2, 60: 0.5, 20: 0.1, 5: -0.4}

    def x0_of(x, t):
        return (offsets[t] + 0.1 * x).clamp(-1, 1)

    def output(x, t):  # ε̂ for that x̂_0
        alpha_bar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        c = torch.tensor([offsets[int(s)] for s in t]).view(-1, 1, 1, 1)
        return (x - alpha_bar.sqrt() * (c + 0.1 * x)) / (1 - alpha_bar).sqrt()

    x_T = torch.randn(4, 1, 8, 8, generator=seeded(0))
    ab = schedule.alphas_cumprod.double()
    lam = {t: 0.5 * math.log(ab[t] / (1 - ab[t])) for t in timesteps}
    x, previous, h_previous = x_T.double(), None, None
    for t, t_next in zip(timesteps, timesteps[1:]):
        h = lam[t_next] - lam[t]
        d = x0_of(x, t) if previous is None else \
            (1 + h / (2 * h_previous)) * x0_of(x, t) - h / (2 * h_previous) * previous
        previous, h_previous = x0_of(x, t), h
        x = (1 - ab[t_next]).sqrt() / (1 - ab[t]).sqrt() * x - ab[t_next].sqrt() * math.expm1(-h) * d
    expected = x0_of(x, timesteps[-1])
    assert torch.allclose(dpmpp_2m_loop(output, schedule, x_T, timesteps).double(), expected, atol=1e-5)
    first_order = dpmpp_2m_loop(output, schedule, x_T, timesteps[:2])  # one step, then x̂_0
    assert not torch.allclose(first_order.double(), expected, atol=1e-2)


def test_every_loop_draws_the_same_samples_from_either_parameterisation():
    # An ε-oracle and its v-oracle are the same prediction: each loop must turn both into the same x̂_0.
    schedule, timesteps = NoiseSchedule("linear", 100), spaced_timesteps(100, 8)
    eps_oracle, v_oracle = gaussian_oracle(schedule, 0.3, "eps"), gaussian_oracle(schedule, 0.3, "v")
    loops = {
        "ddpm": lambda predict, prediction, g: ddpm_loop(predict, schedule, x_T, timesteps, g, prediction),
        "ddim eta 1": lambda predict, prediction, g: ddim_loop(predict, schedule, x_T, timesteps, 1.0, g, prediction),
        "dpm++": lambda predict, prediction, g: dpmpp_2m_loop(predict, schedule, x_T, timesteps, prediction),
    }
    x_T = torch.randn(16, 1, 4, 4, generator=seeded(0))
    for name, loop in loops.items():
        from_eps, from_v = loop(eps_oracle, "eps", seeded(1)), loop(v_oracle, "v", seeded(1))
        assert torch.allclose(from_eps, from_v, atol=1e-4), name
        assert from_eps.std() > 0.1, name


def test_dpm_solver_sampler_shape_range_determinism_and_default_steps(overfit):
    model, _, _ = overfit
    g = seeded(0)
    a = model.sample(3, rng=g, sampler="dpm++", steps=6)
    assert a.shape == (3, 1, 32, 32) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    # Deterministic: the generator draws x_T only.
    g_ref = seeded(0)
    torch.randn(3, 1, 32, 32, generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())
    assert torch.equal(a, model.sample(3, rng=seeded(0), sampler="dpm++", steps=6))
    assert (a - model.sample(3, rng=seeded(1), sampler="dpm++", steps=6)).abs().mean() > 0.01
    assert (a - model.sample(3, rng=seeded(0), sampler="ddim", steps=6)).abs().mean() > 1e-3
    # Default steps: 20 for dpm++ (50 for ddim, all T for ddpm), at most T.
    calls = []
    for timesteps, defaults in ((60, dict(ddpm=60, ddim=50)), (30, {"dpm++": 20, "ddim": 30}), (12, {"dpm++": 12})):
        model = tiny(timesteps=timesteps)
        model.unet.register_forward_hook(lambda module, inputs, out: calls.append(inputs[1][0].item()))
        for sampler, expected in defaults.items():
            calls.clear()
            model.sample(1, rng=seeded(0), sampler=sampler)
            assert calls == spaced_timesteps(timesteps, expected), (sampler, timesteps)
            assert calls[0] == timesteps - 1 and calls[-1] == 0


def test_bf16_sampling_runs_the_network_in_bfloat16_and_stays_close_to_fp32(overfit):
    model, _, _ = overfit
    seen = []
    hook = model.unet.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    full = model.sample(4, rng=seeded(0), sampler="dpm++", steps=6)
    half = model.sample(4, rng=seeded(0), sampler="dpm++", steps=6, precision="bf16")
    hook.remove()
    assert set(seen[:6]) == {torch.float32} and set(seen[6:]) == {torch.bfloat16}  # the network, not the solver
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert 0 < (half - full).abs().mean() < 0.05  # rounding, not another image
    with pytest.raises(HcmbenchError, match="precision must be 'fp32' or 'bf16'"):
        model.sample(1, rng=seeded(0), sampler="dpm++", precision="fp16")


@pytest.mark.parametrize("options", [
    dict(sampler="dpm"), dict(sampler="DPM++"), dict(sampler="dpm++", eta=0.0), dict(sampler="dpm++", steps=0),
    dict(sampler="dpm++", steps=101),
])
def test_bad_dpm_solver_options_raise(options):
    with pytest.raises(HcmbenchError) as error:
        tiny().sample(1, **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("settings, match", [
    (dict(prediction="x0"), "prediction"), (dict(prediction="V"), "prediction"),
    (dict(loss_weighting="snr"), "loss_weighting"), (dict(loss_weighting=None), "loss_weighting"),
    (dict(snr_gamma=0.0), "snr_gamma"), (dict(snr_gamma=-1.0), "snr_gamma"),
    (dict(snr_gamma=float("inf")), "snr_gamma"), (dict(snr_gamma="5"), "snr_gamma"),
])
def test_bad_prediction_and_weighting_settings_raise_one_line(settings, match):
    with pytest.raises(HcmbenchError, match=match) as error:
        tiny(**settings)
    assert "\n" not in str(error.value)


def test_cpu_micro_batches_change_only_the_rounding():
    model = perturbed(tiny(class_conditional=True, num_classes=3)).eval()
    x, t = torch.randn(9, 1, 32, 32, generator=seeded(2)), torch.randint(0, 100, (9,), generator=seeded(3))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    with torch.no_grad():
        whole = model.unet(x, t, labels)
        model.cpu_chunk = 2
        chunked = model.network(x, t, labels)
    assert chunked.shape == whole.shape and torch.allclose(chunked, whole, atol=1e-5)
    assert whole.abs().mean() > 0.01
