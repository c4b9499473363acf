"""The experiment's results: rows, the Markdown and CSV tables, the terminal table and the figure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hcmbench.experiments.utility.design import METRICS, TASK_CLASSES, UtilityConfig
from hcmbench.experiments.utility.statistics import Difference, Estimate
from hcmbench.tables import csv_text, markdown_document, write_texts

METRIC_LABELS = {"slice_bacc": "slice bal. acc.", "slice_auc": "slice AUC", "patient_bacc": "patient bal. acc.",
                 "patient_auc": "patient AUC"}


@dataclass(frozen=True)
class UtilityRow:
    """One method on one task at one scarcity level, over its test patients.

    Each figure is the mean over repeats of the figure of that repeat's pooled test predictions, with its
    95 % bootstrap interval over test patients (`<metric>_low`, `<metric>_high`). Rows that use a generator
    rest on the test patients it never saw; `test_patients` says how many per group. `baseline` is the
    method it is compared with pairwise (None for real and real+aug): `delta_<metric>` = this method minus
    the baseline on this row's test patients, its interval and the permutation test's two-sided p-value
    (`p_<metric>`). `model` and `ratio` are None for the real-only methods (and `ratio` for tstr);
    `patients_per_group` None means every training patient. Slice counts are means over repeats and folds.
    AUC is NaN where the test patients hold one class only.
    """

    task: str
    method: str
    model: str | None
    ratio: float | None
    patients_per_group: int | None
    baseline: str | None
    real_slices: float
    synthetic_slices: float
    repeats: int
    folds: int
    test_patients: dict[str, int]
    slice_bacc: float
    slice_bacc_low: float
    slice_bacc_high: float
    slice_auc: float
    slice_auc_low: float
    slice_auc_high: float
    patient_bacc: float
    patient_bacc_low: float
    patient_bacc_high: float
    patient_auc: float
    patient_auc_low: float
    patient_auc_high: float
    delta_slice_bacc: float = math.nan
    delta_slice_bacc_low: float = math.nan
    delta_slice_bacc_high: float = math.nan
    p_slice_bacc: float = math.nan
    delta_slice_auc: float = math.nan
    delta_slice_auc_low: float = math.nan
    delta_slice_auc_high: float = math.nan
    p_slice_auc: float = math.nan
    delta_patient_bacc: float = math.nan
    delta_patient_bacc_low: float = math.nan
    delta_patient_bacc_high: float = math.nan
    p_patient_bacc: float = math.nan
    delta_patient_auc: float = math.nan
    delta_patient_auc_low: float = math.nan
    delta_patient_auc_high: float = math.nan
    p_patient_auc: float = math.nan

    def estimate(self, metric: str) -> Estimate:
        """A figure with its interval."""
        return Estimate(getattr(self, metric), getattr(self, f"{metric}_low"), getattr(self, f"{metric}_high"))

    def difference(self, metric: str = "patient_bacc") -> Difference:
        """The paired difference against the baseline (se not kept: NaN)."""
        return Difference(getattr(self, f"delta_{metric}"), getattr(self, f"delta_{metric}_low"),
                          getattr(self, f"delta_{metric}_high"), math.nan, getattr(self, f"p_{metric}"))


def make_row(task: str, k: int | None, method: Any, real_slices: float, synthetic_slices: float, repeats: int,
             folds: int, test_patients: dict[str, int], figures: dict[str, Estimate],
             difference: dict[str, Difference] | None) -> UtilityRow:
    """A row from a method (`data.Method`), its figures and its paired difference (None for a baseline)."""
    values: dict[str, Any] = {}
    for metric in METRICS:
        e = figures[metric]
        values.update({metric: e.value, f"{metric}_low": e.low, f"{metric}_high": e.high})
        if difference is not None:
            d = difference[metric]
            values.update({f"delta_{metric}": d.value, f"delta_{metric}_low": d.low, f"delta_{metric}_high": d.high,
                           f"p_{metric}": d.p_value})
    return UtilityRow(task=task, method=method.name, model=method.model, ratio=method.ratio, patients_per_group=k,
                      baseline=method.baseline if difference is not None else None, real_slices=real_slices,
                      synthetic_slices=synthetic_slices, repeats=repeats, folds=folds,
                      test_patients=dict(test_patients), **values)


@dataclass(frozen=True)
class Gain:
    """A generator's summary gain: the paired difference in patient balanced accuracy of real+<model>
    against real at the declared setting, its 95 % interval and p-value."""

    value: float
    low: float
    high: float
    p_value: float


@dataclass
class UtilityResult:
    """The rows, the settings they were computed with, and the data: patients per group in the data (the
    training pool) and in the test set (the data itself under cross-validation, else `test_root`), the
    folds (1 with an external test set), and the minimum detectable difference in patient balanced
    accuracy per (task, patients per group)."""

    rows: list[UtilityRow]
    config: UtilityConfig
    data_root: str
    pool: dict[str, int] = field(default_factory=dict)
    test_patients: dict[str, int] = field(default_factory=dict)
    device: str = ""
    test_root: str | None = None
    folds: int = 1
    power: dict[tuple[str, int | None], float] = field(default_factory=dict)

    def to_csv(self) -> str:
        """Every figure at full precision, one row per method; "all" for every training patient; test
        patients as "DCM 4; HCM 1; …"."""
        def cell(name: str, value: Any) -> Any:
            if name == "patients_per_group" and value is None:
                return "all"
            if name == "test_patients":
                return "; ".join(f"{g} {n}" for g, n in value.items())
            return value
        return csv_text(self.rows, cell)

    def to_markdown(self) -> str:
        """A titled Markdown table (figures with 95 % intervals, paired differences) and its notes."""
        return markdown_document("Does synthetic data help HCM diagnosis?", notes(self), *display_rows(self))

    def write(self, folder: str | Path) -> list[Path]:
        """Write utility.md, utility.csv and utility.png into `folder` (created), each atomically."""
        paths = write_texts(folder, {"utility.md": self.to_markdown(), "utility.csv": self.to_csv()})
        return paths + [utility_plot(self, Path(folder) / "utility.png")]

    def summary_setting(self) -> tuple[tuple[str, int | None, float], str]:
        """The (task, patients per group, ratio) of the summary gain and how it was chosen."""
        return self.config.summary_setting()

    def gains(self) -> dict[str, Gain]:
        """Per generator: the paired difference in patient balanced accuracy of real+<name> against real
        at the declared setting (`summary_setting`), on the test patients the generator never saw, with
        its interval and p-value. One number per generator, fixed before the results, so no best-of-grid
        selection inflates it."""
        (task, k, ratio), _ = self.summary_setting()
        out = {}
        for r in self.rows:
            if (r.model is not None and r.method == f"real+{r.model}" and r.task == task
                    and r.patients_per_group == k and r.ratio == ratio):
                d = r.difference("patient_bacc")
                out[r.model] = Gain(d.value, d.low, d.high, d.p_value)
        return out


def _patients(k: int | None) -> str:
    return "all" if k is None else str(k)


def _num(value: float, digits: int = 2, signed: bool = False) -> str:
    """A figure, "—" for NaN; negative with a true minus sign."""
    if math.isnan(value):
        return "—"
    return (f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}").replace("-", "−")


def with_interval(value: float, low: float, high: float, digits: int = 2, signed: bool = False, sep: str = " ") -> str:
    """"0.71 [0.62, 0.80]" ("+0.05 [−0.03, 0.12]" when `signed`); "—" for NaN."""
    if math.isnan(value):
        return "—"
    bounds = "" if math.isnan(low) else f"{sep}[{_num(low, digits)},{' ' if sep == ' ' else ''}{_num(high, digits)}]"
    return _num(value, digits, signed) + bounds


def p_value(p: float) -> str:
    """"p 0.21", "p 0.004", "p < 0.001"; "" for NaN."""
    if math.isnan(p):
        return ""
    return "p < 0.001" if p < 0.001 else f"p {p:.3f}" if p < 0.01 else f"p {p:.2f}"


def delta_text(row: UtilityRow, metric: str = "patient_bacc", sep: str = " ") -> str:
    """"Δ +0.05 [−0.03, 0.12], p 0.21" for a compared row; "" for a baseline."""
    d = row.difference(metric)
    if row.baseline is None or math.isnan(d.value):
        return ""
    if sep == " ":
        return f"Δ {with_interval(d.value, d.low, d.high, 2, True)}, {p_value(d.p_value)}"
    return f"{_num(d.value, 2, True)} {p_value(d.p_value)}{sep}[{_num(d.low)},{_num(d.high)}]"


def _estimate_text(row: UtilityRow, metric: str, sep: str = " ") -> str:
    e = row.estimate(metric)
    return with_interval(e.value, e.low, e.high, sep=sep)


def _tested(row: UtilityRow) -> str:
    """Test patients as HCM+other."""
    hcm = row.test_patients.get("HCM", 0)
    return f"{hcm}+{sum(row.test_patients.values()) - hcm}"


def display_rows(result: UtilityResult, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Column headers and formatted cells for the Markdown table, or `compact` ones for a terminal
    (without the task, which the terminal table shows as a section heading, and the slice figures)."""
    if compact:
        header = ["pat/\ngrp", "method", "ratio", "slices", "test\nHCM+", "patient bAcc\n[95 % CI]",
                  "patient AUC\n[95 % CI]", "Δ patient bAcc\n[95 % CI], p"]
        body = [[_patients(r.patients_per_group), r.method, _ratio(r.ratio),
                 f"{r.real_slices:.0f}+{r.synthetic_slices:.0f}", _tested(r),
                 _estimate_text(r, "patient_bacc", "\n"),
                 _estimate_text(r, "patient_auc", "\n"),
                 delta_text(r, sep="\n")] for r in result.rows]
        return header, body
    header = ["task", "patients / group", "method", "ratio", "real slices", "added slices",
              "test patients (HCM + other)", *(f"{METRIC_LABELS[m]} ↑ [95 % CI]" for m in METRICS),
              "Δ patient bal. acc. vs baseline [95 % CI], p"]
    body = [[r.task, _patients(r.patients_per_group), r.method, _ratio(r.ratio), f"{r.real_slices:.0f}",
             f"{r.synthetic_slices:.0f}", _tested(r),
             *(_estimate_text(r, m) for m in METRICS), delta_text(r)] for r in result.rows]
    return header, body


