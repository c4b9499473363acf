"""Intervals and paired tests over test patients: the figures with per-patient weights, a stratified
bootstrap over patients, a paired permutation test, and the smallest difference a design can detect.

Every figure is the mean over repeats of the figure of that repeat's predictions (`scores.score`), written
as a function of per-patient quantities so that B bootstrap resamples are B rows of a weight matrix
W (B × P, how often each patient is drawn) rather than B calls of `score`:

- balanced accuracy: the weighted mean recall per class, Σ_p w_p correct_p / Σ_p w_p n_p over the patients
  of the class (per patient: correct ∈ [0, 1] is the share of repeats its vote is right, n = 1; per slice:
  correct is the mean count of its right slices, n its slice count), averaged over the classes present;
- AUC: a weighted Mann–Whitney statistic, w_posᵀ M w_neg / (Σ w_pos n_pos · Σ w_neg n_neg), where M (P × P)
  holds, averaged over repeats, the wins plus half the ties of patient i's score (or of each of its
  slices' scores) over patient j's; macro one-vs-rest for more than two classes.

With every weight 1 these are exactly `score`'s figures averaged over repeats.

The paired test is a permutation test: under the null hypothesis the two methods' outputs for a patient are
exchangeable, so each of B permutations swaps the two methods' outputs for each patient (all its slices and
repeats at once) with probability ½, and p = (1 + #{|T*| ≥ |T|}) / (1 + B) for the difference T. It is
chosen over the centred paired bootstrap because it is exact under its null at any number of patients,
where a bootstrap test is only asymptotically right and runs liberal on the few patients of a group this
study has; the bootstrap still gives the difference's interval (both methods on the same resampled
patients).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from hcmbench.experiments.utility.scores import patient_votes

METRIC_NAMES = ("slice_bacc", "slice_auc", "patient_bacc", "patient_auc")
Z_POWER = 1.96 + 0.84  # two-sided α 0.05, power 80 %


class Outputs:
    """One method's predictions for every test patient over R repeats, reduced to per-patient quantities.

    `probabilities` (R, N, C): each repeat's class probabilities of the N test slices; `slice_patient` (N,):
    the index of each slice's patient in `labels` (P,), the patients' classes. Slices are reordered by
    patient internally; every patient must have at least one slice.
    """

    def __init__(self, probabilities: np.ndarray, slice_patient: np.ndarray, labels: np.ndarray) -> None:
        probabilities = np.asarray(probabilities, dtype=float)
        slice_patient = np.asarray(slice_patient, dtype=np.int64)
        order = np.argsort(slice_patient, kind="stable")
        self.probabilities, self.slice_patient = probabilities[:, order], slice_patient[order]
        self.labels = np.asarray(labels, dtype=np.int64)
        patients = len(self.labels)
        self.n_slices = np.bincount(self.slice_patient, minlength=patients).astype(float)
        if (self.n_slices == 0).any():
            raise ValueError("every patient needs at least one slice")
        self.starts = np.concatenate([[0], np.cumsum(self.n_slices[:-1])]).astype(np.int64)
        self.classes = self.probabilities.shape[2]
        slice_labels = self.labels[self.slice_patient]
        # per repeat: the patients' mean probabilities and votes (exactly as `score` computes them)
        means, votes = [], []
        for repeat in self.probabilities:
            _, mean, vote = patient_votes(repeat, self.slice_patient)
            means.append(mean)
            votes.append(vote)
        self.patient_scores = np.stack(means)  # (R, P, C)
        self.patient_correct = (np.stack(votes) == self.labels).mean(0)  # (P,) share of repeats right
        right = self.probabilities.argmax(2) == slice_labels  # (R, N)
        self.slice_correct = np.add.reduceat(right.mean(0), self.starts)  # (P,) mean count of right slices
        self._wins: dict[tuple[str, int], np.ndarray] = {}

    @property
    def repeats(self) -> int:
        return self.probabilities.shape[0]

    def scores(self, level: str, column: int) -> np.ndarray:
        """(R, P) patient or (R, N) slice scores of one class column."""
        return (self.patient_scores if level == "patient" else self.probabilities)[:, :, column]

    def wins(self, level: str, column: int) -> np.ndarray:
        """The P × P matrix of this method's wins plus half ties of patient i over patient j (cached)."""
        key = (level, column)
        if key not in self._wins:
            self._wins[key] = wins(self, self, level, column)
        return self._wins[key]


