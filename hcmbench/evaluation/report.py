"""The evaluation table: a generator's figures beside calibration rows computed by the same code.

Rows (docs/design.md, "The metrics protocol"):

    model rows                 the generated images
    real train (ceiling)       real training slices: what a perfect generator of the training data would give
    real val (new patients)    unseen patients: what a generator that does not memorise can reach
    mean train image           one blurry "average heart", standing for n copies
    blurred train (σ 2 px)     training slices under a Gaussian blur of `blur_sigma` px
    uniform noise              U(0, 1) pixels

Columns: nearest-neighbour SSIM / CC / MSE against the reference (mean ± std), the same SSIM against the
training split, the memorisation rate, FID, KID, precision / recall / density / coverage in the
project's feature space, diversity (mean pairwise SSIM within the set), sampling time per image, and
detectability: the balanced accuracy of a classifier trained to tell the set from real training slices and
scored on unseen real patients against unseen images of the set (`detectability.py`; 0.5: indistinguishable).

Memorisation, exactly: for an image x let s(x) be its highest SSIM against any training slice. τ is the
`memorization_percentile`-th percentile (default 95) of s over the real reference images, which are
unseen patients. An image is flagged when s(x) ≥ τ; the memorisation rate is the flagged share. So real
unseen images are flagged at about 100 − percentile % (5 %) by construction, and a generator that
returns training images is flagged at 100 %.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.detectability import DetectabilityConfig, detectability
from hcmbench.evaluation.metrics import as_images, mean_pairwise_ssim, nearest_by_ssim, ssim_constants
from hcmbench.tables import csv_text, markdown_document, number, plus_minus, write_texts

Progress = Callable[[str, int, int], None]

CEILING = "real train (ceiling)"  # the calibration row of real training slices
REAL_VAL = "real val (new patients)"  # the calibration row of real validation patients: real against real

@dataclass(frozen=True)
class EvaluationConfig:
    """How the table is computed. `data_range` 255 reproduces the study's inflated SSIM (for comparison)."""

    n: int = 1000
    data_range: float = 1.0
    memorization_percentile: float = 95.0
    blur_sigma: float = 2.0
    diversity_images: int = 200
    k: int = 5
    kid_subsets: int = 100
    seed: int = 0
    calibration: bool = True
    # the classifier two-sample test; None leaves the detectability column out (it is the slowest figure)
    detector: DetectabilityConfig | None = DetectabilityConfig()

    def __post_init__(self) -> None:
        if self.n < 2:
            raise HcmbenchError(f"evaluation needs at least 2 generated images, got n={self.n}")
        ssim_constants(self.data_range)  # the one check of a data range
        if not 0 < self.memorization_percentile < 100:
            raise HcmbenchError(f"memorization_percentile must lie in (0, 100), got {self.memorization_percentile}")
        if self.blur_sigma <= 0 or self.diversity_images < 2 or self.k < 1 or self.kid_subsets < 1:
            raise HcmbenchError("blur_sigma must be positive, diversity_images ≥ 2, k ≥ 1, kid_subsets ≥ 1")


@dataclass
class EvaluationRow:
    """One set's figures. `kind` is "model" or "calibration"; NaN where a figure does not apply."""

    name: str
    kind: str
    n: int
    ssim: float
    ssim_std: float
    cc: float
    cc_std: float
    mse: float
    mse_std: float
    train_ssim: float
    memorization: float
    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float
    diversity: float
    sample_ms: float = math.nan
    # balanced accuracy of a classifier telling the set from real images (0.5: indistinguishable), over seeds
    detectability: float = math.nan
    detectability_std: float = math.nan
    # downstream utility (`hcmbench utility`): the paired difference in patient-level balanced accuracy of
    # HCM-vs-rest when this generator's images are added to scarce real data, against real data alone, at
    # the utility run's declared setting; its 95 % bootstrap interval and permutation p-value
    utility: float = math.nan
    utility_low: float = math.nan
    utility_high: float = math.nan
    utility_p: float = math.nan