def _ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:g}"


def power_notes(result: UtilityResult) -> list[str]:
    """One line per (task, patients per group): the smallest difference in patient balanced accuracy the
    design detects (80 % power, α 0.05 two-sided)."""
    out = []
    for (task, k), mdd in result.power.items():
        level = "every training patient" if k is None else f"{k} patient{'s' if k != 1 else ''} per group"
        out.append(f"At {level} ({task}) the design detects a difference in patient balanced accuracy of "
                   f"{mdd:.2f} or more (80 % power, α 0.05).")
    return out


def notes(result: UtilityResult) -> list[str]:
    """How to read the table: the design, the data, the classifier, the methods, the statistics, the power."""
    c = result.config
    per_group = lambda counts: ", ".join(f"{g} {n}" for g, n in counts.items()) or "?"  # noqa: E731
    chance = ", ".join(f"{t} {1 / len(TASK_CLASSES[t]):.2f}" for t in c.tasks)
    if result.test_root is None:
        design = (f"Design: stratified patient-level {result.folds}-fold cross-validation over {result.data_root} "
                  f"(patients per group: {per_group(result.pool)}), {c.seeds} repeat(s); in each repeat every "
                  "group's patients are shuffled and dealt into folds, every patient is tested once, by classifiers "
                  "trained on k patients per group drawn from the other folds (the same patients for every method), "
                  "and the folds' predictions are pooled.")
    else:
        design = (f"Design: external test set {result.test_root} (patients per group: "
                  f"{per_group(result.test_patients)}), never seen by the generators or the classifier; in each of "
                  f"{c.seeds} repeat(s) the k training patients per group are drawn from all of {result.data_root} "
                  f"({per_group(result.pool)}).")
    (task, k, ratio), how = result.summary_setting()
    return [
        design,
        "Leakage rule: a method using a generator is scored only on test patients that generator never saw (the "
        "test split of the groups it was trained on, and every patient of the other groups); real, real+aug and "
        "the oracle rows rest on every test patient. 'test patients' gives the count (HCM + other) per row.",
        f"Classifier: 3-block CNN at {c.size} px, {c.epochs} epochs, batch {c.batch_size}, Adam lr {c.lr:g}, "
        f"class-weighted cross-entropy, on {result.device or c.device}; each repeat and fold has its own "
        "initialisation and synthetic images.",
        "Methods: real = real slices only; +aug = flips, ±10° rotations and intensity jitter; real+<model> = plus "
        "ratio × (real HCM slices) synthetic HCM slices; real+oracle = the same with real HCM slices of training "
        "patients outside the sampled k (a perfect generator's ceiling; none at 'all'; 'added slices' says how "
        "many were available); tstr:<model> = synthetic slices only, as many per class as the real subset has.",
        "Balanced accuracy = mean recall over classes (chance: " + chance + "). AUC: of the HCM probability (hcm), "
        "macro one-vs-rest (5class). Per patient: the majority vote of its slices (ties: mean probability), and "
        "the mean of their probabilities for the AUC. Each figure is the mean over repeats of the figure of that "
        "repeat's pooled predictions.",
        f"Intervals: 95 % percentile bootstrap over test patients ({c.bootstrap} resamples, stratified by class; a "
        "patient's slices and repeats go together). Δ: the paired difference against the baseline (real for "
        "real+<x> and tstr, real+aug for real+aug+<x>) on the row's test patients, its bootstrap interval (same "
        f"resampled patients for both) and the two-sided p-value of a paired permutation test ({c.bootstrap} "
        "random swaps of the two methods' outputs per patient). Rows resting on fewer patients than their "
        "baseline are compared on those patients, so Δ need not equal the difference of the shown figures.",
        f"Summary gain per generator (MLflow utility/gain/<name>, `hcmbench compare`): Δ patient bal. acc. of "
        f"real+<model> against real at task {task}, {_patients(k)} patients per group, ratio {ratio:g} — {how}.",
        *power_notes(result),
    ]


