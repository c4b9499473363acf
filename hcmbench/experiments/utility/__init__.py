"""Does synthetic data help HCM diagnosis? A downstream test of generators on real, held-out patients.

A small CNN classifies single short-axis slices. It is trained on the real slices of a few training
patients per group (to simulate scarcity), with and without synthetic slices, and scored on the
held-out test patients of every group, per slice and per patient:

    real                 real slices of the chosen patients only (the baseline)
    real+aug             the same with classic augmentation (flips, ±10° rotations, intensity jitter)
    real+<model>         real slices plus round(ratio × real HCM slices) synthetic HCM slices
    real+aug+<model>     the same, with augmentation of every slice
    tstr:<model>         train on synthetic slices only, test on real ("train synthetic, test real");
                         conditional generators of the ACDC groups only, as many slices per class as
                         the real subset has

Tasks: "hcm" (HCM against every other group) and "5class" (the five ACDC groups). The patients come
from the "train" split of the patient-level split (the same split settings as the generators', so that
no test patient was seen by a generator); the "val" split is left out, as the generators were tuned on
it. Each seed draws its own patients (`numpy.random.default_rng(seed)`), its own synthetic images and
its own classifier initialisation, and the figures are mean ± std over seeds.

A generator whose synthetic HCM slices help should lift balanced accuracy above the `real` row of the
same task and patients, most where patients are few; `real+aug` is the bar a generator has to clear to
be worth its training.

The package: `design` (the settings), `data` (patients, labels, synthetic slices, training sets),
`classifier` (the CNN and its training loop), `scores` (the figures), `run` (the loop over tasks,
levels, seeds and methods), `results` (tables and figure).
"""

from hcmbench.experiments.utility.design import METRICS, TASK_CLASSES, TASKS, UtilityConfig
from hcmbench.experiments.utility.results import UtilityResult, UtilityRow, rich_table
from hcmbench.experiments.utility.run import generator_names, run_utility

__all__ = ["METRICS", "TASKS", "TASK_CLASSES", "UtilityConfig", "UtilityResult", "UtilityRow", "generator_names",
           "rich_table", "run_utility"]
