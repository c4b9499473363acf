"""The utility study: a classifier of real phantom slices, with and without synthetic slices from a
generator that outputs noise; its metrics, reproducibility, refusals and files."""

from __future__ import annotations

import csv
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from hcmbench.checkpoints import LoadedGenerator
from hcmbench.config import DataConfig
from hcmbench.data.acdc import GROUPS
from hcmbench.data.phantom import PhantomConfig, write_phantom
from hcmbench.data.slices import load_slices
from hcmbench.errors import HcmbenchError
from hcmbench.experiments.utility import UtilityConfig, rich_table, run_utility
from hcmbench.experiments.utility import classifier as utility_classifier
from hcmbench.experiments.utility.classifier import augment
from hcmbench.experiments.utility.data import Method, SyntheticCache, hcm_label, methods_for, task_labels, training_set
from hcmbench.experiments.utility.scores import balanced_accuracy, macro_auc, patient_votes, roc_auc
from hcmbench.models.base import GenerativeModel

SIZE = 32


class NoiseModel(GenerativeModel):
    """A "generator" whose samples are uniform noise in [-1, 1]: it knows nothing of hearts."""

    name = "noise"

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.conditional = num_classes > 0
        self.settings = {"image_size": SIZE, "num_classes": num_classes}
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def sample(self, n, labels=None, rng=None, **options):
        self.check_labels(n, labels)
        return torch.rand(n, 1, SIZE, SIZE, generator=rng) * 2 - 1


def noise_generator(groups: tuple[str, ...] = ("HCM",), classes: list[str] | None = None) -> LoadedGenerator:
    """Stored like a checkpoint's: trained on `groups`; conditional on `classes` when given (group or
    phase names), else unconditional (its classes then are the phases, as for one group)."""
    conditional = classes is not None
    state = {"data_config": dataclasses.asdict(DataConfig(groups=groups, size=SIZE)),
             "label_by": "group" if conditional and set(classes) <= set(GROUPS) else "phase"}
    return LoadedGenerator(NoiseModel(len(classes) if conditional else 0).eval(), classes or ["ED", "ES"], state)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Five phantom patients of each group: three train, one val and one test patient per group."""
    return write_phantom(tmp_path_factory.mktemp("utility") / "acdc", PhantomConfig(patients_per_group=5, seed=0))


@pytest.fixture(scope="module")
def slice_cache(tmp_path_factory):
    """A preprocessing cache shared by this module's runs (each test otherwise gets an empty one)."""
    return tmp_path_factory.mktemp("utility_cache")


@pytest.fixture
def shared_cache(slice_cache, monkeypatch):
    monkeypatch.setenv("HCMBENCH_CACHE", str(slice_cache))


@pytest.fixture(scope="module")
def study(phantom, slice_cache):
    """The hcm task on every training patient, two seeds: real, and real plus as many noise slices."""
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(None,), synthetic_ratios=(1.0,), seeds=2,
                           size=SIZE, epochs=10, augmentation=False, device="cpu")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCMBENCH_CACHE", str(slice_cache))
        result = run_utility(phantom, {"noise": noise_generator()}, config, progress=lambda d, t: calls.append((d, t)))
    return result, calls


