"""What the utility experiment runs: tasks, scarcity levels, synthetic shares, seeds, the classifier's
settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hcmbench.config import check_size
from hcmbench.data.acdc import GROUPS
from hcmbench.errors import HcmbenchError

TASKS = ("hcm", "5class")
# Class names in label order; for "hcm" the positive class (HCM) is 1.
TASK_CLASSES: dict[str, tuple[str, ...]] = {"hcm": ("not HCM", "HCM"), "5class": GROUPS}
METRICS = ("slice_bacc", "slice_auc", "patient_bacc", "patient_auc")


# The summary gain's declared setting: (task, real patients per group, synthetic ratio).
DEFAULT_SUMMARY_AT: tuple[str, int | None, float] = ("hcm", 5, 1.0)


def parse_summary_at(text: str) -> tuple[str, int | None, float]:
    """"hcm,5,1" → ("hcm", 5, 1.0); "all" for every training patient. A one-line error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 3:
            raise ValueError
        k = None if parts[1].lower() == "all" else int(parts[1])
        return parts[0], k, float(parts[2])
    except ValueError:
        raise HcmbenchError(f"summary_at must be TASK,PATIENTS,RATIO (e.g. hcm,5,1), got {text!r}") from None


def _spelled(setting: tuple[str, int | None, float]) -> str:
    task, k, ratio = setting
    return f"{task},{'all' if k is None else k},{ratio:g}"


@dataclass(frozen=True)
class UtilityConfig:
    """What the utility study runs: tasks, scarcity levels, synthetic shares, repeats, the test design, the
    statistics and the classifier.

    `patients_per_group`: real training patients per group; None takes every patient outside the test fold.
    `synthetic_ratios`: synthetic HCM slices added, as a multiple of the real HCM slices of the subset (by
    default only 1, the declared summary setting: each ratio adds two classifiers per fold and generator).
    `seeds`: repeats; each draws its own folds, training patients, synthetic images and initialisation.
    `folds`: patient-level cross-validation folds over the data (unused with an external test set).
    `augmentation`: also run the classic-augmentation methods (real+aug, real+aug+<model>).
    `oracle`: also run real+oracle (real HCM slices of other training patients standing in for a perfect
    generator's) at every ratio.
    `bootstrap`: resamples of the test patients for the intervals, and permutations for the paired test.
    `summary_at`: (task, patients per group, ratio) of the one summary gain per generator; None: the
    default ("hcm", 5, 1), or the grid's nearest setting when the grid lacks it (`summary_setting`).
    """

    tasks: tuple[str, ...] = ("hcm", "5class")
    patients_per_group: tuple[int | None, ...] = (2, 5, None)
    synthetic_ratios: tuple[float, ...] = (1.0,)
    seeds: int = 3
    folds: int = 5
    size: int = 64
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    augmentation: bool = True
    oracle: bool = True
    bootstrap: int = 2000
    summary_at: tuple[str, int | None, float] | None = None
    device: str = "auto"

    def summary_setting(self) -> tuple[tuple[str, int | None, float], str]:
        """The summary gain's (task, patients per group, ratio) and how it was chosen, in words: the
        declared setting, the default, or — when the grid lacks the default — the first task, the level
        nearest 5 patients per group (all counts as more than any number) and the ratio nearest 1."""
        if self.summary_at is not None:
            return self.summary_at, f"declared (summary_at {_spelled(self.summary_at)})"
        task, k, ratio = DEFAULT_SUMMARY_AT
        if task in self.tasks and k in self.patients_per_group and ratio in self.synthetic_ratios:
            return DEFAULT_SUMMARY_AT, f"the default ({_spelled(DEFAULT_SUMMARY_AT)})"
        task = task if task in self.tasks else self.tasks[0]
        near_k = min(self.patients_per_group, key=lambda n: (math.inf if n is None else abs(n - k), n or 0))
        near_ratio = min(self.synthetic_ratios, key=lambda r: (abs(r - ratio), r))
        chosen = (task, near_k, float(near_ratio))
        return chosen, (f"the grid's setting nearest the default {_spelled(DEFAULT_SUMMARY_AT)}: "
                        f"{_spelled(chosen)}")

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        ks = self.patients_per_group
        checks = [
            (bool(self.tasks) and not unknown and len(set(self.tasks)) == len(self.tasks),
             f"tasks must be distinct names from {', '.join(TASKS)}, got {', '.join(map(str, self.tasks)) or 'none'}"),
            (bool(ks) and all(k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1) for k in ks)
             and len(set(ks)) == len(ks),
             f"patients_per_group must be distinct whole numbers ≥ 1 or None (all), got {ks}"),
            (all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 and math.isfinite(r)
                 for r in self.synthetic_ratios),
             f"synthetic_ratios must be positive numbers, got {self.synthetic_ratios}"),
            (self.seeds >= 1, f"seeds must be at least 1, got {self.seeds}"),
            (isinstance(self.folds, int) and self.folds >= 2, f"folds must be at least 2, got {self.folds}"),
            (isinstance(self.bootstrap, int) and self.bootstrap >= 100,
             f"bootstrap must be at least 100 resamples, got {self.bootstrap}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
             f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}"),
        ]
        at = self.summary_at
        if at is not None and not (at[0] in self.tasks and at[1] in ks and any(r == at[2] for r in self.synthetic_ratios)):
            checks.append((False, f"summary_at {_spelled(at)} is not in the grid: tasks "
                                  f"{', '.join(self.tasks)}; patients per group "
                                  f"{', '.join('all' if k is None else str(k) for k in ks)}; ratios "
                                  f"{', '.join(f'{r:g}' for r in self.synthetic_ratios)}"))
        check_size(self.size)
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)
