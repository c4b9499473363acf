"""Tests of the auxiliary-classifier GAN (hcmbench.models.acgan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hcmbench.config import TrainConfig
from hcmbench.models.registry import build_model
from tests.models.spy import recorded_losses

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
    logs = [model.training_step(batch, opts) for _ in range(120)]
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
    dark = model.sample(16, torch.zeros(16, dtype=torch.long), rng=g).mean().item()
    bright = model.sample(16, torch.ones(16, dtype=torch.long), rng=g).mean().item()
    assert dark < -0.2 and bright > 0.2
    assert bright - dark > 0.6


def test_class_losses_enter_both_steps_with_aux_weight_and_fakes_take_the_real_labels(monkeypatch):
    torch.manual_seed(SEED)
    model = build_model("acgan", image_size=32, num_classes=2, augment="", aux_weight=0.5, gp_weight=0.0, **SMALL)
    losses = recorded_losses(monkeypatch, model)
    asked, outputs = [], []
    generate, discriminate = model.generate, model.discriminate
    monkeypatch.setattr(model, "generate", lambda n, labels, *a: asked.append(labels) or generate(n, labels, *a))
    monkeypatch.setattr(model, "discriminate", lambda x: outputs.append(discriminate(x)) or outputs[-1])
    images, labels = dark_and_bright(8)
    log = model.training_step((images, labels), model.configure_optimizers(TrainConfig()))
    assert len(asked) == 1 and torch.equal(asked[0], labels)
    (_, real_cls), (_, fake_cls), (_, fake_cls_for_g) = outputs
    aux = F.cross_entropy(real_cls, labels) + F.cross_entropy(fake_cls, labels)
    assert log["aux"] == pytest.approx(aux.item())
    d_total, g_total = losses
    assert d_total == pytest.approx(log["d_loss"] + 0.5 * log["aux"], rel=1e-5)
    assert g_total == pytest.approx(log["g_loss"] + 0.5 * F.cross_entropy(fake_cls_for_g, labels).item(), rel=1e-5)
