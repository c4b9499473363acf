"""The evaluation sees realism: the degradation ladder, FID ranked as detectability, no inversion (phantom).

The same checks run on real data in bench/metric_validity.py. Here a phantom of six patients per group
at 32 px and a small feature space stand in, so that the checks take seconds; they fail if the feature
space stops responding to a kind of damage, or if FID ranks sets of known quality against a classifier.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hcmbench.config import DataConfig
from hcmbench.data.acdc import GROUPS
from hcmbench.evaluation.degradations import LADDER, degrade
from hcmbench.evaluation.detectability import DetectabilityConfig
from hcmbench.evaluation.features import FeatureConfig
from hcmbench.evaluation.report import REAL_VAL, EvaluationConfig, EvaluationInputs, evaluate_sets
from hcmbench.evaluation.validity import DETECTED, degradation_ladder, inversions, non_monotone, rank_agreement
from tests.conftest import trained_feature_space

DATA = DataConfig(groups=GROUPS, size=32, split=(0.5, 0.25, 0.25))  # every group: many patients on each side
FEATURES = FeatureConfig(dim=32, width=16, epochs=30, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def space(six_per_group, tmp_path_factory):
    """(feature extractor, slices of every group) for a phantom of six patients per group."""
    return trained_feature_space(six_per_group, DATA, FEATURES, tmp_path_factory)


def test_every_degradation_raises_fid_and_kid_step_by_step(space):
    extractor, slices = space
    held_out = torch.from_numpy(slices.of_split("val").images)
    steps = degradation_ladder(extractor, held_out, held_out)
    assert len(steps) == sum(len(p) + 1 for p in LADDER.values())
    assert non_monotone(steps) == []
    assert steps[0].fid == pytest.approx(0.0, abs=1e-6)  # the clean set against itself


def test_fid_ranks_sets_of_known_quality_as_a_classifier_does(space):
    extractor, slices = space
    train, val, test = (slices.of_split(s) for s in ("train", "val", "test"))
    real = torch.from_numpy(test.images)
    # Generators of known quality: each returns the training slices with a share of them given a transposed-
    # convolution checkerboard; a larger share is a worse generator. The classifier's real class holds the same
    # hearts undamaged, so only the damage tells the two apart (with a phantom of a few patients, the anatomy
    # of other patients would too). Beside them, the calibration rows: real val, mean image, blur, noise.
    clean = torch.from_numpy(train.images)
    generated = {}
    for share in (0.1, 0.25, 0.5, 1.0):
        images = clean.clone()
        damaged = torch.arange(len(images)) % round(1 / share) == 0
        images[damaged] = degrade(clean[damaged], "tconv", 1.0)
        generated[f"checkerboard on {share:.0%}"] = (images, 1.0)
    inputs = EvaluationInputs(torch.from_numpy(val.images), torch.from_numpy(train.images), real, extractor,
                              train_patients=train.patient, val_patients=test.patient)
    config = EvaluationConfig(n=len(real), kid_subsets=10, diversity_images=20,
                              detector=DetectabilityConfig(seeds=1, steps=300))
    table = evaluate_sets(generated, inputs, config)
    rows = {r.name: r for r in table.rows}
    assert rank_agreement(table) >= 0.8, [(r.name, round(r.fid, 3), round(r.detectability, 3)) for r in table.rows]
    assert inversions(table) == []
    assert rows[REAL_VAL].detectability < DETECTED <= rows["uniform noise"].detectability


def test_an_inversion_and_a_reversed_ranking_are_caught():
    from hcmbench.evaluation.report import EvaluationRow, EvaluationTable

    def row(name, fid, detect):
        figures = {f.name: 0.0 for f in dataclasses.fields(EvaluationRow) if f.name not in ("name", "kind", "n")}
        return EvaluationRow(name=name, kind="model", n=10, **{**figures, "fid": fid, "detectability": detect})

    table = EvaluationTable([row(REAL_VAL, 5.0, 0.6), row("a", 4.0, 0.99), row("b", 50.0, 0.7), row("c", 90.0, 0.65)])
    assert inversions(table) == ["a: detectability 0.990, FID 4 ≤ real val 5"]
    assert rank_agreement(table) < 0
