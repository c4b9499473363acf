"""The experiment's results: rows, the Markdown and CSV tables, the terminal table and the figure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hcmbench.experiments.utility.design import METRICS, TASK_CLASSES, UtilityConfig
from hcmbench.tables import csv_text, markdown_document, plus_minus, write_texts


@dataclass(frozen=True)
class UtilityRow:
    """One method on one task at one scarcity level: means and population stds over seeds.

    `model` and `ratio` are None for the real-only methods (and `ratio` for tstr); `patients_per_group`
    None means the whole training pool. Slice counts are means over seeds. AUC is NaN where the test
    set holds one class only.
    """

    task: str
    method: str
    model: str | None
    ratio: float | None
    patients_per_group: int | None
    real_slices: float
    synthetic_slices: float
    slice_bacc: float
    slice_bacc_std: float
    slice_auc: float
    slice_auc_std: float
    patient_bacc: float
    patient_bacc_std: float
    patient_auc: float
    patient_auc_std: float
    seeds: int


@dataclass
class UtilityResult:
    """The rows, the settings they were computed with, and the data: patients per group in the
    training pool and in the test split."""

    rows: list[UtilityRow]
    config: UtilityConfig
    data_root: str
    pool: dict[str, int] = field(default_factory=dict)
    test_patients: dict[str, int] = field(default_factory=dict)
    device: str = ""

    def to_csv(self) -> str:
        """Every figure at full precision, one row per method; "all" for the whole training pool."""
        return csv_text(self.rows, lambda name, v: "all" if name == "patients_per_group" and v is None else v)

    def to_markdown(self) -> str:
        """A titled Markdown table (mean ± std over seeds) with the notes a reader needs."""
        return markdown_document("Does synthetic data help HCM diagnosis?", notes(self), *display_rows(self))

    def write(self, folder: str | Path) -> list[Path]:
        """Write utility.md, utility.csv and utility.png into `folder` (created), each atomically."""
        paths = write_texts(folder, {"utility.md": self.to_markdown(), "utility.csv": self.to_csv()})
        return paths + [utility_plot(self, Path(folder) / "utility.png")]

    def gains(self) -> dict[str, float]:
        """Per generator: the best patient-level balanced-accuracy gain of real+<name> over real on the
        HCM task, over scarcity levels and ratios (NaN without HCM-task rows). One number to summarise,
        to be read with the table: a best-of-many gain favours chance on few test patients."""
        real = {r.patients_per_group: r.patient_bacc for r in self.rows if r.task == "hcm" and r.method == "real"}
        names = dict.fromkeys(r.model for r in self.rows if r.model is not None and r.method.startswith("real+"))
        out = {}
        for name in names:
            gains = [r.patient_bacc - real[r.patients_per_group] for r in self.rows
                     if r.task == "hcm" and r.method == f"real+{name}" and r.patients_per_group in real]
            out[name] = max(gains) if gains else math.nan
        return out


def _patients(k: int | None) -> str:
    return "all" if k is None else str(k)


def display_rows(result: UtilityResult, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Column headers and formatted cells for the Markdown table, or `compact` ones for a terminal
    (without the task, which the terminal table shows as a section heading)."""
    if compact:
        header = ["pat/\ngrp", "method", "ratio", "slices", "slice\nbAcc", "slice\nAUC", "patient\nbAcc",
                  "patient\nAUC"]
        body = [[_patients(r.patients_per_group), r.method, _ratio(r.ratio),
                 f"{r.real_slices:.0f}+{r.synthetic_slices:.0f}", *_figures(r, 2, "±")] for r in result.rows]
        return header, body
    header = ["task", "patients / group", "method", "ratio", "real slices", "synthetic slices",
              "slice bal. acc. ↑", "slice AUC ↑", "patient bal. acc. ↑", "patient AUC ↑"]
    body = [[r.task, _patients(r.patients_per_group), r.method, _ratio(r.ratio), f"{r.real_slices:.0f}",
             f"{r.synthetic_slices:.0f}", *_figures(r, 3, " ± ")] for r in result.rows]
    return header, body


def _ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:g}"


def _figures(row: UtilityRow, digits: int, sep: str) -> list[str]:
    return [plus_minus(getattr(row, metric), getattr(row, f"{metric}_std"), digits, sep) for metric in METRICS]


