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


@dataclass(frozen=True)
class UtilityConfig:
    """What the utility study runs: tasks, scarcity levels, synthetic shares, seeds, and the classifier.

    `patients_per_group`: real training patients per group; None takes the whole training pool.
    `synthetic_ratios`: synthetic HCM slices added, as a multiple of the real HCM slices of the subset.
    `augmentation`: also run the classic-augmentation methods (real+aug, real+aug+<model>).
    """

    tasks: tuple[str, ...] = ("hcm", "5class")
    patients_per_group: tuple[int | None, ...] = (2, 5, None)
    synthetic_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    seeds: int = 3
    size: int = 64
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    augmentation: bool = True
    device: str = "auto"

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
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
             f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}"),
        ]
        check_size(self.size)
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)