@dataclass
class EvaluationTable:
    """The rows, and what they were computed against (`context`: reference, settings, feature space)."""

    rows: list[EvaluationRow]
    context: dict[str, Any] = field(default_factory=dict)

    def with_utility(self, gains: dict[str, Any]) -> "EvaluationTable":
        """The table with each model row's utility gain filled in from `gains` (by row name): a Gain (value,
        low, high, p_value; `tracking.utility_gains`) or a bare number."""
        from dataclasses import replace

        def filled(row: EvaluationRow, gain: Any) -> EvaluationRow:
            if isinstance(gain, (int, float)):
                return replace(row, utility=float(gain))
            return replace(row, utility=gain.value, utility_low=gain.low, utility_high=gain.high,
                           utility_p=gain.p_value)

        rows = [filled(r, gains[r.name]) if r.kind == "model" and r.name in gains else r for r in self.rows]
        return EvaluationTable(rows, dict(self.context))

    def has_utility(self) -> bool:
        return any(math.isfinite(r.utility) for r in self.rows)

    def model_metrics(self, row: int = 0) -> dict[str, float]:
        """The tracking names (docs/design.md) of a model row's figures: eval/ssim, eval/fid, ..."""
        r = self.rows[row]
        names = {"ssim": r.ssim, "cc": r.cc, "mse": r.mse, "fid": r.fid, "kid": r.kid, "precision": r.precision,
                 "recall": r.recall, "density": r.density, "coverage": r.coverage,
                 "memorization": r.memorization, "diversity": r.diversity, "sample_ms": r.sample_ms,
                 "detectability": r.detectability}
        return {f"eval/{k}": float(v) for k, v in names.items() if not math.isnan(v)}

    def to_csv(self) -> str:
        """Every figure at full precision, one row per set."""
        return csv_text(self.rows)

    def to_markdown(self) -> str:
        """A titled Markdown table with the notes a reader needs to interpret it."""
        return markdown_document(self.context.get("title", "Evaluation"), notes(self), *display_rows(self))

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write table.md and table.csv into `folder` (created), each atomically."""
        markdown, csv_file = write_texts(folder, {"table.md": self.to_markdown(), "table.csv": self.to_csv()})
        return markdown, csv_file


# -- presentation --------------------------------------------------------------------------------


def display_rows(table: EvaluationTable, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Column headers and formatted cells for the Markdown table, or `compact` ones for a terminal."""
    range_note = "" if table.context.get("data_range", 1.0) == 1.0 else f" (range {table.context['data_range']:g})"
    sep, digits = ("±", 2) if compact else (" ± ", 3)
    if compact:
        header = ["set", "n", f"SSIM{range_note}↑", "CC↑", "MSE↓", "→train", "memorised", "detect↓", "FID↓", "KID×10³↓",
                  "prec", "rec", "dens", "cov", "div", "ms/img"]
    else:
        header = ["set", "n", f"SSIM{range_note} ↑", "CC ↑", "MSE ↓", f"SSIM{range_note} to train", "memorised",
                  "detectability ↓", "FID ↓", "KID×10³ ↓", "precision", "recall", "density", "coverage", "diversity", "ms/image"]
    body = []
    for r in table.rows:
        body.append([r.name, str(r.n), plus_minus(r.ssim, r.ssim_std, digits, sep), plus_minus(r.cc, r.cc_std, digits, sep),
                     plus_minus(r.mse, r.mse_std, digits + 1, sep), number(r.train_ssim), number(r.memorization, 1, 100, " %"),
                     plus_minus(r.detectability, r.detectability_std, 2, sep), number(r.fid, 2), plus_minus(r.kid * 1e3, r.kid_std * 1e3, digits - 1, sep), number(r.precision, 2),
                     number(r.recall, 2), number(r.density, 2), number(r.coverage, 2), number(r.diversity, digits),
                     number(r.sample_ms, 2)])
    if table.has_utility():  # only once `hcmbench utility` has measured it for these runs
        header.append("utility" if compact else "utility (Δ patient bal. acc. [95 % CI])")
        for cells, r in zip(body, table.rows):
            cells.append(utility_cell(r, compact))
    return header, body


