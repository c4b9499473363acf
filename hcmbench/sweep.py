"""Optuna: a hyperparameter study per model over the shared engine, each trial tracked in MLflow.

A search space is a YAML file (sweeps/<model>.yaml; copy one and pass it with --space):

    model: dcgan
    objective: {metric: fid, direction: minimize, images: 200, sampling: {}}   # sampling: sample() options
    # or a weighted sum of figures of one direction: {metric: detectability, combine: {fid: 0.002}}
    budget: {epochs: 10, pruner: median, startup_trials: 3, warmup_epochs: 2}
    # or counted in images, the same on any dataset: {kimg: 4, tick_kimg: 0.5, warmup_kimg: 1, ...}
    # or in time: {minutes: 1, tick_kimg: 0.5, ...}; minutes may also cap epochs or kimg
    data: {size: 64}                 # DataConfig fields (groups, size, ...)
    train: {patience: 5}             # fixed TrainConfig fields
    params:                          # what the sampler chooses
      lr: {low: 5.0e-5, high: 1.0e-3, log: true}
      beta1: {low: 0.0, high: 0.9}
      latent_dim: {choices: [64, 100, 128]}

A parameter is a TrainConfig field (lr, gp_weight, ...), `beta1` / `beta2` (Adam's betas), or a setting
of the model (latent_dim, width, ...). `{choices: [...]}` is categorical; `{low, high}` is an integer
range when both ends are integers, else a float range (`log: true` samples on a log scale; `step`
discretises).

Each trial trains through the engine, reports its validation score every round (epoch, or kimg tick:
pruning then compares trials at equal numbers of images shown) for pruning (negated
when the objective is maximised, so that the pruner compares in the objective's direction), then
generates `objective.images` images from its best checkpoint and scores them against the validation
split (the test split stays untouched for `hcmbench compare`). The objective is one of the
evaluation's figures (fid, kid, ssim, cc, mse, precision, recall, density, coverage, memorization,
diversity, detectability) or `val_score`, the model's own validation score. `combine` adds other figures
of the same direction with weights: `{metric: detectability, combine: {fid: 0.002}}` minimises
detectability + 0.002 × FID, so that FID still ranks trials that a classifier tells from real images
every time (detectability saturates at 1.0 for every poor generator, FID does not). This is the shipped
spaces' objective, with a weight of 0.001 (bench/metric_validity.py and docs/results.md say why).
Detectability, the slowest figure (a classifier trained per trial, with one seed: seconds), is computed
only when the objective uses it.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcmbench.config import BUDGET, DataConfig, TrainConfig
from hcmbench.errors import HcmbenchError

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def default_storage() -> str:
    """sqlite:///<absolute path of ./mlruns>/optuna.db (absolute, like the MLflow store)."""
    return f"sqlite:///{(Path('mlruns') / 'optuna.db').resolve()}"

PRUNERS = ("median", "hyperband", "none")
BUDGET_FIELDS = (*BUDGET, "tick_kimg")  # a trial's budget: TrainConfig's budget and its ticks


def _parse_budget(budget: dict[str, Any], path: str) -> tuple[dict[str, Any], int]:
    """Pop a trial's budget from the `budget` section: (TrainConfig budget fields, warm-up in rounds).

    `epochs` (with `warmup_epochs`), or `kimg` and/or `minutes` with `tick_kimg` (with `warmup_kimg`,
    turned into ticks). Default: 10 epochs, warm-up 2.
    """
    given = {k: budget.pop(k) for k in BUDGET_FIELDS if k in budget}
    warmup_epochs, warmup_kimg = budget.pop("warmup_epochs", None), budget.pop("warmup_kimg", None)
    for name, value in given.items():
        whole = name == "epochs"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value <= 0:
            raise HcmbenchError(f"{path}: budget.{name} must be a positive {'integer' if whole else 'number'}, "
                                f"got {value!r}")
    if not given.keys() & {"epochs", "kimg", "minutes"}:
        given["epochs"] = 10
    try:
        config = TrainConfig(**given)
    except HcmbenchError as exc:
        raise HcmbenchError(f"{path}: budget: {exc}") from None
    if config.counts_images:
        if warmup_epochs is not None:
            raise HcmbenchError(f"{path}: a budget in kimg or minutes takes warmup_kimg, not warmup_epochs")
        warmup_kimg = 0 if warmup_kimg is None else warmup_kimg
        if isinstance(warmup_kimg, bool) or not isinstance(warmup_kimg, (int, float)) or warmup_kimg < 0:
            raise HcmbenchError(f"{path}: budget.warmup_kimg must be a number ≥ 0, got {warmup_kimg!r}")
        return given, math.ceil(warmup_kimg / config.tick_kimg - 1e-9)
    if warmup_kimg is not None or "tick_kimg" in given:
        raise HcmbenchError(f"{path}: a budget in epochs takes warmup_epochs (tick_kimg and warmup_kimg go with "
                            "kimg or minutes)")
    warmup = 2 if warmup_epochs is None else warmup_epochs
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise HcmbenchError(f"{path}: budget.warmup_epochs must be an integer ≥ 0, got {warmup!r}")
    return given, warmup


