"""Is the evaluation telling the truth? Three checks of the feature-space metrics against known answers.

1. The degradation ladder: held-out real slices under each kind of `degradations.LADDER`, at increasing
   strength, must score increasing FID and KID against real reference images, starting from the clean
   slices (strength 0). A metric that does not grow when an image is made worse does not see that damage.
   The reference is either real images of other patients (the strict form, `bench/metric_validity.py`) or
   the clean held-out slices themselves, which isolates the metric's response from the differences between
   two small groups of patients (the tests' form: on a phantom of a few patients per group, whose noise
   level varies threefold between patients, mild noise can move a set *towards* a noisier set of others).
2. Rank agreement: over sets of known, different quality (generators, calibration sets), FID must rank
   them as detectability does: Spearman correlation of at least 0.8.
3. No inversion: no set that a classifier tells from real images 95 % of the time may score a lower FID
   than real images of new patients.

Used by the test suite on the phantom and by `bench/metric_validity.py` on real data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hcmbench.evaluation.degradations import LADDER, degrade
from hcmbench.evaluation.distribution import frechet_distance, kernel_distance
from hcmbench.evaluation.report import CEILING, REAL_VAL, EvaluationTable

DETECTED = 0.95  # a set at least this detectable must not look more real than real patients


@dataclass(frozen=True)
class LadderStep:
    kind: str
    parameter: float  # the degradation's own parameter (σ, γ, share ...); the first step of a kind is clean
    fid: float
    kid: float


def degradation_ladder(extractor, held_out: torch.Tensor, reference: torch.Tensor, seed: int = 0,
                       kid_subsets: int = 50) -> list[LadderStep]:
    """FID and KID against `reference` of `held_out` real slices (n, S, S) in [0, 1], clean and under every
    kind of the ladder at each strength (seeded: each kind's noise is drawn from `seed`)."""
    ref_feats = extractor.embed(reference)

    def scored(kind: str, parameter: float, images: torch.Tensor) -> LadderStep:
        feats = extractor.embed(images)
        kid, _ = kernel_distance(ref_feats, feats, subsets=kid_subsets, seed=seed)
        return LadderStep(kind, parameter, frechet_distance(ref_feats, feats), kid)

    clean = scored("clean", 0.0, held_out)
    steps = []
    for kind, parameters in LADDER.items():
        steps.append(LadderStep(kind, _identity(kind), clean.fid, clean.kid))
        for parameter in parameters:
            images = degrade(held_out, kind, parameter, torch.Generator().manual_seed(seed))
            steps.append(scored(kind, parameter, images))
    return steps


def _identity(kind: str) -> float:
    """The parameter at which a kind leaves an image as it is (γ = 1; 0 for the others)."""
    return 1.0 if kind.startswith("gamma") else 0.0


def non_monotone(steps: list[LadderStep]) -> list[str]:
    """The kinds whose FID or KID does not grow strictly along the ladder, with the offending figures."""
    out = []
    by_kind: dict[str, list[LadderStep]] = {}
    for step in steps:
        by_kind.setdefault(step.kind, []).append(step)
    for kind, ladder in by_kind.items():
        for metric in ("fid", "kid"):
            values = [getattr(s, metric) for s in ladder]
            if any(b <= a for a, b in zip(values, values[1:])):
                out.append(f"{kind} {metric}: " + ", ".join(f"{v:.4g}" for v in values))
    return out


def _scored_rows(table: EvaluationTable) -> list:
    return [r for r in table.rows if r.name != CEILING and math.isfinite(r.detectability) and math.isfinite(r.fid)]


def rank_agreement(table: EvaluationTable, names: set[str] | None = None) -> float:
    """Spearman correlation between FID and detectability over a table's rows that have both (every row but
    the training split's), or over the rows named in `names`; NaN with fewer than three."""
    from scipy.stats import spearmanr

    rows = [r for r in _scored_rows(table) if names is None or r.name in names]
    if len(rows) < 3:
        return math.nan
    return float(spearmanr([r.fid for r in rows], [r.detectability for r in rows]).statistic)


def inversions(table: EvaluationTable, detected: float = DETECTED) -> list[str]:
    """Rows at least `detected` detectable whose FID is not above the real validation patients' row."""
    real = next((r for r in table.rows if r.name == REAL_VAL), None)
    if real is None:
        return []
    return [f"{r.name}: detectability {r.detectability:.3f}, FID {r.fid:.4g} ≤ real val {real.fid:.4g}"
            for r in _scored_rows(table) if r.detectability >= detected and r.fid <= real.fid]
