"""The published study's Table 1, measured: every model trained at one CPU budget on the same data.

    run_study(data_root, out, StudyConfig(minutes=30))

For each model, its preset (default "cpu", `GenerativeModel.presets`) is trained for `minutes` of wall
clock in `out/<model>/` (an interrupted study resumes each model where it stopped and skips the
finished ones), logged as one MLflow run per model in the experiment `hcmbench-study` (losses, grids,
checkpoint). Then one calibrated table (`report.evaluate_checkpoints`: the model rows, the real rows,
detectability) against the held-out test patients, the study's Figure 4 (a real slice beside one
sample per model) and each model's loss curves (`figures.study_figures`) are written to `out/` and
logged to a "table" run of the same experiment. `write_results_section` puts the table, the command,
the machine and the times into a Markdown file between markers, so that docs/results.md always holds
what the named command printed.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcmbench.atomic import output_folder
from hcmbench.config import DataConfig, layered_train_config
from hcmbench.errors import HcmbenchError

STUDY_MODELS = ("vae", "gan", "dcgan", "acgan", "infogan", "ddpm")
EXPERIMENT = "study"  # tracking.experiment_name → "hcmbench-study"
RUN_ID_FILE = "mlflow_run_id"
BEGIN, END = "<!-- hcmbench study: begin -->", "<!-- hcmbench study: end -->"
FIGURE_LIMIT = 300_000  # bytes: Figure 4 goes into the repository


@dataclass(frozen=True)
class StudyConfig:
    """What a study trains and how it scores. `minutes` is each model's wall-clock budget."""

    models: tuple[str, ...] = STUDY_MODELS
    minutes: float = 30.0
    preset: str = "cpu"
    groups: tuple[str, ...] = ("HCM",)
    size: int = 64
    n: int = 1000  # images generated per model for the table
    detect_seeds: int = 3
    seed: int = 0
    device: str = "auto"
    # How the diffusion model is sampled for the table and Figure 4 (the other models take no options):
    # DPM-Solver++(2M) over 20 steps, measured better than DDIM-50 on real data (docs/results.md) and
    # about 50 times quicker than ancestral sampling over 1,000 steps.
    sampler: str = "dpm++"
    steps: int = 20
    precision: str = "fp32"  # the network's arithmetic while sampling the DDPM ("bf16": about twice as fast)

    def __post_init__(self) -> None:
        if not self.models:
            raise HcmbenchError("a study needs at least one model")
        if len(set(self.models)) != len(self.models):
            raise HcmbenchError(f"a model appears twice in {', '.join(self.models)}")
        if self.minutes <= 0:
            raise HcmbenchError(f"minutes must be positive, got {self.minutes}")
        if self.n < 2 or self.detect_seeds < 0:
            raise HcmbenchError("n must be at least 2 and detect_seeds non-negative")
        if self.steps < 1:
            raise HcmbenchError(f"steps must be positive, got {self.steps}")
        if self.precision not in ("fp32", "bf16"):
            raise HcmbenchError(f"precision must be fp32 or bf16, got {self.precision!r}")

    @property
    def sample_options(self) -> dict[str, Any]:
        options = {"sampler": self.sampler, "steps": self.steps}
        return options if self.precision == "fp32" else {**options, "precision": self.precision}


@dataclass
class StudyResult:
    out: Path
    table: Any  # report.EvaluationTable
    checkpoints: dict[str, Path]
    train_seconds: dict[str, float]
    eval_seconds: float
    figures: list[Path]
    run_ids: dict[str, str] = field(default_factory=dict)


Display = Callable[[str], None]


def _train_config(model: str, config: StudyConfig) -> Any:
    """The preset's training settings with the study's budget (its minutes alone) and seed."""
    from hcmbench.models.registry import model_preset

    preset = model_preset(model, config.preset)
    return layered_train_config({}, preset.train, {"minutes": config.minutes, "seed": config.seed,
                                                   "device": config.device})


def _mlflow_run(mlflow_client: Any, experiment_id: str, folder: Path, model: str) -> str:
    """The model's run in hcmbench-study: the one this folder started, else a new one."""
    from hcmbench import tracking

    saved = folder / RUN_ID_FILE
    if saved.exists():
        run_id = saved.read_text().strip()
        try:
            mlflow_client.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # the run lives in another tracking store: this one gets a new run
            pass
    run = mlflow_client.create_run(experiment_id, run_name=model, tags={tracking.MODEL_TAG: model,
                                                                        tracking.ROLE_TAG: "study-model"})
    output_folder(folder)
    saved.write_text(run.info.run_id)
    return run.info.run_id


def train_models(data_root: Path, out: Path, config: StudyConfig, mlflow_client: Any,
                 display: Display | None = None) -> tuple[dict[str, Path], dict[str, float], dict[str, str]]:
    """Train (or resume, or skip when finished) each model; returns its best checkpoints, the seconds of
    training each took in all, and the MLflow run ids."""
    from hcmbench import tracking

    experiment_id = tracking.ensure_experiment(mlflow_client, EXPERIMENT)
    data_config = DataConfig(groups=config.groups, size=config.size)
    checkpoints, seconds, run_ids = {}, {}, {}
    for model in config.models:
        folder = out / model
        run_id = run_ids[model] = _mlflow_run(mlflow_client, experiment_id, folder, model)
        listeners = [tracking.RunLogger(mlflow_client, run_id)]
        try:
            result = _train_one(model, data_root, folder, data_config, config, mlflow_client, run_id, listeners,
                                display)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            tracking.end_run(mlflow_client, run_id, "STOPPED" if interrupted else "FAIL",
                             "interrupted: the same command continues it" if interrupted else f"{type(exc).__name__}: {exc}")
            raise
        tracking.end_run(mlflow_client, run_id, "COMPLETE")
        checkpoints[model], seconds[model] = result.best_checkpoint, result.seconds
    return checkpoints, seconds, run_ids


