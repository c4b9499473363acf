"""MLflow: where runs are stored, and finding a run's or a registered model's checkpoint.

MLflow is imported lazily (it takes seconds), so commands that do not track stay quick.
Tracking URI: $MLFLOW_TRACKING_URI, else `sqlite:///mlruns/mlflow.db` made absolute (MLflow 3 refuses
the plain `./mlruns` file store), with artifacts under `mlruns/artifacts`. Registry URI:
$MLFLOW_REGISTRY_URI, else the tracking URI. Both are always passed to MLflow explicitly and never left
set in the process: MLflow's own default, for whatever is not told, is `sqlite:///mlflow.db` in the
working directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcmbench.errors import HcmbenchError

STORE_DIR = Path("mlruns")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
CHECKPOINT_ARTIFACT = "checkpoints/best.pt"
# What `promote` logs as the model's code; not imported here: importing it makes MLflow warn about type hints.
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")


def default_tracking_uri() -> str:
    """sqlite:///<absolute path of ./mlruns>/mlflow.db. Absolute, because MLflow caches a store per URI:
    a relative one would keep pointing at the first working directory of the process."""
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def uses_default_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else the project's sqlite store under ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def registry_uri(tracking: str | None = None) -> str:
    """$MLFLOW_REGISTRY_URI when set, else the tracking store (`tracking`, default `tracking_uri()`): the
    registered models live beside the runs, never in MLflow's default ./mlflow.db."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking or tracking_uri()


def is_tracking_reference(source: str) -> bool:
    """Whether `source` names an MLflow run (a run id, runs:/…) or a registered model (models:/…)."""
    return bool(RUN_ID.match(source)) or source.startswith(("runs:/", "models:/"))


def resolve_checkpoint(source: str | Path, download_to: str | Path | None = None) -> Path:
    """A local checkpoint file for a path, an MLflow run id, a `runs:/` URI or a `models:/` URI.

    A run id means the run's best checkpoint (`checkpoints/best.pt`); a `models:/NAME@ALIAS` or
    `models:/NAME/VERSION` URI means the checkpoint stored with that registered model. Downloads go to
    `download_to` (default: a new temporary folder). Anything that cannot be found raises HcmbenchError.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        return path
    if not is_tracking_reference(text):
        raise HcmbenchError(f"{text}: no such checkpoint file (nor an MLflow run id, runs:/ or models:/ URI)")
    uri = f"runs:/{text}/{CHECKPOINT_ARTIFACT}" if RUN_ID.match(text) else text
    folder = Path(download_to) if download_to is not None else Path(tempfile.mkdtemp(prefix="hcmbench-"))
    try:
        import mlflow

        mlflow_client = client()
        if text.startswith("models:/"):
            uri = resolve_models_uri(mlflow_client, text)[0]
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder),
                                                         tracking_uri=mlflow_client.tracking_uri))
    except Exception as exc:  # MLflow raises several types, with multi-line messages
        raise HcmbenchError(f"{text}: cannot fetch it from MLflow at {tracking_uri()} ({_first_line(exc)})") from None
    if local.is_file():
        return local
    found = sorted(local.rglob("best.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise HcmbenchError(f"{text}: holds no checkpoint (.pt) file")
    return found[0]


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message (MLflow's run over several), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_models_uri(mlflow_client, uri: str) -> tuple[str, str | None]:
    """(where its files are, the run it came from) for the model a `models:/` URI names — NAME@ALIAS,
    NAME/VERSION, NAME/STAGE, NAME/latest or a logged model's id, optionally followed by a path inside it —
    looked up in `mlflow_client`'s registry.

    Not left to MLflow's `models:/` artifact repository: that one asks the process-wide registry URI
    (`ModelsArtifactRepository._get_model_uri_infos` ignores the registry_uri it is given), which without
    $MLFLOW_TRACKING_URI is ./mlflow.db, not this project's store. MLflow errors propagate."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    base, inside = ModelsArtifactRepository.split_models_uri(uri)
    found = get_model_name_and_version(mlflow_client, base)
    if len(found) == 1:  # models:/<logged model id>
        logged = mlflow_client.get_logged_model(found[0])
        location, run_id = logged.artifact_location, logged.source_run_id
    else:
        location = mlflow_client.get_model_version_download_uri(*found)
        run_id = mlflow_client.get_model_version(*found).run_id
    return (posixpath.join(location, inside) if inside else location), run_id


