"""`hcmbench dashboard` as a user runs it: optuna-dashboard on the sweeps' storage, on loopback only, and a
one-line error without the optional extra or without studies. The served test needs optuna-dashboard (the
`dashboard` and `test` extras)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_EXTRA = ("import sys; sys.modules['optuna_dashboard'] = None  # as if it were not installed\n"
                 "from hcmbench.cli import main; main(sys.argv[1:], prog_name='hcmbench')")


def environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HCMBENCH_STORAGE", "MLFLOW_TRACKING_URI")}
    env.update(HCMBENCH_CACHE=str(cache), PYTHONPATH=str(ROOT))
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (Linux's /proc/net/tcp: IPv4 only)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, at = local.split(":")
        if state == "0A" and int(at, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def fetch(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.load(response)


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads the listening sockets from /proc (Linux)")
def test_dashboard_serves_the_sweeps_studies_on_loopback_only(tmp_path):
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra: pip install -e '.[dashboard]'")
    project = tmp_path / "project"
    (project / "mlruns").mkdir(parents=True)
    study = optuna.create_study(study_name="hcmbench-dcgan", storage=f"sqlite:///{project / 'mlruns' / 'optuna.db'}")
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions={
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}, value=38.2))
    port = free_port()
    dashboard = subprocess.Popen([sys.executable, "-m", "hcmbench", "dashboard", "--port", str(port)], cwd=project,
                                 env=environment(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
    try:
        deadline = time.monotonic() + 120
        while not listening_addresses(port):
            assert dashboard.poll() is None, dashboard.communicate()
            assert time.monotonic() < deadline, "no dashboard within 120 s"
            time.sleep(0.2)
        assert listening_addresses(port) == {"127.0.0.1"}
        studies = fetch(port, "/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["hcmbench-dcgan"]
        detail = fetch(port, f"/api/studies/{studies[0]['study_id']}")
        assert [trial["values"] for trial in detail["best_trials"]] == [[38.2]]
    finally:
        dashboard.send_signal(signal.SIGINT)  # Ctrl-C
        assert dashboard.wait(timeout=30) == 0


def test_dashboard_without_the_extra_says_how_to_install_it_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, "dashboard"], cwd=tmp_path,
                          env=environment(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("error: hcmbench dashboard needs optuna-dashboard, an optional extra: "
                                   "pip install 'hcmbench[dashboard]'")


def test_dashboard_without_studies_says_so_in_one_line_and_creates_nothing(tmp_path):
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra: pip install -e '.[dashboard]'")
    done = subprocess.run([sys.executable, "-m", "hcmbench", "dashboard"], cwd=tmp_path,
                          env=environment(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no studies at sqlite:///") and "run `hcmbench sweep` first" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()
