"""The loops: `run_sweep` creates or continues a study and works on it; `run_worker` joins one."""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from hcmbench import tracking
from hcmbench.errors import HcmbenchError
from hcmbench.sweep.coordination import (StudyLock, best_trial, claim, default_storage, display_url, ended,
                                         open_study)
from hcmbench.sweep.events import Joined, Preparing, SweepDisplay, SweepResult, Waiting
from hcmbench.sweep.objective import Objective, Outcome, TrialScorer, make_pruner
from hcmbench.sweep.plots import study_plots
from hcmbench.sweep.settings import Heartbeat, StudySettings
from hcmbench.sweep.space import SearchSpace, load_space, parse_space, trial_budget


def run_sweep(model: str, trials: int, space: SearchSpace | None = None, study_name: str | None = None,
              storage: str | None = None, timeout: float | None = None, data_root: str | Path | None = None,
              epochs: int | None = None, seed: int = 0, device: str = "auto",
              display: SweepDisplay | None = None, heartbeat: Heartbeat = Heartbeat(),
              tracking_uri: str | None = None, kimg: float | None = None, minutes: float | None = None) -> SweepResult:
    """Create the study `study_name` (default `hcmbench-<model>`) in `storage`, or continue it, and run its
    trials here until it has `trials` in all; `hcmbench worker` processes may join it meanwhile.

    The study stores its settings (model, search space, trial budget, seed, data root, tracking URI), so
    that workers need only its name and storage; continuing a study with a different search space, budget
    or seed is refused. `epochs`, `kimg` or `minutes` replace the space's trial budget. Runs go to `tracking_uri` (default: `tracking.tracking_uri()`). A trial that diverges
    or raises is FAILED with its reason and the study goes on.
    Ctrl-C (KeyboardInterrupt) ends the running trial, queues it again and is re-raised: the same command
    continues the study.
    """
    from hcmbench.data import default_phantom_root, resolve_data_root

    if trials < 1:
        raise HcmbenchError(f"trials must be at least 1, got {trials}")
    space = space or load_space(model)
    if space.model != model:
        raise HcmbenchError(f"the search space is for {space.model}, not {model}")
    study_name = study_name or f"hcmbench-{model}"
    storage = storage or default_storage()
    data_root = resolve_data_root(data_root)
    study, rdb = open_study(storage, study_name, space.objective.direction, heartbeat)
    if study.direction.name.lower() != space.objective.direction:
        raise HcmbenchError(f"study {study_name!r} was created to {study.direction.name.lower()}, "
                            f"but the search space asks to {space.objective.direction}: use another --study")
    mlflow_client = tracking.client(tracking_uri)
    experiment_id = tracking.ensure_experiment(mlflow_client, model)
    phantom = data_root.resolve() == default_phantom_root().resolve()
    settings = StudySettings(model, space.raw, space.source, trials, trial_budget(space, epochs, kimg, minutes), seed,
                             "" if phantom else str(data_root.resolve()), mlflow_client.tracking_uri, "")
    before = StudySettings.of(study)
    if before is not None and settings.differences(before):
        raise HcmbenchError(f"study {study_name!r} was created with another "
                            f"{' and '.join(settings.differences(before))}: continue it with the same settings, "
                            "or start a new one with --study NAME")
    parent = tracking.study_parent_run(
        mlflow_client, experiment_id, model, study_name,
        tags={"optuna.storage": display_url(storage), "hcmbench.space": space.source},
        params={"objective": {"metric": space.objective.metric, "direction": space.objective.direction,
                              "images": space.objective.images, "combine": space.objective.combine},
                "budget": {**space.budget.fields, "pruner": space.budget.pruner}})
    settings = dataclasses.replace(settings, parent_run=parent)
    settings.store(study)
    return _work(study, rdb, storage, settings, space, data_root, device, timeout, display, heartbeat,
                 mlflow_client)


def run_worker(study_name: str, storage: str, data_root: str | Path | None = None, device: str = "auto",
               timeout: float | None = None, wait: float = 0, display: SweepDisplay | None = None,
               heartbeat: Heartbeat = Heartbeat(), tracking_uri: str | None = None) -> SweepResult:
    """Join the study `study_name` created by `hcmbench sweep` (on this or another machine) and run its
    trials until it has its total, then wait for the trials running elsewhere, taking over any whose
    worker dies. `wait` seconds are allowed for the study to appear (workers may start before `sweep`).

    Data: `data_root`, else the study's data root when it exists here, else the built-in phantom when the
    study was made on it. MLflow: `tracking_uri`, else $MLFLOW_TRACKING_URI, else the study's tracking URI.
    """
    from hcmbench.data import resolve_data_root

    deadline = time.monotonic() + wait
    while True:
        try:
            study, rdb = open_study(storage, study_name, None, heartbeat)
            settings = StudySettings.of(study)
        except HcmbenchError:
            if time.monotonic() >= deadline:
                raise
            settings = None
        if settings is not None:
            break
        if time.monotonic() >= deadline:
            raise HcmbenchError(f"study {study_name!r} at {display_url(storage)} was not made by `hcmbench sweep`"
                                " (it has no settings to run it with)")
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    if tracking_uri is None and tracking.uses_default_store():
        tracking_uri = settings.tracking_uri_for(study_name, storage)
        if tracking_uri.startswith("sqlite:") and not Path(tracking_uri.split("sqlite:///", 1)[-1]).exists():
            raise HcmbenchError(f"study {study_name!r} is tracked in {tracking_uri}, a file on the machine that "
                                "made it: pass --tracking-uri http://… (an MLflow server) here")
    if data_root is None and settings.data:
        if not Path(settings.data).is_dir():
            raise HcmbenchError(f"study {study_name!r} trains on {settings.data}, which is not on this machine: "
                                "pass --data with this machine's copy")
        data_root = settings.data
    space = parse_space(settings.model, settings.space, settings.source)
    return _work(study, rdb, storage, settings, space, resolve_data_root(data_root), device, timeout, display,
                 heartbeat, tracking.client(tracking_uri))


