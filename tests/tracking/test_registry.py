"""After a sweep: promote to the registry, load the pyfunc, generate from models:/, compare, ui."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.data.acdc import open_dataset
from hcmbench.evaluation.features import FeatureConfig

SPACE = {
    "model": "toy",
    "objective": {"metric": "fid", "images": 12},
    "budget": {"epochs": 2, "pruner": "none"},
    "data": {"size": 32, "groups": ["HCM"]},
    "train": {"batch_size": 8},
    "params": {"lr": {"low": 0.01, "high": 0.1, "log": True}},
}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(split_phantom, tmp_path_factory):
    """A working folder holding a finished two-trial toy sweep (mlruns/), for the tests that read it."""
    import hcmbench.evaluation.features as features

    folder = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("HCMBENCH_CACHE", str(folder / "cache"))
        mp.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))
        (folder / "toy.yaml").write_text(yaml.safe_dump(SPACE))
        result = run("--quiet", "sweep", "--model", "toy", "--trials", "2", "--space", "toy.yaml",
                     "--data", str(split_phantom))
        assert result.exit_code == 0, result.output
        yield folder


MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture
def clean_mlflow(monkeypatch):
    """No MLflow URI in the environment nor in MLflow's process state, as in a new shell; and none left
    behind afterwards by what the test (a Python user's `mlflow.set_tracking_uri`) or hcmbench set."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in MLFLOW_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    yield
    for name in MLFLOW_VARIABLES:  # monkeypatch restores only what was set before the test
        os.environ.pop(name, None)


@pytest.fixture
def inside(swept, clean_mlflow, monkeypatch):
    import hcmbench.evaluation.features as features

    monkeypatch.chdir(swept)
    monkeypatch.setenv("HCMBENCH_CACHE", str(swept / "cache"))
    monkeypatch.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))
    return swept


def test_promote_registers_a_pyfunc_that_samples_and_generate_reads_it(inside):
    import mlflow

    from hcmbench.tracking import tracking_uri

    mlflow_default = mlflow.get_tracking_uri()
    result = run("promote", "--model", "toy")
    assert result.exit_code == 0, result.output
    assert "Registered hcm-toy version 1" in result.output and "models:/hcm-toy@champion" in result.output
    assert not any(name in os.environ for name in MLFLOW_VARIABLES) and mlflow.get_tracking_uri() == mlflow_default

    out = inside / "synthetic"  # models:/ read with no MLflow URI set anywhere, as in a new shell
    generated = run("generate", "models:/hcm-toy@champion", "-n", "10", "--out", str(out), "--format", "nifti")
    assert generated.exit_code == 0, generated.output
    patients = open_dataset(out).patients
    assert sum(p.load_frame("ED").image.data.shape[2] for p in patients) == 10 and {p.group for p in patients} == {"HCM"}
    assert not Path("mlflow.db").exists()  # MLflow's default store, in the working directory

    mlflow.set_tracking_uri(tracking_uri())  # what a Python user does (the fixture undoes it)
    model = mlflow.pyfunc.load_model("models:/hcm-toy@champion")
    images = model.predict({"n": 5, "seed": 3})
    assert images.shape == (5, 32, 32) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    np.testing.assert_array_equal(model.predict({"n": 5, "seed": 3}), images)
    version = mlflow.MlflowClient().get_model_version_by_alias("hcm-toy", "champion")
    assert "eval/fid" in version.tags and version.tags["hcmbench.study"] == "hcmbench-toy"


def test_compare_prints_the_table_writes_it_and_logs_it(inside):
    from mlflow.tracking import MlflowClient

    from hcmbench.tracking import tracking_uri

    result = run("compare", "--models", "toy", "-n", "8", "--detect-seeds", "1", "--out", str(inside / "cmp"))
    assert result.exit_code == 0, result.output
    assert "toy" in result.output and "uniform noise" in result.output and "detect" in result.output
    assert "| toy |" in (inside / "cmp" / "table.md").read_text()
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("hcmbench-compare")
    logged = client.search_runs([experiment.experiment_id])[0]
    assert "eval/fid/toy" in logged.data.metrics and logged.info.status == "FINISHED"


def test_promote_and_compare_refuse_without_finished_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["promote", "--model", "dcgan"], ["compare", "--models", "dcgan"]):
        result = run(*args)
        assert result.exit_code == 2 and "no runs of dcgan" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_ui_command_points_mlflow_at_the_project_store(tmp_path, monkeypatch):
    from hcmbench.tracking import ui_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    command = ui_command(port=5055)
    assert command[1:4] == ["-m", "mlflow", "ui"] and "127.0.0.1" in command and "5055" in command
    store = command[command.index("--backend-store-uri") + 1]
    assert store == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    assert command[command.index("--default-artifact-root") + 1].endswith("mlruns/artifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    assert "postgresql://db/mlflow" in ui_command() and "--default-artifact-root" not in ui_command()
