"""Tests of the deep convolutional GAN (hcmbench.models.dcgan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hcmbench.config import TrainConfig
from hcmbench.models.base import build_model
from hcmbench.models.layers import energy_distance
from tests.models.images import disks

SEED = 0
SMALL = dict(latent_dim=16, width=16)


@pytest.fixture(scope="module")
def trained():
    """A DCGAN trained on one fixed batch: (model, logs per step, batch, validation score before, after)."""
    torch.manual_seed(SEED)
    batch = disks()
    model = build_model("dcgan", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    before = model.validation_score([batch])
    logs = [model.training_step(batch, opts) for _ in range(80)]
    return model, logs, batch, before, model.validation_score([batch])


def test_samples_approach_the_batch_it_overfits(trained):
    # The adversarial losses oscillate by design, so the robust signal that training works is the
    # distance of samples to the batch: about 16 at initialisation (grey images), under 1 after 80
    # steps on every seed tried — closer than the batch's mean image repeated (about 3).
    _, logs, (images, _), before, after = trained
    pool = lambda t: F.avg_pool2d(t, 2).flatten(1)  # noqa: E731  to 16×16, as sample_distance does
    mean_image = energy_distance(pool(images), pool(images.mean(0, keepdim=True).expand_as(images)))
    assert math.isfinite(after)
    assert after < 0.15 * before
    assert after < mean_image
    assert all(math.isfinite(v) for log in logs for v in log.values())


def test_validation_score_is_lower_on_similar_data_after_training(trained):
    model, _, _, _, _ = trained
    untrained = build_model("dcgan", image_size=32, **SMALL)
    val = [disks(seed=9)]
    assert model.validation_score(val) < 0.5 * untrained.validation_score(val)


@pytest.mark.parametrize("d_norm", ["batch", "instance", "none"])
def test_discriminator_normalisation(d_norm):
    torch.manual_seed(SEED)
    model = build_model("dcgan", image_size=32, d_norm=d_norm, **SMALL)
    kinds = {type(m) for m in model.discriminator.modules()}
    assert (torch.nn.BatchNorm2d in kinds) == (d_norm == "batch")
    assert (torch.nn.InstanceNorm2d in kinds) == (d_norm == "instance")
    logs = model.training_step(disks(4), model.configure_optimizers(TrainConfig(gp_weight=1.0)))
    assert all(math.isfinite(v) for v in logs.values())


def test_dcgan_initialisation_and_logit_head():
    torch.manual_seed(SEED)
    model = build_model("dcgan", image_size=64)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(abs(m.weight.std().item() - 0.02) < 0.005 for m in convs if m.weight.numel() > 1000)
    head = model.discriminator[-2]
    assert isinstance(head, torch.nn.Conv2d) and (head.out_channels, head.kernel_size) == (1, (4, 4))
    assert model.discriminator(torch.zeros(3, 1, 64, 64)).shape == (3,)