def trial_budget(space: "SearchSpace", epochs: int | None = None, kimg: float | None = None,
                 minutes: float | None = None) -> dict[str, Any]:
    """The space's trial budget, or the one given on the command line (which replaces it; the space's
    tick_kimg stays where the new budget counts images)."""
    given = {k: v for k, v in (("epochs", epochs), ("kimg", kimg), ("minutes", minutes)) if v is not None}
    if not given:
        return dict(space.budget)
    if "tick_kimg" in space.budget and (kimg is not None or (minutes is not None and epochs is None)):
        given["tick_kimg"] = space.budget["tick_kimg"]
    TrainConfig(**given)  # epochs with kimg is refused in one line
    return given


# -- the search space -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One dimension of the search space, and where its value goes ("train" or "model")."""

    name: str
    target: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            # Optuna stores only scalars: a sequence choice (e.g. layer widths) goes in as "256,512"
            labels = {",".join(map(str, c)) if isinstance(c, tuple) else c: c for c in self.choices}
            return labels[trial.suggest_categorical(self.name, list(labels))]
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(self.name, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    """A study's search space, objective, budget and fixed settings (see the module docstring)."""

    model: str
    params: tuple[Param, ...]
    metric: str = "fid"
    direction: str = "minimize"
    images: int = 200
    combine: dict[str, float] = field(default_factory=dict)  # other figures added to the metric, with weights
    sampling: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=lambda: {"epochs": 10})  # TrainConfig's budget fields
    pruner: str = "median"
    startup_trials: int = 3
    warmup: int = 2  # rounds (epochs or ticks) before a trial may be pruned
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # the YAML mapping, stored with the study

    @property
    def rounds(self) -> int | None:
        """Rounds a trial runs at most (epochs, or kimg ticks); None when only minutes bound it."""
        return TrainConfig(**self.budget).rounds_in_budget()

    def data_config(self) -> DataConfig:
        return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.data.items()})

    @property
    def figures(self) -> tuple[str, ...]:
        """Every evaluation figure the objective reads."""
        return (self.metric, *self.combine)

    @property
    def objective_name(self) -> str:
        """The objective as a person reads it: "fid", or "detectability + 0.001 × fid"."""
        return " + ".join([self.metric, *(f"{w:g} × {k}" for k, w in self.combine.items())])

    def objective_value(self, row: Any) -> float:
        """The objective of an evaluation row: the metric plus the weighted figures of `combine`."""
        return float(getattr(row, self.metric)) + sum(w * float(getattr(row, k)) for k, w in self.combine.items())

    def suggest(self, trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TrainConfig overrides, model settings) for one trial: the fixed values, then the sampled ones."""
        train, model = dict(self.train), {}
        betas = list(train.get("betas", TrainConfig().betas))
        for param in self.params:
            value = param.suggest(trial)
            if param.name in ("beta1", "beta2"):
                betas[int(param.name[-1]) - 1] = value
            elif param.target == "train":
                train[param.name] = value
            else:
                model[param.name] = value
        train["betas"] = tuple(betas)
        return train, model


def default_space_path(model: str) -> Path:
    return SWEEPS_DIR / f"{model}.yaml"


def load_space(model: str, path: str | Path | None = None) -> SearchSpace:
    """Read and check a search-space YAML (default: sweeps/<model>.yaml). Problems raise HcmbenchError."""
    from hcmbench.config import load_yaml

    path = Path(path) if path is not None else default_space_path(model)
    if not path.is_file():
        raise HcmbenchError(f"{path}: no such search-space file")
    return parse_space(model, load_yaml(path), str(path))


def parse_space(model: str, raw: Any, path: str) -> SearchSpace:
    """Check a search-space mapping (as read from YAML, or as stored with a study); `path` names it in errors."""
    import copy

    from hcmbench.models.registry import model_defaults

    if not isinstance(raw, dict):
        raise HcmbenchError(f"{path}: a search space is a YAML mapping")
    unknown = sorted(set(raw) - {"model", "objective", "budget", "data", "train", "params"})
    if unknown:
        raise HcmbenchError(f"{path}: unknown section(s) {', '.join(unknown)}")
    if raw.get("model", model) != model:
        raise HcmbenchError(f"{path} is a search space for {raw['model']!r}, not {model!r}")
    objective, budget = dict(raw.get("objective") or {}), dict(raw.get("budget") or {})
    metric = objective.pop("metric", "fid")
    from hcmbench.metric_names import DIRECTIONS

    if metric not in DIRECTIONS:
        raise HcmbenchError(f"{path}: unknown objective metric {metric!r}: choose from {', '.join(DIRECTIONS)}")
    direction = objective.pop("direction", DIRECTIONS[metric])
    if direction not in ("minimize", "maximize"):
        raise HcmbenchError(f"{path}: direction must be minimize or maximize, got {direction!r}")
    images = objective.pop("images", 200)
    combine = objective.pop("combine", None) or {}
    if not isinstance(combine, dict) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
                                                for w in combine.values()):
        raise HcmbenchError(f"{path}: objective.combine must map figures to positive weights, e.g. {{fid: 0.002}}")
    for name in combine:
        if name not in DIRECTIONS or name == "val_score" or metric == "val_score":
            raise HcmbenchError(f"{path}: objective.combine: {name!r} cannot be combined with {metric!r}: "
                                "combine evaluation figures (fid, kid, detectability, ...)")
        if DIRECTIONS[name] != direction:
            raise HcmbenchError(f"{path}: objective.combine: {name} is {DIRECTIONS[name]}d, the objective is "
                                f"{direction}d: combine figures of one direction")
    sampling = objective.pop("sampling", None) or {}
    if not isinstance(sampling, dict):
        raise HcmbenchError(f"{path}: objective.sampling must be a mapping of sample options")
    pruner = budget.pop("pruner", "median")
    if pruner not in PRUNERS:
        raise HcmbenchError(f"{path}: pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    startup = budget.pop("startup_trials", 3)
    trial_budget, warmup = _parse_budget(budget, path)
    for section, rest in (("objective", objective), ("budget", budget)):
        if rest:
            raise HcmbenchError(f"{path}: unknown {section} key(s) {', '.join(sorted(rest))}")
    for name, value, least in (("objective.images", images, 6), ("budget.startup_trials", startup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise HcmbenchError(f"{path}: {name} must be an integer ≥ {least}, got {value!r}")

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "device", *BUDGET_FIELDS}
    settings = set(model_defaults(model)) - {"image_size", "num_classes"}
    params = []
    for name, spec in (raw.get("params") or {}).items():
        target = "train" if name in train_fields | {"beta1", "beta2"} else "model" if name in settings else None
        if target is None:
            raise HcmbenchError(f"{path}: parameter {name!r} is neither a training setting nor a setting of "
                                f"{model} ({', '.join(sorted(settings))})")
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise HcmbenchError(f"{path}: parameter {name!r} needs {{choices: [...]}} or {{low: ..., high: ...}}")
        extra = sorted(set(spec) - {"choices", "low", "high", "log", "step"})
        if extra:
            raise HcmbenchError(f"{path}: parameter {name!r} has unknown key(s) {', '.join(extra)}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise HcmbenchError(f"{path}: parameter {name!r}: choices must be a non-empty list")
            params.append(Param(name, target, choices=tuple(tuple(c) if isinstance(c, list) else c
                                                            for c in spec["choices"])))
            continue
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise HcmbenchError(f"{path}: parameter {name!r}: low and high must be numbers with low < high")
        if spec.get("log") and low <= 0:
            raise HcmbenchError(f"{path}: parameter {name!r}: a log range needs low > 0")
        params.append(Param(name, target, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step")))
    train = dict(raw.get("train") or {})
    unknown = sorted(set(train) - train_fields)
    if unknown:
        raise HcmbenchError(f"{path}: unknown train setting(s) {', '.join(unknown)}")
    space = SearchSpace(model, tuple(params), metric, direction, images, {k: float(w) for k, w in combine.items()},
                        dict(sampling), trial_budget, pruner, startup,
                        warmup, dict(raw.get("data") or {}), train, str(path), copy.deepcopy(raw))
    try:
        space.data_config()
        TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in train.items()})
    except TypeError as exc:
        raise HcmbenchError(f"{path}: {exc}") from None
    return space


# -- events for a display -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Preparing:
    message: str


@dataclass(frozen=True)
class Joined:
    """This process works on the study: `done` of its `total` trials have ended so far."""

    study: str
    total: int
    done: int
    worker: str


@dataclass(frozen=True)
class TrialStarted:
    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialEpoch:
    number: int
    epoch: int  # the round: an epoch, or a kimg tick
    epochs: int | None
    val_score: float
    unit: str = "epoch"
    kimg: float = 0.0


@dataclass(frozen=True)
class TrialEnded:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, STOPPED
    value: float | None
    best_value: float | None
    best_number: int | None
    reason: str = ""
    done: int = 0  # the study's trials ended so far, by every worker


@dataclass(frozen=True)
class Waiting:
    """Nothing left to start, but trials run elsewhere; one whose worker goes silent is queued again."""

    running: tuple[int, ...]
    grace: int


SweepDisplay = Callable[[Any], None]


@dataclass
class SweepResult:
    study_name: str
    storage: str
    parent_run_id: str
    trials_run: int  # by this process
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    counts: dict[str, int]  # this process's trials by final state
    total: int = 0  # the study's trial budget
    finished: bool = False  # the study has all its trials
    model: str = ""
    metric: str = ""


# -- the study and its settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """How a dead worker is noticed. A running trial records a heartbeat every `interval` seconds; one
    silent for `grace` seconds is FAILED by the next worker that looks, and queued again with the same
    parameters, up to `max_retry` times."""

    interval: int = 60
    grace: int = 180
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval or self.max_retry < 0:
            raise HcmbenchError(f"heartbeat: need interval ≥ 1 s and grace > interval (got interval "
                                f"{self.interval} s, grace {self.grace} s) and max_retry ≥ 0")


SETTINGS_ATTR = "hcmbench"


@dataclass(frozen=True)
class StudySettings:
    """What a worker needs to join a study, stored in the study itself (one user attribute), so that
    `hcmbench worker --study NAME --storage URL` on any machine runs the same trials."""

    model: str
    space: dict[str, Any]  # the search-space mapping
    source: str  # where it was read from
    trials: int  # the study-wide total
    budget: dict[str, Any]  # each trial's TrainConfig budget fields (epochs, kimg, minutes, tick_kimg)
    seed: int
    data: str  # the data root where the study was created; "" for the built-in phantom
    tracking_uri: str
    parent_run: str

    # a study keeps these for life: changing them mid-study would mix incomparable trials
    FIXED = ("model", "space", "budget", "seed")

    def differences(self, other: "StudySettings") -> list[str]:
        return [name for name in self.FIXED if getattr(self, name) != getattr(other, name)]

    @classmethod
    def of(cls, study: Any) -> "StudySettings | None":
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if not isinstance(stored, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        if "budget" not in stored and "epochs" in stored:  # a study made before budgets could be in kimg
            stored = {**stored, "budget": {"epochs": stored["epochs"]}}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def store(self, study: Any) -> None:
        study.set_user_attr(SETTINGS_ATTR, dataclasses.asdict(self))


def display_url(url: str) -> str:
    """A database URL with its password masked, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _pruner(space: SearchSpace) -> Any:
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, space.warmup), max_resource=space.rounds or "auto")
    return optuna.pruners.NopPruner()