# -- the store ----------------------------------------------------------------------------------------

STUDY_TAG, ROLE_TAG, MODEL_TAG, TRIAL_TAG, STATE_TAG = (
    "hcmbench.study", "hcmbench.role", "hcmbench.model", "hcmbench.trial", "hcmbench.state")
# The tag from which MLflow chooses an experiment's view, and the kind that selects its model-training view
# (runs, charts, models) rather than the GenAI one (traces); its UI writes the same tag when a user picks one.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
# Optuna's trial states as MLflow run statuses (MLflow has no "pruned": a pruned run was killed early).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED", "STOPPED": "KILLED"}


def experiment_name(model: str) -> str:
    return f"hcmbench-{model}"


def registered_model_name(model: str) -> str:
    return f"hcm-{model}"


def _quiet_mlflow_logs() -> None:
    import logging

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str | None = None):
    """An MlflowClient on tracking store `uri` (default `tracking_uri()`) and registry `registry_uri(uri)`;
    the default sqlite store's folder is created if needed, and a new SQLite store created under a lock
    (`_creating`)."""
    from hcmbench.atomic import output_folder

    _quiet_mlflow_logs()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one tqdm bar per file, else
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a "View run" line per run, else
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    if uri == default_tracking_uri():
        output_folder(STORE_DIR)
    registry = registry_uri(uri)
    with _creating(uri, "tracking"):  # MlflowClient opens (and creates) the tracking store at once
        mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=registry)
    if _uncreated(registry, "registry") is not None:
        with _creating(registry, "registry"):  # the registry store is opened on first use
            mlflow_client.search_registered_models(max_results=1)
    return mlflow_client


_CREATED: set[tuple[str, str]] = set()  # (URI, tracking or registry): the SQLite stores this process has opened


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///FILE` URI; None for other stores (and in-memory SQLite)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


@contextlib.contextmanager
def _creating(uri: str, kind: str) -> Iterator[None]:
    """The block opens the `kind` store at `uri` for the first time in this process: for a SQLite store, under a
    lock on its database's folder (`mlruns/`). MLflow creates a store when it first opens it, running
    its schema migrations; two processes doing so at once (two `hcmbench sweep` started together in a new
    folder) run into each other's migrations, and all but one crash ("Online migration expected to match
    one row", "duplicate column name"). Under the lock the first creates the store and the others find it
    made. Servers and other databases are left to MLflow."""
    from hcmbench.atomic import file_lock

    database = _uncreated(uri, kind)
    if database is None:
        yield
        return
    with file_lock(database.parent):  # the folder: no lock file left beside the store
        yield
    _CREATED.add((uri, kind))


def _uncreated(uri: str, kind: str) -> Path | None:
    """The database file of a SQLite `kind` store this process has not opened yet (None for any other store,
    and for a file whose folder is missing: MLflow then says it cannot open it)."""
    database = sqlite_file(uri)
    return None if database is None or (uri, kind) in _CREATED or not database.parent.is_dir() else database


