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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcmbench.checkpoints import LoadedGenerator, data_config_of, resolve_device
from hcmbench.config import DataConfig
from hcmbench.data.acdc import GROUPS
from hcmbench.data.slices import SliceSet
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.report import _pm, csv_text, markdown_document

Progress = Callable[[int, int], None]

TASKS = ("hcm", "5class")
# Class names in label order; for "hcm" the positive class (HCM) is 1.
TASK_CLASSES: dict[str, tuple[str, ...]] = {"hcm": ("not HCM", "HCM"), "5class": GROUPS}
METRICS = ("slice_bacc", "slice_auc", "patient_bacc", "patient_auc")
# Classic augmentation: each flip with probability 1/2, rotation, gain and offset drawn uniformly.
ROTATION_DEG = 10.0
GAIN = (0.9, 1.1)
OFFSET = 0.05


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
            (self.size in (32, 64, 128), f"size {self.size} is not supported: use 32, 64 or 128"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
             f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HcmbenchError(message)


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
        from hcmbench.atomic import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "utility.md", folder / "utility.csv"]
        for path, text in zip(paths, (self.to_markdown(), self.to_csv())):
            with atomic_path(path) as tmp:
                tmp.write_text(text)
        return paths + [utility_plot(self, folder / "utility.png")]

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