def _storage(url: str, heartbeat: Heartbeat) -> Any:
    """Optuna's RDB storage with heartbeats, and a stale trial queued again with the same parameters."""
    import warnings

    import optuna

    if url == default_storage():
        Path("mlruns").mkdir(exist_ok=True)
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise HcmbenchError(f"storage {display_url(url)}: use a sqlite:///FILE, postgresql://… or mysql://… URL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=None if url.startswith("sqlite:") else {"pool_pre_ping": True},
            heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
            heartbeat_stale_trial_callback=retry)


def _retrying(make: Callable[[], Any], attempts: int = 5) -> Any:
    """`make()`, tried again when it loses a race: processes that open a new database at the same moment
    all create Optuna's tables, and all but one fail on the duplicates (PostgreSQL: an integrity or
    programming error; SQLite: an operational error, "table … already exists")."""
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return make()
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            lost_race = not isinstance(exc, OperationalError) or "already exists" in str(exc)
            if not lost_race or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _open_study(url: str, name: str, direction: str | None, heartbeat: Heartbeat) -> tuple[Any, Any]:
    """(study, its storage) for the study `name` at `url`: created (to `direction`) when missing, or
    loaded when `direction` is None."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported with their reasons by the display
    try:
        storage = _retrying(lambda: _storage(url, heartbeat))
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


class _StudyLock:
    """One process at a time decides whether the study has budget left and claims a trial, so that many
    workers on many machines run exactly the study's total: a PostgreSQL advisory lock (MySQL: GET_LOCK)
    held on its own connection, or a file lock beside a SQLite file. A dead process's lock goes with it."""

    def __init__(self, url: str, study: str) -> None:
        import hashlib

        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        self.backend, self.name = parsed.get_backend_name(), f"hcmbench:{study}"
        self.key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
        self.engine = self.connection = self.file = None
        self.path = Path(f"{parsed.database}.lock") if self.backend == "sqlite" and parsed.database not in (
            None, "", ":memory:") else None
        if self.backend != "sqlite":
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool)

    def __enter__(self) -> "_StudyLock":
        import sqlalchemy

        if self.path is not None:
            import fcntl

            self.file = open(self.path, "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.engine is not None:
            self.connection = self.engine.connect()
            statement = ("SELECT pg_advisory_lock(:key)" if self.backend == "postgresql"
                         else "SELECT GET_LOCK(:name, -1)")
            self.connection.execute(sqlalchemy.text(statement), {"key": self.key, "name": self.name})
        return self

    def __exit__(self, *exc: Any) -> None:
        import sqlalchemy

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


class _Heartbeats:
    """Records a running trial's heartbeat now, then every `interval` seconds from a background thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        import threading

        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def start(self) -> "_Heartbeats":
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


def _superseded(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that were queued again (their retries carry them in `retry_history`)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def _ended(trials: list[Any]) -> int:
    """How many of the study's trials have ended for good (a failed trial that is retried has not)."""
    gone = _superseded(trials)
    return sum(1 for t in trials if t.state.is_finished() and t.number not in gone)


def _claim(study: Any, storage: Any, study_id: int, lock: _StudyLock, total: int, seed: int,
           worker: str) -> tuple[Any, _Heartbeats] | None:
    """The next trial for this process and its running heartbeats, or None when the study has no budget
    left and nothing queued.

    Queued trials (enqueued by hand, or a dead worker's trial queued again) are taken first; otherwise a new
    trial is created while the trials that count, those not superseded by a retry, number fewer than
    `total`. The sampler is seeded by the trial count, so one process reproduces a run and parallel
    workers do not draw the same parameters.
    """
    import warnings

    import optuna

    state = optuna.trial.TrialState
    with lock:
        trials = study.get_trials(deepcopy=False)
        queued = any(t.state == state.WAITING for t in trials)
        if not queued and len(trials) - len(_superseded(trials)) >= total:
            return None
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials), constant_liar=True)
        with warnings.catch_warnings():  # Optuna warns that heartbeats go with optimize(): _Heartbeats beats here
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        beats = _Heartbeats(storage, trial_id, storage.heartbeat_interval).start()  # before anyone may judge it
    trial.set_user_attr("worker", worker)
    return trial, beats