def ensure_experiment(mlflow_client, model: str) -> str:
    """The id of experiment `hcmbench-<model>`, created on first use (artifacts under mlruns/artifacts for
    the default store; a tracking server chooses its own artifact location) and marked as a model-training
    experiment (`mlflow.experimentKind`); one made before hcmbench marked them is marked now."""
    name = experiment_name(model)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:  # a kind the user chose in the UI is left alone
            mlflow_client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    location = None
    if mlflow_client.tracking_uri == default_tracking_uri():
        location = (STORE_DIR / "artifacts" / name).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags={
            MODEL_TAG: model, EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except Exception:  # another worker created it between our two calls
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = str(list(value) if isinstance(value, tuple) else value)[:6000]


def flatten_params(params: dict[str, Any]) -> dict[str, str]:
    """Nested settings as MLflow params: {"train": {"lr": 2e-4}} → {"train.lr": "0.0002"}."""
    out: dict[str, str] = {}
    _flatten("", params, out)
    return out


class RunLogger:
    """Logs one training run to MLflow through the engine's callbacks.

    Per round (an epoch, or a kimg tick): `loss/<name>` for each loss, `val/score`, `epoch/seconds` and
    `kimg`, the thousands of images shown so far (step = the round; plot against `kimg` in the UI to
    compare runs on datasets of different sizes), and each sample grid as `samples/epoch_NNN.png`. At the end of training: `plots/losses.png` and `checkpoints/best.pt`.
    """

    def __init__(self, mlflow_client, run_id: str) -> None:
        self.client, self.run_id = mlflow_client, run_id
        self.trainer = None

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, event) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {f"loss/{k}": v for k, v in event.losses.items()}
        values.update({"val/score": event.val_score, "val/best": event.best_score, "epoch/seconds": event.seconds,
                       "kimg": event.kimg})
        metrics = [Metric(k, float(v), now, event.epoch) for k, v in values.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_samples(self, event) -> None:
        self.client.log_artifact(self.run_id, str(event.path), "samples")

    def on_train_end(self, result) -> None:
        self.log_outputs(result.out_dir)

    def log_outputs(self, out_dir: str | Path, checkpoint: bool = True) -> None:
        """The losses plot and (with `checkpoint`) the best checkpoint of a run folder, when they exist."""
        out_dir = Path(out_dir)
        outputs = [(out_dir / "plots" / "losses.png", "plots")]
        if checkpoint:
            outputs.append((out_dir / "checkpoints" / "best.pt", "checkpoints"))
        for path, folder in outputs:
            if path.exists():
                self.client.log_artifact(self.run_id, str(path), folder)


def log_table(mlflow_client, run_id: str, table, folder: str = "eval", metrics: bool = True) -> None:
    """An evaluation table's table.md and table.csv as artifacts under `folder`, and its first row's
    figures as `eval/*` metrics."""
    from mlflow.entities import Metric

    with tempfile.TemporaryDirectory() as tmp:
        for path in table.write(tmp):
            mlflow_client.log_artifact(run_id, str(path), folder)
    if metrics and table.rows:
        now = int(time.time() * 1000)
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in table.model_metrics().items()])


def end_run(mlflow_client, run_id: str, state: str, reason: str | None = None, name: str | None = None) -> None:
    """Tag a run with its Optuna-style state (COMPLETE, PRUNED, FAIL, STOPPED) and end it with the matching
    MLflow status; a reason (why it failed) goes into a tag, and `name` replaces the run's name."""
    if reason:
        mlflow_client.set_tag(run_id, "hcmbench.reason", reason[:5000])
    mlflow_client.set_tag(run_id, STATE_TAG, state)
    if name:
        mlflow_client.update_run(run_id, name=name)
    mlflow_client.set_terminated(run_id, status=RUN_STATUS.get(state, "FAILED"))


# What a trial run's name says of a trial that ended without a score.
STATE_WORDS = {"PRUNED": "pruned", "FAIL": "failed", "STOPPED": "stopped"}
# The objective of each scored trial, on its run; on the study's parent run, the history, step = trial number:
# each trial's objective, and the best so far (`best/value`, which MLflow's chart view shows first: its sections
# are the metrics' prefixes in alphabetical order).
OBJECTIVE_METRIC, STUDY_OBJECTIVE_METRIC, BEST_METRIC = "objective", "study/objective", "best/value"


def trial_run_name(study: str, model: str, number: int, summary: str = "") -> str:
    """A trial run's name as a person reads it in the runs table: "trial 3", then, once it has ended,
    "trial 3 · fid 38.2" (or "· pruned", "· failed"). A study not named after its model (the default,
    hcmbench-<model>) comes first: "lr-search trial 3"."""
    head = f"trial {number}" if study == experiment_name(model) else f"{study} trial {number}"
    return f"{head} · {summary}" if summary else head


