"""Checkpoint files: what they hold, written atomically, read back with `weights_only=True`.

A checkpoint is a plain dict of tensors and primitive values (no pickled classes), so loading it
never runs code from the file:

    model, settings, state_dict, ema_state_dict   rebuild the generator (EMA weights sample)
    classes, label_by, data_config                 what the labels mean and what data it saw
    train_config, epoch, best_*, history           where training stands
    optimizers, rng, finished                      only in last.pt: enough to resume exactly
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hcmbench.atomic import atomic_path
from hcmbench.config import MOVED_TO_MODELS, DataConfig, tuples
from hcmbench.errors import HcmbenchError
from hcmbench.models.base import GenerativeModel
from hcmbench.models.registry import build_model, model_defaults

FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", resumable: bool = False) -> dict[str, Any]:
    """Read a checkpoint dict safely; a missing, foreign, corrupt or incomplete file raises HcmbenchError.

    Every checkpoint must hold what rebuilds its generator and says what data it saw (`_problems`);
    `resumable` asks for what resuming its run needs too (last.pt)."""
    path = Path(path)
    if not path.is_file():
        raise HcmbenchError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise HcmbenchError(f"{path}: not a readable hcmbench checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise HcmbenchError(f"{path}: not an hcmbench checkpoint (format {FORMAT})")
    problems = _problems(state, resumable)
    if problems:
        raise HcmbenchError(f"{path}: not a complete hcmbench checkpoint ({'; '.join(problems)})")
    try:
        return _moved_to_models(state)
    except HcmbenchError as exc:  # an unknown model
        raise HcmbenchError(f"{path}: {exc}") from None


# What each entry must be: every checkpoint's, and what resuming a run needs besides (last.pt).
_NUMBER = (int, float)
_REQUIRED: dict[str, tuple[type, ...]] = {"model": (str,), "settings": (dict,), "state_dict": (dict,),
                                          "data_config": (dict,)}
_OPTIONAL: dict[str, tuple[type, ...]] = {"ema_state_dict": (dict, type(None)), "classes": (list, tuple),
                                          "label_by": (str, type(None)), "train_config": (dict,), "history": (list,),
                                          "data_root": (str,), "epoch": (int,)}
_RESUME: dict[str, tuple[type, ...]] = {
    "train_config": (dict,), "history": (list,), "data_root": (str,), "data_key": (str,), "epoch": (int,),
    "classes": (list, tuple), "label_by": (str, type(None)), "optimizers": (list,), "rng": (dict,),
    "best_score": _NUMBER, "best_epoch": (int,), "stale_epochs": (int,), "global_step": (int,),
    "stopped_early": (bool,)}


def _problems(state: dict[str, Any], resumable: bool) -> list[str]:
    """What a checkpoint dict lacks, or holds in the wrong form (a hand-made or foreign file)."""
    required = {**_REQUIRED, **(_RESUME if resumable else {})}
    missing = [key for key in required if key not in state]
    problems = [f"no {', '.join(missing)}"] if missing else []
    for key, kinds in {**required, **_OPTIONAL}.items():
        if key in state and (not isinstance(state[key], kinds) or (isinstance(state[key], bool) and bool not in kinds)):
            problems.append(f"{key} is a {type(state[key]).__name__}")
    settings = state.get("settings")
    if isinstance(settings, dict) and (not isinstance(settings.get("image_size"), int)
                                       or not isinstance(settings.get("num_classes", 0), int)):
        problems.append("settings lack an integer image_size and num_classes")
    if isinstance(state.get("data_config"), dict):
        try:
            DataConfig(**tuples(state["data_config"]))
        except TypeError as exc:
            problems.append(f"data_config: {exc}".replace("DataConfig.__init__() ", ""))
        except HcmbenchError as exc:
            problems.append(f"data_config: {exc}")
    if resumable and isinstance(state.get("rng"), dict) and not isinstance(state["rng"].get("torch"), torch.Tensor):
        problems.append("rng lacks torch's state")
    return problems


def _moved_to_models(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint from before `config.MOVED_TO_MODELS` became model settings keeps them among its
    training settings: they go to the model's settings (for a model that takes them), so that every
    reader sees a checkpoint of today's form."""
    train, settings = state.get("train_config"), state.get("settings")
    if isinstance(train, dict) and isinstance(settings, dict) and train.keys() & set(MOVED_TO_MODELS):
        takes = model_defaults(state["model"])
        for name in MOVED_TO_MODELS:
            value = train.pop(name, None)
            if value is not None and name in takes:
                settings.setdefault(name, value)
    return state


