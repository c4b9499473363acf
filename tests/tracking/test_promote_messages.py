"""`hcmbench promote` says what it did, or why it did nothing, in one plain line: no MLflow warning (the
pyfunc model's type-hint advice, in colour) and no MLflow progress lines ("Successfully registered model",
"Created version"). Run as its own process, as a user runs it: MLflow shows its warning once per process,
so only a new process shows what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def promote(project: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_STORAGE")}
    env.update(HCMBENCH_CACHE=str(project.parent / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "hcmbench", "promote", "--model", "dcgan"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def test_promote_with_no_runs_prints_one_plain_line(tmp_path):
    result = promote(tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: no runs of dcgan at sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db: "
        "run `hcmbench sweep --model dcgan` first"], result.stderr


def finished_trial(project: Path) -> str:
    """A project whose store holds one finished dcgan trial run, scored and with its checkpoint, as a sweep
    leaves it (a tiny untrained network: promote loads and samples it, nothing more)."""
    from mlflow import MlflowClient

    from hcmbench.checkpoints import save_checkpoint
    from hcmbench.models.registry import build_model

    store = project / "mlruns"
    store.mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{store.resolve() / 'mlflow.db'}")
    experiment = client.create_experiment("hcmbench-dcgan",
                                          artifact_location=(store / "artifacts" / "hcmbench-dcgan").resolve().as_uri())
    run = client.create_run(experiment, tags={"hcmbench.role": "trial", "hcmbench.study": "hcmbench-dcgan"})
    model = build_model("dcgan", image_size=32, latent_dim=8, width=4)
    checkpoint = save_checkpoint({"model": "dcgan", "settings": model.settings, "state_dict": model.state_dict(),
                                  "ema_state_dict": None, "classes": [], "label_by": None,
                                  "data_config": {"groups": ["HCM"], "size": 32}}, project.parent / "best.pt")
    client.log_artifact(run.info.run_id, str(checkpoint), "checkpoints")
    client.log_metric(run.info.run_id, "eval/fid", 50.0)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_promote_prints_one_plain_line_and_nothing_on_stderr(tmp_path):
    project = tmp_path / "project"
    run_id = finished_trial(project)
    result = promote(project)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"Registered hcm-dcgan version 1 (run {run_id}, eval/fid 50) as models:/hcm-dcgan@champion"]
