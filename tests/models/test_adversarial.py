"""Tests of the GAN family's shared training step (hcmbench.models.adversarial) and its settings."""

from __future__ import annotations

import math

import pytest
import torch

import hcmbench.models.adversarial as adversarial
from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.registry import build_model, model_defaults
from hcmbench.models.layers import MinibatchStd
from tests.models.images import disks
from tests.models.spy import recorded_losses

SEED = 0
FAMILY = ("gan", "dcgan", "acgan", "infogan")
SMALL = {
    "gan": dict(latent_dim=16, hidden=(32, 64)),
    "dcgan": dict(latent_dim=16, width=8),
    "acgan": dict(latent_dim=16, width=8),
    "infogan": dict(latent_dim=16, width=8, n_categories=4, n_continuous=2),
}


def build(name: str, **settings):
    torch.manual_seed(SEED)
    return build_model(name, image_size=32, num_classes=2, **{**SMALL[name], **settings})


def batch(n: int = 8):
    images, _ = disks(n)
    return images, torch.arange(n) % 2


def train(model, steps: int, **cfg):
    opts = model.configure_optimizers(TrainConfig(lr=1e-3, **cfg))
    return [model.training_step(batch(), opts) for _ in range(steps)]


# -- settings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILY)
def test_the_family_shares_the_settings_and_their_defaults(name):
    defaults = model_defaults(name)
    assert (defaults["augment"], defaults["r1_every"], defaults["lecam_weight"], defaults["mbstd"],
            defaults["gp_weight"], defaults["label_smoothing"]) == ("none", 16, 0.0, False, 1.0, 0.1)
    assert isinstance(build(name), adversarial.AdversarialModel)
    model = build(name, gp_weight=2.0, label_smoothing=0.2)  # the model's own settings, kept by checkpoints
    assert (model.gp_weight, model.label_smoothing) == (2.0, 0.2)
    assert (model.settings["gp_weight"], model.settings["label_smoothing"]) == (2.0, 0.2)


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("bad, match", [
    (dict(augment="flip"), "flip"), (dict(augment=3), "augment must be a text"), (dict(r1_every=0), "r1_every"),
    (dict(r1_every=2.5), "r1_every"), (dict(lecam_weight=-0.1), "lecam_weight"),
    (dict(lecam_weight=float("nan")), "lecam_weight"), (dict(mbstd="yes"), "mbstd"),
    (dict(gp_weight=-1.0), "gp_weight"), (dict(label_smoothing=0.5), "label_smoothing")])
def test_bad_settings_are_refused_in_one_line(name, bad, match):
    with pytest.raises(HcmbenchError, match=match) as error:
        build(name, **bad)
    assert "\n" not in str(error.value)


# -- the step -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILY)
def test_trains_a_few_steps_with_every_option_on(name):
    model = build(name, mbstd=True, lecam_weight=0.1, augment="color,translation,cutout", r1_every=2)
    logs = train(model, 3)
    expected = {"d_loss", "g_loss", "lecam"} | {"acgan": {"aux"}, "infogan": {"info"}}.get(name, set())
    assert [set(log) for log in logs] == [expected | {"gp"}, expected, expected | {"gp"}]
    assert all(math.isfinite(v) for log in logs for v in log.values())
    assert all(p.requires_grad for p in model.parameters())  # D is unfrozen after the G step
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("every", [1, 3])
def test_lazy_r1_runs_on_steps_0_k_2k_and_is_weighted_by_k(monkeypatch, every):
    model = build("dcgan", augment="", r1_every=every, d_norm="none", gp_weight=2.0, label_smoothing=0.0)
    losses = recorded_losses(monkeypatch, model)
    logs = train(model, 7)
    assert [i for i, log in enumerate(logs) if "gp" in log] == list(range(0, 7, every))
    for i, log in enumerate(logs):  # D's total loss: the adversarial one + gp_weight / 2 · k · R1
        d_total = losses[2 * i]
        assert d_total == pytest.approx(log["d_loss"] + 2.0 / 2 * every * log.get("gp", 0.0), rel=1e-5)
    assert int(model.step_count) == 7
    assert not any("gp" in log for log in train(build("dcgan", r1_every=every, gp_weight=0.0), 4))


