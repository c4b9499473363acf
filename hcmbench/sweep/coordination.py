"""Many workers, one study: the Optuna storage, claiming trials, heartbeats, and the study lock.

Why a lock. A study has a study-wide total of trials (`hcmbench sweep --trials 20`), and any number
of `hcmbench worker` processes on any number of machines run them. Optuna's own means do not keep
that total exact: `study.optimize(n_trials=N)` counts the trials of one process, and
`MaxTrialsCallback` checks the count only after a trial has ended, so workers that ask for a trial at
the same moment all see room for one more and the study overshoots by up to one trial per worker.
Counting the study's trials and asking for the next one must therefore be one step that one process
takes at a time: `claim` takes it under `StudyLock`, a PostgreSQL advisory lock (MySQL: GET_LOCK) on
its own connection, or a file lock beside a SQLite file. A dead process's lock goes with it.

Dead workers. A running trial records a heartbeat every `Heartbeat.interval` seconds (`Heartbeats`,
a background thread); one silent for `Heartbeat.grace` seconds is failed by the next worker that looks
(`optuna.storages.fail_stale_trials`) and queued again with the same parameters, which `claim` then
takes first. A trial queued again keeps the failed one in its `retry_history`, so the failed one no
longer counts (`superseded`, `ended`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from hcmbench.atomic import file_lock, output_folder
from hcmbench.errors import HcmbenchError
from hcmbench.sweep.settings import Heartbeat


def default_storage() -> str:
    """sqlite:///<absolute path of ./mlruns>/optuna.db (absolute, like the MLflow store)."""
    from hcmbench.tracking import STORE_DIR

    return f"sqlite:///{(STORE_DIR / 'optuna.db').resolve()}"


def display_url(url: str) -> str:
    """A database URL with its password masked, for messages and tags."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def rdb_storage(url: str, heartbeat: Heartbeat) -> Any:
    """Optuna's RDB storage with heartbeats, and a stale trial queued again with the same parameters.

    A SQLite storage is opened (and, the first time, created) under a file lock beside its database, the
    study lock's file: processes started together in a new folder then create Optuna's tables one after
    the other instead of racing (`retrying` covers the other databases)."""
    if url == default_storage():
        output_folder(Path(make_url(url).database).parent)
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise HcmbenchError(f"storage {display_url(url)}: use a sqlite:///FILE, postgresql://… or mysql://… URL")
    database = make_url(url).database if url.startswith("sqlite:") else None
    lock = file_lock(f"{database}.lock") if database and database != ":memory:" and Path(database).parent.is_dir() \
        else contextlib.nullcontext()  # no folder: Optuna says so, as for any database it cannot open
    with warnings.catch_warnings(), lock:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=None if url.startswith("sqlite:") else {"pool_pre_ping": True},
            heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
            heartbeat_stale_trial_callback=retry)


def retrying(make: Callable[[], Any], attempts: int = 5) -> Any:
    """`make()`, tried again when it loses a race: processes that open a new database at the same moment
    all create Optuna's tables, and all but one fail on the duplicates (PostgreSQL: an integrity or
    programming error; SQLite: an operational error, "table … already exists")."""
    for attempt in range(attempts):
        try:
            return make()
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            lost_race = not isinstance(exc, OperationalError) or "already exists" in str(exc)
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def open_study(url: str, name: str, direction: str | None, heartbeat: Heartbeat) -> tuple[Any, Any]:
    """(study, its storage) for the study `name` at `url`: created (to `direction`) when missing, or
    loaded when `direction` is None."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported with their reasons by the display
    try:
        storage = retrying(lambda: rdb_storage(url, heartbeat))
        if direction is None:
            return optuna.load_study(study_name=name, storage=storage), storage
        return optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                   direction=direction), storage
    except HcmbenchError:
        raise
    except KeyError:
        raise HcmbenchError(f"no study {name!r} at {display_url(url)}: create it with `hcmbench sweep`") from None
    except ModuleNotFoundError as exc:
        raise HcmbenchError(f"storage {display_url(url)} needs the {exc.name} package: "
                            "pip install 'hcmbench[postgres]'") from None
    except Exception as exc:  # bad URL, unreachable database, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HcmbenchError(f"cannot open the Optuna study {name!r} at {display_url(url)}: {first}") from None


class StudyLock:
    """One process at a time decides whether the study has budget left and claims a trial (see the
    module's docstring for why): a PostgreSQL advisory lock (MySQL: GET_LOCK) held on its own
    connection, or a file lock beside a SQLite file. A dead process's lock goes with it."""

    def __init__(self, url: str, study: str) -> None:
        parsed = make_url(url)
        self.backend, self.name = parsed.get_backend_name(), f"hcmbench:{study}"
        self.key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
        self.engine = self.connection = self.file = None
        self.path = Path(f"{parsed.database}.lock") if self.backend == "sqlite" and parsed.database not in (
            None, "", ":memory:") else None
        if self.backend != "sqlite":
            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool)

    def __enter__(self) -> "StudyLock":
        if self.path is not None:
            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.engine is not None:
            self.connection = self.engine.connect()
            statement = ("SELECT pg_advisory_lock(:key)" if self.backend == "postgresql"
                         else "SELECT GET_LOCK(:name, -1)")
            self.connection.execute(sqlalchemy.text(statement), {"key": self.key, "name": self.name})
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the flock
            self.file = None
        if self.connection is not None:
            statement = ("SELECT pg_advisory_unlock(:key)" if self.backend == "postgresql"
                         else "SELECT RELEASE_LOCK(:name)")
            try:
                self.connection.execute(sqlalchemy.text(statement), {"key": self.key, "name": self.name})
            finally:
                self.connection.close()  # a session lock also ends with its connection
                self.connection = None


class Heartbeats:
    """Records a running trial's heartbeat now, then every `interval` seconds from a background thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def start(self) -> "Heartbeats":
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup: the next beat tries again, the grace period covers a few
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def superseded(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that were queued again (their retries carry them in `retry_history`)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def ended(trials: list[Any]) -> int:
    """How many of the study's trials have ended for good (a failed trial that is retried has not)."""
    gone = superseded(trials)
    return sum(1 for t in trials if t.state.is_finished() and t.number not in gone)


def claim(study: Any, storage: Any, study_id: int, lock: StudyLock, total: int, seed: int,
           worker: str) -> tuple[Any, Heartbeats] | None:
    """The next trial for this process and its running heartbeats, or None when the study has no budget
    left and nothing queued.

    Queued trials (enqueued by hand, or a dead worker's trial queued again) are taken first; otherwise a new
    trial is created while the trials that count, those not superseded by a retry, number fewer than
    `total`. The sampler is seeded by the trial count, so one process reproduces a run and parallel
    workers do not draw the same parameters.
    """
    state = optuna.trial.TrialState
    with lock:
        trials = study.get_trials(deepcopy=False)
        queued = any(t.state == state.WAITING for t in trials)
        if not queued and len(trials) - len(superseded(trials)) >= total:
            return None
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials), constant_liar=True)
        with warnings.catch_warnings():  # Optuna warns that heartbeats go with optimize(): Heartbeats beats here
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        beats = Heartbeats(storage, trial_id, storage.heartbeat_interval).start()  # before anyone may judge it
    trial.set_user_attr("worker", worker)
    return trial, beats


def best_trial(study: Any) -> tuple[int | None, float | None, dict[str, Any]]:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None, None, {}
    best = study.best_trial
    return best.number, best.value, dict(best.params)
