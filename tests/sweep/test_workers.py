"""Many workers, one study: a study-wide trial total, each trial run once, a killed worker's trial retried.

The multi-process tests run real `hcmbench` processes against SQLite, and against a real PostgreSQL
server with a real MLflow tracking server when HCMBENCH_TEST_PG_URL points at one (`.ci/run` starts one
on loopback; `source .ci/postgres.sh` does it by hand).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.errors import HcmbenchError
from hcmbench.sweep import Heartbeat, StudySettings, TrialEpoch, load_space, run_sweep, run_worker
from tests.servers import serve_mlflow

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "STOPPED": "KILLED"}


def write_space(folder: Path, step_seconds: float = 0.0, epochs: int = 3) -> Path:
    """The toy model scored by its validation loss (no feature space), each step `step_seconds` long."""
    space = {
        "model": "toy",
        "objective": {"metric": "val_score"},
        "budget": {"epochs": epochs, "pruner": "median", "startup_trials": 2, "warmup_epochs": 1},
        "data": {"size": 32, "groups": ["HCM"]},
        "train": {"batch_size": 8, "sample_every": 0},
        "params": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "noise": {"choices": [0.05, 0.1]},
                   "step_seconds": {"choices": [step_seconds]}},
    }
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def hcmbench(args: list[str], cwd: Path) -> subprocess.Popen:
    """`hcmbench ARGS` in a process of its own (one thread), with the toy model registered."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code = ("import faulthandler, signal; faulthandler.register(signal.SIGUSR1); "  # stacks on demand, for hangs
            "import tests.toy_model; from hcmbench.cli import main; main()")
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)  # where it hangs goes into its output
        time.sleep(2)
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{process.args[3:]} did not finish in {timeout} s:\n{output}")
    assert process.returncode == 0, output
    return output