def log_trial_result(mlflow_client, parent: str, run_id: str, number: int, value: float, best: float) -> None:
    """A scored trial's objective `value` on its run (`objective`), and on the study's parent run its step of
    the study's history: `study/objective` (this trial) and `best/value` (the best so far), step = `number`."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric(OBJECTIVE_METRIC, value, now, number)])
    mlflow_client.log_batch(parent, metrics=[Metric(STUDY_OBJECTIVE_METRIC, value, now, number),
                                             Metric(BEST_METRIC, best, now, number)])


def end_orphans(mlflow_client, experiment_id: str, study: str, states: dict[int, str]) -> int:
    """End the study's trial runs still marked RUNNING whose trial has ended (its process died without
    closing the run): each gets its trial's state, `states[number]` (a FAILED trial of a worker that stopped
    sending heartbeats becomes a FAILED run); a run whose trial is unknown ends KILLED. Runs of trials still
    RUNNING or WAITING are left alone. Returns how many runs were ended."""
    runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study}' and "
                                     "attributes.status = 'RUNNING'")
    count = 0
    for run in runs:
        trial = run.data.tags.get(TRIAL_TAG)
        if trial is None:
            continue
        state = states.get(int(trial), "STOPPED")
        if state in ("RUNNING", "WAITING"):
            continue
        reason = ("its worker stopped sending heartbeats (killed or disconnected); the trial is queued again"
                  if state == "FAIL" else "the process running it ended without closing its run")
        name = f"{run.info.run_name} · {STATE_WORDS.get(state, 'ended')}" if run.info.run_name else None
        end_run(mlflow_client, run.info.run_id, state, reason, name)
        count += 1
    return count


# MLflow's saved views of an experiment's runs are experiment tags `mlflow.sharedViewState.<id>` (what its
# UI writes when a user saves a view, listed in its Views menu, opened by the URL parameter viewStateShareKey).
SAVED_VIEW_TAG, TRIALS_VIEW = "mlflow.sharedViewState.", "hcmbench-trials"


def save_trials_view(mlflow_client, experiment_id: str, direction: str = "minimize",
                     figures: Iterable[str] = ("fid",)) -> None:
    """Give the experiment the saved view "hcmbench: trials by objective" unless it has one (a user's changes
    to it are kept): runs sorted by `objective`, best first (`direction`), which lists the trials flat instead
    of folded under the study's run (MLflow nests them only in its default order), with the objective, the
    objective's `figures` and the main evaluation figures as columns."""
    import json

    tag = SAVED_VIEW_TAG + TRIALS_VIEW
    if tag in mlflow_client.get_experiment(experiment_id).tags:
        return
    figures = list(figures)
    names = (["val/best"] if "val_score" in figures else
             [f"eval/{f}" for f in dict.fromkeys([*figures, "fid", "kid", "precision", "recall", "memorization"])])
    state = {"orderByKey": f"metrics.`{OBJECTIVE_METRIC}`", "orderByAsc": direction != "maximize",
             "selectedColumns": [f"metrics.`{name}`" for name in [OBJECTIVE_METRIC, *names]]}
    now = int(time.time() * 1000)
    mlflow_client.set_experiment_tag(experiment_id, tag, json.dumps({
        "name": "hcmbench: trials by objective", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}))


def study_parent_run(mlflow_client, experiment_id: str, model: str, study: str, tags: dict[str, str],
                     params: dict[str, Any]) -> str:
    """A sweep's parent run: found by its study tag when the study is continued, else created with
    `tags` and the (nested) `params`. The experiment gets its saved view of the trials (`save_trials_view`)
    for the objective in `params["objective"]` (metric, direction, combine)."""
    objective = params.get("objective", {})
    save_trials_view(mlflow_client, experiment_id, objective.get("direction", "minimize"),
                     [objective.get("metric", "fid"), *(objective.get("combine") or {})])
    found = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study}' and "
                                      f"tags.`{ROLE_TAG}` = 'study'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(experiment_id, run_name=study, tags={
        STUDY_TAG: study, ROLE_TAG: "study", MODEL_TAG: model, **tags})
    for key, value in flatten_params(params).items():
        mlflow_client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def finish_study_run(mlflow_client, run_id: str, best: tuple[int | None, float | None, dict[str, Any]],
                     plots: list[Path], status: str, best_run_id: str | None = None) -> None:
    """A sweep's parent run gets the best trial (number, value, parameters), the evaluation figures
    (`eval/*`) of its run `best_run_id`, so that the parent compares with the trials in every column and
    chart, Optuna's plots, then its status."""
    from mlflow.entities import Metric

    number, value, params = best
    if number is not None:
        # the best at the history's last step, which is what MLflow shows as the run's value (trials ended
        # out of order by several workers may have left another best there)
        history = mlflow_client.get_metric_history(run_id, BEST_METRIC)
        last = max(history, key=lambda m: (m.step, m.timestamp), default=None)
        if last is None or last.value != value:
            mlflow_client.log_metric(run_id, BEST_METRIC, value, step=last.step if last else 0)
        mlflow_client.set_tag(run_id, "hcmbench.best_trial", str(number))
        for key, item in params.items():
            mlflow_client.set_tag(run_id, f"best.{key}", str(item))
    if number is not None and best_run_id:
        now = int(time.time() * 1000)
        figures = {k: v for k, v in mlflow_client.get_run(best_run_id).data.metrics.items() if k.startswith("eval/")}
        if figures:  # step 0 and a later time: a new best replaces the previous one's
            mlflow_client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in figures.items()])
        mlflow_client.set_tag(run_id, "hcmbench.best_run", best_run_id)
    for path in plots:
        mlflow_client.log_artifact(run_id, str(path), "optuna")
    mlflow_client.set_terminated(run_id, status=status)


