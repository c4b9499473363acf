"""SLOW-ish (10–25 s on two busy cores): two `hcmbench sweep` processes started at once in a fresh folder
both start. Each creates the MLflow store and the Optuna storage (SQLite under mlruns/) if they are
missing; without a lock, MLflow's schema migrations of one process ran into the other's ("Online
migration expected to match one row", "duplicate column name") and one of them crashed.

The processes are real ones, lined up after their slow imports so that they reach the stores together,
and each opens the stores as `sweep.run.run_sweep` does (a whole sweep would first train the default
feature space, minutes here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2
FIRST_START = """
import sys, time
from pathlib import Path
import mlflow, optuna, sqlalchemy  # the slow imports, done before the start line
from hcmbench import tracking
from hcmbench.sweep.coordination import default_storage, open_study
from hcmbench.sweep.settings import Heartbeat

Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.002)
study, _ = open_study(default_storage(), "hcmbench-dcgan", "minimize", Heartbeat())
print(study.study_name, tracking.ensure_experiment(tracking.client(), "dcgan"))
"""


def test_sweeps_started_at_once_in_a_fresh_folder_both_start(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_STORAGE")}
    env.update(HCMBENCH_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_START, str(flag), str(go)], cwd=project, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for flag in ready]
    try:
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(0.05)
        go.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert len({out for _, out, _ in results}) == 1  # one study, one experiment
