"""`hcmbench promote` with nothing to promote says so in one plain line: no MLflow warning (the pyfunc model's
type-hint advice, in colour) before it. Run as its own process, as a user runs it: a warning printed at import
or by the warnings module at exit is only seen that way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_promote_with_no_runs_prints_one_plain_line(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_STORAGE")}
    env.update(HCMBENCH_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "hcmbench", "promote", "--model", "dcgan"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: no runs of dcgan at sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db: "
        "run `hcmbench sweep --model dcgan` first"], result.stderr
