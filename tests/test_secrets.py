"""No secret kept in clear: a password in a tracking or storage URL is masked in the study's attributes, in
failure reasons and in the CLI's messages, and a worker still reaches the tracking store with its own."""

from __future__ import annotations

import click
import optuna
import pytest
from click.testing import CliRunner

from hcmbench.cli.app import Group
from hcmbench.errors import HcmbenchError
from hcmbench.redact import has_masked_password, mask_passwords
from hcmbench.sweep import StudySettings

PASSWORD = "Tr0ub4dor-s3cret"
TRACKED = f"postgresql://hcm:{PASSWORD}@db.example:5432/mlflow"
STORAGE = f"postgresql://hcm:{PASSWORD}@db.example:5432/optuna"


def settings(tracking_uri: str) -> StudySettings:
    return StudySettings("toy", {"model": "toy"}, "toy.yaml", 4, {"epochs": 1}, 0, "", tracking_uri, "run-id")


def test_urls_and_messages_lose_their_passwords_and_keep_the_rest():
    assert mask_passwords(TRACKED) == "postgresql://hcm:***@db.example:5432/mlflow"
    assert mask_passwords("http://admin:p%40ss@mlflow.lan:5000/") == "http://admin:***@mlflow.lan:5000/"
    assert mask_passwords("postgresql+psycopg://u:p@ss@h/db?sslmode=require") == (
        "postgresql+psycopg://u:***@h/db?sslmode=require")  # an unescaped "@" in the password goes too
    message = f"API request to {TRACKED}/x failed; retried http://u:pw@h:1 and sqlite:///mlruns/optuna.db"
    assert mask_passwords(message) == ("API request to postgresql://hcm:***@db.example:5432/mlflow/x failed; "
                                       "retried http://u:***@h:1 and sqlite:///mlruns/optuna.db")
    for unchanged in ("http://mlflow:5000", "http://127.0.0.1:5000/path?x=a@b", "postgresql://hcm@db/optuna",
                      "sqlite:////abs/mlruns/mlflow.db", "no url here: a:b@c"):
        assert mask_passwords(unchanged) == unchanged
    assert has_masked_password(mask_passwords(TRACKED)) and not has_masked_password(TRACKED)


def test_a_study_keeps_its_tracking_uri_without_the_password(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    settings(TRACKED).store(study)
    stored = StudySettings.of(optuna.load_study(study_name="s", storage=storage))
    assert stored.tracking_uri == "postgresql://hcm:***@db.example:5432/mlflow"
    assert stored.model == "toy" and stored.parent_run == "run-id"  # the rest as it was
    assert PASSWORD.encode() not in (tmp_path / "optuna.db").read_bytes()  # nowhere in the storage's file


def test_a_worker_brings_the_password_the_study_does_not_keep(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    stored = settings(mask_passwords(TRACKED))
    # the tracking database on the storage's server, as its user: the storage's password, which the worker has
    assert stored.tracking_uri_for("s", STORAGE) == TRACKED
    # another server, or another user: the worker must say where, in one line that shows no password
    for storage in (STORAGE.replace("db.example", "other.example"), STORAGE.replace("hcm:", "someone:"),
                    "sqlite:///mlruns/optuna.db"):
        with pytest.raises(HcmbenchError, match="whose password the study does not keep: pass --tracking-uri"):
            stored.tracking_uri_for("s", storage)
    # an MLflow server: the worker's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, as MLflow reads them
    server = settings(mask_passwords("http://admin:pw-123456789@mlflow.lan:5000"))
    with pytest.raises(HcmbenchError, match="or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        server.tracking_uri_for("s", STORAGE)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-123456789")
    assert server.tracking_uri_for("s", STORAGE) == "http://mlflow.lan:5000"
    # no password in it: as stored
    assert settings("http://mlflow:5000").tracking_uri_for("s", STORAGE) == "http://mlflow:5000"


def test_the_cli_prints_no_password_in_its_one_line_errors():
    @click.group(cls=Group)
    def app():
        pass

    @app.command()
    def fail():
        raise HcmbenchError(f"no runs of dcgan at {TRACKED}: run `hcmbench sweep --model dcgan` first")

    result = CliRunner().invoke(app, ["fail"])
    assert result.exit_code == 2
    assert result.output == ("error: no runs of dcgan at postgresql://hcm:***@db.example:5432/mlflow: "
                             "run `hcmbench sweep --model dcgan` first\n")
