"""The classifier two-sample test (hcmbench.evaluation.detectability) on the phantom at 32 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hcmbench.config import DataConfig
from hcmbench.data.acdc import GROUPS
from hcmbench.data.slices import load_slices
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.degradations import degrade
from hcmbench.evaluation.detectability import DetectabilityConfig, detectability, split_halves

FAST = DetectabilityConfig(seeds=2, steps=300)  # the phantom at 32 px needs fewer steps than real slices


@pytest.fixture(scope="module")
def real(six_per_group):
    """(training slices, their patients, validation slices, test slices and patients) of every group."""
    slices = load_slices(six_per_group, DataConfig(groups=GROUPS, size=32, split=(0.5, 0.25, 0.25)), cache=False)
    train, val, test = (slices.of_split(s) for s in ("train", "val", "test"))
    as_tensor = lambda s: torch.from_numpy(s.images)  # noqa: E731
    return as_tensor(train), train.patient, as_tensor(val), as_tensor(test), test.patient


def test_halves_keep_each_patient_on_one_side():
    patients = np.array(["a", "a", "b", "c", "c", "c", "d"])
    fit, test = split_halves(len(patients), patients, seed=3)
    assert set(patients[fit]).isdisjoint(patients[test]) and len(fit) + len(test) == len(patients)
    assert len(set(patients[fit])) == 2 and len(set(patients[test])) == 2
    fit, test = split_halves(10, None, seed=0)
    assert sorted(np.concatenate([fit, test]).tolist()) == list(range(10)) and len(fit) == 5
    with pytest.raises(HcmbenchError, match="at least two patients"):
        split_halves(3, np.array(["a", "a", "a"]), seed=0)


def test_noise_and_blur_are_told_apart_and_new_real_patients_are_not(real):
    train, _, val, test, test_patients = real
    noise = detectability(train, val, torch.rand(60, 32, 32, generator=torch.Generator().manual_seed(0)), config=FAST)
    blurred = detectability(train, val, degrade(test, "blur", 1.5), test_patients, config=FAST)
    real_vs_real = detectability(train, val, test, test_patients, config=FAST)
    assert noise.mean > 0.95 and blurred.mean > 0.8, (noise, blurred, real_vs_real)
    assert real_vs_real.mean < 0.75 and real_vs_real.mean < blurred.mean - 0.15, (blurred, real_vs_real)
    assert len(noise.per_seed) == 2 and noise.std == pytest.approx(np.std(noise.per_seed))


def test_same_seed_same_figure_and_seed_i_is_seed_plus_i(real):
    train, _, val, test, test_patients = real
    candidates = degrade(test, "noise", 0.03, torch.Generator().manual_seed(0))
    one, two = DetectabilityConfig(seeds=1, steps=100), DetectabilityConfig(seeds=2, steps=100)
    first = detectability(train, val, candidates, test_patients, config=one, seed=4)
    assert detectability(train, val, candidates, test_patients, config=one, seed=4) == first
    pair = detectability(train, val, candidates, test_patients, config=two, seed=3)
    assert pair.per_seed[1] == first.per_seed[0]  # the second seed of a run from 3 is seed 4


def test_bad_inputs_are_one_line_errors(real):
    train, _, val, test, test_patients = real
    with pytest.raises(HcmbenchError, match="one size"):
        detectability(train, val, torch.rand(10, 64, 64), config=FAST)
    with pytest.raises(HcmbenchError, match="patient ids for"):
        detectability(train, val, test, test_patients[:3], config=FAST)
    with pytest.raises(HcmbenchError, match="at least two candidate images"):
        detectability(train, val, test[:1], config=FAST)
    with pytest.raises(HcmbenchError, match="seeds"):
        DetectabilityConfig(seeds=0)