# -- metrics -------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean `positive`, via ranks (Mann–Whitney U,
    ties counted half). NaN when only one class is present."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Binary (two columns): the AUC of the second class's probability. More classes: the mean of the
    one-vs-rest AUCs over the classes present (NaN when fewer than two are)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.shape[1] == 2:
        return roc_auc(probabilities[:, 1], labels == 1)
    aucs = [roc_auc(probabilities[:, c], labels == c) for c in range(probabilities.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean recall over the classes present in `labels` (so chance is 1 / classes, whatever the
    imbalance). NaN for no labels."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = np.unique(labels)
    if len(classes) == 0:
        return math.nan
    return float(np.mean([(predictions[labels == c] == c).mean() for c in classes]))


def patient_votes(probabilities: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient (sorted ids): the mean of its slices' probabilities and its predicted class, the
    majority vote of its slices' predictions with ties broken by the mean probability."""
    probabilities, patients = np.asarray(probabilities), np.asarray(patients)
    ids = np.unique(patients)
    means = np.stack([probabilities[patients == p].mean(0) for p in ids])
    predictions = []
    for p, mean in zip(ids, means):
        votes = np.bincount(probabilities[patients == p].argmax(1), minlength=probabilities.shape[1])
        predictions.append(int(np.argmax(np.where(votes == votes.max(), mean, -np.inf))))
    return ids, means, np.array(predictions)


def score(probabilities: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and AUC per slice and per patient (a patient's label is its slices')."""
    ids, means, votes = patient_votes(probabilities, patients)
    patient_labels = np.array([labels[patients == p][0] for p in ids])
    return {"slice_bacc": balanced_accuracy(labels, probabilities.argmax(1)),
            "slice_auc": macro_auc(probabilities, labels),
            "patient_bacc": balanced_accuracy(patient_labels, votes),
            "patient_auc": macro_auc(means, patient_labels)}


# -- the classifier ------------------------------------------------------------------------------


class SliceClassifier(nn.Module):
    """Three conv blocks (3×3 conv, BatchNorm, ReLU, 2×2 max-pool), global average pool, linear.

    Small on purpose: the question is whether added data helps a model that scarce data limits.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # a plain mean, not AdaptiveAvgPool2d, whose CUDA backward is not deterministic
        return self.head(self.features(x).mean(dim=(2, 3)))


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Classic augmentation of a batch (B, 1, S, S) in [0, 1]: random horizontal and vertical flips,
    a rotation of up to ±10° (bilinear, zero outside), gain 0.9–1.1 and offset ±0.05, clamped to [0, 1].
    The random draws come from the CPU `generator`, so a seed fixes them on any device."""
    n = len(x)
    flips = torch.randint(0, 2, (2, n), generator=generator).float() * -2 + 1  # ±1 per axis
    angle = torch.deg2rad((torch.rand(n, generator=generator) * 2 - 1) * ROTATION_DEG)
    gain = GAIN[0] + (GAIN[1] - GAIN[0]) * torch.rand(n, generator=generator)
    offset = (torch.rand(n, generator=generator) * 2 - 1) * OFFSET
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    # output → input coordinates: rotation after a flip of each axis (x: columns, y: rows)
    theta = torch.stack([torch.stack([cos * flips[0], -sin * flips[1], zero], 1),
                         torch.stack([sin * flips[0], cos * flips[1], zero], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out * gain.to(x)[:, None, None, None] + offset.to(x)[:, None, None, None]).clamp(0.0, 1.0)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, scaled so that a balanced set has weight 1 (0 for absent classes)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, config: UtilityConfig,
                     seed: int, augmentation: bool = False, device: torch.device | str = "cpu") -> SliceClassifier:
    """Fit a SliceClassifier on images (N, S, S) in [0, 1] with integer labels: Adam, class-weighted
    cross-entropy, `config.epochs` epochs of seeded shuffles (and augmentation). The same seed gives the
    same weights on the same machine; the caller's global RNG state is left alone.

    BatchNorm statistics are recomputed over the (unaugmented) training set at the end, so that few
    training steps do not leave the evaluation-mode statistics stale.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SliceClassifier(num_classes)
    model.to(device).train()
    order_rng, augment_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    weight = torch.tensor(class_weights(np.asarray(labels), num_classes), dtype=torch.float32, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    cudnn = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
    with cudnn:
        for _ in range(config.epochs):
            order = torch.randperm(len(x), generator=order_rng).to(device)
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                batch = augment(x[idx], augment_rng) if augmentation else x[idx]
                loss = F.cross_entropy(model(batch), y[idx], weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        _recompute_batchnorm(model, x, config.batch_size)
    return model.eval()


@torch.no_grad()
def _recompute_batchnorm(model: nn.Module, x: Tensor, batch_size: int) -> None:
    """Replace BatchNorm running statistics with their exact average over `x` (one pass, train mode)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device | str = "cpu",
            batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) of images (N, S, S) in [0, 1]."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    out = [F.softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


# -- data: patients, labels, synthetic slices ------------------------------------------------------


def task_labels(groups: np.ndarray, task: str) -> np.ndarray:
    """Integer labels of ACDC group names for a task (hcm: 1 for HCM, 0 else; 5class: index in GROUPS)."""
    groups = np.asarray(groups)
    if task == "hcm":
        return (groups == "HCM").astype(np.int64)
    index = {g: i for i, g in enumerate(GROUPS)}
    return np.array([index[g] for g in groups.tolist()], dtype=np.int64)


def choose_patients(pool: SliceSet, k: int | None, seed: int) -> SliceSet:
    """The slices of `k` patients per group of `pool` (all when None), drawn with default_rng(seed).

    Groups are visited in ACDC order and patients sorted, so the choice depends on the seed only.
    """
    if k is None:
        return pool
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for group in GROUPS:
        patients = sorted(set(pool.patient[pool.group == group].tolist()))
        if not patients:
            continue
        if k > len(patients):
            raise HcmbenchError(f"{k} patients per group requested, but the training pool has only "
                                f"{len(patients)} {group} patient(s): lower patients_per_group or use all (None)")
        chosen += [patients[i] for i in sorted(rng.choice(len(patients), size=k, replace=False))]
    return pool.subset(np.isin(pool.patient, chosen))


def _upper(names: list[str]) -> list[str]:
    return [str(n).upper() for n in names]


def generator_groups(generator: LoadedGenerator) -> tuple[str, ...] | None:
    """The ACDC groups a generator was trained on, from its checkpoint (None when not recorded)."""
    data = generator.state.get("data_config") if isinstance(generator.state, dict) else None
    return tuple(_upper(list(data["groups"]))) if data and data.get("groups") else None


def known_groups(generator: LoadedGenerator) -> tuple[str, ...]:
    """The groups a conditional generator can be asked for by label (none for others, or for models
    conditioned on the phase)."""
    classes = _upper(generator.classes)
    if not generator.model.conditional or not classes or not set(classes) <= set(GROUPS):
        return ()
    return tuple(classes)


def hcm_label(name: str, generator: LoadedGenerator) -> str | None:
    """The label to draw HCM slices with: "HCM" for a generator conditioned on the group, None for one
    trained on HCM only (unconditional, or conditioned on the phase). Anything else is an error."""
    if "HCM" in known_groups(generator):
        return "HCM"
    groups = generator_groups(generator)
    if groups == ("HCM",) or (groups is None and _upper(generator.classes) == ["HCM"]):
        return None
    trained = ", ".join(groups) if groups else "unknown groups"
    if generator.model.conditional:
        raise HcmbenchError(f"generator {name!r} cannot be asked for HCM: it knows the labels "
                            f"{', '.join(generator.classes) or 'none'} and was trained on {trained}")
    raise HcmbenchError(f"generator {name!r} is unconditional and was trained on {trained}: its images "
                        "are HCM only if it was trained on HCM only")


def tstr_eligible(generator: LoadedGenerator, task: str, present: tuple[str, ...]) -> bool:
    """Whether a generator can make a whole training set for a task: conditional on the group, knowing
    HCM and another group of the data (hcm) or all five groups (5class)."""
    known = set(known_groups(generator))
    if task == "hcm":
        return "HCM" in known and bool(known & (set(present) - {"HCM"}))
    return known >= set(GROUPS)


class SyntheticCache:
    """Synthetic slices in [0, 1] (n, S, S), drawn once per (generator, label, n, seed) within a run."""

    def __init__(self, generators: dict[str, LoadedGenerator], size: int) -> None:
        self.generators, self.size = generators, size
        self._drawn: dict[tuple[str, str | None, int, int], np.ndarray] = {}

    def images(self, name: str, label: str | None, n: int, seed: int) -> np.ndarray:
        """`n` images of `label` (None: the generator's own HCM-only distribution), reproducibly."""
        from hcmbench.sampling import draw

        if n < 1:
            return np.zeros((0, self.size, self.size), np.float32)
        key = (name, label, n, seed)
        if key not in self._drawn:
            # a seed per label, so that the classes of one conditional model do not share their noise
            draw_seed = seed * len(GROUPS) + GROUPS.index(label or "HCM")
            images, _ = draw(self.generators[name], n, label=label, seed=draw_seed)
            if tuple(images.shape[-2:]) != (self.size, self.size):
                raise HcmbenchError(f"generator {name!r} makes {images.shape[-1]}-px images; the study runs "
                                    f"at size {self.size}: set size={images.shape[-1]}")
            self._drawn[key] = ((images[:, 0].float() + 1) / 2).clamp(0.0, 1.0).numpy()
        return self._drawn[key]


@dataclass(frozen=True)
class Method:
    """How one classifier's training set is made: real slices, augmentation, which generator and how much."""

    name: str
    model: str | None = None
    ratio: float | None = None
    augmentation: bool = False
    tstr: bool = False


def methods_for(task: str, generators: dict[str, LoadedGenerator], config: UtilityConfig,
                present: tuple[str, ...]) -> list[Method]:
    """The methods run for a task, in table order."""
    out = [Method("real")]
    if config.augmentation:
        out.append(Method("real+aug", augmentation=True))
    for name in generators:
        for ratio in config.synthetic_ratios:
            out.append(Method(f"real+{name}", name, float(ratio)))
            if config.augmentation:
                out.append(Method(f"real+aug+{name}", name, float(ratio), augmentation=True))
    out += [Method(f"tstr:{name}", name, tstr=True) for name, g in generators.items()
            if tstr_eligible(g, task, present)]
    return out


def training_set(real: SliceSet, task: str, method: Method, synthetic: SyntheticCache | None,
                 labels: dict[str, str | None], seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Images (N, S, S) in [0, 1], their task labels, and how many of them are synthetic.

    real+<model>: the real slices, then round(ratio × real HCM slices) synthetic slices labelled HCM.
    tstr:<model>: synthetic slices only, as many per group as `real` has, of the groups the generator
    knows (for hcm: HCM and the other groups it knows; for 5class: all five).
    """
    if method.model is None:
        return real.images, task_labels(real.group, task), 0
    assert synthetic is not None
    if method.tstr:
        groups = [g for g in known_groups(synthetic.generators[method.model]) if (real.group == g).any()]
        parts = [(synthetic.images(method.model, g, int((real.group == g).sum()), seed), g) for g in groups]
        images = np.concatenate([p for p, _ in parts])
        group_names = np.concatenate([np.full(len(p), g) for p, g in parts])
        return images, task_labels(group_names, task), len(images)
    n = int(round(method.ratio * int((real.group == "HCM").sum())))
    fake = synthetic.images(method.model, labels[method.model], n, seed)
    images = np.concatenate([real.images, fake])
    groups = np.concatenate([real.group, np.full(len(fake), "HCM")])
    return images, task_labels(groups, task), len(fake)


def _data_config(generators: dict[str, LoadedGenerator], groups: tuple[str, ...], size: int) -> DataConfig:
    """The generators' preprocessing and patient split (all must agree) for every group, at `size`:
    with the same split settings the test patients of HCM are the generators' test patients."""
    configs = {}
    for name, generator in generators.items():
        image_size = getattr(generator.model, "settings", {}).get("image_size")
        if image_size is not None and image_size != size:
            raise HcmbenchError(f"generator {name!r} makes {image_size}-px images; the study runs at size "
                                f"{size}: set size={image_size}")
        if isinstance(generator.state, dict) and generator.state.get("data_config"):
            configs[name] = dataclasses.replace(data_config_of(generator.state), groups=groups, size=size)
    distinct = set(configs.values())
    if len(distinct) > 1:
        raise HcmbenchError(f"the generators {', '.join(configs)} were trained with different preprocessing or "
                            "patient splits: compare generators of the same data")
    return distinct.pop() if distinct else DataConfig(groups=groups, size=size)


def _check_data(slices: SliceSet, config: UtilityConfig, root: str) -> tuple[SliceSet, SliceSet]:
    """The training pool and the test split, refused where they cannot answer the question."""
    present = tuple(g for g in GROUPS if (slices.group == g).any())
    if "HCM" not in present:
        raise HcmbenchError(f"{root}: no HCM patients")
    if len(present) < 2:
        raise HcmbenchError(f"{root}: only HCM patients; the utility study needs other groups to tell HCM from")
    if "5class" in config.tasks and len(present) < len(GROUPS):
        missing = ", ".join(g for g in GROUPS if g not in present)
        raise HcmbenchError(f"{root}: the 5class task needs all five ACDC groups, and {missing} is missing "
                            "(run the hcm task only)")
    pool, test = slices.of_split("train"), slices.of_split("test")
    if len(test) == 0:
        raise HcmbenchError(f"{root}: the test split is empty (too few patients per group)")
    if not (test.group == "HCM").any() or (test.group == "HCM").all():
        raise HcmbenchError(f"{root}: the test split needs HCM and other patients (too few patients per group)")
    for group in present:
        if not (pool.group == group).any():
            raise HcmbenchError(f"{root}: the training split has no {group} patient")
    return pool, test


# -- running the study ---------------------------------------------------------------------------


def generator_names(generators: list[LoadedGenerator]) -> list[str]:
    """A name per generator for the methods: its model's name, numbered when a model comes twice
    ("dcgan", "dcgan-2")."""
    names: list[str] = []
    for generator in generators:
        base = generator.model.name or type(generator.model).__name__.lower()
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def run_utility(data_root: str | Path, generators: dict[str, LoadedGenerator],
                config: UtilityConfig = UtilityConfig(), progress: Progress | None = None) -> UtilityResult:
    """Train and score one classifier per task, scarcity level, seed and method; aggregate over seeds.

    Every ACDC group the dataset holds is loaded (preprocessed like the generators' data). `progress`
    is called with (done, total) after each classifier.
    """
    from hcmbench.data.acdc import open_dataset
    from hcmbench.data.slices import load_slices

    labels = {name: hcm_label(name, generator) for name, generator in generators.items()}
    device = resolve_device(config.device)
    dataset = open_dataset(data_root)
    present = dataset.groups_present
    slices = load_slices(dataset, _data_config(generators, present, config.size))
    pool, test = _check_data(slices, config, str(data_root))
    for k in config.patients_per_group:  # refuse an impossible request before any training
        choose_patients(pool, k, 0)

    synthetic = SyntheticCache(generators, config.size)
    plan = [(task, k, seed, method) for task in config.tasks for k in config.patients_per_group
            for seed in range(config.seeds) for method in methods_for(task, generators, config, present)]
    results: dict[tuple[str, int | None, Method], list[dict[str, float]]] = {}
    subsets: dict[tuple[int | None, int], SliceSet] = {}
    for done, (task, k, seed, method) in enumerate(plan, start=1):
        if (k, seed) not in subsets:
            subsets[k, seed] = choose_patients(pool, k, seed)
        real = subsets[k, seed]
        images, train_labels, n_synthetic = training_set(real, task, method, synthetic, labels, seed)
        num_classes = len(TASK_CLASSES[task])
        model = train_classifier(images, train_labels, num_classes, config, seed, method.augmentation, device)
        figures = score(predict(model, test.images, device), task_labels(test.group, task), test.patient)
        figures.update(real=0.0 if method.tstr else float(len(real)), synthetic=float(n_synthetic))
        results.setdefault((task, k, method), []).append(figures)
        if progress is not None:
            progress(done, len(plan))

    rows = [_aggregate(task, k, method, runs) for (task, k, method), runs in results.items()]
    count = lambda split: {g: len(set(split.patient[split.group == g].tolist())) for g in present}  # noqa: E731
    return UtilityResult(rows, config, str(data_root), pool=count(pool), test_patients=count(test), device=str(device))


def _aggregate(task: str, k: int | None, method: Method, runs: list[dict[str, float]]) -> UtilityRow:
    """Mean and population std (ddof 0) over seeds."""
    stats: dict[str, float] = {}
    for metric in METRICS:
        values = np.array([r[metric] for r in runs], dtype=float)
        stats[metric], stats[f"{metric}_std"] = float(values.mean()), float(values.std())
    return UtilityRow(task=task, method=method.name, model=method.model, ratio=method.ratio, patients_per_group=k,
                      real_slices=float(np.mean([r["real"] for r in runs])),
                      synthetic_slices=float(np.mean([r["synthetic"] for r in runs])), seeds=len(runs), **stats)


# -- presentation --------------------------------------------------------------------------------


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
    return [_pm(getattr(row, metric), getattr(row, f"{metric}_std"), digits, sep) for metric in METRICS]


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

    from hcmbench.plots import _save_figure

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
    return _save_figure(fig, path, "Does synthetic data help HCM diagnosis? (held-out test patients)", dpi=100)