def _work(study: Any, storage: Any, storage_url: str, settings: StudySettings, space: SearchSpace, data_root: Path, device: str,
          timeout: float | None, display: SweepDisplay | None, heartbeat: Heartbeat,
          mlflow_client: Any) -> SweepResult:
    """The loop every process runs: claim a trial, train and score it, tell Optuna, end its MLflow run."""

    state = optuna.trial.TrialState
    worker = f"{socket.gethostname()}:{os.getpid()}"
    study.pruner = make_pruner(space)
    experiment_id = tracking.ensure_experiment(mlflow_client, settings.model)
    mlflow_client.update_run(settings.parent_run, status="RUNNING")
    scorer = TrialScorer(data_root, space, settings.seed, device)
    if display is not None:
        display(Preparing(f"Preparing {data_root}: preprocessing, and the feature space used to score trials "
                          "(trained once per dataset, then cached)"))
    scorer.prepare()  # bad data fail here, once, rather than in every trial
    objective = Objective(settings.model, space, settings.budget, settings.seed, device, data_root, scorer,
                           mlflow_client, experiment_id, settings.parent_run, study.study_name, worker, display)
    lock, study_id = StudyLock(storage_url, study.study_name), storage.get_study_id_from_name(study.study_name)
    counts: dict[str, int] = {}
    started = time.monotonic()

    def tidy() -> list[Any]:
        """Fail and queue again the trials of dead workers; end their MLflow runs. Returns the trials."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        tracking.end_orphans(mlflow_client, experiment_id, study.study_name, {t.number: t.state.name for t in trials})
        return trials

    if display is not None:
        display(Joined(study.study_name, settings.trials, ended(tidy()), worker))
    try:
        while timeout is None or time.monotonic() - started < timeout:
            trials = tidy()
            claimed = claim(study, storage, study_id, lock, settings.trials, settings.seed, worker)
            if claimed is None:
                running = tuple(t.number for t in trials if t.state == state.RUNNING)
                if not running:
                    break  # the study has all its trials
                if display is not None:
                    display(Waiting(running, heartbeat.grace))
                time.sleep(min(heartbeat.interval, 5))
                continue
            trial, beats = claimed
            try:
                outcome = objective(trial)
            except KeyboardInterrupt:
                beats.close()
                frozen = study.tell(trial, state=state.FAIL)
                storage.get_heartbeat_stale_trial_callback()(study, frozen)  # queued again, as a dead worker's
                objective.end(trial, Outcome("STOPPED", reason="interrupted (Ctrl-C); queued again for when "
                                                                 "the study continues"))
                raise
            beats.close()
            try:
                study.tell(trial, outcome.value, state=state[outcome.state])
            except optuna.exceptions.UpdateFinishedTrialError:  # silent too long: taken for dead, queued again
                outcome = Outcome("FAIL", reason="its heartbeats stopped reaching the storage for longer than "
                                   "the grace period; another worker runs it again")
            objective.end(trial, outcome)
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
            gc.collect()
    except KeyboardInterrupt:
        _leave(study, mlflow_client, settings.parent_run, "KILLED")
        raise
    finished = _leave(study, mlflow_client, settings.parent_run, "FINISHED", settings.trials)
    number, value, params = best_trial(study)
    return SweepResult(study.study_name, storage_url, settings.parent_run, sum(counts.values()), number, value,
                       params, counts, settings.trials, finished, settings.model, space.objective.name)


def _leave(study: Any, mlflow_client: Any, parent: str, status: str, total: int | None = None) -> bool:
    """This process stops working on the study. The last one out (no trial running elsewhere) closes the
    parent run with the best trial so far and its run's evaluation figures. Returns whether the study has
    all its trials."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        return False
    finished = total is not None and ended(trials) >= total and not any(
        t.state == optuna.trial.TrialState.WAITING for t in trials)
    best = best_trial(study)
    best_run = study.best_trial.user_attrs.get("mlflow_run_id") if best[0] is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        tracking.finish_study_run(mlflow_client, parent, best, study_plots(study, Path(tmp)), status, best_run)
    return finished