class _PruneOnValidation:
    """Engine callback: report each round's validation score to the trial and stop when it should be pruned."""

    def __init__(self, trial: Any, sign: float, display: SweepDisplay | None) -> None:
        self.trial, self.sign, self.display = trial, sign, display

    def on_epoch_end(self, event: Any) -> None:
        import optuna

        if self.display is not None:
            self.display(TrialEpoch(self.trial.number, event.epoch, event.epochs, event.val_score, event.unit,
                                    event.kimg))
        self.trial.report(self.sign * event.val_score, event.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {event.unit} {event.epoch}, {event.kimg:.1f} kimg "
                                     f"(validation score {event.val_score:.4g})")


def _best(study: Any) -> tuple[int | None, float | None, dict[str, Any]]:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None, None, {}
    best = study.best_trial
    return best.number, best.value, dict(best.params)


def run_sweep(model: str, trials: int, space: SearchSpace | None = None, study_name: str | None = None,
              storage: str | None = None, timeout: float | None = None, data_root: str | Path | None = None,
              epochs: int | None = None, seed: int = 0, device: str = "auto",
              display: SweepDisplay | None = None, heartbeat: Heartbeat = Heartbeat(),
              tracking_uri: str | None = None, kimg: float | None = None, minutes: float | None = None) -> SweepResult:
    """Create the study `study_name` (default `hcmbench-<model>`) in `storage`, or continue it, and run its
    trials here until it has `trials` in all; `hcmbench worker` processes may join it meanwhile.

    The study stores its settings (model, search space, trial budget, seed, data root, tracking URI), so
    that workers need only its name and storage; continuing a study with a different search space, budget
    or seed is refused. `epochs`, `kimg` or `minutes` replace the space's trial budget. Runs go to `tracking_uri` (default: `tracking.tracking_uri()`). A trial that diverges
    or raises is FAILED with its reason and the study goes on.
    Ctrl-C (KeyboardInterrupt) ends the running trial, queues it again and is re-raised: the same command
    continues the study.
    """
    from hcmbench import tracking
    from hcmbench.data import default_phantom_root, resolve_data_root

    if trials < 1:
        raise HcmbenchError(f"trials must be at least 1, got {trials}")
    space = space or load_space(model)
    if space.model != model:
        raise HcmbenchError(f"the search space is for {space.model}, not {model}")
    study_name = study_name or f"hcmbench-{model}"
    storage = storage or default_storage()
    data_root = resolve_data_root(data_root)
    study, rdb = _open_study(storage, study_name, space.direction, heartbeat)
    if study.direction.name.lower() != space.direction:
        raise HcmbenchError(f"study {study_name!r} was created to {study.direction.name.lower()}, "
                            f"but the search space asks to {space.direction}: use another --study")
    mlflow_client = tracking.client(tracking_uri)
    experiment_id = tracking.ensure_experiment(mlflow_client, model)
    phantom = data_root.resolve() == default_phantom_root().resolve()
    settings = StudySettings(model, space.raw, space.source, trials, trial_budget(space, epochs, kimg, minutes), seed,
                             "" if phantom else str(data_root.resolve()), mlflow_client.tracking_uri, "")
    before = StudySettings.of(study)
    if before is not None and settings.differences(before):
        raise HcmbenchError(f"study {study_name!r} was created with another "
                            f"{' and '.join(settings.differences(before))}: continue it with the same settings, "
                            "or start a new one with --study NAME")
    parent = _parent_run(mlflow_client, experiment_id, model, study_name, storage, space)
    settings = dataclasses.replace(settings, parent_run=parent)
    settings.store(study)
    return _work(study, rdb, storage, settings, space, data_root, device, timeout, display, heartbeat,
                 mlflow_client)


