"""The experiment's data: the test design (cross-validation folds or an external test set), the patients
each generator saw, the patients drawn per repeat and fold, task labels, synthetic and oracle slices, each
method's training set."""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass

import numpy as np

from hcmbench.checkpoints import LoadedGenerator, data_config_of
from hcmbench.config import DataConfig
from hcmbench.data.acdc import GROUPS
from hcmbench.data.slices import SliceSet
from hcmbench.errors import HcmbenchError
from hcmbench.experiments.utility.design import UtilityConfig
from hcmbench.intensity import to_unit_range


def task_labels(groups: np.ndarray, task: str) -> np.ndarray:
    """Integer labels of ACDC group names for a task (hcm: 1 for HCM, 0 else; 5class: index in GROUPS)."""
    groups = np.asarray(groups)
    if task == "hcm":
        return (groups == "HCM").astype(np.int64)
    index = {g: i for i, g in enumerate(GROUPS)}
    return np.array([index[g] for g in groups.tolist()], dtype=np.int64)


def choose_patients(pool: SliceSet, k: int | None, seed: int, fold: int = 0) -> SliceSet:
    """The slices of `k` patients per group of `pool` (all when None), drawn with default_rng([seed, fold]).

    Groups are visited in ACDC order and patients sorted, so the choice depends on (seed, fold) only, and
    every method of a repeat and fold trains on the same patients.
    """
    if k is None:
        return pool
    rng = np.random.default_rng([seed, fold])
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


def patient_groups(slices: SliceSet) -> dict[str, str]:
    """{patient id: ACDC group}, patients sorted."""
    return dict(sorted(zip(slices.patient.tolist(), slices.group.tolist())))


def assign_folds(groups: dict[str, str], folds: int, seed: int) -> dict[str, int]:
    """{patient: fold} for one repeat of stratified cross-validation: each group's patients (sorted) are
    shuffled with default_rng([seed, crc32(group)]) and dealt round-robin into `folds` folds."""
    out: dict[str, int] = {}
    for group in GROUPS:
        patients = sorted(p for p, g in groups.items() if g == group)
        order = np.random.default_rng([seed, zlib.crc32(group.encode())]).permutation(len(patients))
        out.update({patients[i]: n % folds for n, i in enumerate(order)})
    return out


def generator_seen(slices: SliceSet, generator: LoadedGenerator) -> set[str]:
    """The patients of `slices` a generator may have seen: those of the groups it was trained on (every
    group when its checkpoint does not say) in the train or val split of `slices` — loaded with the
    generators' DataConfig, so that these are the generators' own splits."""
    groups = generator_groups(generator) or GROUPS
    seen = np.isin(slices.group, groups) & np.isin(slices.split, ("train", "val"))
    return set(slices.patient[seen].tolist())


def oracle_images(pool: SliceSet, chosen: SliceSet, n: int, seed: int, fold: int) -> np.ndarray:
    """Up to `n` real HCM slices of `pool` patients outside `chosen`, standing in for a perfect generator's:
    drawn without replacement with default_rng([seed, fold, 1]) (a permutation, so that a smaller ratio
    takes a prefix of a larger one's slices); all of them when fewer exist."""
    candidates = np.flatnonzero((pool.group == "HCM") & ~np.isin(pool.patient, np.unique(chosen.patient)))
    order = np.random.default_rng([seed, fold, 1]).permutation(len(candidates))
    return pool.images[candidates[order[:n]]]


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
            self._drawn[key] = to_unit_range(images[:, 0]).numpy()
        return self._drawn[key]


@dataclass(frozen=True)
class Method:
    """How one classifier's training set is made: real slices, augmentation, which generator (or the
    oracle's real slices) and how much."""

    name: str
    model: str | None = None
    ratio: float | None = None
    augmentation: bool = False
    tstr: bool = False
    oracle: bool = False

    @property
    def key(self) -> str:
        """The method at its ratio, unique within a task and scarcity level ("real+ddpm@1", "real")."""
        return self.name if self.ratio is None else f"{self.name}@{self.ratio:g}"

    @property
    def baseline(self) -> str | None:
        """The method this one is compared with, pairwise: real+aug for an augmented method with added
        slices, real for the others with added or synthetic slices; None for real and real+aug."""
        if self.model is None and not self.oracle:
            return None
        return "real+aug" if self.augmentation else "real"


def methods_for(task: str, generators: dict[str, LoadedGenerator], config: UtilityConfig,
                present: tuple[str, ...], k: int | None = None) -> list[Method]:
    """The methods run for a task at `k` real patients per group, in table order. The oracle needs
    training patients outside the sampled k, so it has no row when k is None (every patient)."""
    out = [Method("real")]
    if config.augmentation:
        out.append(Method("real+aug", augmentation=True))
    sources = ([("oracle", None)] if config.oracle and k is not None else []) + [(n, n) for n in generators]
    for label, model in sources:
        for ratio in config.synthetic_ratios:
            out.append(Method(f"real+{label}", model, float(ratio), oracle=model is None))
            if config.augmentation:
                out.append(Method(f"real+aug+{label}", model, float(ratio), augmentation=True, oracle=model is None))
    out += [Method(f"tstr:{name}", name, tstr=True) for name, g in generators.items()
            if tstr_eligible(g, task, present)]
    return out


