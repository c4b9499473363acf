"""Running the experiment: per repeat and fold, one classifier per task, scarcity level and method; the
pooled test predictions of each method become a row with intervals and its paired comparison."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hcmbench.checkpoints import LoadedGenerator, resolve_device
from hcmbench.data.acdc import GROUPS
from hcmbench.data.slices import SliceSet
from hcmbench.experiments.utility.classifier import predict, train_classifier
from hcmbench.experiments.utility.data import (SyntheticCache, assign_folds, check_design, choose_patients,
                                               data_config_for, generator_seen, hcm_label, methods_for,
                                               oracle_images, patient_groups, task_labels, training_set)
from hcmbench.experiments.utility.design import TASK_CLASSES, UtilityConfig
from hcmbench.experiments.utility.results import UtilityResult, make_row
from hcmbench.experiments.utility.statistics import (Outputs, estimate, minimum_detectable_difference,
                                                     paired_difference, resampling_rng, stratified_weights)

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


def _load(root: str | Path, generators: dict[str, LoadedGenerator], size: int) -> SliceSet:
    """Every group of an ACDC-layout folder, preprocessed like the generators' data (with their split)."""
    from hcmbench.data.acdc import open_dataset
    from hcmbench.data.slices import load_slices

    dataset = open_dataset(root)
    return load_slices(dataset, data_config_for(generators, dataset.groups_present, size))


def run_utility(data_root: str | Path, generators: dict[str, LoadedGenerator],
                config: UtilityConfig = UtilityConfig(), progress: Progress | None = None,
                test_root: str | Path | None = None) -> UtilityResult:
    """Train and score one classifier per repeat, fold, task, scarcity level and method; pool each
    method's predictions per repeat and summarise them over the test patients.

    Without `test_root`: stratified patient-level cross-validation over `data_root` (`config.folds` folds,
    dealt anew in each of `config.seeds` repeats); every patient is tested once per repeat, by classifiers
    trained on k patients per group of the other folds. With `test_root` (an ACDC-layout folder with other
    patients): its patients are the test set, and the k training patients are drawn from all of
    `data_root` in each repeat. Rows of a method using a generator rest only on the test patients that
    generator never saw (`generator_seen`). `progress` is called with (done, total) after each classifier.
    """
    labels = {name: hcm_label(name, generator) for name, generator in generators.items()}
    device = resolve_device(config.device)
    data = _load(data_root, generators, config.size)
    test = _load(test_root, generators, config.size) if test_root is not None else None
    present = check_design(data, test, config, str(data_root), None if test_root is None else str(test_root))
    tested = test if test is not None else data
    tested_groups = tuple(g for g in GROUPS if (tested.group == g).any())
    ids = sorted(set(tested.patient.tolist()))
    index = {p: i for i, p in enumerate(ids)}
    slice_patient = np.array([index[p] for p in tested.patient.tolist()])
    group_of = patient_groups(tested)
    folds = 1 if test is not None else config.folds
    seen = {name: (set() if test is not None else generator_seen(data, g)) for name, g in generators.items()}

    synthetic = SyntheticCache(generators, config.size)
    methods = {(task, k): methods_for(task, generators, config, present, k)
               for task in config.tasks for k in config.patients_per_group}
    total = config.seeds * folds * sum(len(m) for m in methods.values())
    max_ratio = max(config.synthetic_ratios)
    predictions: dict[tuple[str, int | None, str], np.ndarray] = {}
    counts: dict[tuple[str, int | None, str], list[tuple[int, int]]] = {}
    done = 0
    for seed in range(config.seeds):
        fold_of = assign_folds(patient_groups(data), folds, seed) if test is None else {}
        for fold in range(folds):
            if test is None:
                in_fold = np.array([fold_of[p] == fold for p in data.patient.tolist()])
                pool, test_mask = data.subset(~in_fold), np.array([fold_of[p] == fold for p in tested.patient.tolist()])
            else:
                pool, test_mask = data, np.ones(len(tested), bool)
            test_images = tested.images[test_mask]
            run_seed = seed * folds + fold  # the classifier's initialisation and the synthetic draws
            for k in config.patients_per_group:
                real = choose_patients(pool, k, seed, fold)
                oracle = oracle_images(pool, real, int(round(max_ratio * (real.group == "HCM").sum())), seed, fold)
                for task in config.tasks:
                    for method in methods[task, k]:
                        images, train_labels, n_added = training_set(real, task, method, synthetic, labels,
                                                                     run_seed, oracle, max_ratio)
                        classes = len(TASK_CLASSES[task])
                        model = train_classifier(images, train_labels, classes, config, run_seed,
                                                 method.augmentation, device)
                        key = (task, k, method.key)
                        if key not in predictions:
                            predictions[key] = np.full((config.seeds, len(tested), classes), np.nan)
                        predictions[key][seed, test_mask] = predict(model, test_images, device)
                        counts.setdefault(key, []).append((0 if method.tstr else len(real), n_added))
                        done += 1
                        if progress is not None:
                            progress(done, total)

    rows, power = [], {}
    for (task, k), cell in methods.items():
        labels_of = task_labels(np.array([group_of[p] for p in ids]), task)
        outputs: dict[str, Outputs] = {}
        weights: dict[tuple[int, ...], np.ndarray] = {}
        ses = []
        for method in cell:
            key = (task, k, method.key)
            out = outputs[method.key] = Outputs(predictions[key], slice_patient, labels_of)
            excluded = seen.get(method.model, set()) if method.model is not None else set()
            keep = np.array([i for i, p in enumerate(ids) if p not in excluded])
            kept_ids = [ids[i] for i in keep]
            if tuple(keep) not in weights:
                weights[tuple(keep)] = stratified_weights(labels_of[keep], config.bootstrap,
                                                          resampling_rng(0, kept_ids))
            figures = estimate(out, keep, weights[tuple(keep)])
            difference = None
            if method.baseline is not None and method.baseline in outputs:
                rng = np.random.default_rng([1, zlib.crc32(f"{task}|{k}|{method.key}".encode())])
                difference = paired_difference(out, outputs[method.baseline], keep, weights[tuple(keep)], rng,
                                               config.bootstrap)
                ses.append(difference["patient_bacc"].se)
            test_counts = {g: sum(1 for p in kept_ids if group_of[p] == g) for g in tested_groups}
            real_n, added_n = np.mean(counts[key], axis=0)
            rows.append(make_row(task, k, method, float(real_n), float(added_n), config.seeds, folds, test_counts,
                                 figures, difference))
        ses = [s for s in ses if np.isfinite(s)]
        if ses:
            power[task, k] = minimum_detectable_difference(float(np.median(ses)))
    count = lambda slices: {g: len(set(slices.patient[slices.group == g].tolist()))  # noqa: E731
                            for g in GROUPS if (slices.group == g).any()}
    return UtilityResult(rows, config, str(data_root), pool=count(data), test_patients=count(tested),
                         device=str(device), test_root=None if test_root is None else str(test_root),
                         folds=folds, power=power)