def run_worker(study_name: str, storage: str, data_root: str | Path | None = None, device: str = "auto",
               timeout: float | None = None, wait: float = 0, display: SweepDisplay | None = None,
               heartbeat: Heartbeat = Heartbeat(), tracking_uri: str | None = None) -> SweepResult:
    """Join the study `study_name` created by `hcmbench sweep` (on this or another machine) and run its
    trials until it has its total, then wait for the trials running elsewhere, taking over any whose
    worker dies. `wait` seconds are allowed for the study to appear (workers may start before `sweep`).

    Data: `data_root`, else the study's data root when it exists here, else the built-in phantom when the
    study was made on it. MLflow: `tracking_uri`, else $MLFLOW_TRACKING_URI, else the study's tracking URI.
    """
    import time

    from hcmbench import tracking
    from hcmbench.data import resolve_data_root

    deadline = time.monotonic() + wait
    while True:
        try:
            study, rdb = _open_study(storage, study_name, None, heartbeat)
            settings = StudySettings.of(study)
        except HcmbenchError:
            if time.monotonic() >= deadline:
                raise
            settings = None
        if settings is not None:
            break
        if time.monotonic() >= deadline:
            raise HcmbenchError(f"study {study_name!r} at {display_url(storage)} was not made by `hcmbench sweep`"
                                " (it has no settings to run it with)")
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    if tracking_uri is None and tracking.uses_default_store():
        tracking_uri = settings.tracking_uri
        if tracking_uri.startswith("sqlite:") and not Path(tracking_uri.split("sqlite:///", 1)[-1]).exists():
            raise HcmbenchError(f"study {study_name!r} is tracked in {tracking_uri}, a file on the machine that "
                                "made it: pass --tracking-uri http://… (an MLflow server) here")
    if data_root is None and settings.data:
        if not Path(settings.data).is_dir():
            raise HcmbenchError(f"study {study_name!r} trains on {settings.data}, which is not on this machine: "
                                "pass --data with this machine's copy")
        data_root = settings.data
    space = parse_space(settings.model, settings.space, settings.source)
    return _work(study, rdb, storage, settings, space, resolve_data_root(data_root), device, timeout, display,
                 heartbeat, tracking.client(tracking_uri))


