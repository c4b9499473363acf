"""Optuna: a hyperparameter study per model over the shared engine, each trial tracked in MLflow.

A search space is a YAML file (sweeps/<model>.yaml; copy one and pass it with --space):

    model: dcgan
    objective: {metric: fid, direction: minimize, images: 200, sampling: {}}   # sampling: sample() options
    budget: {epochs: 10, pruner: median, startup_trials: 3, warmup_epochs: 2}
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

Each trial trains through the engine, reports its validation score every epoch for pruning (negated
when the objective is maximised, so that the pruner compares in the objective's direction), then
generates `objective.images` images from its best checkpoint and scores them against the validation
split (the test split stays untouched for `hcmbench compare`). The objective is one of the
evaluation's figures (fid, kid, ssim, cc, mse, precision, recall, density, coverage, memorization,
diversity) or `val_score`, the model's own validation score.
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

from hcmbench.config import DataConfig, TrainConfig
from hcmbench.errors import HcmbenchError

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def default_storage() -> str:
    """sqlite:///<absolute path of ./mlruns>/optuna.db (absolute, like the MLflow store)."""
    return f"sqlite:///{(Path('mlruns') / 'optuna.db').resolve()}"

PRUNERS = ("median", "hyperband", "none")


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
    sampling: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    pruner: str = "median"
    startup_trials: int = 3
    warmup_epochs: int = 2
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def data_config(self) -> DataConfig:
        return DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.data.items()})

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
    from hcmbench.models.base import model_defaults

    path = Path(path) if path is not None else default_space_path(model)
    if not path.is_file():
        raise HcmbenchError(f"{path}: no such search-space file")
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise HcmbenchError(f"{path}: a search space is a YAML mapping")
    unknown = sorted(set(raw) - {"model", "objective", "budget", "data", "train", "params"})
    if unknown:
        raise HcmbenchError(f"{path}: unknown section(s) {', '.join(unknown)}")
    if raw.get("model", model) != model:
        raise HcmbenchError(f"{path} is a search space for {raw['model']!r}, not {model!r}")
    objective, budget = dict(raw.get("objective") or {}), dict(raw.get("budget") or {})
    metric = objective.pop("metric", "fid")
    from hcmbench.evaluation.report import DIRECTIONS

    if metric not in DIRECTIONS:
        raise HcmbenchError(f"{path}: unknown objective metric {metric!r}: choose from {', '.join(DIRECTIONS)}")
    direction = objective.pop("direction", DIRECTIONS[metric])
    if direction not in ("minimize", "maximize"):
        raise HcmbenchError(f"{path}: direction must be minimize or maximize, got {direction!r}")
    images = objective.pop("images", 200)
    sampling = objective.pop("sampling", None) or {}
    if not isinstance(sampling, dict):
        raise HcmbenchError(f"{path}: objective.sampling must be a mapping of sample options")
    pruner = budget.pop("pruner", "median")
    if pruner not in PRUNERS:
        raise HcmbenchError(f"{path}: pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    epochs, startup, warmup = budget.pop("epochs", 10), budget.pop("startup_trials", 3), budget.pop("warmup_epochs", 2)
    for section, rest in (("objective", objective), ("budget", budget)):
        if rest:
            raise HcmbenchError(f"{path}: unknown {section} key(s) {', '.join(sorted(rest))}")
    for name, value, least in (("objective.images", images, 6), ("budget.epochs", epochs, 1),
                               ("budget.startup_trials", startup, 0), ("budget.warmup_epochs", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise HcmbenchError(f"{path}: {name} must be an integer ≥ {least}, got {value!r}")

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"epochs", "seed", "device"}
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
    space = SearchSpace(model, tuple(params), metric, direction, images, dict(sampling), epochs, pruner, startup,
                        warmup, dict(raw.get("data") or {}), train, str(path))
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
class TrialStarted:
    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialEpoch:
    number: int
    epoch: int
    epochs: int
    val_score: float


@dataclass(frozen=True)
class TrialEnded:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, STOPPED
    value: float | None
    best_value: float | None
    best_number: int | None
    reason: str = ""


SweepDisplay = Callable[[Any], None]


@dataclass
class SweepResult:
    study_name: str
    storage: str
    parent_run_id: str
    trials_run: int
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    counts: dict[str, int]


# -- the study ------------------------------------------------------------------------------------------


def _pruner(space: SearchSpace) -> Any:
    import optuna

    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_epochs)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, space.warmup_epochs), max_resource=space.epochs)
    return optuna.pruners.NopPruner()