def utility_cell(row: EvaluationRow, compact: bool = False) -> str:
    """"+0.05 [−0.03, 0.12]" (compact: without the space), "+0.050" without an interval, "" unmeasured."""
    if math.isnan(row.utility):
        return ""
    signed = lambda v, d=2: f"{v:+.{d}f}".replace("-", "−")  # noqa: E731
    if math.isnan(row.utility_low):
        return signed(row.utility, 3)
    bound = lambda v: f"{v:.2f}".replace("-", "−")  # noqa: E731
    return f"{signed(row.utility)} [{bound(row.utility_low)},{'' if compact else ' '}{bound(row.utility_high)}]"


def notes(table: EvaluationTable) -> list[str]:
    """How to read the table: what the reference is, what the calibration rows mean, the definitions."""
    c = table.context
    out = [f"Reference: {c.get('reference', '?')} ({c.get('reference_n', '?')} images); "
           f"training split: {c.get('train_n', '?')} images."]
    if c.get("data_range", 1.0) != 1.0:
        out.append(f"SSIM computed with data_range={c['data_range']:g} on images in [0, 1], as in the study: its "
                   "stabilising constants then swamp the image statistics and SSIM approaches 1 for unrelated "
                   "images. These figures are for comparison with the study only.")
    out += [
        "SSIM / CC / MSE: each image's nearest reference image by SSIM (11×11 Gaussian window, σ 1.5, "
        f"data_range {c.get('data_range', 1.0):g}); mean ± std over the set.",
        "Read a model row against the calibration rows: 'real train (ceiling)' is the ceiling a perfect generator "
        "reaches; 'real val (new patients)' is what unseen patients reach; the mean image, blur and noise rows are "
        "what cheap non-answers score.",
        f"Memorised: share of images whose highest SSIM to a training slice is at least τ = "
        f"{c.get('memorization_threshold', math.nan):.3f}, the {c.get('memorization_percentile', 95):g}th "
        "percentile of that SSIM over the real reference images (so unseen real images score about "
        f"{100 - c.get('memorization_percentile', 95):g} %). Not shown for the training split, which is the "
        "training data itself.",
        f"FID, KID, precision / recall / density / coverage (k = {c.get('k', 5)}): in the project's feature space "
        f"({c.get('features', 'feature extractor')}); small reference sets bias FID upwards, so compare with the "
        "real rows.",
        "Diversity: mean SSIM between distinct images of the set (lower is more diverse; compare with the real rows).",
    ]
    detector = c.get("config", {}).get("detector")
    if detector:
        out.append(
            "Detectability: balanced accuracy of a CNN trained to tell the set from real training slices, tested on "
            "the reference's real patients against images of the set it was not trained on (mean ± std over "
            f"{detector['seeds']} seeds; real sets split by patient). 0.5: it cannot tell them apart; 1.0: it tells "
            "every image. Read it against 'real val (new patients)', real against real: what unseen real patients "
            "score. The training split is the classifier's real class, so its row has none.")
    if table.has_utility():
        out.append("Utility: the paired difference in patient-level balanced accuracy (HCM against the other groups) "
                   "of a classifier trained on scarce real data plus the model's images against real data alone, at "
                   "the setting the utility run declared (task, real patients per group, ratio; default hcm, 5, 1), "
                   "on test patients the generator never saw, with its 95 % bootstrap interval over patients, as "
                   "last measured by `hcmbench utility` for this run (its table has the p-value and every setting).")
    return out


# The terminal's three tables, by compact header: what a reader looks at first (is it real, copied,
# diverse?), the study's pixel figures, then the feature space. Each fits an 80-column terminal.
TERMINAL_TABLES = (
    ("realism (detect: detectability, 0.5 = a classifier cannot tell the set from real patients; div: "
     "diversity; utility: Δ balanced accuracy downstream)", ("set", "n", "detect↓", "memorised", "div", "ms/img",
                                                              "utility")),
    ("the study's figures, nearest real image by SSIM (→train: the same, among training slices)",
     ("set", "SSIM↑", "CC↑", "MSE↓", "→train")),
    ("in the feature space (prec/rec/dens/cov: precision, recall, density, coverage)",
     ("set", "FID↓", "KID×10³↓", "prec", "rec", "dens", "cov")),
)


