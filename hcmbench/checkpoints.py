"""Checkpoint files: what they hold, written atomically, read back with `weights_only=True`.

A checkpoint is a plain dict of tensors and primitive values (no pickled classes), so loading it
never runs code from the file:

    model, settings, state_dict, ema_state_dict   rebuild the generator (EMA weights sample)
    classes, label_by, data_config                 what the labels mean and what data it saw
    train_config, epoch, best_*, history           where training stands
    optimizers, rng, finished                      only in last.pt: enough to resume exactly
"""

from __future__ import annotations

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


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict safely; a missing, foreign or corrupt file raises HcmbenchError."""
    path = Path(path)
    if not path.is_file():
        raise HcmbenchError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise HcmbenchError(f"{path}: not a readable hcmbench checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise HcmbenchError(f"{path}: not an hcmbench checkpoint (format {FORMAT})")
    return _moved_to_models(state)


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
    """Rebuild the model of a checkpoint, with its EMA weights when it has them, in eval mode."""
    state = read_checkpoint(path)
    settings = dict(state["settings"])
    image_size, num_classes = settings.pop("image_size"), settings.pop("num_classes", 0)
    model = build_model(state["model"], image_size=image_size, num_classes=num_classes, **settings)
    weights = state["ema_state_dict"] if use_ema and state.get("ema_state_dict") is not None else state["state_dict"]
    model.load_state_dict(weights)
    model.to(device).eval()
    return LoadedGenerator(model, list(state.get("classes") or []), state)


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