def notes(result: UtilityResult) -> list[str]:
    """How to read the table: data, classifier, methods, metrics."""
    c = result.config
    per_group = lambda counts: ", ".join(f"{g} {n}" for g, n in counts.items()) or "?"  # noqa: E731
    chance = ", ".join(f"{t} {1 / len(TASK_CLASSES[t]):.2f}" for t in c.tasks)
    return [
        f"Data: {result.data_root}, {c.size} px. Training pool (train split), patients per group: "
        f"{per_group(result.pool)}. Test split: {per_group(result.test_patients)}. The val split is not used "
        "(the generators were tuned on it).",
        f"Classifier: 3-block CNN, {c.epochs} epochs, batch {c.batch_size}, Adam lr {c.lr:g}, class-weighted "
        f"cross-entropy, on {result.device or c.device}. Mean ± std over {c.seeds} seed(s); each seed draws its "
        "own patients, synthetic images and initialisation. The std is the spread over seeds, not a confidence "
        "interval.",
        "Methods: real = real slices only; +aug = flips, ±10° rotations and intensity jitter; real+<model> = "
        "plus ratio × (real HCM slices) synthetic HCM slices; tstr:<model> = synthetic slices only, as many per "
        "class as the real subset has, tested on real patients.",
        "Balanced accuracy = mean recall over classes (chance: " + chance + "). AUC: of the HCM probability (hcm), "
        "macro one-vs-rest (5class). Per patient: the majority vote of its slices (ties: mean probability), and "
        "the mean of their probabilities for the AUC.",
        "A generator helps where real+<model> beats real — and real+aug, the free alternative — at the same "
        "task and patients per group. With few test patients a patient-level figure moves in large steps.",
    ]


def rich_table(result: UtilityResult) -> Any:
    """The table for the terminal as a rich Table that fits 80 columns: one section per task, the real
    rows in bold, the notes as its caption."""
    from rich import box
    from rich.table import Table

    header, body = display_rows(result, compact=True)
    caption = "\n".join(["pat/grp: real training patients per group; slices: real + synthetic.", *notes(result)])
    table = Table(title="Does synthetic data help HCM diagnosis? (test patients, mean±std over seeds)",
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


def _best_ratio_rows(rows: list[UtilityRow]) -> list[UtilityRow]:
    """Of rows of one method at several ratios, those of the ratio with the best mean patient accuracy."""
    by_ratio: dict[float | None, list[UtilityRow]] = {}
    for r in rows:
        by_ratio.setdefault(r.ratio, []).append(r)
    best = max(by_ratio, key=lambda ratio: np.nanmean([r.patient_bacc for r in by_ratio[ratio]]))
    return by_ratio[best]


def utility_plot(result: UtilityResult, path: str | Path) -> Path:
    """Patient-level balanced accuracy against real patients per group, one line per method (each
    generator at its best ratio), one panel per task; "all" is plotted at the largest pool size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hcmbench.plots import save_figure

    tasks = list(dict.fromkeys(r.task for r in result.rows)) or list(result.config.tasks)
    pool = max(result.pool.values(), default=0)
    x_of = lambda k: pool if k is None else k  # noqa: E731
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        rows = [r for r in result.rows if r.task == task]
        for method in dict.fromkeys(r.method for r in rows):
            line = _best_ratio_rows([r for r in rows if r.method == method])
            line.sort(key=lambda r: x_of(r.patients_per_group))
            ratio = line[0].ratio
            label = method if ratio is None else f"{method} (×{ratio:g})"
            style = {"color": "black", "linewidth": 2} if method == "real" else {}
            axis.errorbar([x_of(r.patients_per_group) for r in line], [r.patient_bacc for r in line],
                          yerr=[r.patient_bacc_std for r in line], marker="o", capsize=3, label=label, **style)
        axis.axhline(1 / len(TASK_CLASSES[task]), color="grey", linestyle=":", label="chance")
        ks = sorted({x_of(k) for k in result.config.patients_per_group})
        axis.set_xticks(ks, ["all" if x == pool and None in result.config.patients_per_group else str(x) for x in ks])
        axis.set(xlabel="real training patients per group", ylabel="patient balanced accuracy", ylim=(0, 1.02),
                 title=f"task {task}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(fig, path, "Does synthetic data help HCM diagnosis? (held-out test patients)", dpi=100)
