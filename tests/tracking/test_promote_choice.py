"""`hcmbench promote` chooses: the best finished trial run by the metric's own direction (FID lower, precision
higher, val_score lower), never a failed run or a study's parent run, and points the alias it is given."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench import engine, tracking
from hcmbench.cli import main
from hcmbench.config import DataConfig, TrainConfig

# name: (status, role, metrics). "fid" wins on FID, "precise" on precision, "steady" on val_score; the failed
# run and the parent run would win on FID if they counted.
RUNS = {
    "steady": ("FINISHED", "trial", {"eval/fid": 30.0, "eval/precision": 0.5, "val/best": 0.1}),
    "fid": ("FINISHED", "trial", {"eval/fid": 10.0, "eval/precision": 0.2, "val/best": 0.7}),
    "precise": ("FINISHED", "trial", {"eval/fid": 20.0, "eval/precision": 0.95, "val/best": 0.4}),
    "failed": ("FAILED", "trial", {"eval/fid": 5.0, "eval/precision": 0.99, "val/best": 0.01}),
    "parent": ("FINISHED", "study", {"eval/fid": 1.0, "eval/precision": 1.0, "val/best": 0.0}),
}


@pytest.fixture
def store(split_phantom, tmp_path, monkeypatch):
    """A project folder whose MLflow store holds the runs above, each with the same loadable toy checkpoint;
    returns {name: run id}."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    trained = engine.train("toy", split_phantom, tmp_path / "run", DataConfig(groups=("HCM",), size=32),
                           TrainConfig(epochs=1, batch_size=8, sample_every=0), {})
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    client = tracking.client()
    experiment = tracking.ensure_experiment(client, "toy")
    ids = {}
    for name, (status, role, metrics) in RUNS.items():
        run_id = client.create_run(experiment, run_name=name, tags={tracking.ROLE_TAG: role}).info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifact(run_id, str(trained.best_checkpoint), "checkpoints")
        client.set_terminated(run_id, status)
        ids[name] = run_id
    return ids


def champion_runs() -> dict[str, tuple[str, str]]:
    """{alias: (version, run id)} of hcm-toy."""
    from mlflow import MlflowClient

    uri = tracking.tracking_uri()
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model = registry.get_registered_model("hcm-toy")
    return {alias: (str(version), registry.get_model_version("hcm-toy", version).run_id)
            for alias, version in model.aliases.items()}


def test_promote_picks_the_best_run_by_the_metrics_direction_and_sets_the_alias(store):
    client = tracking.client()
    assert tracking.best_run(client, "toy", "val_score").info.run_id == store["steady"]  # lower is better

    by_fid = CliRunner().invoke(main, ["promote", "--model", "toy"], catch_exceptions=False)
    assert by_fid.exit_code == 0, by_fid.output
    assert f"run {store['fid']}, eval/fid 10)" in by_fid.output and "models:/hcm-toy@champion" in by_fid.output
    assert champion_runs() == {"champion": ("1", store["fid"])}

    by_precision = CliRunner().invoke(main, ["promote", "--model", "toy", "--metric", "precision", "--alias", "precise"],
                                      catch_exceptions=False)
    assert by_precision.exit_code == 0, by_precision.output
    assert f"run {store['precise']}, eval/precision 0.95)" in by_precision.output
    assert "models:/hcm-toy@precise" in by_precision.output
    assert champion_runs() == {"champion": ("1", store["fid"]), "precise": ("2", store["precise"])}