@dataclass
class LoadedGenerator:
    """A model rebuilt from a checkpoint, ready to sample, with what its labels mean."""

    model: GenerativeModel
    classes: list[str]
    state: dict[str, Any]

    def label_index(self, label: str) -> int:
        """Index of a class name (case-insensitive); unknown names raise HcmbenchError."""
        names = [c.upper() for c in self.classes]
        if label.upper() not in names:
            raise HcmbenchError(f"unknown label {label!r}: this model knows {', '.join(self.classes) or 'none'}")
        return names.index(label.upper())


def load_generator(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> LoadedGenerator:
    """Rebuild the model of a checkpoint, with its EMA weights when it has them, in eval mode. Settings that
    do not build the model, or weights that do not fit it, raise HcmbenchError naming the file."""
    state = read_checkpoint(path)
    model = build_from_state(state, path)
    weights = state["ema_state_dict"] if use_ema and state.get("ema_state_dict") is not None else state["state_dict"]
    load_weights(model, weights, path)
    model.to(device).eval()
    return LoadedGenerator(model, list(state.get("classes") or []), state)


def build_from_state(state: dict[str, Any], path: str | Path) -> GenerativeModel:
    """The model a checkpoint's `model` and `settings` describe (untrained); HcmbenchError naming `path` when
    they do not build one."""
    settings = dict(state["settings"])
    image_size, num_classes = settings.pop("image_size"), settings.pop("num_classes", 0)
    try:
        return build_model(state["model"], image_size=image_size, num_classes=num_classes, **settings)
    except HcmbenchError as exc:
        raise HcmbenchError(f"{path}: {exc}") from None
    except Exception as exc:  # a model's constructor meeting values it does not expect
        raise HcmbenchError(f"{path}: its settings do not build a {state['model']} "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None


def load_weights(module: Any, weights: Any, path: str | Path, what: str = "weights", into: str | None = None) -> None:
    """`module.load_state_dict(weights)` (a model's, or an optimiser's: say `into` what); weights that do not
    fit it — a file whose settings do not match its weights, or a foreign one — raise HcmbenchError in one line."""
    try:
        module.load_state_dict(weights)
    except Exception as exc:  # torch: RuntimeError listing every mismatch; others for malformed entries
        into = into or f"a {getattr(module, 'name', type(module).__name__)} with its settings"
        raise HcmbenchError(f"{path}: its {what} do not fit {into} ({_mismatch(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _mismatch(exc: BaseException) -> str:
    """The first of torch's load_state_dict complaints, short: 'generator.net.0.weight is [8, 16, 4, 4] in
    the file, [8, 32, 4, 4] in the model (and 9 more)'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    details = lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines
    if not details:
        return type(exc).__name__
    sizes = re.match(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from checkpoint, "
                     r"the shape in current model is torch\.Size\((\[.*?\])\)", details[0])
    first = (f"{sizes[1]} is {sizes[2]} in the file, {sizes[3]} in the model" if sizes
             else details[0] if len(details[0]) <= 160 else details[0][:160] + " …")
    return first + (f" (and {len(details) - 1} more)" if len(details) > 1 else "")


def data_config_of(state: dict[str, Any]) -> DataConfig:
    """The DataConfig a checkpoint's model was trained on (lists in the file become tuples again)."""
    return DataConfig(**tuples(state["data_config"]))


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; an unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HcmbenchError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise HcmbenchError("device 'mps' requested but it is not available")
    return device