def rich_table(result: UtilityResult) -> Any:
    """The table for the terminal as a rich Table that fits 80 columns: one section per task, the real
    rows in bold, the notes as its caption."""
    from rich import box
    from rich.table import Table

    header, body = display_rows(result, compact=True)
    caption = "\n".join(["pat/grp: real training patients per group; slices: real + added; test: test patients, "
                         "HCM + other.", *notes(result)])
    table = Table(title="Does synthetic data help HCM diagnosis? (test patients, 95 % intervals)",
                  caption=caption, caption_justify="left", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True)
    for i, name in enumerate(header):
        if i == 1:
            table.add_column(name, min_width=10, overflow="fold")
        else:
            table.add_column(name, justify="right", no_wrap=True)
    for i, (row, cells) in enumerate(zip(result.rows, body)):
        if i == 0 or result.rows[i - 1].task != row.task:
            table.add_row("", f"task {row.task}", style="italic")
        last = i + 1 == len(result.rows) or result.rows[i + 1].task != row.task
        table.add_row(*cells, style="bold" if row.method == "real" else None, end_section=last)
    return table


def _at_ratio(rows: list[UtilityRow], ratio: float) -> list[UtilityRow]:
    """Of rows of one method at several ratios, those at the ratio nearest `ratio` (the summary's)."""
    ratios = {r.ratio for r in rows}
    if None in ratios:
        return rows
    chosen = min(ratios, key=lambda x: (abs(x - ratio), x))
    return [r for r in rows if r.ratio == chosen]


