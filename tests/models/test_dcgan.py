"""Tests of the deep convolutional GAN (hcmbench.models.dcgan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hcmbench.config import TrainConfig
from hcmbench.models.registry import build_model
from hcmbench.models.layers import energy_distance
from tests.models.images import disks

SEED = 0
SMALL = dict(latent_dim=16, width=16)


@pytest.fixture(scope="module")
def trained():
    """A DCGAN trained on one fixed batch with the default settings (augmentation on):
    (model, logs per step, batch, validation score before, after)."""
    torch.manual_seed(SEED)
    batch = disks()
    model = build_model("dcgan", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    before = model.validation_score([batch])
    logs = [model.training_step(batch, opts) for _ in range(80)]
    return model, logs, batch, before, model.validation_score([batch])


def test_samples_approach_the_batch_it_overfits(trained):
    # The adversarial losses oscillate by design, so the robust signal that training works is the
    # distance of samples to the batch: about 16 at initialisation (grey images), 1.3 to 1.9 after 80
    # steps with the default augmentation on seeds 0-2 (1.1 to 1.3 without) — closer than the batch's
    # mean image repeated (about 3).
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
    logs = model.training_step(disks(4), model.configure_optimizers(TrainConfig()))
    assert all(math.isfinite(v) for v in logs.values())


def test_dcgan_initialisation_and_logit_head():
    torch.manual_seed(SEED)
    model = build_model("dcgan", image_size=64)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(abs(m.weight.std().item() - 0.02) < 0.005 for m in convs if m.weight.numel() > 1000)
    head = model.discriminator[-2]
    assert isinstance(head, torch.nn.Conv2d) and (head.out_channels, head.kernel_size) == (1, (4, 4))
    assert model.discriminator(torch.zeros(3, 1, 64, 64)).shape == (3,)


def test_mbstd_keeps_the_logit_head_and_the_state_dict_layout():
    # The std layer has no parameters: with it, D's keys are those of the plain D; the head reads one more channel.
    plain = build_model("dcgan", image_size=32, **SMALL)
    with_std = build_model("dcgan", image_size=32, mbstd=True, **SMALL)
    assert plain.state_dict().keys() == with_std.state_dict().keys()
    assert with_std.discriminator[-2].in_channels == plain.discriminator[-2].in_channels + 1
    logs = with_std.training_step(disks(6), with_std.configure_optimizers(TrainConfig()))
    assert all(math.isfinite(v) for v in logs.values())
