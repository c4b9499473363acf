"""Running the experiment: one classifier per task, scarcity level, seed and method, aggregated over seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from hcmbench.checkpoints import LoadedGenerator, resolve_device
from hcmbench.data.slices import SliceSet
from hcmbench.experiments.utility.classifier import predict, train_classifier
from hcmbench.experiments.utility.data import (Method, SyntheticCache, checked_splits, data_config_for, choose_patients,
                                               hcm_label, methods_for, task_labels, training_set)
from hcmbench.experiments.utility.design import METRICS, TASK_CLASSES, UtilityConfig
from hcmbench.experiments.utility.results import UtilityResult, UtilityRow
from hcmbench.experiments.utility.scores import score

Progress = Callable[[int, int], None]


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
    slices = load_slices(dataset, data_config_for(generators, present, config.size))
    pool, test = checked_splits(slices, config, str(data_root))
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
