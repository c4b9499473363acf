"""Optuna: a hyperparameter study per model over the shared engine, each trial tracked in MLflow.

    result = run_sweep("dcgan", trials=20)                  # create or continue hcmbench-dcgan
    run_worker("hcmbench-dcgan", storage="postgresql://…")  # join it from another machine

The package, one room per job:

- `space`: the search-space YAML (schema, checks, the trial budget) and the spaces shipped in `spaces/`;
- `settings`: what a study keeps for life (`StudySettings`), and `Heartbeat`;
- `coordination`: the Optuna storage, claiming trials under the study lock, heartbeats (and why the lock);
- `objective`: one trial, trained through the engine, pruned, scored, tracked in MLflow;
- `run`: the loops of `hcmbench sweep` and `hcmbench worker`;
- `events`: what a display is told; `plots`: Optuna's plots for the study's MLflow run.
"""

from hcmbench.sweep.coordination import default_storage, display_url
from hcmbench.sweep.events import (Joined, Preparing, SweepDisplay, SweepResult, TrialEnded, TrialEpoch,
                                   TrialStarted, Waiting)
from hcmbench.sweep.run import run_sweep, run_worker
from hcmbench.sweep.settings import Heartbeat, StudySettings
from hcmbench.sweep.space import (BUDGET_FIELDS, Budget, Objective, Param, SearchSpace, load_space, parse_space, shipped_models,
                                  shipped_space, space_text, trial_budget)

__all__ = ["BUDGET_FIELDS", "Budget", "Heartbeat", "Joined", "Objective", "Param", "Preparing", "SearchSpace", "StudySettings",
           "SweepDisplay", "SweepResult", "TrialEnded", "TrialEpoch", "TrialStarted", "Waiting", "default_storage",
           "display_url", "load_space", "parse_space", "run_sweep", "run_worker", "shipped_models", "shipped_space",
           "space_text", "trial_budget"]