# -- finding the best run ---------------------------------------------------------------------------------

def metric_key(metric: str) -> str:
    """The MLflow metric behind a short name: "fid" → "eval/fid", "val_score" → "val/best"."""
    return "val/best" if metric == "val_score" else metric if "/" in metric else f"eval/{metric}"


def best_run(mlflow_client, model: str, metric: str = "fid") -> Any:
    """The finished trial run of `model` with the best `metric`; HcmbenchError when there is none."""
    experiment = mlflow_client.get_experiment_by_name(experiment_name(model))
    key = metric_key(metric)
    if experiment is None:
        raise HcmbenchError(f"no runs of {model} at {tracking_uri()}: run `hcmbench sweep --model {model}` first")
    from hcmbench.metric_names import DIRECTIONS

    order = "ASC" if DIRECTIONS.get(metric.split("/")[-1], "minimize") == "minimize" else "DESC"
    runs = mlflow_client.search_runs([experiment.experiment_id],
                                     filter_string=f"attributes.status = 'FINISHED' and tags.`{ROLE_TAG}` = 'trial'",
                                     order_by=[f"metrics.`{key}` {order}"], max_results=200)
    runs = [r for r in runs if key in r.data.metrics and math.isfinite(r.data.metrics[key])]
    if not runs:
        raise HcmbenchError(f"no finished run of {model} has the metric {key}: run a sweep to its end first")
    return runs[0]


def best_runs(models: list[str] | None = None, metric: str = "fid") -> dict[str, Any]:
    """{model: its best finished run} for `models`, or for every model with a finished run when None."""
    from hcmbench.models.registry import available_models

    mlflow_client = client()
    if models is None:
        found = {}
        for model in available_models():
            try:
                found[model] = best_run(mlflow_client, model, metric)
            except HcmbenchError:
                continue
        if not found:
            raise HcmbenchError(f"no finished runs at {tracking_uri()}: run `hcmbench sweep` first")
        return found
    return {model: best_run(mlflow_client, model, metric) for model in models}


