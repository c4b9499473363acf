"""The contract every registered model keeps (hcmbench.models.base.GenerativeModel), one test per property.

Every test runs over every model in the registry, with small settings, so that a new model is covered
as soon as it is registered (and `test_every_model_has_contract_entries` asks for its table entries).
Models that tests register (the "toy" of tests/toy_model.py) are left out: they live outside
`hcmbench`. The DDPM runs twice, unconditional and class-conditional ("ddpm-conditional").

What only one model does (its losses falling, its samplers, its codes) is tested in its own file.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import pytest
import torch

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import GenerativeModel
from hcmbench.models.registry import available_models, build_model, model_class, model_defaults, model_preset
from tests.models.images import disks

SEED = 0
NUM_CLASSES = 3  # every model is built with 3 classes; unconditional ones must still refuse labels
SIZES = (32, 64, 128)

# Only the models hcmbench itself registers: test-only models such as "toy" are registered from tests/.
MODELS = [name for name in available_models() if model_class(name).__module__.startswith("hcmbench.")]

# Settings that make each model small enough for a test case of well under a second.
SMALL: dict[str, dict[str, Any]] = {
    "vae": dict(latent_dim=8, width=8),
    "gan": dict(latent_dim=16, hidden=(32, 64)),
    "dcgan": dict(latent_dim=16, width=8),
    "acgan": dict(latent_dim=16, width=8),
    "infogan": dict(latent_dim=16, width=8, n_categories=4, n_continuous=2),
    "ddpm": dict(base_channels=4, channel_mults=(1, 2), attention_resolutions=(), num_res_blocks=1, timesteps=5),
}
# What depends on the image size is kept at its default where it is built at every size: the DDPM's
# levels (how far it halves the image) and the resolutions that get self-attention.
AT_EVERY_SIZE: dict[str, tuple[str, ...]] = {"ddpm": ("channel_mults", "attention_resolutions")}

# Models that are conditional by a setting run a second time with it on.
CONDITIONAL_BY_SETTING: dict[str, dict[str, Any]] = {"ddpm": dict(class_conditional=True)}

# Variant name -> (model name, settings). Conditional variants are marked by their model's `conditional`.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {name: (name, SMALL.get(name, {})) for name in MODELS}
VARIANTS.update({f"{name}-conditional": (name, {**SMALL.get(name, {}), **extra})
                 for name, extra in CONDITIONAL_BY_SETTING.items() if name in MODELS})
# Whether each variant is conditional (takes labels): a new model adds its line.
CONDITIONAL: dict[str, bool] = {"vae": False, "gan": False, "dcgan": False, "acgan": True, "infogan": False,
                                "ddpm": False, "ddpm-conditional": True}

# The named losses each model's training_step reports ...
LOSSES: dict[str, set[str]] = {
    "vae": {"loss", "recon", "kl"},
    "gan": {"d_loss", "g_loss"},
    "dcgan": {"d_loss", "g_loss"},
    "acgan": {"d_loss", "g_loss", "aux"},
    "infogan": {"d_loss", "g_loss", "info"},
    "ddpm": {"noise_mse", "loss"},
}
# ... plus "gp" for the models whose discriminator takes the R1 penalty, when its weight is positive and
# on the steps that compute it (lazily, every `r1_every` steps; a fresh model's first step always does).
R1 = {"gan", "dcgan", "acgan", "infogan"}

# The submodules each optimiser holds, in order ("" is the whole model). The GANs' discriminator comes
# first; InfoGAN's Q head trains with the generator, the body it shares with D with the discriminator.
OPTIMISED: dict[str, list[list[str]]] = {
    "vae": [[""]],
    "gan": [["discriminator"], ["generator"]],
    "dcgan": [["discriminator"], ["generator"]],
    "acgan": [["discriminator"], ["generator"]],
    "infogan": [["body", "d_head"], ["generator", "q_head"]],
    "ddpm": [[""]],
}

# Sample options each property is checked under, besides the defaults ({}).
SAMPLE_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "ddpm": [dict(sampler="ddim", steps=2, eta=0.5), {}],
    "infogan": [{}, dict(category=2)],
}
# The cheapest sampling, where only the shape matters.
FAST_SAMPLE: dict[str, dict[str, Any]] = {"ddpm": dict(sampler="ddim", steps=2)}

# Settings each model must refuse, with a word the message must contain.
BAD_SETTINGS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "vae": [(dict(beta=-1.0), "beta"), (dict(width=0), "width"), (dict(latent_dim=0), "latent_dim")],
    "gan": [(dict(dropout=1.0), "dropout"), (dict(hidden=()), "hidden"), (dict(latent_dim=0), "latent_dim")],
    "dcgan": [(dict(d_norm="layer"), "d_norm"), (dict(width=0), "width")],
    "acgan": [(dict(num_classes=0), "num_classes"), (dict(num_classes=1), "num_classes"),
              (dict(d_norm="layer"), "d_norm")],
    "infogan": [(dict(n_categories=1), "n_categories"), (dict(n_continuous=-1), "n_continuous"),
                (dict(d_norm="layer"), "d_norm")],
    "ddpm": [(dict(schedule="quadratic"), "schedule"), (dict(channel_mults=(1,) * 6), "levels"),
             (dict(class_conditional=True, num_classes=1), "2 classes"), (dict(timesteps=1), "timesteps"),
             (dict(dropout=1.0), "dropout"), (dict(guidance_scale=-1.0), "guidance_scale")],
}
# Values for sample options that some model declares, to offer them to models that do not.
OPTION_VALUES: dict[str, Any] = {"sampler": "ddim", "steps": 3, "eta": 0.0, "guidance_scale": 2.0, "category": 1}


def build(variant: str, image_size: int = 32, **overrides: Any) -> GenerativeModel:
    name, settings = VARIANTS[variant]
    torch.manual_seed(SEED)
    return build_model(name, image_size, num_classes=NUM_CLASSES, **{**settings, **overrides})


def labels_for(model: GenerativeModel, n: int, shift: int = 0) -> torch.Tensor | None:
    return (torch.arange(n) + shift) % NUM_CLASSES if model.conditional else None


def batch(n: int = 8, size: int = 32, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    images, _ = disks(n, size, seed=seed)
    return images, torch.arange(n) % NUM_CLASSES


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def state(model: GenerativeModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def expected_losses(variant: str, gp_weight: float) -> set[str] | None:
    name = VARIANTS[variant][0]
    if name not in LOSSES:
        return None
    return LOSSES[name] | ({"gp"} if name in R1 and gp_weight > 0 else set())


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request) -> tuple[str, GenerativeModel]:
    """(variant, model) after a few training steps: weights and normalisation statistics off their
    initial values (the DDPM's zero-initialised layers included), so that labels and loading matter.
    Tests may change its mode, but not its state."""
    model = build(request.param)
    opts = model.configure_optimizers(TrainConfig(lr=1e-3))
    for _ in range(3):
        model.training_step(batch(), opts)
    return request.param, model


def test_every_model_has_contract_entries():
    missing = {name: [table for table, entries in
                      dict(SMALL=SMALL, LOSSES=LOSSES, OPTIMISED=OPTIMISED, BAD_SETTINGS=BAD_SETTINGS).items()
                      if name not in entries] for name in MODELS}
    assert not {name: tables for name, tables in missing.items() if tables}
    assert set(CONDITIONAL) == set(VARIANTS)
    assert "toy" not in MODELS and set(SMALL) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_default_settings_build(name):
    # At one size: the defaults that depend on the size are built at every size below (AT_EVERY_SIZE).
    model = build_model(name, 32, num_classes=NUM_CLASSES)
    assert model.settings == {**model_defaults(name), "image_size": 32, "num_classes": NUM_CLASSES}
    assert isinstance(model, model_class(name)) and model.name == name


@pytest.mark.parametrize("name", MODELS)
def test_the_cpu_preset_builds_trains_and_has_a_budget(name):
    """`hcmbench study` trains every model's "cpu" preset: its settings must build the model at 64 px and
    take a training step, and its training settings must make a TrainConfig with a budget in images."""
    preset = model_preset(name, "cpu")
    assert preset.description and preset.train.get("kimg", 0) > 0
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in preset.train.items()})
    model = build_model(name, 64, num_classes=NUM_CLASSES, **preset.model)
    optimizers = model.configure_optimizers(config)
    batch = disks(4, 64)[0], torch.arange(4) % NUM_CLASSES
    losses = model.training_step(batch, optimizers)
    assert all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", MODELS)  # once per model: conditioning does not change with the size
def test_builds_trains_and_samples_at_every_size(variant, size):
    name = VARIANTS[variant][0]
    model = build(variant, size, **{k: model_defaults(name)[k] for k in AT_EVERY_SIZE.get(name, ())})
    assert model.settings["image_size"] == size
    logs = model.training_step(batch(2, size), model.configure_optimizers(TrainConfig()))
    assert logs and all(math.isfinite(v) for v in logs.values())
    images = model.sample(2, labels_for(model, 2), rng=seeded(0), **FAST_SAMPLE.get(name, {}))
    assert images.shape == (2, 1, size, size) and torch.isfinite(images).all()


def test_sample_contract(trained):
    variant, model = trained
    before = state(model)
    for options in SAMPLE_OPTIONS.get(VARIANTS[variant][0], [{}]):
        labels = labels_for(model, 4)
        draw = lambda seed, labels=labels: model.sample(4, labels, rng=seeded(seed), **options)  # noqa: E731
        model.train()
        images = draw(1)
        assert model.training, options  # sampling runs in eval mode, then restores the mode ...
        assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32, options
        assert images.device == model.device
        assert images.min() >= -1 and images.max() <= 1, options
        model.eval()
        assert torch.equal(images, draw(1)), options  # the same seed gives the same images, in either mode
        assert not model.training, options  # ... whichever it was
        assert not torch.allclose(images, draw(2)), options
        if model.conditional:  # labels make a difference (untrained GAN images are faint: compare to their scale)
            relabelled = draw(1, labels_for(model, 4, shift=1))
            assert (images - relabelled).abs().max() > 1e-3 * images.abs().max() > 0, options
    assert same_state(state(model), before)  # eval mode: normalisation statistics untouched


def test_labels_are_checked(trained):
    variant, model = trained
    assert model.conditional == CONDITIONAL.get(variant, model.conditional)
    options = FAST_SAMPLE.get(VARIANTS[variant][0], {})
    if model.conditional:
        # None, too few, a class beyond num_classes, a negative class.
        for labels in (None, torch.tensor([0, 1]), torch.tensor([0, 1, NUM_CLASSES]), torch.tensor([-1, 0, 1])):
            with pytest.raises(HcmbenchError):
                model.sample(3, labels, rng=seeded(0), **options)
        assert model.sample(3, torch.tensor([0, 1, NUM_CLASSES - 1]), rng=seeded(0), **options).shape[0] == 3
    else:  # even though built with num_classes = 3
        with pytest.raises(HcmbenchError, match="unconditional"):
            model.sample(3, torch.tensor([0, 1, 2]), rng=seeded(0), **options)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_unknown_sample_options_raise(variant):
    model = build(variant)
    declared = set(model.sample_options)
    offered = {option for name in MODELS for option in model_class(name).sample_options} | {"truncation", "temperature"}
    assert declared <= offered and set(model.preview_options) <= declared
    for option in sorted(offered - declared):
        with pytest.raises(HcmbenchError, match=re.escape(option)):
            model.sample(2, labels_for(model, 2), rng=seeded(0), **{option: OPTION_VALUES.get(option, 0.5)})
    for option in declared:  # the declared ones are parameters of `sample`
        parameters = inspect.signature(model.sample).parameters
        assert option in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


@pytest.mark.parametrize("name, bad, match", [
    pytest.param(name, bad, match, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in bad.items())}")
    for name in MODELS
    for bad, match in [(dict(no_such_setting=1), "no_such_setting"), (dict(image_size=48), "48"),
                       *BAD_SETTINGS.get(name, [])]
])
def test_bad_settings_raise(name, bad, match):
    kwargs = {"image_size": 32, "num_classes": NUM_CLASSES, **SMALL.get(name, {}), **bad}
    with pytest.raises(HcmbenchError, match=match):
        build_model(name, **kwargs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step_returns_named_finite_floats(variant):
    images, labels = batch()
    original = images.clone()
    for gp_weight in (1.0, 0.0):
        model = build(variant, **({"gp_weight": gp_weight} if VARIANTS[variant][0] in R1 else {}))
        opts = model.configure_optimizers(TrainConfig())
        before = [[p.detach().clone() for group in opt.param_groups for p in group["params"]] for opt in opts]
        logs = model.training_step((images, labels), opts)
        assert isinstance(logs, dict) and logs, gp_weight
        expected = expected_losses(variant, gp_weight)
        if expected is not None:
            assert set(logs) == expected, gp_weight
        assert all(isinstance(k, str) for k in logs)
        assert all(type(v) is float and math.isfinite(v) for v in logs.values()), logs
        # One step of every optimiser ...
        for opt, old in zip(opts, before):
            new = [p for group in opt.param_groups for p in group["params"]]
            assert any(not torch.equal(a, b) for a, b in zip(old, new)), gp_weight
        # ... that leaves the caller's batch as it was (R1 takes a copy to differentiate).
        assert not images.requires_grad and torch.equal(images, original)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step_under_bfloat16_autocast(variant):
    # The engine autocasts to bf16 on CUDA; CPU autocast exercises the same dtype handling (R1 included).
    model = build(variant)
    opts = model.configure_optimizers(TrainConfig())
    options = FAST_SAMPLE.get(VARIANTS[variant][0], {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logs = model.training_step(batch(), opts)
        images = model.sample(2, labels_for(model, 2), rng=seeded(0), **options)
    expected = expected_losses(variant, 1.0)
    assert expected is None or set(logs) == expected
    assert all(type(v) is float and math.isfinite(v) for v in logs.values()), logs
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1


def test_state_dict_round_trip_gives_identical_samples(trained):
    variant, model = trained
    fresh = build_model(VARIANTS[variant][0], **model.settings)
    assert fresh.settings == model.settings
    labels = labels_for(model, 4)
    all_options = SAMPLE_OPTIONS.get(VARIANTS[variant][0], [{}])
    draw = lambda m, options: m.sample(4, labels, rng=seeded(5), **options)  # noqa: E731
    assert not torch.equal(draw(fresh, all_options[0]), draw(model, all_options[0]))  # loading makes them equal
    fresh.load_state_dict(model.state_dict())
    for options in all_options:
        assert torch.equal(draw(fresh, options), draw(model, options)), options
    val = [batch(4, seed=9)]
    assert fresh.validation_score(val) == model.validation_score(val)


def test_validation_score_is_a_deterministic_float_and_keeps_the_mode(trained):
    _, model = trained
    val = [batch(4, seed=3)]
    before = state(model)
    model.train()
    score = model.validation_score(val)
    assert type(score) is float and math.isfinite(score)
    assert model.training
    model.eval()
    assert model.validation_score(val) == score  # the same score again, whatever the mode ...
    assert not model.training  # ... which it keeps
    assert same_state(state(model), before)


def test_an_empty_validation_split_is_a_one_line_error(trained):
    _, model = trained
    with pytest.raises(HcmbenchError, match="empty"):
        model.validation_score([])


def test_the_engine_preview_options_sample(trained):
    """The engine draws its epoch grids with `preview_options`; they must suit the model's own settings
    (the small DDPM has 5 timesteps, fewer than the 100 its previews use by default)."""
    _, model = trained
    images = model.sample(3, labels_for(model, 3), rng=seeded(0), **model.preview_options)
    assert images.shape == (3, 1, 32, 32) and torch.isfinite(images).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_optimisers_partition_the_parameters_with_the_configured_settings(variant):
    model = build(variant)
    cfg = TrainConfig(lr=1e-3, betas=(0.4, 0.9), grad_clip=0.5)
    opts = model.configure_optimizers(cfg)
    assert opts and all(isinstance(opt, torch.optim.Optimizer) for opt in opts)
    held = [[id(p) for group in opt.param_groups for p in group["params"]] for opt in opts]
    flat = [i for ids in held for i in ids]
    assert sorted(flat) == sorted(id(p) for p in model.parameters())  # every parameter, each once
    assert all(group["lr"] == 1e-3 and tuple(group["betas"]) == (0.4, 0.9)
               for opt in opts for group in opt.param_groups)
    assert model.grad_clip == 0.5
    name = VARIANTS[variant][0]
    if name in OPTIMISED:
        params = lambda modules: {id(p) for m in modules for p in model.get_submodule(m).parameters()}  # noqa: E731
        assert [set(ids) for ids in held] == [params(modules) for modules in OPTIMISED[name]]
