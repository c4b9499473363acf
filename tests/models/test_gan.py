"""Tests of the fully connected GAN (hcmbench.models.gan)."""

from __future__ import annotations

import math

import pytest
import torch

from hcmbench.config import TrainConfig
from hcmbench.models.registry import build_model
from hcmbench.models.losses import r1_penalty
from tests.models.images import disks

SEED = 0
SMALL = dict(latent_dim=16, hidden=(64, 128, 256))


@pytest.fixture(scope="module")
def trained():
    """A GAN trained on one fixed batch with the default settings (augmentation on):
    (model, logs per step, batch, validation score before, after)."""
    torch.manual_seed(SEED)
    batch = disks()
    model = build_model("gan", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig(lr=5e-4))
    before = model.validation_score([batch])
    logs = [model.training_step(batch, opts) for _ in range(60)]
    return model, logs, batch, before, model.validation_score([batch])


def test_samples_approach_the_batch_it_overfits(trained):
    # The adversarial losses oscillate by design (D's loss even rises as G catches up), so the
    # robust signal that training works is the distance of samples to the batch: about 16 at
    # initialisation (grey images), 5 to 6 after 60 steps on seeds 0-2 (4.2 to 4.8 without augmentation).
    _, logs, _, before, after = trained
    assert math.isfinite(after)
    assert after < 0.5 * before
    assert all(math.isfinite(v) for log in logs for v in log.values())


def test_validation_score_is_lower_on_similar_data_after_training(trained):
    model, _, _, _, _ = trained
    untrained = build_model("gan", image_size=32, **SMALL)
    val = [disks(seed=9)]
    assert model.validation_score(val) < 0.5 * untrained.validation_score(val)


def test_lazy_r1_penalty_flattens_the_discriminator_on_real_images():
    # Without augmentation, which flattens D on its own (0.014 instead of 0.043 here); every 4th step
    # (8 of the 30), weighted by 4.
    def trained_penalty(gp_weight: float) -> float:
        torch.manual_seed(SEED)
        batch = disks()
        model = build_model("gan", image_size=32, augment="", r1_every=4, gp_weight=gp_weight, **SMALL)
        opts = model.configure_optimizers(TrainConfig(lr=5e-4))
        for _ in range(30):
            model.training_step(batch, opts)
        model.eval()
        real = batch[0].clone().requires_grad_()
        return r1_penalty(model.discriminator(real), real).item()

    assert trained_penalty(10.0) < 0.3 * trained_penalty(0.0)


def test_architecture_follows_the_settings():
    model = build_model("gan", image_size=32, latent_dim=10, hidden=[20, 30], dropout=0.25)
    g_linear = [m for m in model.generator if isinstance(m, torch.nn.Linear)]
    d_linear = [m for m in model.discriminator if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in g_linear] == [(10, 20), (20, 30), (30, 1024)]
    assert [(m.in_features, m.out_features) for m in d_linear] == [(1024, 30), (30, 20), (20, 1)]
    assert all(m.p == 0.25 for m in model.discriminator if isinstance(m, torch.nn.Dropout))
    assert model.discriminator(torch.zeros(3, 1, 32, 32)).shape == (3,)
