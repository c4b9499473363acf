"""The utility study's statistics: vectorised figures against `score`, the stratified bootstrap, the paired
permutation test and the power figure, on made-up predictions (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from hcmbench.experiments.utility.scores import score
from hcmbench.experiments.utility.statistics import (METRIC_NAMES, Outputs, estimate, figures,
                                                     minimum_detectable_difference, paired_difference,
                                                     resampling_rng, stratified_weights)


def made_up(rng, labels, classes, repeats=3, skill=1.0, ties=False):
    """Probabilities for 2–5 slices per patient, over repeats: the true class's logit raised by `skill`."""
    slice_patient = np.repeat(np.arange(len(labels)), rng.integers(2, 6, len(labels)))
    rng.shuffle(slice_patient)  # slices need not come grouped by patient
    logits = rng.normal(size=(repeats, len(slice_patient), classes))
    logits[:, np.arange(len(slice_patient)), labels[slice_patient]] += skill
    if ties:  # coarse probabilities: many tied scores, between slices and between patients
        logits = np.round(logits)
    probabilities = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    return probabilities, slice_patient


def like(rng, outputs, skill):
    """Probabilities for the same slices (in `outputs`' order), the true class's logit raised by `skill`."""
    logits = rng.normal(size=outputs.probabilities.shape)
    logits[:, np.arange(logits.shape[1]), outputs.labels[outputs.slice_patient]] += skill
    return np.exp(logits) / np.exp(logits).sum(2, keepdims=True)


@pytest.mark.parametrize("classes, ties", [(2, False), (2, True), (5, False), (5, True)])
def test_vectorised_figures_equal_score_on_uniform_weights(classes, ties):
    rng = np.random.default_rng(classes + 10 * ties)
    labels = rng.integers(0, classes, 23)
    labels[:classes] = np.arange(classes)
    probabilities, slice_patient = made_up(rng, labels, classes, ties=ties)
    outputs = Outputs(probabilities, slice_patient, labels)
    got = figures(outputs, np.ones(len(labels)))
    expected = [score(p, labels[slice_patient], slice_patient) for p in probabilities]
    for metric in METRIC_NAMES:
        assert abs(got[metric][0] - np.mean([e[metric] for e in expected])) < 1e-12, metric
    # on a subset of patients: the figures of those patients' slices alone
    keep = np.flatnonzero(np.arange(len(labels)) % 3 != 0)
    got = figures(outputs, np.ones(len(keep)), keep)
    inside = np.isin(slice_patient, keep)
    expected = [score(p[inside], labels[slice_patient[inside]], slice_patient[inside]) for p in probabilities]
    for metric in METRIC_NAMES:
        assert abs(got[metric][0] - np.mean([e[metric] for e in expected])) < 1e-12, metric


def test_weights_are_patient_copies():
    """Integer weights count a patient as often as it is drawn: the same as `score` on duplicated patients."""
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probabilities, slice_patient = made_up(rng, labels, 2, repeats=2)
    counts = np.array([2, 0, 1, 1, 3, 0, 1])
    got = figures(Outputs(probabilities, slice_patient, labels), counts[None])
    copies = [(p, c) for p in range(len(labels)) for c in range(counts[p])]  # (patient, copy)
    expected = []
    for repeat in probabilities:
        rows = [(repeat[slice_patient == p], f"{p}-{c}", labels[p]) for p, c in copies]
        expected.append(score(np.concatenate([r[0] for r in rows]),
                              np.concatenate([np.full(len(r[0]), r[2]) for r in rows]),
                              np.concatenate([np.full(len(r[0]), r[1]) for r in rows])))
    for metric in METRIC_NAMES:
        assert got[metric][0] == pytest.approx(np.mean([e[metric] for e in expected]), abs=1e-12), metric


def test_stratified_resampling_keeps_the_class_counts():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 12)
    weights = stratified_weights(labels, 500, np.random.default_rng(0))
    assert weights.shape == (500, len(labels)) and (weights >= 0).all()
    for c, n in ((0, 7), (1, 3), (2, 12)):
        assert (weights[:, labels == c].sum(1) == n).all()
    assert len({tuple(w) for w in weights}) > 450  # actually resampled, not one draw repeated
    # every patient of a class is drawn about equally often
    np.testing.assert_allclose(weights.mean(0), 1.0, atol=0.2)