def _work(study: Any, storage: Any, storage_url: str, settings: StudySettings, space: SearchSpace, data_root: Path, device: str,
          timeout: float | None, display: SweepDisplay | None, heartbeat: Heartbeat,
          mlflow_client: Any) -> SweepResult:
    """The loop every process runs: claim a trial, train and score it, tell Optuna, end its MLflow run."""
    import gc
    import os
    import socket
    import time
    import warnings

    import optuna

    from hcmbench import tracking

    state = optuna.trial.TrialState
    worker = f"{socket.gethostname()}:{os.getpid()}"
    study.pruner = _pruner(space)
    experiment_id = tracking.ensure_experiment(mlflow_client, settings.model)
    mlflow_client.update_run(settings.parent_run, status="RUNNING")
    scorer = _TrialScorer(data_root, space, settings.seed, device)
    if display is not None:
        display(Preparing(f"Preparing {data_root}: preprocessing, and the feature space used to score trials "
                          "(trained once per dataset, then cached)"))
    scorer.prepare()  # bad data fail here, once, rather than in every trial
    objective = _Objective(settings.model, space, settings.budget, settings.seed, device, data_root, scorer,
                           mlflow_client, experiment_id, settings.parent_run, study.study_name, worker, display)
    lock, study_id = _StudyLock(storage_url, study.study_name), storage.get_study_id_from_name(study.study_name)
    counts: dict[str, int] = {}
    started = time.monotonic()

    def tidy() -> list[Any]:
        """Fail and queue again the trials of dead workers; end their MLflow runs. Returns the trials."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        tracking.end_orphans(mlflow_client, experiment_id, study.study_name, {t.number: t.state.name for t in trials})
        return trials

    if display is not None:
        display(Joined(study.study_name, settings.trials, _ended(tidy()), worker))
    try:
        while timeout is None or time.monotonic() - started < timeout:
            trials = tidy()
            claimed = _claim(study, storage, study_id, lock, settings.trials, settings.seed, worker)
            if claimed is None:
                running = tuple(t.number for t in trials if t.state == state.RUNNING)
                if not running:
                    break  # the study has all its trials
                if display is not None:
                    display(Waiting(running, heartbeat.grace))
                time.sleep(min(heartbeat.interval, 5))
                continue
            trial, beats = claimed
            try:
                outcome = objective(trial)
            except KeyboardInterrupt:
                beats.close()
                frozen = study.tell(trial, state=state.FAIL)
                storage.get_heartbeat_stale_trial_callback()(study, frozen)  # queued again, as a dead worker's
                objective.end(trial, _Outcome("STOPPED", reason="interrupted (Ctrl-C); queued again for when "
                                                                 "the study continues"))
                raise
            beats.close()
            try:
                study.tell(trial, outcome.value, state=state[outcome.state])
            except optuna.exceptions.UpdateFinishedTrialError:  # silent too long: taken for dead, queued again
                outcome = _Outcome("FAIL", reason="its heartbeats stopped reaching the storage for longer than "
                                   "the grace period; another worker runs it again")
            objective.end(trial, outcome)
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
            gc.collect()
    except KeyboardInterrupt:
        _leave(study, mlflow_client, settings.parent_run, "KILLED")
        raise
    finished = _leave(study, mlflow_client, settings.parent_run, "FINISHED", settings.trials)
    number, value, params = _best(study)
    return SweepResult(study.study_name, storage_url, settings.parent_run, sum(counts.values()), number, value,
                       params, counts, settings.trials, finished, settings.model, space.objective_name)


def _leave(study: Any, mlflow_client: Any, parent: str, status: str, total: int | None = None) -> bool:
    """This process stops working on the study. The last one out (no trial running elsewhere) closes the
    parent run with the best trial so far. Returns whether the study has all its trials."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
        return False
    finished = total is not None and _ended(trials) >= total and not any(
        t.state == optuna.trial.TrialState.WAITING for t in trials)
    _finish_parent(mlflow_client, parent, study, status)
    return finished


