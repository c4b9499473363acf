"""The experiment's data: patients drawn per seed, task labels, synthetic slices, each method's training set."""

from __future__ import annotations

import dataclasses
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
            self._drawn[key] = to_unit_range(images[:, 0]).numpy()
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


def checked_splits(slices: SliceSet, config: UtilityConfig, root: str) -> tuple[SliceSet, SliceSet]:
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