def rich_tables(table: EvaluationTable) -> list[Any]:
    """The table for the terminal as three rich Tables (`TERMINAL_TABLES`) and the notes under them; columns
    that the table does not have (utility, before it is measured) are left out."""
    import re

    from rich import box
    from rich.table import Table
    from rich.text import Text

    header, body = display_rows(table, compact=True)
    header = [re.sub(r" \(range [^)]*\)", "", h) for h in header]  # the range is said in the notes
    out: list[Any] = []
    for index, (title, names) in enumerate(TERMINAL_TABLES):
        prefix = f"{table.context.get('title', 'Evaluation')}: " if index == 0 else ""
        rich = Table(title=prefix + title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        columns = [header.index(name) for name in names if name in header]
        for i in columns:
            if i == 0:
                rich.add_column(header[i], min_width=18, overflow="fold")
            else:
                rich.add_column(header[i], justify="right", no_wrap=True)
        for row, cells in zip(table.rows, body):
            rich.add_row(*[cells[i] for i in columns], style="bold" if row.kind == "model" else None)
        out.append(rich)
    out.append(Text("\n".join(f"- {note}" for note in notes(table))))
    return out


# -- computing rows ------------------------------------------------------------------------------


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each image under a Gaussian blur of `sigma` pixels (reflecting borders), in float32."""
    from scipy.ndimage import gaussian_filter

    x = images.numpy()
    return torch.from_numpy(np.stack([gaussian_filter(im, sigma, mode="reflect") for im in x]).astype(np.float32))


@dataclass
class CalibrationSet:
    """A calibration row's images, and the patient of each where the images are real slices (else None)."""

    images: torch.Tensor
    patients: np.ndarray | None = None


def calibration_sets(train: torch.Tensor, val: torch.Tensor | None, n: int, blur_sigma: float, seed: int,
                     train_patients: np.ndarray | None = None,
                     val_patients: np.ndarray | None = None) -> dict[str, CalibrationSet]:
    """The calibration rows' images: real training and validation slices (up to n, seeded), the mean training
    image (one image, standing for n copies), blurred training slices, and n uniform-noise images; with the
    patients of the real and blurred slices when given."""
    rng = torch.Generator().manual_seed(seed)

    def pick(x: torch.Tensor, patients: np.ndarray | None) -> CalibrationSet:
        if len(x) <= n:
            return CalibrationSet(x, patients)
        index = torch.randperm(len(x), generator=rng)[:n].sort().values
        return CalibrationSet(x[index], None if patients is None else patients[index.numpy()])

    real = pick(train, train_patients)
    sets = {CEILING: real}
    if val is not None and len(val) >= 2:
        sets[REAL_VAL] = pick(val, val_patients)
    sets["mean train image"] = CalibrationSet(train.mean(0, keepdim=True))  # one image, standing for n
    sets[f"blurred train (σ {blur_sigma:g} px)"] = CalibrationSet(blurred(real.images, blur_sigma), real.patients)
    sets["uniform noise"] = CalibrationSet(torch.rand((n, *train.shape[1:]), generator=rng))
    return sets


@dataclass
class EvaluationInputs:
    """The real images (in [0, 1]) and the feature space a table is computed against; the patient of each
    training and validation slice, when known, keeps the detectability test's real sets patient-disjoint."""

    reference: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor | None
    extractor: Any  # evaluation.features.FeatureExtractor
    reference_name: str = "held-out test split"
    train_patients: np.ndarray | None = None
    val_patients: np.ndarray | None = None


def _detectability(name: str, images: torch.Tensor, patients: np.ndarray | None, train: torch.Tensor,
                   reference: torch.Tensor, config: EvaluationConfig) -> tuple[float, float]:
    """(mean, std) of the set's detectability; NaN for the training split (the classifier's real class) and
    for a real set of one patient (no patient-disjoint halves)."""
    if config.detector is None or name == CEILING:
        return math.nan, math.nan
    if patients is not None and len(set(patients.tolist())) < 2:
        return math.nan, math.nan
    if len(images) == 1:  # the mean image stands for n copies
        images = images.expand(min(config.n, 512), -1, -1)
    found = detectability(train, reference, images, patients, config.detector, seed=config.seed)
    return found.mean, found.std


def evaluate_sets(generated: dict[str, tuple[torch.Tensor, float]], inputs: EvaluationInputs,
                  config: EvaluationConfig = EvaluationConfig(), progress: Progress | None = None) -> EvaluationTable:
    """The table for generated image sets {name: (images in [0, 1], ms per image)} and the calibration rows."""
    from hcmbench.evaluation.distribution import frechet_distance, kernel_distance, prdc

    reference, train = as_images(inputs.reference, "reference"), as_images(inputs.train, "training split")
    if len(reference) <= config.k:
        raise HcmbenchError(f"the reference has {len(reference)} images: at least {config.k + 1} are needed (k = {config.k})")
    ref_feats = inputs.extractor.embed(reference)
    # τ: the percentile of the real reference images' highest SSIM to a training slice
    ref_to_train = nearest_by_ssim(reference, train, config.data_range).ssim
    threshold = float(np.percentile(ref_to_train.numpy(), config.memorization_percentile))

    sets: list[tuple[str, str, CalibrationSet, float]] = [(name, "model", CalibrationSet(as_images(x, name)), ms)
                                                          for name, (x, ms) in generated.items()]
    if config.calibration:
        val = as_images(inputs.val, "validation split") if inputs.val is not None else None
        sets += [(name, "calibration", found, math.nan)
                 for name, found in calibration_sets(train, val, config.n, config.blur_sigma, config.seed,
                                                     inputs.train_patients, inputs.val_patients).items()]

    rows = []
    for done, (name, kind, found, ms) in enumerate(sets):
        if progress is not None:
            progress(name, done, len(sets))
        images = found.images
        # a set of one image (the mean image) stands for n copies: same pixel figures, n feature rows
        count = config.n if len(images) == 1 else len(images)
        to_ref = nearest_by_ssim(images, reference, config.data_range).summary()
        # the training split against itself is trivially SSIM 1: neither figure applies, and it is not computed
        to_train = None if name == CEILING else nearest_by_ssim(images, train, config.data_range).ssim
        feats = inputs.extractor.embed(images).expand(count, -1)
        kid, kid_std = kernel_distance(ref_feats, feats, subsets=config.kid_subsets, seed=config.seed)
        quality = prdc(ref_feats, feats, k=min(config.k, len(feats) - 1)) if len(feats) > 1 else {}
        detect, detect_std = _detectability(name, images, found.patients, train, reference, config)
        rows.append(EvaluationRow(
            name=name, kind=kind, n=count,
            ssim=to_ref["ssim"], ssim_std=to_ref["ssim_std"], cc=to_ref["cc"], cc_std=to_ref["cc_std"],
            mse=to_ref["mse"], mse_std=to_ref["mse_std"],
            train_ssim=math.nan if to_train is None else to_train.double().mean().item(),
            memorization=math.nan if to_train is None else (to_train >= threshold).double().mean().item(),
            fid=frechet_distance(ref_feats, feats), kid=kid, kid_std=kid_std,
            precision=quality.get("precision", math.nan), recall=quality.get("recall", math.nan),
            density=quality.get("density", math.nan), coverage=quality.get("coverage", math.nan),
            diversity=1.0 if len(images) == 1 else mean_pairwise_ssim(images, config.diversity_images, config.seed,
                                                                      config.data_range),
            sample_ms=ms, detectability=detect, detectability_std=detect_std))
    if progress is not None:
        progress("done", len(sets), len(sets))
    context = {"reference": inputs.reference_name, "reference_n": len(reference), "train_n": len(train),
               "data_range": config.data_range, "memorization_threshold": threshold,
               "memorization_percentile": config.memorization_percentile, "k": config.k,
               "features": _describe_features(inputs.extractor), "config": asdict(config)}
    return EvaluationTable(rows, context)


def _describe_features(extractor: Any) -> str:
    """The feature network's name and how well its heads do on held-out patients, against chance."""
    summary = getattr(extractor, "summary", {}) or {}
    parts = []
    for task in ("group", "phase"):
        if summary.get(f"{task}_accuracy") is not None:
            parts.append(f"{task} accuracy {summary[f'{task}_accuracy']:.2f} (chance {summary[f'{task}_chance']:.2f})")
    if summary.get("position_mae") is not None:
        parts.append(f"slice-level error {summary['position_mae']:.2f}")
    if summary.get("realism_accuracy") is not None:
        parts.append(f"real-vs-degraded accuracy {summary['realism_accuracy']:.2f} (chance 0.50)")
    held_out = f", on validation patients: {', '.join(parts)}" if parts else ""
    return f"FeatureNet {getattr(extractor, 'key', '')}{held_out}"


def timed_draw(draw: Callable[[], torch.Tensor], n: int) -> tuple[torch.Tensor, float]:
    """Run `draw` (returns n images) and the milliseconds it took per image."""
    start = time.perf_counter()
    images = draw()
    return images, (time.perf_counter() - start) * 1000 / n


def default_output_folder(source: str | Path) -> Path:
    """eval/ beside the checkpoints/ folder of a local run, else ./eval."""
    path = Path(source)
    if path.is_file() and path.parent.name == "checkpoints":
        return path.parent.parent / "eval"
    return Path("eval")


# -- one call from a checkpoint to its table ---------------------------------------------------------


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path | None = None,
                        reference_root: str | Path | None = None, config: EvaluationConfig = EvaluationConfig(),
                        sample_options: dict[str, Any] | None = None, device: str = "auto",
                        feature_config: Any = None, source_name: str | None = None,
                        progress: Progress | None = None, group: str | None = None) -> EvaluationTable:
    """Generate `config.n` images from a checkpoint and compute the whole table.

    The data are the checkpoint's own (its data root and preprocessing) unless `data_root` is given; the
    reference is their held-out test split, or every selected slice of `reference_root` (an external
    ACDC-layout folder, preprocessed the same way). The training split is always `data_root`'s.
    `source_name` (default: the checkpoint path) names the generator in the title; `group` scores one
    ACDC group (see `evaluate_checkpoints`).
    """
    source_name = source_name or str(checkpoint)
    table = evaluate_checkpoints({"": checkpoint}, data_root, reference_root, config, sample_options, device,
                                 feature_config, progress, strict_options=True, group=group)
    table.context.update(title=f"{table.rows[0].name}: {source_name}", checkpoint=source_name)
    return table