def test_the_bootstrap_interval_covers_the_truth_and_narrows_with_more_patients():
    """Each patient's vote is right with probability 0.8 in every class, so the balanced accuracy is 0.8: over
    200 simulated test sets the 95 % interval holds it about 95 % of the time, and it narrows as 1/√P."""
    def simulate(patients, seed):
        rng = np.random.default_rng(seed)
        labels = np.repeat([0, 1], patients // 2)
        predicted = np.where(rng.random(patients) < 0.8, labels, 1 - labels)
        probabilities = np.eye(2)[predicted][None] * 0.8 + 0.1  # one slice per patient, one repeat
        outputs = Outputs(probabilities, np.arange(patients), labels)
        weights = stratified_weights(labels, 1000, resampling_rng(seed, [str(i) for i in range(patients)]))
        return estimate(outputs, np.arange(patients), weights)["patient_bacc"]

    small = [simulate(40, seed) for seed in range(200)]
    coverage = np.mean([r.low <= 0.8 <= r.high for r in small])
    assert 0.88 <= coverage <= 0.99
    assert all(r.low <= r.value <= r.high for r in small)
    large = [simulate(400, seed) for seed in range(20)]
    ratio = np.mean([r.high - r.low for r in large]) / np.mean([r.high - r.low for r in small])
    assert 0.25 < ratio < 0.4  # 1 / sqrt(10) = 0.32


def _swapped(a, b, swap):
    """The two pseudo-methods of a permutation, built explicitly: patient p's slices from b where swap[p]."""
    take_b = swap[a.slice_patient]
    x = np.where(take_b[None, :, None], b.probabilities, a.probabilities)
    y = np.where(take_b[None, :, None], a.probabilities, b.probabilities)
    return Outputs(x, a.slice_patient, a.labels), Outputs(y, a.slice_patient, a.labels)


@pytest.mark.parametrize("classes", [2, 5])
def test_the_permutation_statistics_are_those_of_the_swapped_outputs(classes):
    from hcmbench.experiments.utility.statistics import _permuted_differences

    rng = np.random.default_rng(classes)
    labels = np.arange(15) % classes
    a = Outputs(*made_up(rng, labels, classes, skill=1.5), labels)
    b = Outputs(like(rng, a, skill=0.5), a.slice_patient, labels)
    keep = np.arange(1, 15)
    swaps = rng.random((4, len(keep))) < 0.5
    null = _permuted_differences(a, b, keep, swaps)
    for s, swap in enumerate(swaps):
        full = np.zeros(len(labels), bool)
        full[keep] = swap
        x, y = _swapped(a, b, full)
        fx, fy = figures(x, np.ones(len(keep)), keep), figures(y, np.ones(len(keep)), keep)
        for metric in METRIC_NAMES:
            assert null[metric][s] == pytest.approx(fx[metric][0] - fy[metric][0], abs=1e-12), metric


def test_the_paired_test_finds_a_real_difference_and_none_between_equals():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 30)
    probabilities, slice_patient = made_up(rng, labels, 2, skill=2.0)
    good = Outputs(probabilities, slice_patient, labels)
    chance = Outputs(like(np.random.default_rng(4), good, skill=0.0), good.slice_patient, labels)
    keep = np.arange(len(labels))
    weights = stratified_weights(labels, 1000, np.random.default_rng(0))
    better = paired_difference(good, chance, keep, weights, np.random.default_rng(1), 1000)
    for metric in METRIC_NAMES:
        d = better[metric]
        assert d.value > 0.2 and d.low > 0 and d.p_value < 0.01, (metric, d)
    assert better["patient_bacc"].p_value >= 1 / 1001
    same = paired_difference(good, good, keep, weights, np.random.default_rng(1), 1000)
    for metric in METRIC_NAMES:
        assert same[metric].value == 0 and same[metric].p_value == 1.0 and same[metric].se == 0
    worse = paired_difference(chance, good, keep, weights, np.random.default_rng(1), 1000)["patient_bacc"]
    assert worse.value == pytest.approx(-better["patient_bacc"].value) and worse.high < 0


def test_minimum_detectable_difference():
    assert minimum_detectable_difference(0.05) == pytest.approx(0.14)