def _storage(url: str) -> Any:
    """Optuna storage with heartbeats for database URLs, so trials of a killed process are failed later."""
    import optuna

    if url == default_storage():
        Path("mlruns").mkdir(exist_ok=True)
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    return url


class _PruneOnValidation:
    """Engine callback: report each epoch's validation score to the trial and stop when it should be pruned."""

    def __init__(self, trial: Any, sign: float, display: SweepDisplay | None) -> None:
        self.trial, self.sign, self.display = trial, sign, display

    def on_epoch_end(self, event: Any) -> None:
        import optuna

        if self.display is not None:
            self.display(TrialEpoch(self.trial.number, event.epoch, event.epochs, event.val_score))
        self.trial.report(self.sign * event.val_score, event.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {event.epoch} (validation score {event.val_score:.4g})")


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
              display: SweepDisplay | None = None) -> SweepResult:
    """Run `trials` more trials of the study `study_name` (default `hcmbench-<model>`) in `storage`.

    The same name and storage continue a study: its trials so far count for the sampler and the best
    value. A trial that diverges or raises is FAILED with its reason and the study goes on; Ctrl-C
    (KeyboardInterrupt) ends the running trial and its MLflow run as stopped and is re-raised, leaving the
    study resumable.
    """
    import optuna

    from hcmbench import tracking
    from hcmbench.data import resolve_data_root

    if trials < 1:
        raise HcmbenchError(f"trials must be at least 1, got {trials}")
    space = space or load_space(model)
    if space.model != model:
        raise HcmbenchError(f"the search space is for {space.model}, not {model}")
    epochs = epochs or space.epochs
    study_name = study_name or f"hcmbench-{model}"
    storage = storage or default_storage()
    data_root = resolve_data_root(data_root)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported with their reasons by the display
    try:
        study = optuna.create_study(study_name=study_name, storage=_storage(storage), load_if_exists=True,
                                    direction=space.direction,
                                    sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=_pruner(space))
    except Exception as exc:  # bad URL, unreachable database, ...
        raise HcmbenchError(f"cannot open the Optuna study {study_name!r} at {storage}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if study.direction.name.lower() != space.direction:
        raise HcmbenchError(f"study {study_name!r} was created to {study.direction.name.lower()}, "
                            f"but the search space asks to {space.direction}: use another --study")
    # a resumed study gets a new sampler seed, else its random start-up trials would repeat the first ones
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))

    mlflow_client = tracking.client()
    experiment_id = tracking.ensure_experiment(mlflow_client, model)
    parent = _parent_run(mlflow_client, experiment_id, model, study_name, storage, space)
    alive = {t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING}
    tracking.end_orphans(mlflow_client, experiment_id, study_name, alive)
    scorer = _TrialScorer(data_root, space, seed, device)
    if display is not None:
        display(Preparing(f"Preparing {data_root}: preprocessing, and the feature space used to score trials "
                          "(trained once per dataset, then cached)"))
    scorer.prepare()  # bad data fail here, once, rather than in every trial
    objective = _Objective(model, space, epochs, seed, device, data_root, scorer, mlflow_client, experiment_id,
                           parent, study_name, display)
    before = {t.number for t in study.trials if t.state.is_finished()}
    try:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt:
        _finish_parent(mlflow_client, parent, study, "KILLED")
        raise
    except Exception:
        _finish_parent(mlflow_client, parent, study, "FAILED")
        raise
    _finish_parent(mlflow_client, parent, study, "FINISHED")
    counts: dict[str, int] = {}
    ran = [t for t in study.trials if t.state.is_finished() and t.number not in before]
    for t in ran:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    number, value, params = _best(study)
    return SweepResult(study_name, storage, parent, len(ran), number, value, params, counts)


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
        "optuna.storage": storage.split("@")[-1], "hcmbench.space": space.source})
    params = tracking.flatten_params({"objective": {"metric": space.metric, "direction": space.direction,
                                                    "images": space.images},
                                      "budget": {"epochs": space.epochs, "pruner": space.pruner}})
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
        from hcmbench.evaluation.report import EvaluationConfig, evaluate_sets, timed_draw
        from hcmbench.sampling import draw

        self.prepare()  # scoring is only asked of metrics that need the feature space, loaded by prepare()
        generator = load_generator(checkpoint, device=resolve_device(self.device))
        n = self.space.images
        images, ms = timed_draw(lambda: draw(generator, n, seed=self.seed, options=self.space.sampling)[0], n)
        config = EvaluationConfig(n=n, calibration=False, kid_subsets=20, diversity_images=min(n, 100), seed=self.seed)
        return evaluate_sets({generator.model.name: (from_model_range(images), ms)}, self.inputs, config)