def test_the_step_counter_survives_a_checkpoint(monkeypatch):
    model = build("gan", r1_every=3)
    train(model, 2)
    resumed = build("gan", r1_every=3)
    resumed.load_state_dict(model.state_dict())
    assert ["gp" in log for log in train(resumed, 2)] == [False, True]  # steps 2 and 3
    # A state_dict from before the shared step (no counters) still loads; the counters start afresh.
    old = {k: v for k, v in model.state_dict().items() if k not in ("step_count", "ema_real_logit", "ema_fake_logit")}
    fresh = build("gan")
    fresh.load_state_dict(old)
    assert int(fresh.step_count) == 0
    with pytest.raises(RuntimeError, match="Missing"):
        fresh.load_state_dict({k: v for k, v in old.items() if not k.startswith("generator.0.")})


def test_lecam_penalty_by_hand():
    model = build("gan", lecam_weight=1.0)
    real, fake = torch.tensor([1.0, 2.0]), torch.tensor([0.0, -1.0])
    # First call: the EMAs start at this batch's means (1.5, −0.5).
    assert model.lecam_penalty(real, fake, first=True).item() == pytest.approx((1.5**2 + 2.5**2) / 2 * 2)
    # Then they move by 1 − 0.99 towards the new means (0, 0): 1.485 and −0.495.
    zero = torch.zeros(2)
    assert model.lecam_penalty(zero, zero).item() == pytest.approx(0.495**2 + 1.485**2)
    assert (model.ema_real_logit.item(), model.ema_fake_logit.item()) == pytest.approx((1.485, -0.495))


@pytest.mark.parametrize("name", FAMILY)
def test_lecam_appears_only_when_on_and_enters_d_loss(monkeypatch, name):
    assert not any("lecam" in log for log in train(build(name), 2))
    model = build(name, lecam_weight=0.5, augment="", gp_weight=0.0)
    losses = recorded_losses(monkeypatch, model)
    logs = train(model, 3)
    assert all(log["lecam"] > 0 and math.isfinite(log["lecam"]) for log in logs)
    assert model.ema_real_logit.item() != 0 and model.ema_fake_logit.item() != 0
    extra = {"acgan": lambda log: model.aux_weight * log["aux"]}.get(name, lambda log: 0.0)
    for i, log in enumerate(logs):
        assert losses[2 * i] == pytest.approx(log["d_loss"] + extra(log) + 0.5 * log["lecam"], rel=1e-5)


@pytest.mark.parametrize("name", FAMILY)
def test_one_fake_batch_serves_both_steps(monkeypatch, name):
    model = build(name, augment="", gp_weight=0.0)
    seen, made = [], []
    discriminate, generate = model.discriminate, model.generate
    monkeypatch.setattr(model, "discriminate", lambda x: seen.append(x.detach().clone()) or discriminate(x))
    monkeypatch.setattr(model, "generate", lambda *a, **k: made.append(1) or generate(*a, **k))
    train(model, 1)
    assert len(made) == 1 and len(seen) == 3  # D on real, D on fake, then G's pass through D
    assert torch.equal(seen[1], seen[2]) and not torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("name", FAMILY)
def test_the_generator_step_leaves_the_discriminator_as_it_is(monkeypatch, name):
    model = build(name)
    d_params = model.d_parameters()
    snapshots, grads, frozen = [], [], []
    optimize = model.optimize

    def spy(loss, optimizer, parameters=None):
        snapshots.append([p.detach().clone() for p in d_params])
        frozen.append(not any(p.requires_grad for p in d_params))
        optimize(loss, optimizer, parameters)
        grads.append([p.grad.clone() for p in d_params])

    monkeypatch.setattr(model, "optimize", spy)
    opts = model.configure_optimizers(TrainConfig(lr=1e-2))
    g_before = [p.detach().clone() for p in model.g_parameters()]
    model.training_step(batch(), opts)
    assert frozen == [False, True]  # D's parameters take no gradient in the G step ...
    assert all(torch.equal(a, b) for a, b in zip(*grads))  # ... so their gradients stay the D step's
    before_g_step = snapshots[1]
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[0], before_g_step))  # the D step moved D
    assert all(torch.equal(a, b) for a, b in zip(before_g_step, d_params))  # the G step did not
    assert all(not torch.equal(a, b) for a, b in zip(g_before, model.g_parameters()) if a.numel() > 1)
    assert all(p.requires_grad for p in model.parameters())  # and D is trainable again


