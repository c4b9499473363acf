"""The docker setup: the compose files hold together and start valid hcmbench commands.

No docker engine runs here; `docker compose config` validates the files when the compose client exists.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hcmbench.cli import main

DOCKER = Path(__file__).resolve().parent.parent / "docker"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?(?::\?[^}]*)?\}")


def with_defaults(value):
    """Compose's ${NAME:-default} interpolation, with every variable unset."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    return value


def compose(name: str = "compose.yaml") -> dict:
    return with_defaults(yaml.safe_load((DOCKER / name).read_text()))


def test_compose_runs_postgres_mlflow_a_sweep_and_scalable_workers():
    services = compose()["services"]
    assert set(services) == {"postgres", "mlflow", "sweep", "worker"}
    worker, sweep = services["worker"], services["sweep"]
    assert "container_name" not in worker and "ports" not in worker  # else --scale worker=4 would clash

    # the commands are valid hcmbench invocations, and the workers join the study the sweep makes
    for service in (sweep, worker):
        name, *args = service["command"]
        main.commands[name].make_context(name, list(args))
    model = sweep["command"][sweep["command"].index("--model") + 1]
    assert worker["command"][worker["command"].index("--study") + 1] == f"hcmbench-{model}"

    # one PostgreSQL server holds both databases; everyone shares the study's storage and the tracking server
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_DB"] == "optuna"
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()
    for service in (sweep, worker):
        assert service["environment"]["HCMBENCH_STORAGE"] == (
            f"postgresql://hcmbench:{postgres['POSTGRES_PASSWORD']}@postgres:5432/optuna")
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    server = services["mlflow"]["command"]
    assert "--backend-store-uri=postgresql://hcmbench:hcmbench@postgres:5432/mlflow" in server
    assert "--serve-artifacts" in server and "--artifacts-destination=/artifacts" in server
    hosts = next(a for a in server if a.startswith("--allowed-hosts="))
    assert "mlflow:5000" in hosts  # the Host header workers send; MLflow refuses hosts it does not allow


def test_the_image_installs_what_the_containers_run():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    repo = DOCKER.parent
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((repo / s).exists() for s in sources), line
    setup = configparser.ConfigParser()
    setup.read(repo / "setup.cfg")
    assert "psycopg" in setup["options.extras_require"]["postgres"]
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in dockerfile
    for override in ("compose.acdc.yaml", "compose.gpu.yaml"):
        assert set(compose(override)["services"]) == {"sweep", "worker"}


@pytest.mark.docker
@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0, reason="no docker compose client")
@pytest.mark.parametrize("overrides", [[], ["compose.acdc.yaml"], ["compose.gpu.yaml"]])
def test_docker_compose_accepts_the_files(overrides, tmp_path):
    files = [a for f in ["compose.yaml", *overrides] for a in ("-f", str(DOCKER / f))]
    env = {**os.environ, "ACDC_ROOT": str(tmp_path)}
    result = subprocess.run(["docker", "compose", *files, "config", "--quiet"], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