class _Objective:
    """One Optuna trial: train, score, and track it in a nested MLflow run."""

    def __init__(self, model: str, space: SearchSpace, epochs: int, seed: int, device: str, data_root: Path,
                 scorer: _TrialScorer, mlflow_client: Any, experiment_id: str, parent: str, study: str,
                 display: SweepDisplay | None) -> None:
        self.model, self.space, self.epochs, self.seed, self.device = model, space, epochs, seed, device
        self.data_root, self.scorer, self.client = data_root, scorer, mlflow_client
        self.experiment_id, self.parent, self.study, self.display = experiment_id, parent, study, display

    def __call__(self, trial: Any) -> float:
        import optuna

        from hcmbench import engine, tracking

        train_overrides, settings = self.space.suggest(trial)
        if self.display is not None:
            self.display(TrialStarted(trial.number, dict(trial.params)))
        run = self.client.create_run(self.experiment_id, run_name=f"{self.study}-trial-{trial.number:04d}", tags={
            "mlflow.parentRunId": self.parent, tracking.STUDY_TAG: self.study, tracking.ROLE_TAG: "trial",
            tracking.MODEL_TAG: self.model, tracking.TRIAL_TAG: str(trial.number), tracking.STATE_TAG: "RUNNING"})
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        data_config = self.space.data_config()
        train_config = TrainConfig(**{**train_overrides, "epochs": self.epochs, "seed": self.seed, "device": self.device})
        for key, value in tracking.flatten_params({"model": {"name": self.model, **settings},
                                                   "train": dataclasses.asdict(train_config),
                                                   "data": {**dataclasses.asdict(data_config),
                                                            "root": str(self.data_root)}}).items():
            self.client.log_param(run_id, key, value)
        logger = tracking.RunLogger(self.client, run_id)
        sign = 1.0 if self.space.direction == "minimize" else -1.0
        work = Path(tempfile.mkdtemp(prefix=f"hcmbench-trial-{trial.number}-"))
        state, reason, value = "FAIL", "", None
        try:
            result = engine.train(self.model, self.data_root, work / "run", data_config, train_config, settings,
                                  callbacks=[logger, _PruneOnValidation(trial, sign, self.display)])
            if self.space.metric == "val_score":
                value = result.best_score
            else:
                table = self.scorer(result.best_checkpoint)
                tracking.log_table(self.client, run_id, table)
                value = getattr(table.rows[0], self.space.metric)
            if not math.isfinite(value):
                raise HcmbenchError(f"the objective {self.space.metric} is {value}")
            state = "COMPLETE"
            return value
        except optuna.TrialPruned as exc:
            state, reason = "PRUNED", str(exc)
            logger.log_outputs(work / "run", checkpoint=False)  # a pruned trial's weights are not worth keeping
            raise
        except KeyboardInterrupt:
            state, reason = "STOPPED", "interrupted (Ctrl-C)"
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            raise
        finally:
            tracking.end_run(self.client, run_id, state, reason or None)
            shutil.rmtree(work, ignore_errors=True)
            if self.display is not None:
                self._report_end(trial, state, value if state == "COMPLETE" else None, reason)

    def _report_end(self, trial: Any, state: str, value: float | None, reason: str) -> None:
        import optuna

        finished = [(t.value, t.number) for t in trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if value is not None:
            finished.append((value, trial.number))
        best = (min if self.space.direction == "minimize" else max)(finished) if finished else (None, None)
        self.display(TrialEnded(trial.number, state, value, best[0], best[1], reason))
