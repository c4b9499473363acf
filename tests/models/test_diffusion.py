"""The DDPM: schedules, ε-training, fixed-noise validation, DDPM/DDIM samplers, classifier-free guidance."""

from __future__ import annotations

import pytest
import torch

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import build_model
from hcmbench.models.diffusion import NoiseSchedule, ddim_loop, ddpm_loop, spaced_timesteps

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
    a = model.sample(2, generator=g, sampler="ddim", steps=5)
    # η = 0: the generator is used for x_T only, so it has moved by exactly one draw of that shape.
    g_ref = seeded(0)
    torch.randn(2, 1, 32, 32, generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())
    assert torch.equal(a, model.sample(2, generator=seeded(0), sampler="ddim", steps=5, eta=0.0))
    assert not torch.allclose(a, model.sample(2, generator=seeded(0), sampler="ddim", steps=5, eta=1.0))
    ancestral = model.sample(2, generator=seeded(0), sampler="ddpm", steps=5)
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
    }
    for name, loop in loops.items():
        g = seeded(0)
        out = loop(torch.randn(1000, 1, 8, 8, generator=g), g)
        to_a, to_b = (out - a).flatten(1).abs().amax(1), (out + a).flatten(1).abs().amax(1)
        assert torch.minimum(to_a, to_b).max() < 1e-3, name  # every sample lands on a data point
        assert 0.68 < (to_a < to_b).float().mean() < 0.84, name  # in about the right proportion


def test_ddim_with_eta_one_is_respaced_ancestral_sampling(overfit):
    model, _, _ = overfit
    ddim = model.sample(2, generator=seeded(0), sampler="ddim", steps=7, eta=1.0)
    ddpm = model.sample(2, generator=seeded(0), sampler="ddpm", steps=7)
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
        samples = model.sample(16, torch.tensor([0, 1] * 8), generator=seeded(0), sampler="ddim", steps=20,
                               guidance_scale=guidance_scale)
        return (samples[1::2].mean() - samples[0::2].mean()).item()

    guided, plain = contrast(4.0), contrast(1.0)
    assert guided > 0.8, guided
    assert 0 < plain < guided, (plain, guided)
