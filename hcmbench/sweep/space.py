"""A study's search space: the YAML schema, its checks, and the trial budget.

The shipped spaces live beside this module (`hcmbench/sweep/spaces/<model>.yaml`, read with
importlib.resources, so that an installed wheel has them); `hcmbench sweep --space FILE` takes a copy
you edit (`hcmbench sweep --model dcgan --print-space > my.yaml`):

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

A parameter is a TrainConfig field (lr, batch_size, ...), `beta1` / `beta2` (Adam's betas), or a setting
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

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hcmbench.config import BUDGET, DataConfig, TrainConfig, load_yaml, tuples
from hcmbench.errors import HcmbenchError
from hcmbench.metric_names import DIRECTIONS

PRUNERS = ("median", "hyperband", "none")
BUDGET_FIELDS = (*BUDGET, "tick_kimg")  # a trial's budget: TrainConfig's budget and its ticks


def _positive(value: Any, whole: bool) -> bool:
    kinds = int if whole else (int, float)
    return not isinstance(value, bool) and isinstance(value, kinds) and value > 0


@dataclass(frozen=True)
class Objective:
    """What a trial is scored by: an evaluation figure (or `val_score`), plus other figures of the same
    direction with weights (`combine`), on `images` generated images drawn with `sampling` options."""

    metric: str = "fid"
    direction: str = "minimize"
    images: int = 200
    combine: dict[str, float] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str) -> Objective:
        raw = dict(raw)
        metric = raw.pop("metric", "fid")
        if metric not in DIRECTIONS:
            raise HcmbenchError(f"{path}: unknown objective metric {metric!r}: choose from {', '.join(DIRECTIONS)}")
        direction = raw.pop("direction", DIRECTIONS[metric])
        if direction not in ("minimize", "maximize"):
            raise HcmbenchError(f"{path}: direction must be minimize or maximize, got {direction!r}")
        images = raw.pop("images", 200)
        if isinstance(images, bool) or not isinstance(images, int) or images < 6:
            raise HcmbenchError(f"{path}: objective.images must be an integer ≥ 6, got {images!r}")
        combine = raw.pop("combine", None) or {}
        if not isinstance(combine, dict) or not all(_positive(w, whole=False) for w in combine.values()):
            raise HcmbenchError(f"{path}: objective.combine must map figures to positive weights, e.g. {{fid: 0.002}}")
        for name in combine:
            if name not in DIRECTIONS or name == "val_score" or metric == "val_score":
                raise HcmbenchError(f"{path}: objective.combine: {name!r} cannot be combined with {metric!r}: "
                                    "combine evaluation figures (fid, kid, detectability, ...)")
            if DIRECTIONS[name] != direction:
                raise HcmbenchError(f"{path}: objective.combine: {name} is {DIRECTIONS[name]}d, the objective is "
                                    f"{direction}d: combine figures of one direction")
        sampling = raw.pop("sampling", None) or {}
        if not isinstance(sampling, dict):
            raise HcmbenchError(f"{path}: objective.sampling must be a mapping of sample options")
        if raw:
            raise HcmbenchError(f"{path}: unknown objective key(s) {', '.join(sorted(raw))}")
        return cls(metric, direction, images, {k: float(w) for k, w in combine.items()}, dict(sampling))

    @property
    def figures(self) -> tuple[str, ...]:
        """Every evaluation figure the objective reads."""
        return (self.metric, *self.combine)

    @property
    def name(self) -> str:
        """The objective as a person reads it: "fid", or "detectability + 0.001 × fid"."""
        return " + ".join([self.metric, *(f"{w:g} × {k}" for k, w in self.combine.items())])

    def value(self, row: Any) -> float:
        """The objective of an evaluation row: the metric plus the weighted figures of `combine`."""
        return float(getattr(row, self.metric)) + sum(w * float(getattr(row, k)) for k, w in self.combine.items())


@dataclass(frozen=True)
class Budget:
    """Each trial's budget (TrainConfig's `epochs`, `kimg`, `minutes`, `tick_kimg`) and the pruner: which
    one, the trials that always run to the end, and the rounds before a trial may be pruned."""

    fields: dict[str, Any] = field(default_factory=lambda: {"epochs": 10})
    pruner: str = "median"
    startup_trials: int = 3
    warmup: int = 2  # rounds: epochs, or kimg ticks

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str) -> Budget:
        """`epochs` (with `warmup_epochs`), or `kimg` and/or `minutes` with `tick_kimg` (with
        `warmup_kimg`, turned into ticks). Default: 10 epochs, warm-up 2."""
        raw = dict(raw)
        pruner = raw.pop("pruner", "median")
        if pruner not in PRUNERS:
            raise HcmbenchError(f"{path}: pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
        startup = raw.pop("startup_trials", 3)
        if isinstance(startup, bool) or not isinstance(startup, int) or startup < 0:
            raise HcmbenchError(f"{path}: budget.startup_trials must be an integer ≥ 0, got {startup!r}")
        given = {k: raw.pop(k) for k in BUDGET_FIELDS if k in raw}
        warmup_epochs, warmup_kimg = raw.pop("warmup_epochs", None), raw.pop("warmup_kimg", None)
        if raw:
            raise HcmbenchError(f"{path}: unknown budget key(s) {', '.join(sorted(raw))}")
        for name, value in given.items():
            if not _positive(value, whole=name == "epochs"):
                raise HcmbenchError(f"{path}: budget.{name} must be a positive "
                                    f"{'integer' if name == 'epochs' else 'number'}, got {value!r}")
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
            return cls(given, pruner, startup, math.ceil(warmup_kimg / config.tick_kimg - 1e-9))
        if warmup_kimg is not None or "tick_kimg" in given:
            raise HcmbenchError(f"{path}: a budget in epochs takes warmup_epochs (tick_kimg and warmup_kimg go "
                                "with kimg or minutes)")
        warmup = 2 if warmup_epochs is None else warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise HcmbenchError(f"{path}: budget.warmup_epochs must be an integer ≥ 0, got {warmup!r}")
        return cls(given, pruner, startup, warmup)

    @property
    def rounds(self) -> int | None:
        """Rounds a trial runs at most (epochs, or kimg ticks); None when only minutes bound it."""
        return TrainConfig(**self.fields).rounds_in_budget()


def trial_budget(space: SearchSpace, epochs: int | None = None, kimg: float | None = None,
                 minutes: float | None = None) -> dict[str, Any]:
    """The space's trial budget, or the one given on the command line (which replaces it; the space's
    tick_kimg stays where the new budget counts images)."""
    given = {k: v for k, v in (("epochs", epochs), ("kimg", kimg), ("minutes", minutes)) if v is not None}
    if not given:
        return dict(space.budget.fields)
    if "tick_kimg" in space.budget.fields and (kimg is not None or (minutes is not None and epochs is None)):
        given["tick_kimg"] = space.budget.fields["tick_kimg"]
    TrainConfig(**given)  # epochs with kimg is refused in one line
    return given


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

    @classmethod
    def from_dict(cls, name: str, spec: Any, target: str, path: str) -> Param:
        """`{choices: [...]}` (categorical), or `{low, high}` with optional `log` and `step`."""
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise HcmbenchError(f"{path}: parameter {name!r} needs {{choices: [...]}} or {{low: ..., high: ...}}")
        extra = sorted(set(spec) - {"choices", "low", "high", "log", "step"})
        if extra:
            raise HcmbenchError(f"{path}: parameter {name!r} has unknown key(s) {', '.join(extra)}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise HcmbenchError(f"{path}: parameter {name!r}: choices must be a non-empty list")
            return cls(name, target, choices=tuple(tuple(c) if isinstance(c, list) else c for c in spec["choices"]))
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise HcmbenchError(f"{path}: parameter {name!r}: low and high must be numbers with low < high")
        if spec.get("log") and low <= 0:
            raise HcmbenchError(f"{path}: parameter {name!r}: a log range needs low > 0")
        return cls(name, target, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))

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
    """A study's search space: the model, its parameters, objective and budget, and the fixed data and
    training settings (see the module docstring); `raw` is the YAML mapping, stored with the study."""

    model: str
    params: tuple[Param, ...]
    objective: Objective = field(default_factory=Objective)
    budget: Budget = field(default_factory=Budget)
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, model: str, raw: Any, path: str) -> SearchSpace:
        """Check a search-space mapping (as read from YAML, or as stored with a study); `path` names it
        in errors."""
        from hcmbench.models.registry import model_defaults

        if not isinstance(raw, dict):
            raise HcmbenchError(f"{path}: a search space is a YAML mapping")
        unknown = sorted(set(raw) - {"model", "objective", "budget", "data", "train", "params"})
        if unknown:
            raise HcmbenchError(f"{path}: unknown section(s) {', '.join(unknown)}")
        if raw.get("model", model) != model:
            raise HcmbenchError(f"{path} is a search space for {raw['model']!r}, not {model!r}")
        start = f"`hcmbench sweep --model {model} --print-space` prints the shipped one to start from"
        if not raw:
            raise HcmbenchError(f"{path}: the search space is empty: {start}")
        for section in ("objective", "budget", "data", "train", "params"):
            if raw.get(section) is not None and not isinstance(raw[section], dict):
                raise HcmbenchError(f"{path}: {section} must be a mapping, got {type(raw[section]).__name__}")
        if not raw.get("params"):
            raise HcmbenchError(f"{path}: no parameters to search (params is missing or empty), so every trial would "
                                f"train the same model: {start}")
        objective = Objective.from_dict(raw.get("objective") or {}, path)
        budget = Budget.from_dict(raw.get("budget") or {}, path)
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "device", *BUDGET_FIELDS}
        settings = set(model_defaults(model)) - {"image_size", "num_classes"}
        params = []
        for name, spec in (raw.get("params") or {}).items():
            target = "train" if name in train_fields | {"beta1", "beta2"} else "model" if name in settings else None
            if target is None:
                raise HcmbenchError(f"{path}: parameter {name!r} is neither a training setting nor a setting of "
                                    f"{model} ({', '.join(sorted(settings))})")
            params.append(Param.from_dict(name, spec, target, path))
        train = dict(raw.get("train") or {})
        unknown = sorted(set(train) - train_fields)
        if unknown:
            raise HcmbenchError(f"{path}: unknown train setting(s) {', '.join(unknown)}")
        space = cls(model, tuple(params), objective, budget, dict(raw.get("data") or {}), train, str(path),
                    copy.deepcopy(raw))
        try:
            space.data_config()
            TrainConfig(**tuples(train))
        except TypeError as exc:
            raise HcmbenchError(f"{path}: {exc}") from None
        return space

    def data_config(self) -> DataConfig:
        return DataConfig(**tuples(self.data))

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


def shipped_space(model: str) -> Any:
    """The search space hcmbench ships for `model` (a Traversable: `.read_text()`, `.is_file()`)."""
    return resources.files("hcmbench.sweep").joinpath("spaces", f"{model}.yaml")


def shipped_models() -> list[str]:
    """The models hcmbench ships a search space for."""
    folder = resources.files("hcmbench.sweep").joinpath("spaces")
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def space_text(model: str, path: str | Path | None = None) -> str:
    """The YAML text of the search space `load_space(model, path)` reads."""
    return Path(path).read_text() if path is not None else shipped_space(model).read_text()


def load_space(model: str, path: str | Path | None = None) -> SearchSpace:
    """Read and check a search-space YAML (default: the one shipped for `model`). Problems raise HcmbenchError."""
    if path is None:
        shipped = shipped_space(model)
        if not shipped.is_file():
            raise HcmbenchError(f"no search space is shipped for {model!r} (there are: {', '.join(shipped_models())}):"
                                " pass --space FILE")
        with resources.as_file(shipped) as file:
            return parse_space(model, load_yaml(file), f"{model}.yaml (shipped)")
    path = Path(path)
    if not path.is_file():
        raise HcmbenchError(f"{path}: no such search-space file")
    return parse_space(model, load_yaml(path), str(path))


def parse_space(model: str, raw: Any, path: str) -> SearchSpace:
    """Check a search-space mapping (as read from YAML, or as stored with a study); `path` names it in errors."""
    return SearchSpace.from_dict(model, raw, path)
