"""What a sweep leaves for MLflow's UI to compare at first sight: experiments marked for model training,
trial runs named as a person reads them, and the study's run carrying the best trial's figures and the
study's history (the objective at step = trial number). The toy model on a tiny phantom."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.sweep import load_space, run_sweep
from hcmbench.tracking import tracking_uri
from tests.sweep.space import SPACE, enqueue, write_space


def test_trials_are_named_and_the_study_run_holds_the_best_figures_and_the_history(split_phantom, workdir):
    noise = {"noise": {"choices": [0.05, 0.1, 0.3]}}  # a third level, for a trial worse than the best
    space = load_space("toy", write_space(workdir, params={**SPACE["params"], **noise}))
    good, worse, diverging, lagging = ({"lr": 0.05, "noise": 0.05, "nan_after": 0}, {"lr": 0.05, "noise": 0.3, "nan_after": 0},
                                       {"lr": 0.05, "noise": 0.05, "nan_after": 1}, {"lr": 0.001, "noise": 0.05, "nan_after": 0})
    enqueue("lr-search", worse, good, diverging, lagging)
    result = run_sweep("toy", 4, space, study_name="lr-search", data_root=split_phantom)
    assert result.counts == {"COMPLETE": 2, "FAIL": 1, "PRUNED": 1} and result.best_number == 1

    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("hcmbench-toy")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parent, = [r for r in runs if r.data.tags["hcmbench.role"] == "study"]
    trials = sorted((r for r in runs if r.data.tags["hcmbench.role"] == "trial"), key=lambda r: int(r.data.tags["hcmbench.trial"]))
    fids = [r.data.metrics.get("eval/fid") for r in trials]
    assert [r.info.run_name for r in trials] == [f"lr-search trial 0 · fid {fids[0]:.3g}",
                                                  f"lr-search trial 1 · fid {fids[1]:.3g}",
                                                  "lr-search trial 2 · failed", "lr-search trial 3 · pruned"]
    assert fids[1] < fids[0]
    # each scored trial's objective, on its run and (step = trial number) on the study's run
    assert [r.data.metrics.get("objective") for r in trials] == [fids[0], fids[1], None, None]
    history = client.get_metric_history(parent.info.run_id, "study/objective")
    assert sorted((m.step, m.value) for m in history) == [(0, fids[0]), (1, fids[1])]
    best = client.get_metric_history(parent.info.run_id, "best/value")
    assert sorted((m.step, m.value) for m in best) == [(0, fids[0]), (1, fids[1])]  # the best so far
    # the best trial's evaluation figures, every one of them, on the study's run
    figures = {k: v for k, v in trials[1].data.metrics.items() if k.startswith("eval/")}
    assert len(figures) > 5 and {k: parent.data.metrics[k] for k in figures} == figures
    assert parent.data.tags["hcmbench.best_run"] == trials[1].info.run_id
    # the experiment's saved view: the trials flat, by objective, best first, with the figures as columns
    state = json.loads(json.loads(experiment.tags["mlflow.sharedViewState.hcmbench-trials"])["state"])
    assert state["orderByKey"] == "metrics.`objective`" and state["orderByAsc"] is True
    assert {"metrics.`objective`", "metrics.`eval/fid`"} <= set(state["selectedColumns"])


def test_an_experiment_made_before_the_kind_tag_is_marked_when_used(workdir):
    from hcmbench import tracking

    client = tracking.client()
    old = client.create_experiment("hcmbench-toy")
    chosen = client.create_experiment("hcmbench-vae", tags={"mlflow.experimentKind": "genai_development"})
    assert tracking.ensure_experiment(client, "toy") == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.ensure_experiment(client, "vae") == chosen  # a kind chosen in the UI is left alone
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"
    made = tracking.ensure_experiment(client, "compare")
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
