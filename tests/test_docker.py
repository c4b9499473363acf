"""The docker setup: the compose files hold together, start valid hcmbench commands, keep no default secret,
publish nothing beyond loopback unless told to, and put MLflow's basic-auth app in front of the tracking server
on request (a real `mlflow server --app-name basic-auth` with the shipped basic_auth.ini checks the last).

No docker engine runs here; `docker compose config` validates the files when a compose v2 client exists, and
the tests below read the files with compose's interpolation rules otherwise.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

from hcmbench.cli import main
from tests.servers import serve_mlflow

DOCKER = Path(__file__).resolve().parent.parent / "docker"
COMPOSE_FILES = ("compose.yaml", "compose.acdc.yaml", "compose.gpu.yaml", "compose.auth.yaml")
VARIABLE = re.compile(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")
# what a user exports before `docker compose up` (compose.yaml's header, compose.auth.yaml's)
SECRETS = {"POSTGRES_PASSWORD": "pg-" + secrets.token_hex(8), "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": "mlf-" + secrets.token_hex(8),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "ACDC_ROOT": "/data/acdc"}


class Refused(Exception):
    """Compose refuses to start: a ${NAME:?message} variable is unset or empty."""


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation of ${NAME}, ${NAME:-default} (unset or empty: the default) and ${NAME:?message}
    (unset or empty: compose refuses to start with the message)."""
    if isinstance(value, str):
        def one(match: re.Match) -> str:
            name, operator, argument = match.groups()
            if env.get(name):
                return env[name]
            if operator == ":?":
                raise Refused(f"{name}: {argument}")
            return argument if operator == ":-" else ""
        return VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def compose(name: str = "compose.yaml", env: dict[str, str] | None = None) -> dict:
    """A compose file as compose reads it with `env` (default: the secrets set, nothing else)."""
    return interpolate(yaml.safe_load((DOCKER / name).read_text()), SECRETS if env is None else env)


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

    # one PostgreSQL server holds both databases, with the password the user set; everyone shares the study's
    # storage and the tracking server
    password = SECRETS["POSTGRES_PASSWORD"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_DB"] == "optuna" and postgres["POSTGRES_PASSWORD"] == password
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()
    for service in (sweep, worker):
        assert service["environment"]["HCMBENCH_STORAGE"] == f"postgresql://hcmbench:{password}@postgres:5432/optuna"
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["mlflow"]["entrypoint"] == ["mlflow", "server"]
    server = services["mlflow"]["command"]
    assert f"--backend-store-uri=postgresql://hcmbench:{password}@postgres:5432/mlflow" in server
    assert "--serve-artifacts" in server and "--artifacts-destination=/artifacts" in server
    hosts = next(a for a in server if a.startswith("--allowed-hosts="))
    assert "mlflow:5000" in hosts  # the Host header workers send; MLflow refuses hosts it does not allow


def test_compose_refuses_to_start_without_a_database_password():
    without = {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(Refused, match="POSTGRES_PASSWORD"):
        compose("compose.yaml", without)
    with pytest.raises(Refused, match="POSTGRES_PASSWORD"):
        compose("compose.yaml", {**SECRETS, "POSTGRES_PASSWORD": ""})  # set but empty is refused too
    # no file gives a secret a default: every password or key is ${NAME:?…}, and no URL carries one literally
    for name in COMPOSE_FILES:
        text = (DOCKER / name).read_text()
        for variable, operator, _ in VARIABLE.findall(text):
            if re.search("PASSWORD|SECRET|KEY", variable):
                assert operator == ":?", f"{name}: ${{{variable}}} must be required, with no default"
        assert not re.search(r"://[^:/\s]+:[^$/\s]+@", text), f"{name}: a URL with a literal password"


def test_published_ports_bind_to_loopback_unless_a_bind_address_is_set():
    published = {name: service["ports"] for name, service in compose()["services"].items() if "ports" in service}
    assert set(published) == {"postgres", "mlflow"}
    assert published == {"postgres": ["127.0.0.1:5432:5432"], "mlflow": ["127.0.0.1:5000:5000"]}
    lan = compose("compose.yaml", {**SECRETS, "BIND_ADDRESS": "192.168.1.20", "MLFLOW_PORT": "5001"})["services"]
    assert lan["postgres"]["ports"] == ["192.168.1.20:5432:5432"] and lan["mlflow"]["ports"] == ["192.168.1.20:5001:5000"]
    for name in COMPOSE_FILES[1:]:  # the overrides publish nothing of their own
        assert not any("ports" in service for service in compose(name)["services"].values()), name


def test_basic_auth_puts_mlflow_behind_a_login_that_the_sweep_and_workers_pass_through_mlflows_variables():
    services = compose("compose.auth.yaml")["services"]
    assert set(services) == {"mlflow", "sweep", "worker"}
    mlflow = services["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow", "server", "--app-name=basic-auth"]
    environment = mlflow["environment"]
    # the admin is bootstrapped from the same credentials the containers send; nothing has a default
    assert environment["MLFLOW_AUTH_ADMIN_USERNAME"] == SECRETS["MLFLOW_TRACKING_USERNAME"]
    assert environment["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["MLFLOW_TRACKING_PASSWORD"]
    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == SECRETS["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    for service in ("sweep", "worker"):
        assert services[service]["environment"] == {
            "MLFLOW_TRACKING_USERNAME": SECRETS["MLFLOW_TRACKING_USERNAME"],
            "MLFLOW_TRACKING_PASSWORD": SECRETS["MLFLOW_TRACKING_PASSWORD"]}
    for missing in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        with pytest.raises(Refused, match=missing):
            compose("compose.auth.yaml", {k: v for k, v in SECRETS.items() if k != missing})

    # the config file MLflow reads is the one mounted, and keeps its users on their own volume
    mounts = dict(volume.split(":")[:2] for volume in mlflow["volumes"])
    config_path = environment["MLFLOW_AUTH_CONFIG_PATH"]
    source = next(host for host, inside in mounts.items() if inside == config_path)
    config = configparser.ConfigParser()
    config.read(DOCKER / source)
    assert "admin_password" not in config["mlflow"]  # MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD
    database = config["mlflow"]["database_uri"]
    assert database.startswith("sqlite:////") and mounts["mlflow-auth"] in database
    assert "mlflow-auth" in compose("compose.auth.yaml")["volumes"]
    assert "/artifacts" not in database  # the artifacts volume is served to clients; the users are not


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
    assert "mlflow[auth]" in setup["options.extras_require"]["auth"]  # the basic-auth app needs Flask-WTF
    assert 'pip install ".[postgres,auth]"' in dockerfile
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in dockerfile
    for override in ("compose.acdc.yaml", "compose.gpu.yaml"):
        assert set(compose(override)["services"]) == {"sweep", "worker"}
    # a named volume takes the owner of the image's folder: each one the image's user writes is made for it
    made = re.search(r"mkdir -p ([^\\&\n]+)", dockerfile).group(1).split()
    owned = re.search(r"chown hcm ([^\\&\n]+)", dockerfile).group(1).split()
    for name in ("compose.yaml", "compose.auth.yaml"):
        for service in compose(name)["services"].values():
            for volume in service.get("volumes", []):
                source, inside = volume.split(":")[:2]
                if "/" not in source and source != "pgdata":  # a named volume of the hcmbench image
                    assert inside in made and inside in owned, (name, volume)


# -- docker compose itself, when a compose v2 client is installed (CI has none: .ci/run says so) -----------

def compose_client() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


needs_compose = pytest.mark.skipif(
    not compose_client(), reason="NOT RUN: no docker compose v2 client here (`docker compose version` fails), so "
                                 "`docker compose config` did not check the files")


def docker_compose_config(overrides: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    files = [a for f in ["compose.yaml", *overrides] for a in ("-f", str(DOCKER / f))]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "BIND_ADDRESS"}
    return subprocess.run(["docker", "compose", *files, "config", "--quiet"], capture_output=True, text=True,
                          env={**clean, **env})


@pytest.mark.docker
@needs_compose
@pytest.mark.parametrize("overrides", [[], ["compose.acdc.yaml"], ["compose.gpu.yaml"], ["compose.auth.yaml"],
                                       ["compose.acdc.yaml", "compose.gpu.yaml", "compose.auth.yaml"]])
def test_docker_compose_accepts_the_files(overrides):
    result = docker_compose_config(overrides, SECRETS)
    assert result.returncode == 0, result.stderr


@pytest.mark.docker
@needs_compose
def test_docker_compose_refuses_to_start_without_a_database_password():
    result = docker_compose_config([], {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"})
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr
    result = docker_compose_config(["compose.auth.yaml"],
                                   {k: v for k, v in SECRETS.items() if k != "MLFLOW_TRACKING_PASSWORD"})
    assert result.returncode != 0 and "MLFLOW_TRACKING_PASSWORD" in result.stderr


# -- a real MLflow server behind its basic-auth app, configured by the shipped basic_auth.ini -------------

@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`mlflow server` on loopback started as compose.auth.yaml starts it (its entrypoint, docker/basic_auth.ini
    with the users' database moved to a temporary folder), runs in SQLite; yields (url, user, password)."""
    folder = tmp_path_factory.mktemp("basic-auth")
    config = configparser.ConfigParser()
    config.read(DOCKER / "basic_auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{folder / 'basic_auth.db'}"
    with open(folder / "basic_auth.ini", "w") as out:
        config.write(out)
    user, password = "admin", "pw-" + secrets.token_hex(8)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_USERNAME": user, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "OMP_NUM_THREADS": "1"}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    _, *server = yaml.safe_load((DOCKER / "compose.auth.yaml").read_text())["services"]["mlflow"]["entrypoint"]
    with serve_mlflow([*server, "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--serve-artifacts",
                       "--artifacts-destination", str(folder / "artifacts")], folder / "mlflow-server.log", env=env,
                      name="the MLflow server with basic auth") as url:
        yield url, user, password


def status(url: str, credentials: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials is not None:
        request.add_header("Authorization", "Basic " + b64encode(":".join(credentials).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_basic_auth_server_refuses_strangers_and_takes_mlflows_credential_variables(auth_server, monkeypatch,
                                                                                        tmp_path):
    from mlflow.exceptions import MlflowException

    from hcmbench import tracking

    url, user, password = auth_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(search) == 401 and status(f"{url}/") == 401  # the API and the UI
    assert status(search, (user, "not-" + password)) == 401
    assert status(search, (user, password)) == 200

    # hcmbench's own client, as a worker uses it: without the variables refused, with them it logs a run
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="401"):
        tracking.ensure_experiment(tracking.client(url), "dcgan")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    mlflow_client = tracking.client(url)
    experiment = tracking.ensure_experiment(mlflow_client, "dcgan")
    run = mlflow_client.create_run(experiment, run_name="through-basic-auth")
    mlflow_client.log_metric(run.info.run_id, "val/score", 0.25)
    (tmp_path / "note.txt").write_text("uploaded through the server")
    mlflow_client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))  # the artifact proxy is guarded too
    mlflow_client.set_terminated(run.info.run_id)

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    fetched = f"{url}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"
    assert status(fetched) == 401 and status(fetched, (user, password)) == 200
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    logged = tracking.client(url).get_run(run.info.run_id)
    assert logged.data.metrics == {"val/score": 0.25}
    assert [a.path for a in tracking.client(url).list_artifacts(run.info.run_id)] == ["note.txt"]
