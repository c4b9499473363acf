"""Tests of the auxiliary-classifier GAN (hcmbench.models.acgan)."""

from __future__ import annotations

import math

import pytest
import torch

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import build_model

SEED = 0
SMALL = dict(latent_dim=16, width=8)


def dark_and_bright(n: int = 32, size: int = 32, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a dark image (mean ≈ −0.5), class 1: its bright negative (mean ≈ +0.5), plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disk = (xx**2 + yy**2 < 0.4).float()
    level = torch.where(labels == 1, 0.8, -0.8)[:, None, None, None]
    images = level * (0.5 + 0.5 * disk) + 0.1 * torch.randn(n, 1, size, size, generator=g)
    return images.clamp(-1, 1), labels


@pytest.fixture(scope="module")
def trained():
    """An ACGAN overfit to one two-class batch: (model, losses per step, score before, score after)."""
    torch.manual_seed(SEED)
    batch = dark_and_bright()
    model = build_model("acgan", image_size=32, num_classes=2, **SMALL)
    opts = model.configure_optimizers(TrainConfig(lr=2e-3))
    before = model.validation_score([batch])
    logs = [model.training_step(batch, opts) for _ in range(80)]
    return model, logs, before, model.validation_score([batch])


def _mean(logs, key, part):
    return sum(log[key] for log in part) / len(part)


def test_class_loss_falls_when_overfitting_a_batch(trained):
    _, logs, _, _ = trained
    assert _mean(logs, "aux", logs[-5:]) < 0.2 * _mean(logs, "aux", logs[:5])


def test_samples_approach_the_batch(trained):
    # The adversarial losses oscillate by design; the sample distance to the batch is the robust signal.
    _, _, before, after = trained
    assert math.isfinite(after)
    assert after < 0.25 * before


def test_honours_labels(trained):
    model = trained[0]
    g = torch.Generator().manual_seed(1)
    dark = model.sample(16, torch.zeros(16, dtype=torch.long), generator=g).mean().item()
    bright = model.sample(16, torch.ones(16, dtype=torch.long), generator=g).mean().item()
    assert dark < -0.2 and bright > 0.2
    assert bright - dark > 0.6


def test_training_step_reports_named_floats():
    torch.manual_seed(SEED)
    images, labels = dark_and_bright(8)
    model = build_model("acgan", image_size=32, num_classes=2, **SMALL)
    logs = model.training_step((images, labels), model.configure_optimizers(TrainConfig(gp_weight=1.0)))
    assert set(logs) == {"d_loss", "g_loss", "aux", "gp"} and all(isinstance(v, float) for v in logs.values())
    assert not images.requires_grad  # R1 must not mark the caller's batch
    logs = model.training_step((images, labels), model.configure_optimizers(TrainConfig(gp_weight=0.0)))
    assert set(logs) == {"d_loss", "g_loss", "aux"}


def test_optimisers_split_generator_and_discriminator():
    model = build_model("acgan", image_size=32, num_classes=3, **SMALL)
    d_opt, g_opt = model.configure_optimizers(TrainConfig(lr=1e-3, betas=(0.4, 0.9)))
    ids = lambda opt: {id(p) for group in opt.param_groups for p in group["params"]}  # noqa: E731
    assert ids(d_opt) == {id(p) for p in model.discriminator.parameters()}
    assert ids(g_opt) == {id(p) for p in model.generator.parameters()}
    assert d_opt.param_groups[0]["lr"] == 1e-3 and tuple(g_opt.param_groups[0]["betas"]) == (0.4, 0.9)


def test_sample_contract():
    torch.manual_seed(SEED)
    model = build_model("acgan", image_size=32, num_classes=3, **SMALL)
    labels = torch.tensor([0, 1, 2, 1, 0])
    x = model.sample(5, labels, generator=torch.Generator().manual_seed(3))
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.float32 and x.device == model.device
    assert x.min() >= -1 and x.max() <= 1
    assert model.training  # sampling restores the mode
    assert torch.equal(x, model.sample(5, labels, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(x, model.sample(5, labels, generator=torch.Generator().manual_seed(4)))
    assert not torch.allclose(x, model.sample(5, torch.tensor([2, 0, 1, 0, 2]), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("labels", [None, torch.tensor([0, 1]), torch.tensor([0, 1, 3]), torch.tensor([-1, 0, 1])])
def test_wrong_labels_raise(labels):
    model = build_model("acgan", image_size=32, num_classes=3, **SMALL)
    with pytest.raises(HcmbenchError):
        model.sample(3, labels)


@pytest.mark.parametrize("num_classes", [0, 1])
def test_needs_two_classes(num_classes):
    with pytest.raises(HcmbenchError, match="num_classes"):
        build_model("acgan", image_size=32, num_classes=num_classes, **SMALL)


def test_state_dict_round_trip(trained):
    model = trained[0]
    fresh = build_model("acgan", **model.settings)
    fresh.load_state_dict(model.state_dict())
    labels = torch.tensor([0, 1, 1, 0])
    a = model.sample(4, labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, fresh.sample(4, labels, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_builds_trains_and_samples_at_every_size(size):
    torch.manual_seed(SEED)
    model = build_model("acgan", image_size=size, num_classes=2, **SMALL)
    images, labels = dark_and_bright(2, size)
    logs = model.training_step((images, labels), model.configure_optimizers(TrainConfig()))
    assert all(math.isfinite(v) for v in logs.values())
    assert model.sample(2, labels, generator=torch.Generator().manual_seed(0)).shape == (2, 1, size, size)
