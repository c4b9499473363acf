"""The utility study: a classifier of real phantom slices, with and without synthetic slices from a
generator that outputs noise (and real slices of other patients, the oracle); the cross-validation and
external test designs, the leakage rule, the paired test, reproducibility, refusals and files."""

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
from hcmbench.experiments.utility import UtilityConfig, parse_summary_at, rich_table, run_utility
from hcmbench.experiments.utility import classifier as utility_classifier
from hcmbench.experiments.utility.classifier import augment
from hcmbench.experiments.utility.data import (Method, SyntheticCache, assign_folds, hcm_label, methods_for,
                                               task_labels, training_set)
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
    """The hcm task on every training patient, 2-fold cross-validation, one repeat: real, and real plus as
    many noise slices as real HCM slices."""
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(None,), synthetic_ratios=(1.0,), seeds=1, folds=2,
                           size=SIZE, epochs=10, augmentation=False, device="cpu", bootstrap=500)
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


@pytest.fixture(scope="module")
def everyone(phantom, slice_cache):
    """Every slice of the phantom, with the generators' split."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCMBENCH_CACHE", str(slice_cache))
        return load_slices(phantom, DataConfig(groups=GROUPS, size=SIZE))


def row(result, method, task="hcm", k=None, ratio=None):
    (match,) = [r for r in result.rows if r.method == method and r.task == task and r.patients_per_group == k
                and (ratio is None or r.ratio == ratio)]
    return match


# -- end to end ----------------------------------------------------------------------------------


def test_real_classifier_tells_hcm_from_the_other_groups(study, everyone):
    result, calls = study
    real = row(result, "real")
    # phantom HCM has thick walls and a small cavity; chance is 0.5 for balanced accuracy and AUC
    assert real.patient_bacc >= 0.8 and real.slice_bacc >= 0.75 and real.slice_auc >= 0.9
    assert real.patient_bacc_low <= real.patient_bacc <= real.patient_bacc_high
    assert real.repeats == 1 and real.folds == 2 and real.synthetic_slices == 0 and real.baseline is None
    assert real.real_slices == len(everyone) / 2  # each slice trains in one of the two folds
    assert result.pool == dict.fromkeys(GROUPS, 5) and result.test_patients == dict.fromkeys(GROUPS, 5)
    assert real.test_patients == dict.fromkeys(GROUPS, 5)  # cross-validation: every patient is tested
    assert calls == [(i, 4) for i in range(1, 5)]  # two folds × two methods, reported after each


def test_noise_reaches_training_and_hurts(study, everyone):
    result, _ = study
    real, noisy = row(result, "real"), row(result, "real+noise")
    assert noisy.model == "noise" and noisy.ratio == 1.0 and noisy.baseline == "real"
    assert noisy.synthetic_slices == (everyone.group == "HCM").sum() / 2 > 0  # ratio 1: as many as real HCM slices
    assert noisy.real_slices == real.real_slices
    # the generator saw the HCM train and val patients: its rows rest on the one HCM test patient
    assert noisy.test_patients == {**dict.fromkeys(GROUPS, 5), "HCM": 1}
    # Half the HCM class is noise: the classifier learns that HCM looks like noise, and real HCM slices fall
    # below its threshold (compared with real on the same patients, those the generator never saw).
    assert noisy.delta_slice_bacc <= -0.15 and noisy.delta_patient_bacc < 0, (noisy.delta_slice_bacc,
                                                                             noisy.delta_patient_bacc)
    assert noisy.delta_patient_bacc_low <= noisy.delta_patient_bacc <= noisy.delta_patient_bacc_high
    gain = result.gains()["noise"]  # the grid lacks hcm,5,1: its nearest setting, hcm,all,1
    assert result.summary_setting()[0] == ("hcm", None, 1.0)
    assert (gain.value, gain.low, gain.high, gain.p_value) == (
        noisy.delta_patient_bacc, noisy.delta_patient_bacc_low, noisy.delta_patient_bacc_high, noisy.p_patient_bacc)


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
    # the ratios of one repeat share their images: a smaller ratio takes the first of the largest's
    _, _, n2 = training_set(real, "hcm", Method("real+noise", "noise", 2.0), cache, {"noise": None}, seed=0)
    small, _, _ = training_set(real, "hcm", Method("real+noise", "noise", 0.5), cache, {"noise": None}, seed=0,
                               draw_ratio=2.0)
    np.testing.assert_array_equal(small[len(real):], cache.images("noise", None, n2, 0)[:n])


def test_the_oracle_adds_real_hcm_slices_of_other_patients(everyone):
    from hcmbench.experiments.utility.data import choose_patients, oracle_images

    chosen = choose_patients(everyone, 1, seed=0, fold=0)
    extra = oracle_images(everyone, chosen, 10, seed=0, fold=0)
    others = everyone.subset((everyone.group == "HCM") & ~np.isin(everyone.patient, chosen.patient))
    assert len(extra) == 10 and len({image.tobytes() for image in extra}) == 10  # without replacement
    assert {image.tobytes() for image in extra} <= {image.tobytes() for image in others.images}
    everything = oracle_images(everyone, chosen, 10_000, seed=0, fold=0)
    assert len(everything) == len(others)  # all of them when fewer exist
    np.testing.assert_array_equal(everything[:10], extra)  # a smaller ratio takes a prefix
    images, labels, n = training_set(chosen, "hcm", Method("real+oracle", None, 2.0, oracle=True), None, {}, 0,
                                     oracle=everything)
    assert n == 2 * (chosen.group == "HCM").sum() and (labels[len(chosen):] == 1).all()


def test_tstr_trains_on_as_many_synthetic_slices_per_class_as_the_real_subset(pool):
    real = pool
    five = noise_generator(GROUPS, list(GROUPS))
    hcm_only = noise_generator()
    config = UtilityConfig(tasks=("5class",), size=SIZE, augmentation=False)
    names = [m.name for m in methods_for("5class", {"five": five, "hcm": hcm_only}, config, GROUPS)]
    assert names[0] == "real" and "tstr:five" in names and "tstr:hcm" not in names
    assert "real+oracle" not in names  # every patient trains: none is left to stand in for a generator
    assert "real+oracle" in [m.name for m in methods_for("5class", {}, config, GROUPS, k=2)]
    images, labels, n = training_set(real, "5class", Method("tstr:five", "five", tstr=True),
                                     SyntheticCache({"five": five}, SIZE), {"five": "HCM"}, seed=1)
    assert n == len(images) == len(real)
    np.testing.assert_array_equal(np.bincount(labels, minlength=5), np.bincount(task_labels(real.group, "5class")))
    assert abs(images.mean() - 0.5) < 0.02  # all synthetic


def test_one_seed_gives_one_result(phantom, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(1,), synthetic_ratios=(0.5,), seeds=1, folds=2,
                           size=SIZE, epochs=2, device="cpu", bootstrap=200)
    runs = []
    for caller_seed in (1, 2):  # whatever the caller's global random state
        torch.manual_seed(caller_seed)
        np.random.seed(caller_seed)
        runs.append(run_utility(phantom, {"noise": noise_generator()}, config))
    first, second = runs
    assert [r.method for r in first.rows] == ["real", "real+aug", "real+oracle", "real+aug+oracle", "real+noise",
                                              "real+aug+noise"]
    assert [r.baseline for r in first.rows] == [None, None, "real", "real+aug", "real", "real+aug"]
    assert first.rows == second.rows and all(r.repeats == 1 for r in first.rows)


# -- the design: folds, training patients, the leakage rule (training and prediction stubbed) -------


def test_folds_are_stratified_and_dealt_anew_each_repeat():
    groups = {f"p{i:02d}": GROUPS[i % 5] for i in range(23)}
    a, b = assign_folds(groups, 3, seed=0), assign_folds(groups, 3, seed=1)
    assert set(a) == set(groups) and set(a.values()) == {0, 1, 2}
    for group in GROUPS:
        sizes = np.bincount([a[p] for p, g in groups.items() if g == group], minlength=3)
        assert sizes.max() - sizes.min() <= 1  # round-robin within the group
    assert a != b and a == assign_folds(groups, 3, seed=0)


@pytest.fixture
def stubbed(everyone, monkeypatch):
    """Training and prediction stubbed: a "classifier" is the set of patients it trained on (real and oracle
    slices), and it predicts each test patient's class right, except the patients the generator saw, which
    it gets wrong. Returns the log of what each fold trained on and tested."""
    from hcmbench.experiments.utility import run as utility_run

    owner = {image.tobytes(): (p, g) for image, p, g in zip(everyone.images, everyone.patient, everyone.group)}
    seen = set(everyone.patient[(everyone.group == "HCM") & (everyone.split != "test")].tolist())
    log = {"trained": [], "tested": []}

    def train(images, labels, num_classes, config, seed, augmentation, device):
        patients = {owner[i.tobytes()][0] for i in images if i.tobytes() in owner}
        log["trained"].append((seed, patients))
        return seed

    def predict(model, images, device):
        patients = [owner[i.tobytes()] for i in images]
        log["tested"].append((model, {p for p, _ in patients}))
        right = np.array([(g == "HCM") != (p in seen) for p, g in patients], dtype=int)
        return np.eye(2)[right]

    monkeypatch.setattr(utility_run, "train_classifier", train)
    monkeypatch.setattr(utility_run, "predict", predict)
    return log, seen


def test_cross_validation_tests_every_patient_once_and_never_on_its_training_patients(phantom, everyone, stubbed,
                                                                                    shared_cache):
    log, seen = stubbed
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(2,), synthetic_ratios=(1.0,), seeds=2, folds=5,
                           size=SIZE, augmentation=False, device="cpu", bootstrap=200)
    result = run_utility(phantom, {"noise": noise_generator()}, config)
    everybody = set(everyone.patient.tolist())
    # per repeat and fold (run seed = seed × folds + fold), one set of test patients; methods share it
    tested: dict[int, set] = {}
    for run_seed, patients in log["tested"]:
        assert tested.setdefault(run_seed, patients) == patients
    for seed in range(2):
        folds = [tested[seed * 5 + f] for f in range(5)]
        assert sum(len(f) for f in folds) == len(everybody) and set().union(*folds) == everybody  # once each
    assert tested[0] != tested[5]  # each repeat deals its own folds
    for run_seed, patients in log["trained"]:
        assert not patients & tested[run_seed]  # real and oracle slices from outside the test fold
    real_oracle = [p for s, p in log["trained"] if s == 0]
    assert len({frozenset(p) for p in real_oracle}) == 2  # real: 2 per group; the oracle adds other HCM patients
    # the stub gets the generator-seen HCM patients wrong: the real rows count them, the noise row does not
    real, noisy, oracle = row(result, "real", k=2), row(result, "real+noise", k=2), row(result, "real+oracle", k=2)
    assert real.test_patients["HCM"] == oracle.test_patients["HCM"] == 5 and noisy.test_patients["HCM"] == 1
    assert len(seen) == 4
    assert real.patient_bacc == pytest.approx((1 / 5 + 1) / 2) and noisy.patient_bacc == 1.0
    assert noisy.delta_patient_bacc == 0.0  # compared on the patients both may be tested on


# -- the paired test's positive control -------------------------------------------------------


@pytest.fixture(scope="module")
def ten_per_group(tmp_path_factory):
    """Ten phantom patients per group: ten HCM patients to test, enough for a paired test to have power."""
    return write_phantom(tmp_path_factory.mktemp("ten") / "acdc", PhantomConfig(patients_per_group=10, seed=0))


def test_the_oracle_helps_significantly_at_one_patient_per_group(ten_per_group, shared_cache):
    """Real HCM slices of other patients (4 × the HCM slices of the one sampled HCM patient) lift a classifier
    trained on one patient per group, by a difference the permutation test finds (p < 0.05): the design can
    see an effect of the size a perfect generator would have. Settings chosen where this holds for phantoms
    of seeds 0–2 (Δ patient bal. acc. +0.17 to +0.28, p 0.001–0.003), not for one lucky draw."""
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(1,), synthetic_ratios=(4.0,), seeds=3, folds=2,
                           size=SIZE, epochs=8, augmentation=False, device="cpu", bootstrap=2000)
    result = run_utility(ten_per_group, {}, config)
    real, oracle = row(result, "real", k=1), row(result, "real+oracle", k=1)
    assert oracle.test_patients == real.test_patients == dict.fromkeys(GROUPS, 10)
    assert oracle.synthetic_slices == pytest.approx(4 * real.real_slices / 5, rel=0.25)  # 4 × one HCM patient's
    assert oracle.delta_patient_bacc > 0.1 and oracle.p_patient_bacc < 0.05, oracle
    assert oracle.delta_patient_bacc_low > 0
    assert 0 < result.power["hcm", 1] < 0.5  # the design's minimum detectable difference at this k


# -- an external test set ----------------------------------------------------------------------


def renumbered_phantom(path, config, offset=100):
    """A phantom whose patients are numbered from offset + 1 (patient101, …): other patients than a phantom
    of the same size has."""
    write_phantom(path, config)
    for folder in sorted((path / "training").iterdir(), reverse=True):
        new = f"patient{int(folder.name[len('patient'):]) + offset:03d}"
        for file in folder.iterdir():
            file.rename(folder / file.name.replace(folder.name, new))
        folder.rename(folder.parent / new)
    return path


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """Three other phantom patients per group (patient101–patient115), drawn with another seed."""
    return renumbered_phantom(tmp_path_factory.mktemp("external") / "acdc", PhantomConfig(patients_per_group=3, seed=1))


def test_an_external_test_set_is_tested_whole_and_noise_does_not_help(phantom, external, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(2,), synthetic_ratios=(1.0,), seeds=2, size=SIZE,
                           epochs=10, augmentation=False, oracle=False, device="cpu", bootstrap=1000)
    result = run_utility(phantom, {"noise": noise_generator()}, config, test_root=external)
    assert result.folds == 1 and result.test_root == str(external)
    assert result.test_patients == dict.fromkeys(GROUPS, 3) and result.pool == dict.fromkeys(GROUPS, 5)
    real, noisy = row(result, "real", k=2), row(result, "real+noise", k=2)
    # the generator never saw these patients: its rows rest on all of them, like real's
    assert real.test_patients == noisy.test_patients == dict.fromkeys(GROUPS, 3)
    assert real.folds == 1 and real.repeats == 2 and real.patient_bacc >= 0.7
    # the classifier's 2 patients per group come from every split of the data (18 slices a patient or so)
    assert 150 <= real.real_slices <= 210
    # noise labelled HCM does not help (it hurts): no significant gain
    assert noisy.delta_patient_bacc <= 0 or noisy.p_patient_bacc >= 0.05, noisy
    assert noisy.delta_slice_bacc < 0
    assert f"external test set {external}" in result.to_markdown()


def test_an_external_test_set_that_shares_patients_or_lacks_groups_is_refused(phantom, tmp_path, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(1,), size=SIZE, device="cpu")
    never = lambda d, t: pytest.fail("trained before refusing")  # noqa: E731
    with pytest.raises(HcmbenchError, match="shares 25 patient id") as error:
        run_utility(phantom, {}, config, never, test_root=phantom)
    assert "\n" not in str(error.value)
    no_hcm = renumbered_phantom(tmp_path / "no_hcm", PhantomConfig(patients_per_group=1, groups=("NOR", "DCM")))
    with pytest.raises(HcmbenchError, match=f"test data {no_hcm}: no HCM patients"):
        run_utility(phantom, {}, config, never, test_root=no_hcm)
    two = renumbered_phantom(tmp_path / "two", PhantomConfig(patients_per_group=1, groups=("HCM", "NOR")))
    with pytest.raises(HcmbenchError, match="5class task needs all five ACDC groups"):
        run_utility(phantom, {}, dataclasses.replace(config, tasks=("5class",)), never, test_root=two)


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
    {"folds": 1}, {"bootstrap": 10}, {"summary_at": ("hcm", 7, 1.0)}, {"summary_at": ("5class", 5, 1.0), "tasks": ("hcm",)},
])
def test_bad_settings_are_one_line_errors(settings):
    with pytest.raises(HcmbenchError) as error:
        UtilityConfig(**settings)
    assert "\n" not in str(error.value)


def test_the_summary_setting_is_declared_the_default_or_the_nearest():
    assert UtilityConfig().summary_setting()[0] == ("hcm", 5, 1.0)
    assert UtilityConfig(synthetic_ratios=(0.5, 1.0), summary_at=("5class", 2, 0.5)).summary_setting() == (
        ("5class", 2, 0.5), "declared (summary_at 5class,2,0.5)")
    chosen, how = UtilityConfig(tasks=("5class",), patients_per_group=(3, 8, None),
                                synthetic_ratios=(0.5, 2.0)).summary_setting()
    assert chosen == ("5class", 3, 0.5) and "nearest" in how
    assert UtilityConfig(patients_per_group=(None,)).summary_setting()[0] == ("hcm", None, 1.0)
    assert parse_summary_at("hcm,all,2") == ("hcm", None, 2.0)
    with pytest.raises(HcmbenchError, match="TASK,PATIENTS,RATIO"):
        parse_summary_at("hcm,5")


def test_more_patients_per_group_than_a_fold_leaves_is_refused(phantom, shared_cache):
    config = UtilityConfig(tasks=("hcm",), patients_per_group=(5,), size=SIZE, device="cpu")
    with pytest.raises(HcmbenchError, match="only 4 DCM patient.* outside a test fold") as error:
        run_utility(phantom, {}, config, progress=lambda d, t: pytest.fail("trained before refusing"))
    assert "\n" not in str(error.value)
    with pytest.raises(HcmbenchError, match="6 folds need at least 6 patients in every group"):
        run_utility(phantom, {}, dataclasses.replace(config, patients_per_group=(1,), folds=6))


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
    real, noisy = row(result, "real"), row(result, "real+noise")
    assert "| hcm | all | real |" in markdown and "| hcm | all | real+noise | 1 |" in markdown
    interval = f"{real.patient_bacc:.2f} [{real.patient_bacc_low:.2f}, {real.patient_bacc_high:.2f}]"
    assert f"| 5+20 | " in markdown and interval in markdown
    delta = f"Δ {noisy.delta_patient_bacc:+.2f} [".replace("-", "−")
    assert delta in markdown and f"], p {noisy.p_patient_bacc:.2f}" in markdown.replace("p < 0.001", "p 0.00")
    assert "cross-validation" in markdown and "Leakage rule" in markdown and "detects a difference" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "utility.csv").read_text())))
    assert [r["method"] for r in rows] == ["real", "real+noise"] and rows[0]["patients_per_group"] == "all"
    assert float(rows[1]["slice_bacc"]) == noisy.slice_bacc and float(rows[1]["p_slice_auc"]) == noisy.p_slice_auc
    assert rows[1]["test_patients"] == "DCM 5; HCM 1; MINF 5; NOR 5; RV 5" and rows[0]["delta_patient_bacc"] == ""
    assert rich_table(result).row_count == 3  # a heading row for the task, then the two methods
