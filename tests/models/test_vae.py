"""Tests of the variational autoencoder (hcmbench.models.vae)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import build_model
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
    assert set(logs[0]) == {"loss", "recon", "kl"} and all(isinstance(v, float) for v in logs[0].values())


def test_validation_score_is_lower_after_fitting_similar_data(trained):
    model, _, before, after = trained
    assert math.isfinite(before) and math.isfinite(after)
    assert after < 0.5 * before


def test_validation_score_is_deterministic_and_keeps_the_mode(trained):
    model = trained[0]
    val = [disks(8, seed=3), disks(8, seed=4)]
    model.train()
    assert model.validation_score(val) == model.validation_score(val)
    assert model.training


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


def test_sample_shape_range_and_reproducibility(trained):
    model = trained[0]
    model.train()
    draw = lambda seed: model.sample(6, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    images = draw(1)
    assert images.shape == (6, 1, 32, 32) and images.dtype == torch.float32
    assert images.device == model.device
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, draw(1))
    assert not torch.allclose(images, draw(2))
    assert model.training  # sampling runs in eval mode and restores the mode


def test_bad_labels_options_and_settings_raise():
    model = build_model("vae", image_size=32, **SMALL)
    with pytest.raises(HcmbenchError):
        model.sample(2, labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(HcmbenchError):
        model.sample(2, steps=3)
    with pytest.raises(HcmbenchError):
        build_model("vae", image_size=32, beta=-1.0)
    with pytest.raises(HcmbenchError):
        build_model("vae", image_size=32, depth=3)


def test_state_dict_round_trip_gives_identical_samples(trained):
    model = trained[0]
    fresh = build_model("vae", **model.settings)
    fresh.load_state_dict(model.state_dict())
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(fresh.sample(4, generator=g()), model.sample(4, generator=g()))
    val = [disks(8, seed=9)]
    assert fresh.validation_score(val) == model.validation_score(val)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_builds_trains_and_samples_at_every_size(size):
    torch.manual_seed(SEED)
    model = build_model("vae", image_size=size)
    log = model.training_step(disks(2, size), model.configure_optimizers(TrainConfig()))
    assert all(math.isfinite(v) for v in log.values())
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, size, size)


def test_training_step_under_bfloat16_autocast():
    # The engine autocasts to bf16 on CUDA; CPU autocast exercises the same dtype handling.
    torch.manual_seed(SEED)
    model = build_model("vae", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log = model.training_step(disks(8), opts)
        images = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in log.values())
    assert images.dtype == torch.float32