def download_checkpoints(runs: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Each run's best checkpoint, downloaded into `folder`/<model>/."""
    mlflow_client = client()
    out = {}
    for model, run in runs.items():
        (folder / model).mkdir(parents=True, exist_ok=True)
        out[model] = Path(mlflow_client.download_artifacts(run.info.run_id, CHECKPOINT_ARTIFACT, str(folder / model)))
    return out


# -- the registry --------------------------------------------------------------------------------------------


@dataclass
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    metric: str
    value: float


def check_generator(checkpoint: str | Path, run_id: str) -> None:
    """Load a run's checkpoint and draw one image from it (with the fewest steps the model allows), as the
    registered model will; HcmbenchError, in one line, when that fails or the image is not finite."""
    import torch

    from hcmbench.checkpoints import load_generator
    from hcmbench.sampling import draw

    try:
        generator = load_generator(checkpoint)
        options = {"steps": 1} if "steps" in generator.model.sample_options else {}
        images, _ = draw(generator, 1, options=options)
    except Exception as exc:  # a truncated file, mismatched weights, a model that cannot sample
        reason = _first_line(exc).removeprefix(f"{checkpoint}: ")  # the download's temporary path says nothing
        raise HcmbenchError(f"run {run_id}: its {CHECKPOINT_ARTIFACT} does not load and sample ({reason}); "
                            "nothing registered") from None
    if not torch.isfinite(images).all():
        raise HcmbenchError(f"run {run_id}: its {CHECKPOINT_ARTIFACT} samples non-finite pixels; nothing registered")


@contextlib.contextmanager
def _fluent_store() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs on this project's stores for the block, then back
    as they were, with the MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI variables that `mlflow.set_*_uri`
    write. For what has no client form: `mlflow.pyfunc.log_model` logs to the active run's store, and the
    registry's SQL store looks the logged model up through a default `MlflowClient()`. MLflow keeps the
    URIs in module globals; its own `_use_tracking_uri` saves and restores them the same way."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    variables = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(registry_uri())
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)  # also resets MLflow's tracer, which caches the URI
        registry_utils._registry_uri = saved_registry
        for key, value in variables.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Silence MLflow while it logs and registers a model, which `promote`'s caller reports in one line: its
    advice to add type hints to the pyfunc's `predict` (free-form inputs have none), a warning it issues
    inside its own `catch_warnings` with the filter reset to "once", so that no filter set here holds and
    `showwarning` is silenced instead; and its "Successfully registered model" and "Created version" lines
    on stderr. Errors still raise."""
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *args, **kwargs: None  # catch_warnings puts the original back
        yield


def promote(model: str, metric: str = "fid", alias: str = "champion") -> Promotion:
    """Register the best finished run of `model` (by `metric`) as a version of `hcm-<model>` — a pyfunc
    generator with its checkpoint and settings inside — point `alias` at it, and copy the run's
    evaluation metrics onto the version as tags. A checkpoint that does not load and sample is refused
    (HcmbenchError) before anything is registered."""
    import mlflow

    mlflow_client = client()
    run = best_run(mlflow_client, model, metric)
    run_id = run.info.run_id
    name = registered_model_name(model)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(mlflow_client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, tmp))
        check_generator(checkpoint, run_id)
        with _quietly(), _fluent_store():
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(name="generator", python_model=str(PYFUNC_CODE),
                                               artifacts={"checkpoint": str(checkpoint)})
            version = mlflow.register_model(info.model_uri, name, tags={"run_id": run_id})
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    for key, value in run.data.metrics.items():
        if key.startswith(("eval/", "val/")):
            mlflow_client.set_model_version_tag(name, version.version, key, str(value))
    mlflow_client.set_model_version_tag(name, version.version, "hcmbench.study", run.data.tags.get(STUDY_TAG, ""))
    return Promotion(name, str(version.version), alias, run_id, metric_key(metric), run.data.metrics[metric_key(metric)])


def log_comparison(table, runs: dict[str, str], experiment: str = "compare", mlflow_client=None,
                   artifacts: Iterable[Path] = ()) -> str:
    """Log a comparison table to the experiment `hcmbench-<experiment>` (the table under <experiment>/,
    eval/<figure>/<model> metrics, the compared run ids as params, `artifacts` under figures/); returns
    the run id."""
    mlflow_client = mlflow_client or client()
    experiment_id = ensure_experiment(mlflow_client, experiment)
    run = mlflow_client.create_run(experiment_id, run_name=experiment if experiment == "compare" else "table",
                                   tags={ROLE_TAG: experiment})
    for model, run_id in runs.items():
        mlflow_client.log_param(run.info.run_id, f"run.{model}", run_id)
    log_table(mlflow_client, run.info.run_id, table, folder=experiment, metrics=False)
    for path in artifacts:
        mlflow_client.log_artifact(run.info.run_id, str(path), "figures")
    for i, row in enumerate(table.rows):
        if row.kind == "model":
            for key, value in table.model_metrics(i).items():
                mlflow_client.log_metric(run.info.run_id, f"{key}/{row.name}", value)
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def source_run_id(source: str) -> str | None:
    """The MLflow run behind a generator source: a run id, a runs:/ URI, or a models:/NAME@ALIAS or
    models:/NAME/VERSION URI (the registered version's run); None for a checkpoint file."""
    text = str(source)
    if RUN_ID.match(text):
        return text
    if text.startswith("runs:/"):
        return text[len("runs:/"):].split("/")[0]
    if text.startswith("models:/"):
        try:
            return resolve_models_uri(client(), text)[1]
        except Exception:  # not resolvable here: the utility figures are then simply not linked to a run
            return None
    return None


UTILITY_EXPERIMENT = "utility"  # experiment hcmbench-utility


def _metric_key(text: str) -> str:
    """A method or setting as an MLflow metric key part (letters, digits, _ - . / and spaces only)."""
    return re.sub(r"[^\w.\- ]", "_", text.replace("+", "_").replace(":", "_"))


def utility_metrics(result) -> dict[str, float]:
    """Every row's figures as MLflow metrics with readable keys: `utility/<task>/k<k>/<method>[/x<ratio>]/
    <metric>` with `/ci_low`, `/ci_high`, and for compared rows `.../delta_<metric>` with its interval and
    `/p_value` ("+" and ":" of method names become "_"; k "all" for every patient). NaN figures are left out."""
    out: dict[str, float] = {}
    for row in result.rows:
        k = "all" if row.patients_per_group is None else row.patients_per_group
        prefix = f"utility/{row.task}/k{k}/{_metric_key(row.method)}" + ("" if row.ratio is None else f"/x{row.ratio:g}")
        for metric in ("slice_bacc", "slice_auc", "patient_bacc", "patient_auc"):
            out[f"{prefix}/{metric}"] = getattr(row, metric)
            out[f"{prefix}/{metric}/ci_low"] = getattr(row, f"{metric}_low")
            out[f"{prefix}/{metric}/ci_high"] = getattr(row, f"{metric}_high")
            if row.baseline is not None:
                out[f"{prefix}/delta_{metric}"] = getattr(row, f"delta_{metric}")
                out[f"{prefix}/delta_{metric}/ci_low"] = getattr(row, f"delta_{metric}_low")
                out[f"{prefix}/delta_{metric}/ci_high"] = getattr(row, f"delta_{metric}_high")
                out[f"{prefix}/delta_{metric}/p_value"] = getattr(row, f"p_{metric}")
    return {key: float(value) for key, value in out.items() if math.isfinite(value)}


def log_utility(result, sources: dict[str, str], paths: list[Path]) -> str:
    """Log a utility experiment to `hcmbench-utility`: its settings as params, the table, CSV and plot as
    artifacts, every row's figures and intervals (`utility_metrics`), and per generator the summary gain
    `utility/gain/<name>` — the paired difference in patient balanced accuracy of real+<name> against real at
    the declared setting — with `/ci_low`, `/ci_high` and `/p_value`, and the source and its run as tags
    (which is how `hcmbench compare` finds the figure of a run). Returns the run id."""
    from dataclasses import asdict

    from mlflow.entities import Metric

    mlflow_client = client()
    experiment = ensure_experiment(mlflow_client, UTILITY_EXPERIMENT)
    run = mlflow_client.create_run(experiment, run_name="utility", tags={ROLE_TAG: "utility"})
    run_id = run.info.run_id
    settings = {k: (",".join("all" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in value)
                    if isinstance(value, tuple) else value)
                for k, value in asdict(result.config).items()}
    (task, k, ratio), how = result.summary_setting()
    settings["summary_at"] = f"{task},{'all' if k is None else k},{ratio:g}"
    params = {"utility": settings, "data": {"root": result.data_root, "test_root": result.test_root or "",
                                            "folds": result.folds}}
    for key, value in flatten_params(params).items():
        mlflow_client.log_param(run_id, key, value)
    mlflow_client.set_tag(run_id, "hcmbench.utility.summary_at", f"{settings['summary_at']} ({how})")
    for name, source in sources.items():
        mlflow_client.set_tag(run_id, f"hcmbench.source.{name}", source)
        linked = source_run_id(source)
        if linked:
            mlflow_client.set_tag(run_id, f"hcmbench.source_run.{name}", linked)
    metrics = utility_metrics(result)
    for name, gain in result.gains().items():
        for suffix, value in (("", gain.value), ("/ci_low", gain.low), ("/ci_high", gain.high),
                              ("/p_value", gain.p_value)):
            if math.isfinite(value):
                metrics[f"utility/gain/{name}{suffix}"] = float(value)
    stamp = int(time.time() * 1000)
    items = [Metric(key, value, stamp, 0) for key, value in metrics.items()]
    for start in range(0, len(items), 1000):  # MLflow's batch limit
        mlflow_client.log_batch(run_id, metrics=items[start:start + 1000])
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), "utility")
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def utility_gains(runs: dict[str, str]) -> dict[str, Any]:
    """{name: Gain} for the generator runs `runs` ({name: run id}) that a utility experiment has measured
    (the latest measurement of each): the paired difference in patient balanced accuracy at that run's
    declared setting, with its interval and p-value (NaN where not logged)."""
    from hcmbench.experiments.utility.results import Gain

    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(experiment_name(UTILITY_EXPERIMENT))
    if experiment is None:
        return {}
    found = mlflow_client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time DESC"], max_results=200)
    gains: dict[str, Any] = {}
    for name, run_id in runs.items():
        for utility_run in found:
            tags, metrics = utility_run.data.tags, utility_run.data.metrics
            linked = [k.split(".", 2)[2] for k, v in tags.items() if k.startswith("hcmbench.source_run.") and v == run_id]
            keys = [f"utility/gain/{n}" for n in linked if f"utility/gain/{n}" in metrics]
            if keys:
                key = keys[0]
                gains[name] = Gain(metrics[key], metrics.get(f"{key}/ci_low", math.nan),
                                   metrics.get(f"{key}/ci_high", math.nan), metrics.get(f"{key}/p_value", math.nan))
                break
    return gains


