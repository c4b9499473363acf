"""Drawing many samples from a trained generator, and writing them as PNGs and an .npz."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hcmbench.atomic import atomic_folder
from hcmbench.checkpoints import LoadedGenerator
from hcmbench.errors import HcmbenchError
from hcmbench.intensity import to_unit_range
from hcmbench.plots import to_uint8


def resolve_labels(generator: LoadedGenerator, n: int, label: str | None) -> torch.Tensor | None:
    """Labels for `n` samples: all `label` if given, else the classes in equal shares (conditional only)."""
    model = generator.model
    if not model.conditional:
        if label is not None:
            raise HcmbenchError(f"{model.name} is unconditional: --label does not apply")
        return None
    if label is not None:
        return torch.full((n,), generator.label_index(label), dtype=torch.long)
    classes = max(1, len(generator.classes))
    return torch.arange(n) * classes // n


def check_sample_options(generator: LoadedGenerator, options: dict[str, Any]) -> dict[str, Any]:
    """Drop unset options; an option the model does not take raises HcmbenchError."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(generator.model.sample_options))
    if unknown:
        takes = ", ".join(generator.model.sample_options) or "none"
        raise HcmbenchError(f"{generator.model.name} does not take {', '.join(unknown)} (its sampling options: {takes})")
    return given


@torch.no_grad()
def draw(
    generator: LoadedGenerator,
    n: int,
    label: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`n` images in [-1, 1] (CPU, float32) and their labels, reproducibly for `seed`."""
    if n < 1:
        raise HcmbenchError(f"number of samples must be at least 1, got {n}")
    options = check_sample_options(generator, options or {})
    labels = resolve_labels(generator, n, label)
    model = generator.model
    rng = torch.Generator(device=model.device).manual_seed(seed)
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        batch_labels = labels[start:start + count].to(model.device) if labels is not None else None
        chunks.append(model.sample(count, batch_labels, rng=rng, **options).float().cpu())
        if progress is not None:
            progress(start + count, n)
    return torch.cat(chunks), labels


def write_samples(out: str | Path, images: torch.Tensor, labels: torch.Tensor | None, classes: list[str]) -> Path:
    """Write `sample_NNNNN.png` files and `samples.npz` (images in [0, 1], labels, class names) into `out`.

    `out` must not exist or be empty; everything is written into a hidden sibling folder that is renamed
    into place at the end, so an interrupted run leaves nothing half-written.
    """
    from PIL import Image

    with atomic_folder(out) as tmp:
        pixels = to_uint8(images)
        for i, tile in enumerate(pixels):
            Image.fromarray(tile).save(tmp / f"sample_{i:05d}.png")
        label_array = labels.numpy() if labels is not None else np.full(len(pixels), -1)
        np.savez_compressed(tmp / "samples.npz", images=to_unit_range(images[:, 0].numpy()),
                            labels=label_array, classes=np.array(classes, dtype=str))
    return Path(out)
