"""Tests of the variational autoencoder (hcmbench.models.vae)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hcmbench.config import TrainConfig
from hcmbench.models.registry import build_model
from hcmbench.models.vae import gaussian_kl, squared_error
from tests.models.images import disks

SEED = 0
SMALL = dict(latent_dim=8, width=8)


@pytest.fixture(scope="module")
def trained():
    """A VAE overfit to one batch: (model, logs per step, validation score before, after).

    Validation uses other disks than the training batch: "validation-like" data.
    """
    torch.manual_seed(SEED)
    batch, val = disks(), disks(seed=9)
    model = build_model("vae", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    before = model.validation_score([val])
    logs = [model.training_step(batch, opts) for _ in range(100)]
    return model, logs, before, model.validation_score([val])


def test_loss_falls_when_overfitting_a_batch(trained):
    _, logs, _, _ = trained
    first = sum(log["loss"] for log in logs[:5]) / 5
    last = sum(log["loss"] for log in logs[-5:]) / 5
    assert last < 0.3 * first


def test_validation_score_is_lower_after_fitting_similar_data(trained):
    model, _, before, after = trained
    assert math.isfinite(before) and math.isfinite(after)
    assert after < 0.5 * before


def test_loss_is_recon_plus_beta_times_kl():
    torch.manual_seed(SEED)
    model = build_model("vae", image_size=32, beta=4.0, **SMALL)
    log = model.training_step(disks(8), model.configure_optimizers(TrainConfig()))
    assert log["kl"] > 0
    assert log["loss"] == pytest.approx(log["recon"] + 4.0 * log["kl"], rel=1e-5)


def test_kl_and_reconstruction_terms():
    torch.manual_seed(SEED)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    x, x_hat = torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6)
    torch.testing.assert_close(squared_error(x, x_hat), ((x - x_hat) ** 2).sum((1, 2, 3)))