def _parent_run(mlflow_client: Any, experiment_id: str, model: str, study: str, storage: str,
                space: SearchSpace) -> str:
    """The study's parent run: found by its tag when the study is resumed, else created."""
    from hcmbench import tracking

    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{tracking.STUDY_TAG}` = '{study}' and "
                                      f"tags.`{tracking.ROLE_TAG}` = 'study'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(experiment_id, run_name=study, tags={
        tracking.STUDY_TAG: study, tracking.ROLE_TAG: "study", tracking.MODEL_TAG: model,
        "optuna.storage": display_url(storage), "hcmbench.space": space.source})
    params = tracking.flatten_params({"objective": {"metric": space.metric, "direction": space.direction,
                                                    "images": space.images, "combine": space.combine},
                                      "budget": {**space.budget, "pruner": space.pruner}})
    for key, value in params.items():
        mlflow_client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def _finish_parent(mlflow_client: Any, run_id: str, study: Any, status: str) -> None:
    """The parent run gets the best trial's figures and Optuna's plots, then its final status."""
    number, value, params = _best(study)
    if number is not None:
        mlflow_client.log_metric(run_id, "best/value", value)
        mlflow_client.set_tag(run_id, "hcmbench.best_trial", str(number))
        for key, item in params.items():
            mlflow_client.set_tag(run_id, f"best.{key}", str(item))
    with tempfile.TemporaryDirectory() as tmp:
        for path in _study_plots(study, Path(tmp)):
            mlflow_client.log_artifact(run_id, str(path), "optuna")
    mlflow_client.set_terminated(run_id, status=status)


def _study_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs (importances need two finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    paths = []
    plots = [("history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 2 and any(len(t.distributions) for t in complete):
        plots.append(("importances.png", optuna_plots.plot_param_importances))
    import warnings

    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=100)
            plt.close(figure)
            paths.append(folder / name)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances when every value is equal
            plt.close("all")
    return paths


class _TrialScorer:
    """Scores a trial's generator against the validation split; data and feature space are loaded once."""

    def __init__(self, data_root: Path, space: SearchSpace, seed: int, device: str) -> None:
        self.data_root, self.space, self.seed, self.device = data_root, space, seed, device
        self.inputs = None

    def prepare(self) -> None:
        """Preprocess the data and train (or load) the feature space."""
        if self.inputs is None:
            self.inputs = self._load()

    def _load(self) -> Any:
        import torch

        from hcmbench.data.slices import load_slices
        from hcmbench.evaluation.features import FeatureConfig, load_feature_extractor
        from hcmbench.evaluation.report import EvaluationInputs

        config = self.space.data_config()
        slices = load_slices(self.data_root, config)
        val = slices.of_split("val")
        if len(val) <= 5:
            raise HcmbenchError(f"{self.data_root}: the validation split has {len(val)} slices; scoring a trial "
                                "needs at least 6 (use more patients)")
        extractor = None if self.space.metric == "val_score" else load_feature_extractor(self.data_root, config,
                                                                                          FeatureConfig())
        return EvaluationInputs(torch.from_numpy(val.images), torch.from_numpy(slices.of_split("train").images),
                                None, extractor, reference_name="validation split")

    def __call__(self, checkpoint: Path) -> Any:
        from hcmbench.checkpoints import load_generator, resolve_device
        from hcmbench.evaluation.metrics import from_model_range
        from hcmbench.evaluation.detectability import DetectabilityConfig
        from hcmbench.evaluation.report import EvaluationConfig, evaluate_sets, timed_draw
        from hcmbench.sampling import draw

        self.prepare()  # scoring is only asked of metrics that need the feature space, loaded by prepare()
        generator = load_generator(checkpoint, device=resolve_device(self.device))
        n = self.space.images
        images, ms = timed_draw(lambda: draw(generator, n, seed=self.seed, options=self.space.sampling)[0], n)
        # one seed per trial: the study averages over trials, and the classifier's strength is not reduced
        detector = DetectabilityConfig(seeds=1) if "detectability" in self.space.figures else None
        config = EvaluationConfig(n=n, calibration=False, kid_subsets=20, diversity_images=min(n, 100), seed=self.seed,
                                  detector=detector)
        return evaluate_sets({generator.model.name: (from_model_range(images), ms)}, self.inputs, config)


@dataclass(frozen=True)
class _Outcome:
    state: str  # COMPLETE, PRUNED, FAIL (or STOPPED: interrupted)
    value: float | None = None
    reason: str = ""


class _Objective:
    """One trial: train, score, and track it in a nested MLflow run, ended by `end` once Optuna knows."""

    def __init__(self, model: str, space: SearchSpace, budget: dict[str, Any], seed: int, device: str, data_root: Path,
                 scorer: _TrialScorer, mlflow_client: Any, experiment_id: str, parent: str, study: str, worker: str,
                 display: SweepDisplay | None) -> None:
        self.model, self.space, self.budget, self.seed, self.device = model, space, budget, seed, device
        self.data_root, self.scorer, self.client = data_root, scorer, mlflow_client
        self.experiment_id, self.parent, self.study, self.worker = experiment_id, parent, study, worker
        self.display, self.runs = display, {}

    def __call__(self, trial: Any) -> _Outcome:
        import optuna

        from hcmbench import engine, tracking

        train_overrides, settings = self.space.suggest(trial)
        if self.display is not None:
            self.display(TrialStarted(trial.number, dict(trial.params)))
        run = self.client.create_run(self.experiment_id, run_name=f"{self.study}-trial-{trial.number:04d}", tags={
            "mlflow.parentRunId": self.parent, tracking.STUDY_TAG: self.study, tracking.ROLE_TAG: "trial",
            tracking.MODEL_TAG: self.model, tracking.TRIAL_TAG: str(trial.number), tracking.STATE_TAG: "RUNNING",
            "hcmbench.worker": self.worker})
        run_id = self.runs[trial.number] = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        data_config = self.space.data_config()
        train_config = TrainConfig(**{**train_overrides, **self.budget, "seed": self.seed, "device": self.device})
        for key, value in tracking.flatten_params({"model": {"name": self.model, **settings},
                                                   "train": dataclasses.asdict(train_config),
                                                   "data": {**dataclasses.asdict(data_config),
                                                            "root": str(self.data_root)}}).items():
            self.client.log_param(run_id, key, value)
        logger = tracking.RunLogger(self.client, run_id)
        sign = 1.0 if self.space.direction == "minimize" else -1.0
        work = Path(tempfile.mkdtemp(prefix=f"hcmbench-trial-{trial.number}-"))
        try:
            result = engine.train(self.model, self.data_root, work / "run", data_config, train_config, settings,
                                  callbacks=[logger, _PruneOnValidation(trial, sign, self.display)])
            if self.space.metric == "val_score":
                value = result.best_score
            else:
                table = self.scorer(result.best_checkpoint)
                tracking.log_table(self.client, run_id, table)
                value = self.space.objective_value(table.rows[0])
            if not math.isfinite(value):
                raise HcmbenchError(f"the objective {self.space.objective_name} is {value}")
            return _Outcome("COMPLETE", float(value))
        except optuna.TrialPruned as exc:
            logger.log_outputs(work / "run", checkpoint=False)  # a pruned trial's weights are not worth keeping
            return _Outcome("PRUNED", reason=str(exc))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            return _Outcome("FAIL", reason=reason)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def end(self, trial: Any, outcome: _Outcome) -> None:
        """End the trial's MLflow run with its outcome (Optuna has been told first: a process that dies between
        the two leaves a run that the next worker ends with the trial's state) and report it."""
        from hcmbench import tracking

        tracking.end_run(self.client, self.runs.pop(trial.number), outcome.state, outcome.reason or None)
        if self.display is not None:
            number, value, _ = _best(trial.study)
            self.display(TrialEnded(trial.number, outcome.state, outcome.value, value, number, outcome.reason,
                                    _ended(trial.study.get_trials(deepcopy=False))))