def training_set(real: SliceSet, task: str, method: Method, synthetic: SyntheticCache | None,
                 labels: dict[str, str | None], seed: int, oracle: np.ndarray | None = None,
                 draw_ratio: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Images (N, S, S) in [0, 1], their task labels, and how many of them are synthetic (or oracle).

    real+<model>: the real slices, then round(ratio × real HCM slices) synthetic slices labelled HCM — the
    first of round(draw_ratio × real HCM slices) drawn (default: ratio), so that the ratios of one repeat
    share their images. real+oracle: the same from `oracle` (real HCM slices of other patients, in drawing
    order), as many as there are when fewer. tstr:<model>: synthetic slices only, as many per group as
    `real` has, of the groups the generator knows (for hcm: HCM and the other groups it knows; for 5class:
    all five).
    """
    if method.model is None and not method.oracle:
        return real.images, task_labels(real.group, task), 0
    n_hcm = int((real.group == "HCM").sum())
    n = int(round(method.ratio * n_hcm)) if method.ratio is not None else 0
    if method.oracle:
        assert oracle is not None
        fake = oracle[:n]
    else:
        assert synthetic is not None
        if method.tstr:
            groups = [g for g in known_groups(synthetic.generators[method.model]) if (real.group == g).any()]
            parts = [(synthetic.images(method.model, g, int((real.group == g).sum()), seed), g) for g in groups]
            images = np.concatenate([p for p, _ in parts])
            group_names = np.concatenate([np.full(len(p), g) for p, g in parts])
            return images, task_labels(group_names, task), len(images)
        drawn = max(n, int(round((draw_ratio or 0.0) * n_hcm)))
        fake = synthetic.images(method.model, labels[method.model], drawn, seed)[:n]
    images = np.concatenate([real.images, fake])
    groups = np.concatenate([real.group, np.full(len(fake), "HCM")])
    return images, task_labels(groups, task), len(fake)


def data_config_for(generators: dict[str, LoadedGenerator], groups: tuple[str, ...], size: int) -> DataConfig:
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


def _present(slices: SliceSet) -> tuple[str, ...]:
    return tuple(g for g in GROUPS if (slices.group == g).any())


def check_groups(slices: SliceSet, config: UtilityConfig, root: str, what: str = "") -> tuple[str, ...]:
    """The groups of `slices`, refused (one line) without HCM and another group, or without all five for
    the 5class task. `what` names the folder's role in the message ("test data ")."""
    present = _present(slices)
    if "HCM" not in present:
        raise HcmbenchError(f"{what}{root}: no HCM patients")
    if len(present) < 2:
        raise HcmbenchError(f"{what}{root}: only HCM patients; the utility study needs other groups to tell HCM from")
    if "5class" in config.tasks and len(present) < len(GROUPS):
        missing = ", ".join(g for g in GROUPS if g not in present)
        raise HcmbenchError(f"{what}{root}: the 5class task needs all five ACDC groups, and {missing} is missing "
                            "(run the hcm task only)")
    return present


def check_design(data: SliceSet, test: SliceSet | None, config: UtilityConfig, root: str,
                 test_root: str | None = None) -> tuple[str, ...]:
    """The groups of the data, or a one-line refusal, before any training, of a design that cannot run: an
    external test set that shares patients with the data or lacks groups; more folds than a group has
    patients; more training patients per group than a fold leaves (or than the data has, with an external
    test set)."""
    present = check_groups(data, config, root)
    counts = {g: len(set(data.patient[data.group == g].tolist())) for g in present}
    if test is not None:
        check_groups(test, config, str(test_root), "test data ")
        shared = sorted(set(test.patient.tolist()) & set(data.patient.tolist()))
        if shared:
            raise HcmbenchError(f"test data {test_root} shares {len(shared)} patient id(s) with {root} "
                                f"({', '.join(shared[:3])}{', …' if len(shared) > 3 else ''}): the test patients "
                                "must be patients the classifier and the generators never saw")
        available = counts
    else:
        small = min(counts, key=lambda g: counts[g])
        if config.folds > counts[small]:
            raise HcmbenchError(f"{config.folds} folds need at least {config.folds} patients in every group, and "
                                f"{root} has {counts[small]} {small} patient(s): lower folds")
        available = {g: n - math.ceil(n / config.folds) for g, n in counts.items()}
    for k in config.patients_per_group:
        if k is None:
            continue
        short = [g for g in present if available[g] < k]
        if short:
            where = "" if test is not None else f" outside a test fold ({config.folds} folds)"
            raise HcmbenchError(f"{k} patients per group requested, but {root} has only {available[short[0]]} "
                                f"{short[0]} patient(s){where} to train on: lower patients_per_group"
                                + ("" if test is not None else " or folds") + ", or use all")
    return present