def trial_runs(tracking_uri: str, study: str) -> tuple[list, dict[int, list]]:
    """(the study's parent runs, {trial number: its MLflow runs})."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("hcmbench-toy")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hcmbench.study` = '{study}'")
    parents = [r for r in runs if r.data.tags["hcmbench.role"] == "study"]
    trials: dict[int, list] = {}
    for run in runs:
        if run.data.tags["hcmbench.role"] == "trial":
            trials.setdefault(int(run.data.tags["hcmbench.trial"]), []).append(run)
    return parents, trials


def check_study(storage: str, tracking_uri: str, name: str, total: int) -> list:
    """Every trial ended once, with one MLflow run of the matching status; the counted ones make `total`."""
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    counted = [t for t in trials if t.number not in retried]
    assert len(counted) == total
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in counted), [t.state.name for t in counted]
    assert all(t.state.name == "FAIL" for t in trials if t.number in retried)
    parents, runs = trial_runs(tracking_uri, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(runs) == [t.number for t in trials]  # a run for every trial, the retried ones too
    for t in trials:
        (run,) = runs[t.number]  # ... and one only: no trial ran twice
        state = run.data.tags["hcmbench.state"]  # an interrupted trial failed in Optuna, was stopped in MLflow
        assert state == t.state.name or (state, t.state.name) == ("STOPPED", "FAIL")
        assert run.info.status == STATUS[state]
        assert run.data.tags["hcmbench.worker"] == t.user_attrs["worker"]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return trials


# -- in one process --------------------------------------------------------------------------------------


def test_the_trial_count_is_a_study_total_and_a_worker_joins_a_finished_study(split_phantom, workdir):
    space = load_space("toy", write_space(workdir))
    first = run_sweep("toy", 2, space, study_name="total", data_root=split_phantom)
    assert (first.trials_run, first.total, first.finished) == (2, 2, True)
    again = run_sweep("toy", 2, space, study_name="total", data_root=split_phantom)
    assert again.trials_run == 0 and again.finished  # the same command on a complete study runs nothing
    joined = run_worker("total", first.storage)
    assert joined.trials_run == 0 and joined.finished and joined.best_number == first.best_number
    more = run_sweep("toy", 3, space, study_name="total", data_root=split_phantom)
    assert more.trials_run == 1 and more.total == 3
    settings = StudySettings.of(optuna.load_study(study_name="total", storage=first.storage))
    assert settings.trials == 3 and settings.model == "toy" and settings.data == str(split_phantom.resolve())
    assert settings.parent_run == first.parent_run_id == more.parent_run_id


def test_an_interrupted_trial_is_queued_again_and_the_same_command_finishes_the_study(split_phantom, workdir):
    space = load_space("toy", write_space(workdir))

    def interrupt(event):
        if isinstance(event, TrialEpoch) and event.number == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep("toy", 3, space, study_name="ctrl-c", data_root=split_phantom, display=interrupt)
    storage = f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"
    trials = optuna.load_study(study_name="ctrl-c", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[2].params == trials[1].params  # the interrupted trial, queued with its parameters
    parents, runs = trial_runs(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}", "ctrl-c")
    assert parents[0].info.status == "KILLED" and runs[1][0].info.status == "KILLED"
    assert "interrupted" in runs[1][0].data.tags["hcmbench.reason"]

    result = run_sweep("toy", 3, space, study_name="ctrl-c", data_root=split_phantom)
    assert result.trials_run == 2 and result.finished
    done = check_study(storage, f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}", "ctrl-c", 3)
    assert done[2].params == done[1].params and done[2].system_attrs["failed_trial"] == 1
    assert len(done) == 4


def test_a_study_keeps_its_settings(split_phantom, workdir):
    space = load_space("toy", write_space(workdir))
    run_sweep("toy", 1, space, study_name="fixed", data_root=split_phantom)
    with pytest.raises(HcmbenchError, match="created with another budget: continue it with the same settings"):
        run_sweep("toy", 2, space, study_name="fixed", data_root=split_phantom, epochs=5)
    other = load_space("toy", write_space(workdir, epochs=4))
    with pytest.raises(HcmbenchError, match="created with another space"):
        run_sweep("toy", 2, other, study_name="fixed", data_root=split_phantom)


def test_worker_errors_are_one_line(split_phantom, workdir):
    runner = CliRunner()
    missing = runner.invoke(main, ["worker", "--study", "nope", "--wait", "0.5"])
    assert missing.exit_code == 2 and missing.output.startswith("error: no study 'nope' at sqlite:")
    bad = runner.invoke(main, ["worker", "--study", "s", "--storage", "redis://host/0"])
    assert bad.exit_code == 2 and "use a sqlite:///FILE, postgresql://… or mysql://… URL" in bad.output
    beats = runner.invoke(main, ["worker", "--study", "s", "--heartbeat-interval", "10", "--grace-period", "5"])
    assert beats.exit_code == 2 and "grace > interval" in beats.output
    unreachable = runner.invoke(main, ["worker", "--study", "s", "--storage",
                                       "postgresql://nobody:secret@127.0.0.1:1/optuna"])
    assert unreachable.exit_code == 2 and "cannot open the Optuna study 's'" in unreachable.output
    assert "secret" not in unreachable.output  # passwords are masked in messages

    space = load_space("toy", write_space(workdir))
    made = run_sweep("toy", 1, space, study_name="moved", data_root=split_phantom)
    study = optuna.load_study(study_name="moved", storage=made.storage)
    settings = StudySettings.of(study)
    StudySettings(**{**settings.__dict__, "data": str(workdir / "elsewhere")}).store(study)
    with pytest.raises(HcmbenchError, match="not on this machine: pass --data"):
        run_worker("moved", made.storage)
    StudySettings(**{**settings.__dict__, "tracking_uri": f"sqlite:///{workdir / 'gone.db'}"}).store(study)
    with pytest.raises(HcmbenchError, match="a file on the machine that made it: pass --tracking-uri"):
        run_worker("moved", made.storage)


def test_heartbeat_settings_are_checked():
    with pytest.raises(HcmbenchError, match="grace > interval"):
        Heartbeat(interval=60, grace=60)
    with pytest.raises(HcmbenchError, match="max_retry ≥ 0"):
        Heartbeat(max_retry=-1)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("max_retry", [0, 2])
def test_a_stale_trial_is_queued_again_up_to_max_retry_times(tmp_path, max_retry):
    """A one-trial study whose every claimed trial goes silent (its heartbeat aged in the database, as if its
    worker had died): the trial fails and is queued again with its parameters max_retry times, then fails
    for good, and the study has nothing left to claim."""
    import sqlalchemy

    from hcmbench.sweep.coordination import StudyLock, claim, rdb_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = rdb_storage(url, Heartbeat(interval=1, grace=2, max_retry=max_retry))
    study = optuna.create_study(study_name="stale", storage=storage)
    lock, study_id = StudyLock(url, "stale"), storage.get_study_id_from_name("stale")
    engine = sqlalchemy.create_engine(url)
    for _ in range(max_retry + 3):  # more rounds than the retries allow
        claimed = claim(study, storage, study_id, lock, total=1, seed=0, worker="w")
        if claimed is None:
            break
        trial, beats = claimed
        trial.suggest_float("x", 0, 1)
        beats.close()
        with engine.begin() as connection:  # silent for an hour
            connection.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')"))
        optuna.storages.fail_stale_trials(study)
    engine.dispose()
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL"] * (max_retry + 1)
    assert trials[-1].system_attrs.get("retry_history", []) == list(range(max_retry))
    assert len({t.params["x"] for t in trials}) == 1  # every retry with the first one's parameters
    assert claim(study, storage, study_id, lock, total=1, seed=0, worker="w") is None


# -- worker processes -------------------------------------------------------------------------------------


def running_trial(process: subprocess.Popen, database: Path, timeout: float = 180) -> int:
    """The number of the first trial that `process` runs and has reported an epoch of, read from the Optuna
    SQLite file read-only (opening it through Optuna would create its tables, racing the processes)."""
    import sqlite3

    query = """SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id
               WHERE t.state = 'RUNNING' AND a.key = 'worker' AND a.value_json LIKE ?
               AND EXISTS (SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)"""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline and process.poll() is None, "the process never started a trial"
        time.sleep(0.2)
        if not database.exists():
            continue
        try:
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
                found = db.execute(query, (f'%:{process.pid}"',)).fetchone()
        except sqlite3.OperationalError:  # tables not made yet, or locked a while
            continue
        if found is not None:
            return found[0]


def test_workers_on_sqlite_share_one_study_and_take_over_a_killed_workers_trial(split_phantom, tmp_path):
    """The single-machine setup, on the default SQLite stores: a sweep and two workers in terminals of their
    own. One worker is killed (SIGKILL) in the middle of a trial: a surviving process fails that trial once
    its heartbeats stop, runs it again with its parameters, and the study completes."""
    space = write_space(tmp_path, step_seconds=0.2)
    worker = hcmbench(["worker", "--study", "local", "--wait", "120", *HEARTBEAT], tmp_path)
    victim = hcmbench(["worker", "--study", "local", "--wait", "120", *HEARTBEAT], tmp_path)
    sweep = hcmbench(["sweep", "--model", "toy", "--trials", "6", "--space", str(space), "--study", "local",
                      "--data", str(split_phantom), *HEARTBEAT], tmp_path)
    storage, tracking = (f"sqlite:///{tmp_path / 'mlruns' / name}" for name in ("optuna.db", "mlflow.db"))
    killed_number = running_trial(victim, tmp_path / "mlruns" / "optuna.db")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outputs = finish(sweep), finish(worker)
    trials = check_study(storage, tracking, "local", 6)
    killed = next(t for t in trials if t.number == killed_number)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed_number)
    assert killed.state.name == "FAIL" and retry.params == killed.params and retry.state.name in ("COMPLETE", "PRUNED")
    _, runs = trial_runs(tracking, "local")
    assert "stopped sending heartbeats" in runs[killed_number][0].data.tags["hcmbench.reason"]
    counted = [t for t in trials if t.state.name != "FAIL"]
    for process in (sweep, worker):  # both survivors ran trials of the study
        assert any(t.user_attrs["worker"].endswith(f":{process.pid}") for t in counted), process.args[3:]
    assert "all its trials have ended" in outputs[0] + outputs[1]


# A one-trial dcgan study small enough for a test, scored by the model's own validation score; each trial
# trains for 3 s of wall-clock time, so that a signal finds it running.
CTRL_C_SPACE = {
    "model": "dcgan",
    "objective": {"metric": "val_score"},
    "budget": {"minutes": 0.05, "tick_kimg": 0.05, "pruner": "none"},
    "data": {"size": 32, "groups": ["HCM"]},
    "train": {"batch_size": 8, "sample_every": 0, "patience": 1000},
    "params": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}, "width": {"choices": [4]},
               "latent_dim": {"choices": [8]}},
}


def test_ctrl_c_to_a_sweep_process_ends_it_in_one_line_and_the_same_command_resumes(split_phantom, tmp_path):
    """A real SIGINT, as Ctrl-C sends, to `python -m hcmbench sweep` in the middle of a trial, in a shell with no
    MLflow or hcmbench variables: exit status 130, one line and no traceback, no MLflow run left RUNNING; the
    same command then runs the interrupted trial again, with its parameters, and ends the study."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(CTRL_C_SPACE))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_DATA", "HCMBENCH_STORAGE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "hcmbench", "sweep", "--model", "dcgan", "--trials", "1", "--space", "space.yaml",
               "--data", str(split_phantom)]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    running_trial(sweep, tmp_path / "mlruns" / "optuna.db")
    sweep.send_signal(signal.SIGINT)
    try:
        stdout, stderr = sweep.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        sweep.kill()
        pytest.fail(f"the sweep did not stop on SIGINT:\n{sweep.communicate()}")
    assert sweep.returncode == 130, stdout + stderr
    assert stderr.splitlines()[-1] == ("stopped: the running trial was ended and queued again; run the same command "
                                       "to continue"), stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stdout + stderr
    storage, tracking = (f"sqlite:///{tmp_path / 'mlruns' / name}" for name in ("optuna.db", "mlflow.db"))
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("hcmbench-dcgan").experiment_id
    assert sorted(r.info.status for r in client.search_runs([experiment])) == ["KILLED", "KILLED"]  # parent, trial
    study = optuna.load_study(study_name="hcmbench-dcgan", storage=storage)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING"]

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all its trials have ended" in again.stderr and "Best: trial 1" in again.stdout
    interrupted, resumed = optuna.load_study(study_name="hcmbench-dcgan", storage=storage).get_trials()
    assert resumed.state.name == "COMPLETE" and resumed.system_attrs["failed_trial"] == 0
    assert resumed.params == interrupted.params
    runs = client.search_runs([experiment])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED"]  # parent, the retry; trial 0