@dataclass(frozen=True)
class RunsView:
    """An experiment's runs view in MLflow's UI: its name and URL."""
    experiment: str
    url: str


def ui_address(host: str = "127.0.0.1", port: int = 5000) -> str:
    """http://HOST:PORT of a UI listening on `host` (a wildcard address is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def runs_view_url(address: str, experiment_id: str, view: str | None = None) -> str:
    """The URL of an experiment's runs in MLflow's model-training view (`workflowType=machine_learning`;
    without it MLflow 3 opens the GenAI view, traces), in its saved view `view` when given."""
    from urllib.parse import quote, urlencode

    query = {"workflowType": "machine_learning", **({"viewStateShareKey": view} if view else {})}
    return f"{address}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def runs_views(host: str = "127.0.0.1", port: int = 5000) -> list[RunsView]:
    """The runs view of every hcmbench experiment in the store, the one with the latest run first; a sweep's
    in its saved view of the trials (`save_trials_view`). Empty when the store does not exist yet or cannot
    be read (the UI then says why)."""
    if uses_default_store() and not (STORE_DIR / "mlflow.db").exists():
        return []  # not created here: `mlflow ui` creates it, and two processes creating one store collide
    try:
        mlflow_client = client()
        found = []
        for experiment in mlflow_client.search_experiments(filter_string="name LIKE 'hcmbench-%'"):
            latest = mlflow_client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                               max_results=1)
            view = TRIALS_VIEW if SAVED_VIEW_TAG + TRIALS_VIEW in experiment.tags else None
            url = runs_view_url(ui_address(host, port), experiment.experiment_id, view)
            found.append((latest[0].info.start_time if latest else 0, experiment.name, url))
    except Exception:  # a tracking server that is down, a store of another MLflow version
        return []
    return [RunsView(name, url) for _, name, url in sorted(found, key=lambda item: -item[0])]


def ui_command(host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """The `mlflow ui` command line for this project's store, with `workers` uvicorn workers (MLflow's
    default, 4, takes three times as long to start on two busy cores, for one person's browser)."""
    import sys

    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", host,
               "--port", str(port), "--workers", str(workers)]
    if uses_default_store():
        STORE_DIR.mkdir(exist_ok=True)
        command += ["--default-artifact-root", (STORE_DIR / "artifacts").resolve().as_uri()]
    return command


def ui_environment() -> dict[str, str]:
    """The environment of `mlflow ui`: this one, with MLflow's job execution off unless it is set here. The
    jobs (a job runner and huey consumers) serve GenAI features (judges, trace roll-ups) that hcmbench
    does not use, and are most of the server's processes and start-up time."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