def wins(a: Outputs, b: Outputs, level: str, column: int) -> np.ndarray:
    """P × P: averaged over repeats, Σ [a's score > b's score] + ½ [equal] over patient i's scores under `a`
    (its mean probability of class `column`, or each of its slices') against patient j's under `b`."""
    total = np.zeros((len(a.labels), len(a.labels)))
    for sa, sb in zip(a.scores(level, column), b.scores(level, column)):
        pair = (sa[:, None] > sb[None, :]) + 0.5 * (sa[:, None] == sb[None, :])
        if level == "slice":
            pair = np.add.reduceat(np.add.reduceat(pair, a.starts, axis=0), a.starts, axis=1)
        total += pair
    return total / a.repeats


def _auc_columns(outputs: Outputs, labels: np.ndarray) -> list[int]:
    """The class columns whose AUC counts: the second of two; else every class present with others."""
    if outputs.classes == 2:
        return [1] if 0 < (labels == 1).sum() < len(labels) else []
    return [c for c in range(outputs.classes) if 0 < (labels == c).sum() < len(labels)]


def figures(outputs: Outputs, weights: np.ndarray, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each figure under each row of `weights` (B, K): how often each of the K patients `keep` (indices;
    all when None) counts. Returns {metric: (B,)}; AUC is NaN without two classes."""
    keep = np.arange(len(outputs.labels)) if keep is None else np.asarray(keep)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    labels = outputs.labels[keep]
    out: dict[str, np.ndarray] = {}
    for level, correct, units in (("slice", outputs.slice_correct[keep], outputs.n_slices[keep]),
                                  ("patient", outputs.patient_correct[keep], np.ones(len(keep)))):
        recalls = [(weights[:, labels == c] @ correct[labels == c]) / (weights[:, labels == c] @ units[labels == c])
                   for c in np.unique(labels)]
        out[f"{level}_bacc"] = np.mean(recalls, axis=0) if recalls else np.full(len(weights), math.nan)
        aucs = []
        for c in _auc_columns(outputs, labels):
            pos, neg = labels == c, labels != c
            matrix = outputs.wins(level, c)[np.ix_(keep[pos], keep[neg])]
            numerator = ((weights[:, pos] @ matrix) * weights[:, neg]).sum(1)
            aucs.append(numerator / ((weights[:, pos] @ units[pos]) * (weights[:, neg] @ units[neg])))
        out[f"{level}_auc"] = np.mean(aucs, axis=0) if aucs else np.full(len(weights), math.nan)
    return {name: out[name] for name in METRIC_NAMES}


def stratified_weights(labels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, P) bootstrap counts: each class's patients drawn with replacement as many times as the
    class has patients, so that every resample keeps the class counts."""
    labels = np.asarray(labels)
    weights = np.zeros((resamples, len(labels)))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
    return weights


def resampling_rng(seed: int, ids: list[str] | np.ndarray) -> np.random.Generator:
    """A generator seeded by `seed` and the patient ids, so that every row resting on the same patients
    draws the same resamples (and a paired comparison's two methods share them)."""
    return np.random.default_rng([seed, zlib.crc32("\n".join(map(str, ids)).encode())])


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % percentile bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """A paired difference (method − baseline) of a figure: its 95 % bootstrap interval, bootstrap standard
    error and permutation-test p-value (two-sided)."""

    value: float
    low: float
    high: float
    se: float
    p_value: float


def _interval(values: np.ndarray) -> tuple[float, float]:
    if np.isnan(values).any():
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def estimate(outputs: Outputs, keep: np.ndarray, weights: np.ndarray) -> dict[str, Estimate]:
    """Each figure on the patients `keep` (indices) and its interval under the bootstrap `weights` (B, K)."""
    point = figures(outputs, np.ones(len(keep)), keep)
    boot = figures(outputs, weights, keep)
    return {m: Estimate(float(point[m][0]), *_interval(boot[m])) for m in METRIC_NAMES}


def paired_difference(method: Outputs, baseline: Outputs, keep: np.ndarray, weights: np.ndarray,
                      rng: np.random.Generator, permutations: int) -> dict[str, Difference]:
    """method − baseline on the patients `keep`, for each figure: the difference, its interval (both methods
    under the same bootstrap `weights`, B × K), its bootstrap SE, and the p-value of a paired permutation
    test with `permutations` random swaps (drawn from `rng`)."""
    keep = np.asarray(keep)
    point = {m: v[0] for m, v in _difference(method, baseline, np.ones(len(keep)), keep).items()}
    boot = _difference(method, baseline, weights, keep)
    null = _permuted_differences(method, baseline, keep, rng.random((permutations, len(keep))) < 0.5)
    out = {}
    for m in METRIC_NAMES:
        t = point[m]
        if math.isnan(t):
            out[m] = Difference(math.nan, math.nan, math.nan, math.nan, math.nan)
            continue
        extreme = int((np.abs(null[m]) >= abs(t) - 1e-12).sum())
        out[m] = Difference(float(t), *_interval(boot[m]), float(np.std(boot[m], ddof=1)),
                            (1 + extreme) / (1 + permutations))
    return out


def _difference(a: Outputs, b: Outputs, weights: np.ndarray, keep: np.ndarray) -> dict[str, np.ndarray]:
    fa, fb = figures(a, weights, keep), figures(b, weights, keep)
    return {m: fa[m] - fb[m] for m in METRIC_NAMES}


def _permuted_differences(a: Outputs, b: Outputs, keep: np.ndarray, swap: np.ndarray) -> dict[str, np.ndarray]:
    """The difference of each figure between the two pseudo-methods made by swapping a's and b's outputs
    for the patients where `swap` (S, K) is True, all of a patient's slices and repeats together."""
    labels = a.labels[keep]
    z = swap.astype(float)
    sign = 1 - 2 * z  # +1: a stays a's, -1: swapped
    out: dict[str, np.ndarray] = {}
    for level, ca, cb, units in (("slice", a.slice_correct, b.slice_correct, a.n_slices),
                                 ("patient", a.patient_correct, b.patient_correct, np.ones(len(a.labels)))):
        delta, units = (ca - cb)[keep], units[keep]
        recalls = [(sign[:, labels == c] @ delta[labels == c]) / units[labels == c].sum()
                   for c in np.unique(labels)]
        out[f"{level}_bacc"] = np.mean(recalls, axis=0) if recalls else np.full(len(z), math.nan)
        aucs = []
        for c in _auc_columns(a, labels):
            pos, neg = keep[labels == c], keep[labels != c]
            m = {(x, y): w[np.ix_(pos, neg)] for (x, y), w in {
                ("a", "a"): a.wins(level, c), ("b", "b"): b.wins(level, c),
                ("a", "b"): wins(a, b, level, c), ("b", "a"): wins(b, a, level, c)}.items()}
            zp, zn = z[:, labels == c], z[:, labels != c]
            stay = {"a": (1 - zp, 1 - zn), "b": (zp, zn)}  # rows where the pseudo-method x takes a's / b's

            def bilinear(left: np.ndarray, matrix: np.ndarray, right: np.ndarray) -> np.ndarray:
                return ((left @ matrix) * right).sum(1)

            x = sum(bilinear(stay[i][0], m[i, j], stay[j][1]) for i in "ab" for j in "ab")
            y = sum(bilinear(stay[i][0], m[("b" if i == "a" else "a"), ("b" if j == "a" else "a")], stay[j][1])
                    for i in "ab" for j in "ab")
            aucs.append((x - y) / (units[labels == c].sum() * units[labels != c].sum()))
        out[f"{level}_auc"] = np.mean(aucs, axis=0) if aucs else np.full(len(z), math.nan)
    return {name: out[name] for name in METRIC_NAMES}


def minimum_detectable_difference(se: float) -> float:
    """The smallest true difference a two-sided test at α 0.05 detects with 80 % power, (1.96 + 0.84) × SE."""
    return Z_POWER * se