@pytest.fixture(scope="module")
def postgres():
    """Two fresh databases (Optuna's, MLflow's) on the server at HCMBENCH_TEST_PG_URL, dropped afterwards."""
    url = os.environ.get("HCMBENCH_TEST_PG_URL")
    if not url:
        pytest.skip("HCMBENCH_TEST_PG_URL is not set (source .ci/postgres.sh to start a server)")
    import sqlalchemy
    from sqlalchemy.engine import make_url

    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    names = {kind: f"hcmbench_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("optuna", "mlflow")}
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    base = make_url(url)
    yield {kind: base.set(database=name).render_as_string(hide_password=False) for kind, name in names.items()}
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server on loopback: runs in PostgreSQL, artifacts on disk, served through it."""
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    with serve_mlflow(["server", "--backend-store-uri", postgres["mlflow"], "--artifacts-destination", str(artifacts),
                       "--serve-artifacts"], artifacts.parent / "mlflow-server.log") as url:
        yield url


def test_two_workers_run_a_six_trial_study_on_postgresql(split_phantom, tmp_path, postgres, mlflow_server):
    space = write_space(tmp_path, step_seconds=0.1)
    sweep = hcmbench(["sweep", "--model", "toy", "--trials", "6", "--space", str(space), "--study", "pg-two",
                      "--data", str(split_phantom), "--storage", postgres["optuna"], "--tracking-uri", mlflow_server,
                      *HEARTBEAT], tmp_path)
    # the worker learns the tracking server from the study
    worker = hcmbench(["worker", "--study", "pg-two", "--storage", postgres["optuna"], "--wait", "120", *HEARTBEAT],
                      tmp_path)
    finish(sweep), finish(worker)
    trials = check_study(postgres["optuna"], mlflow_server, "pg-two", 6)
    assert len(trials) == 6 and len({t.user_attrs["worker"] for t in trials}) == 2  # both did some
    parents, runs = trial_runs(mlflow_server, "pg-two")
    complete = next(t for t in trials if t.state.name == "COMPLETE")
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(runs[complete.number][0].info.run_id,
                                                                            "checkpoints")}
    assert artifacts == {"checkpoints/best.pt"}  # uploaded through the server
    assert not (tmp_path / "mlruns").exists()  # nothing tracked locally


def test_a_killed_worker_trial_is_retried_and_the_study_completes(split_phantom, tmp_path, postgres, mlflow_server):
    space = write_space(tmp_path, step_seconds=0.3)
    common = ["--storage", postgres["optuna"], "--tracking-uri", mlflow_server, *HEARTBEAT]
    sweep = hcmbench(["sweep", "--model", "toy", "--trials", "6", "--space", str(space), "--study", "pg-kill",
                      "--data", str(split_phantom), *common], tmp_path)
    worker = hcmbench(["worker", "--study", "pg-kill", "--wait", "120", *common], tmp_path)
    victim, deadline = None, time.monotonic() + 180
    while victim is None:  # the worker's first trial, once it has reported an epoch
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never started a trial"
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="pg-kill", storage=postgres["optuna"]).get_trials()
        except KeyError:
            continue
        victim = next((t.number for t in trials if t.state.name == "RUNNING" and t.intermediate_values
                       and t.user_attrs.get("worker", "").endswith(f":{worker.pid}")), None)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    output = finish(sweep)
    trials = check_study(postgres["optuna"], mlflow_server, "pg-kill", 6)
    killed = next(t for t in trials if t.number == victim)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim)
    assert killed.state.name == "FAIL" and retry.params == killed.params
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.user_attrs["worker"].endswith(f":{sweep.pid}")
    _, runs = trial_runs(mlflow_server, "pg-kill")
    assert "stopped sending heartbeats" in runs[victim][0].data.tags["hcmbench.reason"]
    assert "all its trials have ended" in output


def test_a_process_that_loses_the_race_to_create_the_sqlite_tables_tries_again():
    from sqlalchemy.exc import OperationalError

    from hcmbench.sweep.coordination import retrying

    calls = []

    def make():
        calls.append(1)
        if len(calls) == 1:  # what SQLite says to the second of two processes creating a new database
            raise OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return "storage"

    assert retrying(make) == "storage" and len(calls) == 2
    locked = lambda: (_ for _ in ()).throw(OperationalError("SELECT", {}, Exception("unable to open database file")))  # noqa: E731
    with pytest.raises(OperationalError, match="unable to open"):  # other operational errors are not a race
        retrying(locked)
