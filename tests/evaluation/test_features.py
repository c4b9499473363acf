"""Tests of the feature extractor (hcmbench.evaluation.features) on the tiny phantom at 32 px."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hcmbench.config import DataConfig, cache_dir
from hcmbench.data.acdc import GROUPS
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation import features
from hcmbench.evaluation.distribution import frechet_distance
from hcmbench.evaluation.degradations import random_degradations
from hcmbench.evaluation.features import FeatureConfig, FeatureNet, feature_key, load_feature_extractor
from tests.conftest import trained_feature_space

# Two phantom patients per group: one trains, one validates. The caller asks for HCM only; the
# extractor must still train on every group present.
DATA = DataConfig(groups=("HCM",), size=32, split=(0.5, 0.5, 0.0))
TINY = FeatureConfig(epochs=2, width=4, dim=8, batch_size=32)
TRAINED = FeatureConfig(epochs=30, width=16, dim=32, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def trained(phantom_root, tmp_path_factory):
    """(extractor trained a little on the phantom, the all-groups SliceSet), in a cache of its own."""
    return trained_feature_space(phantom_root, DATA, TRAINED, tmp_path_factory)


def test_embed_shape_dtype_and_input_layouts(trained):
    extractor, slices = trained
    images = slices.images[:5]
    from_numpy = extractor.embed(images)
    assert from_numpy.shape == (5, 32) and from_numpy.dtype == torch.float64
    from_tensor = extractor.embed(torch.from_numpy(images).unsqueeze(1))
    torch.testing.assert_close(from_tensor, from_numpy)
    assert extractor.embed(np.zeros((0, 32, 32), np.float32)).shape == (0, 32)


def test_embedding_is_deterministic_and_independent_of_the_batch(trained):
    extractor, slices = trained
    images = slices.images[:7]
    extractor.net.train()  # embed must switch to eval mode itself
    first = extractor.embed(images, batch_size=3)
    assert torch.equal(first, extractor.embed(images, batch_size=3))
    torch.testing.assert_close(extractor.embed(images[:1]), first[:1], rtol=1e-5, atol=1e-6)
    assert not extractor.net.training


def test_wrong_image_size_or_range_raises(trained):
    extractor, _ = trained
    with pytest.raises(HcmbenchError, match="32×32") as info:
        extractor.embed(np.zeros((3, 64, 64), np.float32))
    assert "\n" not in str(info.value)
    with pytest.raises(HcmbenchError, match="32×32"):
        extractor.embed(np.zeros((3, 3, 32, 32), np.float32))
    with pytest.raises(HcmbenchError, match=r"\[0, 1\]"):
        extractor.embed(np.full((3, 32, 32), -1.0, np.float32))  # a generator's [-1, 1] range


def test_trained_on_all_groups_and_the_heads_learn(trained):
    extractor, slices = trained
    summary = extractor.summary
    assert summary["groups"] == list(GROUPS) and summary["phases"] == ["ED", "ES"]
    train = slices.of_split("train")
    assert summary["train_slices"] == len(train) and summary["val_slices"] == len(slices.of_split("val"))
    group_index = {g: i for i, g in enumerate(GROUPS)}
    with torch.no_grad():
        logits = extractor.net(torch.from_numpy(train.images).unsqueeze(1))["group"]
    target = torch.tensor([group_index[g] for g in train.group.tolist()])
    # Five balanced groups: chance is about 0.2. (With one training patient per group, accuracy on the
    # validation patients is not reliably above chance at this size; on 2+ patients per group it is.)
    assert (logits.argmax(1) == target).double().mean() > 0.6


def test_summary_reports_the_heads_on_the_validation_split(trained):
    extractor, slices = trained
    val = slices.of_split("val")
    with torch.no_grad():
        out = extractor.net(torch.from_numpy(val.images).unsqueeze(1))
    target = torch.tensor([list(GROUPS).index(g) for g in val.group.tolist()])
    accuracy = (out["group"].argmax(1) == target).double().mean().item()
    assert extractor.summary["group_accuracy"] == pytest.approx(accuracy)
    mae = (out["position"] - torch.from_numpy(val.slice_position)).abs().mean().item()
    assert extractor.summary["position_mae"] == pytest.approx(mae, rel=1e-5)
    assert 0 < extractor.summary["group_chance"] < 0.5


def test_noise_is_far_from_real_images_in_feature_space(trained):
    extractor, slices = trained
    train = extractor.embed(slices.of_split("train").images)
    val = extractor.embed(slices.of_split("val").images)
    noise = extractor.embed(np.random.default_rng(0).random((len(val), 32, 32), dtype=np.float32))
    real_vs_real = frechet_distance(train, val)
    assert frechet_distance(train, noise) > 4 * real_vs_real


def test_realism_heads_tell_real_slices_from_degraded_ones_and_how_badly(trained):
    extractor, slices = trained
    assert extractor.summary["realism_accuracy"] > 0.6  # chance 0.5; the mildest damage (severity 0.15) is subtle
    val = torch.from_numpy(slices.of_split("val").images).unsqueeze(1)
    fake, _, severity = random_degradations(val, torch.Generator().manual_seed(5), low=0.5)
    with torch.no_grad():
        real, damaged = extractor.net(val), extractor.net(fake)
    called_real, called_damaged = (real["realism"] > 0).double().mean(), (damaged["realism"] < 0).double().mean()
    assert called_real > 0.6 and called_damaged > 0.6, (called_real, called_damaged)  # a tiny network, ten patients
    # the severity head reads the strength of the damage, not only its presence
    assert real["severity"].mean() < damaged["severity"].mean() - 0.25


def test_second_load_comes_from_the_cache(phantom_root, monkeypatch):
    calls = []
    first = load_feature_extractor(phantom_root, DATA, TINY, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)] and not first.from_cache
    path = cache_dir() / "features" / f"{first.key}.pt"
    assert path.is_file() and len(first.key) == 16

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds this extractor")

    monkeypatch.setattr(features, "_train", no_training)
    second = load_feature_extractor(phantom_root, DATA, TINY)
    assert second.from_cache and second.key == first.key and second.summary == first.summary
    images = np.random.default_rng(1).random((4, 32, 32), dtype=np.float32)
    assert torch.equal(second.embed(images), first.embed(images))


def test_same_seed_same_weights_and_a_corrupt_cache_is_retrained(phantom_root, monkeypatch):
    first = load_feature_extractor(phantom_root, DATA, TINY)
    path = cache_dir() / "features" / f"{first.key}.pt"
    path.write_bytes(b"not a checkpoint")
    trainings = []
    real_train = features._train
    monkeypatch.setattr(features, "_train", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    second = load_feature_extractor(phantom_root, DATA, TINY)
    assert trainings == [1] and not second.from_cache
    first_state, second_state = first.net.state_dict(), second.net.state_dict()
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)
    assert load_feature_extractor(phantom_root, DATA, TINY).from_cache  # rewritten whole
    other = load_feature_extractor(phantom_root, DATA, dataclasses.replace(TINY, seed=1))
    images = np.random.default_rng(1).random((4, 32, 32), dtype=np.float32)
    assert other.key != first.key and not torch.equal(other.embed(images), first.embed(images))


def test_without_both_phases_there_is_no_phase_head(phantom_root):
    extractor = load_feature_extractor(phantom_root, dataclasses.replace(DATA, frames=("ED",)), TINY)
    assert extractor.net.phase_head is None and extractor.summary["phases"] == []
    assert extractor.summary["phase_accuracy"] is None and extractor.summary["group_accuracy"] is not None


def test_key_depends_on_data_size_and_every_setting():
    base = feature_key("abc", 32, TINY)
    assert len(base) == 16 and base == feature_key("abc", 32, TINY)
    variants = [feature_key("abd", 32, TINY), feature_key("abc", 64, TINY)]
    values = (9, 3, 16, 2e-3, 1, 5, 0.0, 1.0, 0.5)
    assert len(values) == len(dataclasses.fields(TINY))  # one new value per setting
    variants += [feature_key("abc", 32, dataclasses.replace(TINY, **{f.name: value}))
                 for f, value in zip(dataclasses.fields(TINY), values)]
    assert len({base, *variants}) == len(variants) + 1


def test_augmentation_shifts_by_at_most_two_pixels_and_scales_intensity_without_flipping():
    x = torch.zeros(400, 1, 32, 32)
    x[:, 0, 10, 20] = 0.5
    x[:, 0, 10, 21] = 0.25  # an asymmetric pair: a flip would swap their order
    y = features._augment(x, torch.Generator().manual_seed(0))
    rows, cols = (y[:, 0] > 0.3).nonzero(as_tuple=True)[1:]
    assert set((rows - 10).tolist()) == {-2, -1, 0, 1, 2} and set((cols - 20).tolist()) == {-2, -1, 0, 1, 2}
    peak = y.amax(dim=(1, 2, 3))
    assert 0.45 <= peak.min() and peak.max() <= 0.55 and peak.std() > 0.01
    index = y[:, 0].flatten(1).argmax(1)
    assert torch.equal(y[:, 0].flatten(1)[torch.arange(400), index + 1], peak / 2)  # the dimmer pixel stays right


def test_network_sizes_and_settings_validation():
    for size in (32, 64, 128):
        net = FeatureNet(size, dim=16, width=4, num_groups=5)
        out = net(torch.rand(2, 1, size, size))
        assert out["embedding"].shape == (2, 16) and out["group"].shape == (2, 5) and out["position"].shape == (2,)
    assert FeatureNet(32, dim=16, width=4, num_groups=1).group_head is None
    with pytest.raises(HcmbenchError):
        FeatureNet(48)
    with pytest.raises(HcmbenchError, match="epochs"):
        FeatureConfig(epochs=0)