@pytest.fixture(scope="module")
def pool(phantom, slice_cache):
    """The real training pool: every group's training patients."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCMBENCH_CACHE", str(slice_cache))
        return load_slices(phantom, DataConfig(groups=GROUPS, size=SIZE)).of_split("train")


def row(result, method, task="hcm", k=None):
    (match,) = [r for r in result.rows if r.method == method and r.task == task and r.patients_per_group == k]
    return match


# -- end to end ----------------------------------------------------------------------------------


def test_real_classifier_tells_hcm_from_the_other_groups(study, pool):
    result, calls = study
    real = row(result, "real")
    # phantom HCM has thick walls and a small cavity; chance is 0.5 for balanced accuracy and AUC
    assert real.patient_bacc >= 0.8 and real.slice_bacc >= 0.75 and real.slice_auc >= 0.9
    assert real.seeds == 2 and real.synthetic_slices == 0
    assert real.slice_auc_std > 0  # the two seeds trained two different classifiers
    assert real.real_slices == len(pool)
    assert result.pool == dict.fromkeys(GROUPS, 3) and result.test_patients == dict.fromkeys(GROUPS, 1)
    assert calls == [(i, 4) for i in range(1, 5)]  # two methods × two seeds, reported after each


def test_noise_reaches_training_and_hurts(study, pool):
    result, _ = study
    real, noisy = row(result, "real"), row(result, "real+noise")
    assert noisy.model == "noise" and noisy.ratio == 1.0
    assert noisy.synthetic_slices == (pool.group == "HCM").sum() > 0  # ratio 1: as many as the real HCM slices
    assert noisy.real_slices == real.real_slices
    # Half the HCM class is noise: the classifier learns that HCM looks like noise, and real HCM slices fall
    # below its threshold (real: slice 0.88, patient 1.0; with noise: 0.5 and 0.5, chance), while the
    # ranking (AUC) mostly survives. Real's patient figure is 1.0, so only a strict drop says anything.
    assert noisy.slice_bacc <= real.slice_bacc - 0.15 and noisy.patient_bacc < real.patient_bacc
    assert result.gains()["noise"] == noisy.patient_bacc - real.patient_bacc < 0


def test_the_synthetic_slices_in_the_training_set_are_the_generators(pool):
    real = pool
    cache = SyntheticCache({"noise": noise_generator()}, SIZE)
    images, labels, n = training_set(real, "hcm", Method("real+noise", "noise", 0.5), cache, {"noise": None}, seed=0)
    n_hcm = int((real.group == "HCM").sum())
    assert n == round(0.5 * n_hcm) and len(images) == len(real) + n
    np.testing.assert_array_equal(images[:len(real)], real.images)
    fake = images[len(real):]
    # uniform noise in [0, 1]: mean about 0.5, std about 0.29 — unlike any heart slice
    assert abs(fake.mean() - 0.5) < 0.02 and abs(fake.std() - 12 ** -0.5) < 0.02 and fake.min() >= 0
    assert (labels[len(real):] == 1).all() and labels[:len(real)].sum() == n_hcm
    again = cache.images("noise", None, n, 0)
    assert again is cache.images("noise", None, n, 0)  # drawn once per run
    np.testing.assert_array_equal(again, fake)


def test_tstr_trains_on_as_many_synthetic_slices_per_class_as_the_real_subset(pool):
    real = pool
    five = noise_generator(GROUPS, list(GROUPS))
    hcm_only = noise_generator()
    config = UtilityConfig(tasks=("5class",), size=SIZE, augmentation=False)
    names = [m.name for m in methods_for("5class", {"five": five, "hcm": hcm_only}, config, GROUPS)]
    assert names[0] == "real" and "tstr:five" in names and "tstr:hcm" not in names
    images, labels, n = training_set(real, "5class", Method("tstr:five", "five", tstr=True),
                                     SyntheticCache({"five": five}, SIZE), {"five": "HCM"}, seed=1)
    assert n == len(images) == len(real)
    np.testing.assert_array_equal(np.bincount(labels, minlength=5), np.bincount(task_labels(real.group, "5class")))
    assert abs(images.mean() - 0.5) < 0.02  # all synthetic


def test_one_seed_gives_one_result(phantom, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(1,), synthetic_ratios=(0.5,), seeds=1, size=SIZE,
                           epochs=2, device="cpu")
    runs = []
    for caller_seed in (1, 2):  # whatever the caller's global random state
        torch.manual_seed(caller_seed)
        np.random.seed(caller_seed)
        runs.append(run_utility(phantom, {"noise": noise_generator()}, config))
    first, second = runs
    assert [r.method for r in first.rows] == ["real", "real+aug", "real+noise", "real+aug+noise"]
    assert first.rows == second.rows and all(r.seeds == 1 for r in first.rows)


def test_each_seed_trains_its_own_classifier_and_rows_hold_the_mean_and_std_over_seeds(phantom, pool, shared_cache,
                                                                                        monkeypatch):
    """Training and scoring stubbed: seed s scores 0.5 + 0.25 s, and 0.1 more with the noise slices."""
    from hcmbench.experiments.utility import run as utility_run

    trained = []

    def train(images, labels, num_classes, config, seed, augmentation, device):
        trained.append(seed)
        return 0.5 + 0.25 * seed + (0.1 if len(images) > len(pool) else 0.0)  # the "classifier" is its score

    monkeypatch.setattr(utility_run, "train_classifier", train)
    monkeypatch.setattr(utility_run, "predict", lambda model, images, device: model)
    monkeypatch.setattr(utility_run, "score", lambda model, labels, patients: dict.fromkeys(
        ("slice_bacc", "slice_auc", "patient_bacc", "patient_auc"), model))
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(None,), synthetic_ratios=(1.0,), seeds=3, size=SIZE,
                           augmentation=False, device="cpu")
    result = run_utility(phantom, {"noise": noise_generator()}, config)
    assert trained == [0, 0, 1, 1, 2, 2]  # seed by seed, each method
    real, noisy = row(result, "real"), row(result, "real+noise")
    assert real.seeds == noisy.seeds == 3
    # seeds score 0.5, 0.75, 1.0: mean 0.75, population std (ddof 0) sqrt(1/24)
    assert real.slice_bacc == pytest.approx(0.75) and real.patient_auc_std == pytest.approx((1 / 24) ** 0.5)
    assert noisy.patient_bacc == pytest.approx(0.85) and noisy.slice_auc_std == pytest.approx((1 / 24) ** 0.5)


# -- metrics -------------------------------------------------------------------------------------


def test_auc_by_ranks():
    positive = np.array([0, 0, 1, 1], bool)
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 0.0
    assert roc_auc(np.full(4, 0.5), positive) == 0.5
    assert roc_auc(np.array([0.1, 0.5, 0.5, 0.9]), positive) == 0.875  # one tied pair counts half
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1], bool)))
    # binary: the second column; several classes: mean one-vs-rest over the classes present
    assert macro_auc(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])) == 1.0
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    assert macro_auc(three, np.array([0, 1, 2, 0])) == pytest.approx(np.mean([3 / 4, 5 / 6, 1.0]))
    assert macro_auc(three, np.array([0, 1, 0, 1])) == pytest.approx(np.mean([3 / 4, 1.0]))  # class 2 absent


def test_balanced_accuracy_is_the_mean_recall():
    labels = np.array([0, 0, 0, 0, 1])
    assert balanced_accuracy(labels, np.zeros(5, int)) == 0.5  # the majority class alone is chance
    assert balanced_accuracy(labels, np.array([0, 0, 1, 1, 1])) == 0.75
    assert balanced_accuracy(np.array([2, 2]), np.array([2, 0])) == 0.5  # only the classes present count


def test_patient_votes_majority_then_mean_probability():
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4], [0.1, 0.9],    # a: two votes for 0 outweigh a confident 1
                              [0.45, 0.55], [0.9, 0.1]])              # b: a tie, the mean says 0
    ids, means, votes = patient_votes(probabilities, np.array(["a", "a", "a", "b", "b"]))
    assert list(ids) == ["a", "b"] and list(votes) == [0, 0]
    np.testing.assert_allclose(means, [[13 / 30, 17 / 30], [0.675, 0.325]])
    _, _, votes = patient_votes(np.array([[0.45, 0.55], [0.6, 0.4]]), np.array(["c", "c"]))
    assert list(votes) == [0]
    _, _, votes = patient_votes(np.array([[0.2, 0.8], [0.55, 0.45]]), np.array(["d", "d"]))
    assert list(votes) == [1]


def test_augmentation_is_seeded_and_stays_in_range(monkeypatch):
    x = torch.rand(8, 1, SIZE, SIZE)
    a = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(3)))
    # without rotation and jitter, what is left is exact flips, each of the four kinds among 64 images
    monkeypatch.setattr(utility_classifier, "ROTATION_DEG", 0.0)
    monkeypatch.setattr(utility_classifier, "GAIN", (1.0, 1.0))
    monkeypatch.setattr(utility_classifier, "OFFSET", 0.0)
    x = torch.rand(64, 1, SIZE, SIZE)
    flipped = augment(x, torch.Generator().manual_seed(0))
    kinds = []
    for image, out in zip(x, flipped):
        candidates = [image, image.flip(-1), image.flip(-2), image.flip(-1, -2)]
        kinds.append([i for i, c in enumerate(candidates) if torch.allclose(out, c, atol=1e-5)])
    assert all(len(k) == 1 for k in kinds) and {k[0] for k in kinds} == {0, 1, 2, 3}


@pytest.mark.parametrize("generator, label", [
    (noise_generator(), None),                                  # unconditional, trained on HCM only
    (noise_generator(("HCM",), ["ED", "ES"]), None),            # conditioned on the phase, HCM only
    (noise_generator(GROUPS, list(GROUPS)), "HCM"),             # conditioned on the group
])
def test_which_label_draws_hcm(generator, label):
    assert hcm_label("g", generator) == label


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {"tasks": ("hcm", "3class")}, {"tasks": ()}, {"seeds": 0}, {"synthetic_ratios": (0.0,)},
    {"patients_per_group": (0,)}, {"patients_per_group": ()}, {"size": 48}, {"epochs": 0}, {"device": "tpu"},
])
def test_bad_settings_are_one_line_errors(settings):
    with pytest.raises(HcmbenchError) as error:
        UtilityConfig(**settings)
    assert "\n" not in str(error.value)


def test_more_patients_per_group_than_the_pool_is_refused(phantom, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(4,), size=SIZE, device="cpu")
    with pytest.raises(HcmbenchError, match="only 3 DCM patient") as error:
        run_utility(phantom, {}, config, progress=lambda d, t: pytest.fail("trained before refusing"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("generator, message", [
    (noise_generator(("HCM", "NOR")), "unconditional and was trained on HCM, NOR"),
    (noise_generator(("NOR", "DCM"), ["NOR", "DCM"]), "cannot be asked for HCM"),
])
def test_a_generator_that_cannot_make_hcm_is_refused(phantom, generator, message):
    with pytest.raises(HcmbenchError, match=message) as error:
        run_utility(phantom, {"g": generator}, UtilityConfig(size=SIZE, device="cpu"))
    assert "\n" not in str(error.value)


def test_a_generator_of_another_size_is_refused(phantom):
    generator = noise_generator()
    with pytest.raises(HcmbenchError, match="set size=32"):
        run_utility(phantom, {"g": generator}, UtilityConfig(size=64, device="cpu"))


# -- outputs -------------------------------------------------------------------------------------


def test_write_produces_the_table_csv_and_plot(study, tmp_path):
    result, _ = study
    paths = result.write(tmp_path / "out")
    assert sorted(p.name for p in paths) == ["utility.csv", "utility.md", "utility.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["utility.csv", "utility.md", "utility.png"]
    markdown = (tmp_path / "out" / "utility.md").read_text()
    assert "| hcm | all | real |" in markdown and "| hcm | all | real+noise | 1 |" in markdown
    assert f"{row(result, 'real').patient_bacc:.3f} ± " in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "utility.csv").read_text())))
    assert [r["method"] for r in rows] == ["real", "real+noise"] and rows[0]["patients_per_group"] == "all"
    assert float(rows[1]["slice_bacc"]) == row(result, "real+noise").slice_bacc
    assert rich_table(result).row_count == 3  # a heading row for the task, then the two methods
