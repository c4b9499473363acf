"""SLOW (80–110 s on two busy cores): the README's registry flow run the way a user runs it.

Every step is a separate `python -m hcmbench …` process in a fresh project folder, with no
MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI in its environment: sweep → promote → generate, evaluate and
utility from `models:/hcm-dcgan@champion` → load that model as a pyfunc from Python. In-process tests cannot
see what one process leaves to the next (a `mlflow.set_tracking_uri` sets the environment variable that
every later call in the process, and every subprocess, then inherits). The user's HOME is a new folder and
no cache variable is set, so the default cache (~/.cache/hcmbench) and the default feature space are used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = "dcgan"
CHAMPION = f"models:/hcm-{MODEL}@champion"
SPACE = {
    "model": MODEL,
    "objective": {"metric": "fid", "images": 8},
    "budget": {"epochs": 1, "pruner": "none"},
    "data": {"size": 32, "groups": ["HCM"]},  # HCM only: the utility experiment adds its images as HCM
    "train": {"batch_size": 8},
    "params": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}, "width": {"choices": [4]},
               "latent_dim": {"choices": [8]}},
}
LOAD_CHAMPION = f"""
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
images = mlflow.pyfunc.load_model("{CHAMPION}").predict({{"n": 2, "seed": 0}})
print("pyfunc", images.shape, images.dtype)
"""


def user_environment(home: Path) -> dict[str, str]:
    """A new shell's environment for a user whose home is `home`: nothing that points MLflow or hcmbench
    elsewhere, hcmbench's cache where it is by default (~/.cache/hcmbench); torch on one thread."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_DATA", "HCMBENCH_STORAGE",
                        "HCMBENCH_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def home(project: Path) -> Path:
    return project.parent / "home"


def shell(project: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`hcmbench ARGS` (or `python -c CODE ARGS`) in `project`, as its own process."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "hcmbench"]
    return subprocess.run([*command, *args], cwd=project, env=user_environment(home(project)),
                          capture_output=True, text=True, timeout=300)


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


def store_uri(project: Path) -> str:
    return f"sqlite:///{project.resolve() / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def project(split_phantom, tmp_path_factory) -> Path:
    """A new project folder holding a finished one-trial dcgan sweep, made by `hcmbench sweep`."""
    folder = tmp_path_factory.mktemp("user") / "project"
    folder.mkdir()
    home(folder).mkdir()
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    succeeded(shell(folder, "--quiet", "sweep", "--model", MODEL, "--trials", "1", "--space", "space.yaml",
                    "--data", str(split_phantom)))
    return folder


def versions(project: Path) -> list:
    from mlflow import MlflowClient

    uri = store_uri(project)
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = 'hcm-{MODEL}'")


def test_promote_then_generate_evaluate_utility_and_pyfunc_from_new_shells_without_mlflow_variables(
        project, split_phantom):
    from mlflow import MlflowClient

    promoted = succeeded(shell(project, "promote", "--model", MODEL))
    assert f"as {CHAMPION}" in promoted.stdout
    uri = store_uri(project)
    champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(f"hcm-{MODEL}", "champion")

    succeeded(shell(project, "generate", CHAMPION, "-n", "4", "--out", "gen", "--format", "png"))
    assert len(list((project / "gen").glob("sample_*.png"))) == 4 and (project / "gen" / "samples.npz").is_file()
    cache = home(project) / ".cache" / "hcmbench"
    (features,) = cache.glob("features/*.pt")  # the default feature space, trained once by the sweep
    trained = features.stat().st_mtime_ns
    succeeded(shell(project, "evaluate", CHAMPION, "-n", "8"))
    assert "| dcgan" in (project / "eval" / "table.md").read_text()
    assert list(cache.glob("features/*.pt")) == [features] and features.stat().st_mtime_ns == trained  # reused
    assert any(cache.glob("slices/*"))
    succeeded(shell(project, "utility", "--model-uri", CHAMPION, "--data", str(split_phantom), "--tasks", "hcm",
                    "--patients-per-group", "1", "--synthetic-ratio", "1", "--seeds", "1", "--size", "32",
                    "--epochs", "1", "--no-augmentation", "--folds", "2", "--bootstrap", "200", "--out", "util"))
    assert "| hcm | 1 | real+dcgan | 1 |" in (project / "util" / "utility.md").read_text()
    logged, = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("hcmbench-utility").experiment_id])
    assert logged.data.tags["hcmbench.source_run.dcgan"] == champion.run_id  # models:/ resolved in a new shell
    loaded = succeeded(shell(project, store_uri(project), code=LOAD_CHAMPION))
    assert "pyfunc (2, 32, 32) float32" in loaded.stdout

    # nothing outside mlruns/ but what was asked for (no ./mlflow.db), nor beside the project but the home
    assert sorted(p.name for p in project.iterdir()) == ["eval", "gen", "mlruns", "space.yaml", "util"]
    assert sorted(p.name for p in project.parent.iterdir()) == ["home", "project"]


def test_promote_refuses_a_truncated_checkpoint_in_one_line_and_registers_nothing(project):
    checkpoint, = project.glob(f"mlruns/artifacts/hcmbench-{MODEL}/*/artifacts/checkpoints/best.pt")
    intact = checkpoint.read_bytes()
    before = len(versions(project))
    try:
        checkpoint.write_bytes(intact[:len(intact) // 2])
        refused = shell(project, "promote", "--model", MODEL)
    finally:
        checkpoint.write_bytes(intact)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("error: run ") and "checkpoints/best.pt does not load" in refused.stderr
    assert len(versions(project)) == before