def utility_plot(result: UtilityResult, path: str | Path) -> Path:
    """Patient-level balanced accuracy with its 95 % interval against real patients per group, one line
    per method (the methods with added slices at the summary's ratio, declared before the results, not
    the best), one panel per task; "all" is plotted at the largest group's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hcmbench.plots import save_figure

    tasks = list(dict.fromkeys(r.task for r in result.rows)) or list(result.config.tasks)
    (_, _, summary_ratio), _ = result.summary_setting()
    pool = max(result.pool.values(), default=0)
    x_of = lambda k: pool if k is None else k  # noqa: E731
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        rows = [r for r in result.rows if r.task == task]
        for method in dict.fromkeys(r.method for r in rows):
            line = _at_ratio([r for r in rows if r.method == method], summary_ratio)
            line.sort(key=lambda r: x_of(r.patients_per_group))
            ratio = line[0].ratio
            label = method if ratio is None else f"{method} (×{ratio:g})"
            style = {"color": "black", "linewidth": 2} if method == "real" else {}
            values = np.array([r.patient_bacc for r in line])
            errors = np.array([[v - r.patient_bacc_low, r.patient_bacc_high - v] for v, r in zip(values, line)]).T
            axis.errorbar([x_of(r.patients_per_group) for r in line], values, yerr=np.nan_to_num(errors),
                          marker="o", capsize=3, label=label, **style)
        axis.axhline(1 / len(TASK_CLASSES[task]), color="grey", linestyle=":", label="chance")
        ks = sorted({x_of(k) for k in result.config.patients_per_group})
        axis.set_xticks(ks, ["all" if x == pool and None in result.config.patients_per_group else str(x) for x in ks])
        axis.set(xlabel="real training patients per group", ylabel="patient balanced accuracy (95 % CI)",
                 ylim=(0, 1.02), title=f"task {task}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(fig, path, "Does synthetic data help HCM diagnosis? (test patients)", dpi=100)