def test_augmentation_is_applied_in_training_only(monkeypatch):
    calls = []
    real_augment = adversarial.augment
    monkeypatch.setattr(adversarial, "augment", lambda x, ops: calls.append(ops) or real_augment(x, ops))
    model = build("dcgan", augment="cutout,color")
    train(model, 1)
    assert calls == [("cutout", "color")] * 3  # real, fake for D, fake for G
    model.sample(4, rng=torch.Generator().manual_seed(0))
    model.validation_score([batch()])
    assert len(calls) == 3
    # Augmentation changes what D sees, not what the model samples.
    plain = build("dcgan", augment="")
    assert torch.equal(plain.sample(4, rng=torch.Generator().manual_seed(0)),
                       build("dcgan").sample(4, rng=torch.Generator().manual_seed(0)))


# -- minibatch standard deviation -----------------------------------------------------------------

def test_minibatch_std_by_hand():
    x = torch.randn(8, 3, 2, 2)
    y = MinibatchStd()(x)
    assert y.shape == (8, 4, 2, 2) and torch.equal(y[:, :3], x)
    # Groups of 4: samples {0, 2, 4, 6} and {1, 3, 5, 7}.
    expected = torch.stack([x[m::2].std(0).mean() for m in range(2)]).repeat(4)
    assert torch.allclose(y[:, 3], expected.view(8, 1, 1).expand(8, 2, 2), atol=1e-4)
    assert MinibatchStd()(x[:1].expand(6, 3, 2, 2))[:, 3].abs().max() < 1e-3  # identical samples: no spread
    # A batch of 3 is one group, and so is a batch of 5 (no divisor up to 4 but 1); flat features too.
    for b in (3, 5):
        flat = torch.randn(b, 7)
        assert torch.allclose(MinibatchStd()(flat), torch.cat([flat, flat.std(0).mean().expand(b, 1)], 1), atol=1e-4)
    assert torch.allclose(MinibatchStd()(torch.ones(1, 2)), torch.tensor([[1.0, 1.0, 1e-4]]))  # one image: no spread


def channels_before_the_heads(model) -> int:
    body = {"dcgan": lambda: model.discriminator[0], "acgan": lambda: model.discriminator.body,
            "infogan": lambda: model.body}[model.name]()
    return body.out_channels


@pytest.mark.parametrize("name", ["dcgan", "acgan", "infogan"])
def test_mbstd_adds_one_channel_and_d_still_gives_one_logit_per_image(name):
    plain, with_std = build(name, d_norm="none"), build(name, d_norm="none", mbstd=True)
    assert channels_before_the_heads(with_std) == channels_before_the_heads(plain) + 1
    assert sum(isinstance(m, MinibatchStd) for m in with_std.modules()) == 1
    assert not any(isinstance(m, MinibatchStd) for m in plain.modules())
    with torch.no_grad():  # weigh the std channel in the heads, so that its effect shows at initialisation
        for m in with_std.modules():
            if isinstance(m, torch.nn.Conv2d) and m.in_channels == channels_before_the_heads(with_std):
                m.weight[:, -1] = 1.0
    for n in (2, 5, 8):
        x = disks(n)[0]
        with_std.eval()
        logits, _ = with_std.discriminate(x)
        assert logits.shape == (n,) and logits.dtype == torch.float32
        # A logit now depends on the rest of the batch (without it, not: d_norm "none").
        other = torch.cat([x[:1], -x[1:]])
        assert (with_std.discriminate(other)[0][0] - logits[0]).abs() > 1e-3
        plain.eval()
        assert torch.allclose(plain.discriminate(other)[0][0], plain.discriminate(x)[0][0])


def test_mbstd_in_the_mlp_discriminator():
    plain, with_std = build("gan"), build("gan", mbstd=True)
    head = lambda m: [layer for layer in m.discriminator if isinstance(layer, torch.nn.Linear)][-1]  # noqa: E731
    assert head(with_std).in_features == head(plain).in_features + 1
    with_std.eval()
    assert with_std.discriminate(disks(6)[0])[0].shape == (6,)