def _train_one(model: str, data_root: Path, folder: Path, data_config: DataConfig, config: StudyConfig,
               mlflow_client: Any, run_id: str, listeners: list, display: Display | None) -> Any:
    """Resume the model's run in `folder` (nothing to do when its minutes are spent), else start it."""
    from hcmbench import engine, tracking
    from hcmbench.models.registry import model_preset

    if (folder / "checkpoints" / "last.pt").exists():
        if display:
            display(f"{model}: continuing {folder} (a finished model is left as it is)")
        return engine.resume(folder, minutes=config.minutes, data_root=data_root, callbacks=listeners)
    preset = model_preset(model, config.preset)
    train_config = _train_config(model, config)
    params = {"model": {"name": model, "preset": config.preset, **preset.model},
              "train": dataclasses.asdict(train_config),
              "data": {**dataclasses.asdict(data_config), "root": str(data_root)}}
    for key, value in tracking.flatten_params(params).items():
        mlflow_client.log_param(run_id, key, value)
    if display:
        display(f"{model}: training the {config.preset} preset for {config.minutes:g} minutes into {folder}")
    return engine.train(model, data_root, folder, data_config, train_config, dict(preset.model), callbacks=listeners)


def run_study(data_root: str | Path, out: str | Path, config: StudyConfig = StudyConfig(),
              display: Display | None = None, progress: Any = None, tracking_uri: str | None = None,
              feature_config: Any = None) -> StudyResult:
    """Train every model of `config` at the same budget, then score them in one table and draw the figures.

    Writes `out/<model>/` (runs), `out/table.md`, `out/table.csv`, `out/figures/samples.png` (Figure 4)
    and `out/figures/losses_<model>.png`; logs them to MLflow's `hcmbench-study`.
    """
    from hcmbench import tracking
    from hcmbench.evaluation.detectability import DetectabilityConfig
    from hcmbench.evaluation.figures import study_figures
    from hcmbench.evaluation.report import EvaluationConfig, evaluate_checkpoints
    from hcmbench.models.registry import model_preset

    for model in config.models:  # an unknown model or preset fails before any training
        model_preset(model, config.preset)
    data_root, out = Path(data_root), Path(out)
    mlflow_client = tracking.client(tracking_uri)
    checkpoints, train_seconds, run_ids = train_models(data_root, out, config, mlflow_client, display)

    if display:
        display(f"Scoring {len(checkpoints)} models on {config.n} images each against the held-out test patients")
    began = time.perf_counter()
    detector = DetectabilityConfig(seeds=config.detect_seeds) if config.detect_seeds else None
    table = evaluate_checkpoints(dict(checkpoints), data_root,
                                 config=EvaluationConfig(n=config.n, seed=config.seed, detector=detector),
                                 sample_options=config.sample_options, device=config.device, feature_config=feature_config, progress=progress)
    eval_seconds = time.perf_counter() - began
    table.context.update(title=f"The study's Table 1: {len(checkpoints)} models, {config.minutes:g} minutes each "
                               f"({config.preset} preset)")
    table.write(out)
    figures = study_figures(list(checkpoints.values()), out / "figures", data_root, seed=config.seed,
                            names=list(checkpoints), sample_options=config.sample_options)
    tracking.log_comparison(table, run_ids, EXPERIMENT, mlflow_client, figures)
    return StudyResult(out, table, checkpoints, train_seconds, eval_seconds, figures, run_ids)


def machine() -> str:
    """The machine in words: CPU model, cores torch uses, memory, torch version, and the GPU if any."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads{memory}{gpu}, torch {torch.__version__}"


def results_section(result: StudyResult, command: str, config: StudyConfig, figure: str) -> str:
    """The Markdown section docs/results.md holds for a study: command, machine, times, table, figure."""
    from hcmbench.formatting import duration

    times = ", ".join(f"{m} {duration(s)}" for m, s in result.train_seconds.items())
    return "\n".join([
        BEGIN,
        f"Produced by `{command}` (every model's `{config.preset}` preset, {config.minutes:g} minutes of "
        f"training each, {config.n} images per model scored against the held-out test patients, "
        f"detectability over {config.detect_seeds} seeds; the DDPM sampled with {config.sampler} over "
        f"{config.steps} steps{'' if config.precision == 'fp32' else ' in ' + config.precision}).",
        "",
        f"- Machine: {machine()}.",
        f"- Training, wall clock per model: {times}; scoring all models: {duration(result.eval_seconds)}.",
        "",
        result.table.to_markdown().strip(),
        "",
        f"![A real test slice and one sample of each model]({figure})",
        "",
        END,
    ])


def write_results_section(path: str | Path, section: str, figure_source: Path, figure_target: Path) -> None:
    """Put `section` between the study markers of `path` (replacing what was there, or appending), and
    copy Figure 4 to `figure_target`; a figure over 300 kB is refused, so the repository stays small."""
    from hcmbench.atomic import atomic_path

    path = Path(path)
    size = figure_source.stat().st_size
    if size > FIGURE_LIMIT:
        raise HcmbenchError(f"{figure_source} is {size / 1000:.0f} kB, over the {FIGURE_LIMIT // 1000} kB a "
                            "figure in the repository may take")
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    output_folder(figure_target.parent, figure_target)
    shutil.copyfile(figure_source, figure_target)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
