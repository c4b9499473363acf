"""Optuna sweeps tracked in MLflow, with the toy model on a tiny phantom: runs, pruning, failures, resume."""

from __future__ import annotations

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.errors import HcmbenchError
from hcmbench.tracking import tracking_uri
from hcmbench.sweep import default_storage, load_space, run_sweep
from tests.sweep.space import enqueue, write_space


def runs_of(study: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("hcmbench-toy")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hcmbench.study` = '{study}'")
    by_role: dict[str, list] = {"study": [], "trial": []}
    for run in runs:
        by_role[run.data.tags["hcmbench.role"]].append(run)
    by_role["trial"].sort(key=lambda r: int(r.data.tags["hcmbench.trial"]))
    return by_role


def artifacts(run) -> set[str]:
    client = MlflowClient(tracking_uri())
    out = set()
    for item in client.list_artifacts(run.info.run_id):
        out |= {a.path for a in client.list_artifacts(run.info.run_id, item.path)} if item.is_dir else {item.path}
    return out


def test_a_sweep_tracks_every_trial_prunes_fails_and_resumes(split_phantom, workdir):
    space = load_space("toy", write_space(workdir))
    good, lagging, diverging = {"lr": 0.05, "noise": 0.05, "nan_after": 0}, \
        {"lr": 0.001, "noise": 0.05, "nan_after": 0}, {"lr": 0.05, "noise": 0.05, "nan_after": 1}
    enqueue("s", good, diverging, lagging)
    result = run_sweep("toy", 3, space, study_name="s", data_root=split_phantom)
    assert result.trials_run == 3 and result.counts == {"COMPLETE": 1, "FAIL": 1, "PRUNED": 1}
    assert result.best_number == 0 and result.best_params == good

    runs = runs_of("s")
    assert len(runs["study"]) == 1 and runs["study"][0].info.status == "FINISHED"
    parent = runs["study"][0].info.run_id
    assert "optuna/history.png" in artifacts(runs["study"][0])
    states = [(r.data.tags["hcmbench.state"], r.info.status) for r in runs["trial"]]
    assert states == [("COMPLETE", "FINISHED"), ("FAIL", "FAILED"), ("PRUNED", "KILLED")]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in runs["trial"])
    complete, failed, pruned = runs["trial"]
    assert {"loss/mse", "val/score", "eval/fid", "eval/ssim", "eval/memorization"} <= set(complete.data.metrics)
    assert complete.data.params["train.lr"] == "0.05" and complete.data.params["model.noise"] == "0.05"
    assert {"checkpoints/best.pt", "plots/losses.png", "eval/table.md", "eval/table.csv",
            "samples/epoch_001.png", "samples/epoch_002.png"} <= artifacts(complete)
    assert "became nan" in failed.data.tags["hcmbench.reason"]
    assert "pruned at epoch 1" in pruned.data.tags["hcmbench.reason"] and "checkpoints/best.pt" not in artifacts(pruned)

    again = run_sweep("toy", 4, space, study_name="s", data_root=split_phantom, seed=0)  # a total: one more
    assert again.trials_run == 1 and again.finished and again.total == 4
    study = optuna.load_study(study_name="s", storage=default_storage())
    assert len(study.trials) == 4
    runs = runs_of("s")
    assert len(runs["study"]) == 1 and len(runs["trial"]) == 4  # the same parent run, one more trial


def test_sweep_command_prints_trials_and_the_best(split_phantom, workdir):
    path = write_space(workdir, params={"lr": {"low": 0.01, "high": 0.1, "log": True}},
                       budget={"epochs": 2, "pruner": "none"})
    result = CliRunner().invoke(main, ["sweep", "--model", "toy", "--trials", "2", "--space", str(path),
                                       "--data", str(split_phantom), "--study", "cli"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trial   0 complete" in result.output and "trial   1 complete" in result.output
    assert "Best: trial" in result.output and "fid" in result.output
    assert "2 trials run here (2 complete); all its trials have ended." in result.output
    again = CliRunner().invoke(main, ["sweep", "--model", "toy", "--trials", "2", "--space", str(path),
                                      "--data", str(split_phantom), "--study", "cli"], catch_exceptions=False)
    assert again.exit_code == 0 and "0 trials run here (none); all its trials have ended." in again.output
    assert sorted(p.name for p in (workdir / "mlruns").iterdir()) == ["artifacts", "mlflow.db", "optuna.db", "optuna.db.lock"]


@pytest.mark.parametrize("change, message", [
    ({"params": {"nope": {"low": 0, "high": 1}}}, "parameter 'nope' is neither"),
    ({"params": {"lr": {"low": 1, "high": 0}}}, "low < high"),
    ({"params": {"lr": {"low": 0, "high": 1, "log": True}}}, "log range needs low > 0"),
    ({"objective": {"metric": "beauty"}}, "unknown objective metric 'beauty'"),
    ({"budget": {"pruner": "sometimes"}}, "pruner must be one of"),
    ({"model": "dcgan"}, "is a search space for 'dcgan'"),
    ({"train": {"speed": 3}}, "unknown train setting(s) speed"),
    ({"objective": {"metric": "fid", "combine": {"precision": 1.0}}}, "precision is maximized, the objective is minimized"),
    ({"objective": {"metric": "fid", "combine": {"kid": -1}}}, "positive weights"),
    ({"objective": {"metric": "val_score", "combine": {"fid": 1}}}, "cannot be combined with 'val_score'"),
    ({"budget": {"epochs": 2, "kimg": 3}}, "epochs or in kimg, not both"),
    ({"budget": {"kimg": 2, "warmup_epochs": 1}}, "takes warmup_kimg, not warmup_epochs"),
    ({"budget": {"epochs": 2, "tick_kimg": 0.5}}, "a budget in epochs takes warmup_epochs"),
    ({"budget": {"kimg": -1}}, "budget.kimg must be a positive number"),
    ({"budget": {"epochs": 1.5}}, "budget.epochs must be a positive integer"),
])
def test_bad_search_spaces_are_refused_with_one_line(workdir, change, message):
    with pytest.raises(HcmbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_space("toy", write_space(workdir, **change))


def test_a_sweep_can_minimise_detectability_combined_with_fid(split_phantom, workdir):
    path = write_space(workdir, objective={"metric": "detectability", "images": 12, "combine": {"fid": 0.01}},
                       params={"lr": {"low": 0.01, "high": 0.1, "log": True}}, budget={"epochs": 1, "pruner": "none"})
    run_sweep("toy", 1, load_space("toy", path), study_name="det", data_root=split_phantom, seed=0)
    trial = optuna.load_study(study_name="det", storage=default_storage()).trials[0]
    metrics = runs_of("det")["trial"][0].data.metrics
    assert 0.0 <= metrics["eval/detectability"] <= 1.0 and metrics["eval/fid"] > 0
    assert trial.value == pytest.approx(metrics["eval/detectability"] + 0.01 * metrics["eval/fid"])
    assert load_space("toy", path).objective.name == "detectability + 0.01 × fid"


def test_a_budget_in_kimg_sets_ticks_warmup_and_the_trials_images(split_phantom, workdir):
    path = write_space(workdir, params={"lr": {"low": 0.01, "high": 0.1, "log": True}},
                       budget={"kimg": 0.06, "tick_kimg": 0.02, "warmup_kimg": 0.03, "pruner": "median"})
    space = load_space("toy", path)
    assert space.budget.fields == {"kimg": 0.06, "tick_kimg": 0.02} and space.budget.rounds == 3 and space.budget.warmup == 2
    run_sweep("toy", 1, space, study_name="kimg", data_root=split_phantom, seed=0)
    trial = optuna.load_study(study_name="kimg", storage=default_storage()).trials[0]
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # one report per tick
    client = MlflowClient(tracking_uri())
    run = runs_of("kimg")["trial"][0]
    shown = [m.value for m in client.get_metric_history(run.info.run_id, "kimg")]
    # each tick closes at the first batch (of at most 8) that reaches its 20 images, the last at the budget
    assert [0 <= k - end < 0.008 for k, end in zip(shown, (0.02, 0.04, 0.06))] == [True] * 3
    # the command line's budget replaces the space's and keeps its ticks; a study keeps its budget for life
    with pytest.raises(HcmbenchError, match="created with another budget"):
        run_sweep("toy", 2, space, study_name="kimg", data_root=split_phantom, kimg=0.1)
    from hcmbench.sweep import trial_budget

    assert trial_budget(space, kimg=0.1) == {"kimg": 0.1, "tick_kimg": 0.02}
    assert trial_budget(space, epochs=3) == {"epochs": 3}
    with pytest.raises(HcmbenchError, match="not both"):
        trial_budget(space, epochs=3, kimg=1)


def test_every_shipped_search_space_loads():
    from hcmbench.sweep import shipped_models

    shipped = shipped_models()
    assert shipped == ["acgan", "dcgan", "ddpm", "gan", "infogan", "vae"]
    for model in shipped:
        space = load_space(model)
        assert space.model == model and space.params and space.objective.figures == ("detectability", "fid")


def test_sweep_command_refuses_bad_input_before_touching_the_stores(workdir):
    result = CliRunner().invoke(main, ["sweep", "--model", "nope"])
    assert result.exit_code == 2 and result.output.startswith("error: unknown model 'nope'")
    missing = CliRunner().invoke(main, ["sweep", "--model", "toy", "--space", "no.yaml"])
    assert missing.exit_code == 2 and "no.yaml: no such search-space file" in missing.output
    assert not (workdir / "mlruns").exists()
    printed = CliRunner().invoke(main, ["sweep", "--model", "dcgan", "--print-space"])
    assert printed.exit_code == 0 and yaml.safe_load(printed.output)["model"] == "dcgan"
    (workdir / "mine.yaml").write_text(printed.output)
    assert load_space("dcgan", workdir / "mine.yaml").raw == yaml.safe_load(printed.output)
    assert not (workdir / "mlruns").exists()
