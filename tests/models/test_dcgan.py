"""Tests of the deep convolutional GAN (hcmbench.models.dcgan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
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


def test_training_step_reports_named_floats():
    torch.manual_seed(SEED)
    images, labels = disks(8)
    model = build_model("dcgan", image_size=32, **SMALL)
    logs = model.training_step((images, labels), model.configure_optimizers(TrainConfig(gp_weight=1.0)))
    assert set(logs) == {"d_loss", "g_loss", "gp"} and all(isinstance(v, float) for v in logs.values())
    assert not images.requires_grad  # R1 must not mark the caller's batch
    logs = model.training_step((images, labels), model.configure_optimizers(TrainConfig(gp_weight=0.0)))
    assert set(logs) == {"d_loss", "g_loss"}


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


def test_optimisers_split_discriminator_and_generator():
    model = build_model("dcgan", image_size=32, **SMALL)
    d_opt, g_opt = model.configure_optimizers(TrainConfig(lr=1e-3, betas=(0.4, 0.9)))
    ids = lambda opt: {id(p) for group in opt.param_groups for p in group["params"]}  # noqa: E731
    assert ids(d_opt) == {id(p) for p in model.discriminator.parameters()}
    assert ids(g_opt) == {id(p) for p in model.generator.parameters()}
    assert d_opt.defaults["lr"] == 1e-3 and d_opt.defaults["betas"] == (0.4, 0.9)


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
    assert model.training


def test_bad_labels_options_and_settings_raise():
    model = build_model("dcgan", image_size=32, **SMALL)
    with pytest.raises(HcmbenchError):
        model.sample(2, labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(HcmbenchError):
        model.sample(2, truncation=0.5)
    with pytest.raises(HcmbenchError):
        build_model("dcgan", image_size=32, d_norm="layer")
    with pytest.raises(HcmbenchError):
        build_model("dcgan", image_size=32, width=0)


def test_state_dict_round_trip_gives_identical_samples(trained):
    model = trained[0]
    fresh = build_model("dcgan", **model.settings)
    fresh.load_state_dict(model.state_dict())
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(fresh.sample(4, generator=g()), model.sample(4, generator=g()))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_builds_trains_and_samples_at_every_size(size):
    torch.manual_seed(SEED)
    model = build_model("dcgan", image_size=size)
    logs = model.training_step(disks(2, size), model.configure_optimizers(TrainConfig()))
    assert all(math.isfinite(v) for v in logs.values())
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, size, size)


def test_training_step_under_bfloat16_autocast():
    # The engine autocasts to bf16 on CUDA; CPU autocast exercises the same dtype handling (R1 included).
    torch.manual_seed(SEED)
    model = build_model("dcgan", image_size=32, **SMALL)
    opts = model.configure_optimizers(TrainConfig(gp_weight=1.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logs = model.training_step(disks(8), opts)
        images = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert set(logs) == {"d_loss", "g_loss", "gp"} and all(math.isfinite(v) for v in logs.values())
    assert images.dtype == torch.float32