def _canonical_group(group: str | None, data_config: Any) -> str | None:
    """`group` spelled as the data's groups spell it (case-insensitive); one they lack raises HcmbenchError."""
    if group is None:
        return None
    known = {g.upper(): g for g in data_config.groups}
    if group.upper() not in known:
        raise HcmbenchError(f"group {group!r}: these generators were trained on {', '.join(data_config.groups)}")
    return known[group.upper()]


def _group_label(name: str, generator: Any, data_config: Any, group: str | None) -> str | None:
    """The label to sample `group` from a generator (None: its own mix), or HcmbenchError when it cannot."""
    if group is None or len(data_config.groups) == 1:
        return None  # every image it draws is of that group
    if not generator.model.conditional or generator.state.get("label_by") != "group":
        raise HcmbenchError(f"{name} was trained on {', '.join(data_config.groups)} without group labels: it "
                            f"cannot be asked for {group}")
    return group


def _of_group(slices: Any, group: str | None) -> Any:
    """The slices of one ACDC group (all of them for None)."""
    return slices if group is None else slices.subset(slices.group == group)


def evaluate_checkpoints(checkpoints: dict[str, str | Path], data_root: str | Path | None = None,
                         reference_root: str | Path | None = None, config: EvaluationConfig = EvaluationConfig(),
                         sample_options: dict[str, Any] | None = None, device: str = "auto",
                         feature_config: Any = None, progress: Progress | None = None,
                         strict_options: bool = False, group: str | None = None) -> EvaluationTable:
    """One table for several generators {row name: checkpoint} ("" names a row by its model) trained on
    the same data: the first checkpoint's data root and preprocessing, which every other must share.
    Sample options go to the models that take them; with `strict_options`, one a model does not take is
    an error.

    `group` scores one ACDC group of the data (a rare disease drawn by a model trained on every group):
    generators conditional on the group are asked for it, and the real sets (reference, training and
    validation slices) keep only its slices. A generator that cannot be asked for one group (labelled
    by phase, or unconditional, while trained on several groups) is refused. The feature space stays
    the one of the data's groups.
    """
    from hcmbench.checkpoints import data_config_of, load_generator, resolve_device
    from hcmbench.data.slices import load_slices
    from hcmbench.evaluation.features import FeatureConfig, load_feature_extractor
    from hcmbench.intensity import to_unit_range
    from hcmbench.sampling import draw

    def report(phase: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(phase, done, total))

    if not checkpoints:
        raise HcmbenchError("no checkpoint to evaluate")
    generators = {name: load_generator(path, device=resolve_device(device)) for name, path in checkpoints.items()}
    first = next(iter(generators.values())).state
    data_config = data_config_of(first)
    for name, generator in generators.items():
        if data_config_of(generator.state) != data_config:
            raise HcmbenchError(f"{checkpoints[name]} was trained on other data settings than {next(iter(checkpoints.values()))}: "
                                "a table compares generators of the same data")
    group = _canonical_group(group, data_config)
    labels = {name: _group_label(name or g.model.name, g, data_config, group) for name, g in generators.items()}
    if data_root is None and not first.get("data_root"):
        raise HcmbenchError(f"{next(iter(checkpoints.values()))} does not say where its training data are: give --data")
    root = Path(data_root if data_root is not None else first["data_root"])
    if not root.exists():
        raise HcmbenchError(f"{root}: the training data of this checkpoint are not there; give --data")
    slices = _of_group(load_slices(root, data_config, progress=report("Preprocessing")), group)
    if reference_root is not None:
        reference = _of_group(load_slices(reference_root, data_config, progress=report("Preprocessing the reference")),
                              group)
        reference_name = f"{reference_root} (groups {', '.join([group] if group else data_config.groups)})"
    else:
        reference = slices.of_split("test")
        reference_name = f"held-out test split of {root} (groups {', '.join([group] if group else data_config.groups)})"
    if len(reference) == 0:
        raise HcmbenchError(f"{root}: the test split is empty (too few patients); give --reference")
    extractor = load_feature_extractor(root, data_config, feature_config or FeatureConfig(),
                                       progress=report("Training the feature extractor"))
    generated = {}
    for name, generator in generators.items():
        options = dict(sample_options or {})
        if not strict_options:  # sampler settings apply to the models that take them
            options = {k: v for k, v in options.items() if k in generator.model.sample_options}
        images, ms = timed_draw(lambda: draw(generator, config.n, labels[name], config.seed, options=options,
                                             progress=report(f"Sampling {generator.model.name}"))[0], config.n)
        generated[name or generator.model.name] = (to_unit_range(images), ms)
    val = slices.of_split("val")
    train = slices.of_split("train")
    inputs = EvaluationInputs(reference=torch.from_numpy(reference.images), train=torch.from_numpy(train.images),
                              val=torch.from_numpy(val.images) if len(val) >= 2 else None, extractor=extractor,
                              reference_name=reference_name, train_patients=train.patient,
                              val_patients=val.patient if len(val) >= 2 else None)
    table = evaluate_sets(generated, inputs, config,
                          progress=None if progress is None else (lambda name, d, t: progress(f"Scoring {name}", d, t)))
    table.context.update(title="Generators compared", device=str(resolve_device(device)),
                         sample_options=dict(sample_options or {}),
                         checkpoints={k or g.model.name: str(v) for (k, v), g in zip(checkpoints.items(), generators.values())})
    return table
