"""The toy model's search space for the sweep tests, and a way to fix a study's next trials."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from hcmbench.sweep import default_storage

SPACE = {
    "model": "toy",
    "objective": {"metric": "fid", "images": 12},
    "budget": {"epochs": 2, "pruner": "median", "startup_trials": 1, "warmup_epochs": 0},
    "data": {"size": 32, "groups": ["HCM"]},
    "train": {"batch_size": 8, "sample_every": 1},
    "params": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "noise": {"choices": [0.05, 0.1]},
               "nan_after": {"choices": [0, 1]}},
}


def write_space(folder: Path, **changes) -> Path:
    """`folder`/toy.yaml: SPACE with `changes` to its top-level keys."""
    space = {**SPACE, **changes}
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def enqueue(name: str, *params: dict) -> None:
    """Fix the next trials' parameters, so that a test controls which trial diverges or lags."""
    Path("mlruns").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=default_storage(), load_if_exists=True)
    for p in params:
        study.enqueue_trial(p)
