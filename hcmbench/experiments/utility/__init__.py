"""Does synthetic data help HCM diagnosis? A downstream test of generators on real patients they never saw.

A small CNN classifies single short-axis slices. It is trained on the real slices of k patients per group
(to simulate scarcity), with and without added HCM slices, and scored per slice and per patient:

    real                 real slices of the k patients only (the baseline)
    real+aug             the same with classic augmentation (flips, ±10° rotations, intensity jitter)
    real+<model>         real slices plus round(ratio × real HCM slices) synthetic HCM slices
    real+aug+<model>     the same, with augmentation of every slice
    real+oracle          real slices plus as many real HCM slices of other training patients (outside the k
                         and the test fold): a perfect generator's ceiling, and the paired test's positive
                         control (also real+aug+oracle; none when every patient trains)
    tstr:<model>         train on synthetic slices only, test on real ("train synthetic, test real");
                         conditional generators of the ACDC groups only, as many slices per class as
                         the real subset has

Tasks: "hcm" (HCM against every other group) and "5class" (the five ACDC groups).

Test patients. Without an external test set: repeated, stratified, patient-level K-fold cross-validation
over the data (`folds`; one repeat per seed: each group's patients are shuffled and dealt round-robin into
folds, every patient is tested once per repeat by classifiers trained on k patients per group of the other
folds, the same k for every method, and the folds' predictions are pooled). With `test_root` (an ACDC-layout
folder of other patients, e.g. the ACDC testing set): all its patients are tested, and the k training
patients are drawn from the whole data in each repeat. Leakage rule: a method that uses a generator is scored
only on patients that generator never saw (not in the train or val split of a group it was trained on);
real, real+aug and the oracle rest on every test patient.

Statistics (`statistics`): each figure is the mean over repeats of the figure of that repeat's pooled
predictions, with a 95 % bootstrap interval over test patients (stratified by class; a patient's slices and
repeats go together); each method is compared with its baseline (real, or real+aug for the augmented ones)
on the same patients: the paired difference, its bootstrap interval and a paired permutation test's p-value.
Under the table, the smallest difference in patient balanced accuracy each (task, k) can detect (80 % power,
α 0.05). One summary gain per generator — the paired difference of real+<model> against real at a setting
declared beforehand (`summary_at`, default hcm, 5 patients per group, ratio 1) — is what MLflow and
`hcmbench compare` show.

The package: `design` (the settings), `data` (folds, patients, labels, synthetic and oracle slices,
training sets, the leakage rule), `classifier` (the CNN and its training loop), `scores` (the figures),
`statistics` (intervals, paired tests, power), `run` (the loop over repeats, folds, levels, tasks and
methods), `results` (rows, tables and figure).
"""

from hcmbench.experiments.utility.design import METRICS, TASK_CLASSES, TASKS, UtilityConfig, parse_summary_at
from hcmbench.experiments.utility.results import Gain, UtilityResult, UtilityRow, rich_table
from hcmbench.experiments.utility.run import generator_names, run_utility

__all__ = ["METRICS", "TASKS", "TASK_CLASSES", "Gain", "UtilityConfig", "UtilityResult", "UtilityRow",
           "generator_names", "parse_summary_at", "rich_table", "run_utility"]
