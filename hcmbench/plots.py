"""PNG outputs a person looks at: sample grids and loss curves. Written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from hcmbench.atomic import atomic_path


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [-1, 1], shape (n, 1, H, W) or (n, H, W), as uint8 (n, H, W)."""
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 4:
        array = array[:, 0]
    return np.round((np.clip(array, -1, 1) + 1) * 127.5).astype(np.uint8)


def save_image_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None,
                    padding: int = 2, scale: int = 2) -> Path:
    """Write images in [-1, 1] as one PNG grid (`nrow` per row, default about square), upscaled `scale`×."""
    from PIL import Image

    tiles = to_uint8(images)
    n, h, w = tiles.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, nrow)
        grid[padding + r * (h + padding):padding + r * (h + padding) + h,
             padding + c * (w + padding):padding + c * (w + padding) + w] = tile
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def save_loss_plot(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training losses (left) and validation score (right) per round of the engine's history, against
    the thousands of images shown (kimg), which compare across datasets; against epochs for runs
    recorded before the engine counted images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_kimg = all("kimg" in h for h in history)
    x = [h["kimg"] if by_kimg else h["epoch"] for h in history]
    unit = "thousands of images shown (kimg)" if by_kimg else "epoch"
    names = sorted({k for h in history for k in h["losses"]})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        left.plot(x, [h["losses"].get(name, np.nan) for h in history], marker=".", label=name)
    left.set(xlabel=unit, ylabel="mean loss over the round", title="training losses")
    if names:
        left.legend(fontsize=8)
    right.plot(x, [h["val_score"] for h in history], marker=".", color="black")
    right.set(xlabel=unit, ylabel="validation score (lower is better)", title="validation")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    return save_figure(fig, path, title, dpi=100)


def save_side_by_side(panels: list[tuple[str, torch.Tensor | np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One titled grayscale panel per (title, image in [-1, 1]) in a row, like the study's Figure 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), squeeze=False)
    for axis, (name, image) in zip(axes[0], panels):
        axis.imshow(to_uint8(np.asarray(image).reshape(1, *np.asarray(image).shape[-2:]))[0], cmap="gray", vmin=0, vmax=255)
        axis.set_title(name, fontsize=10)
        axis.axis("off")
    return save_figure(fig, path, title, dpi=120, fontsize=10)


def save_figure(fig, path: str | Path, title: str, dpi: int, fontsize: float | None = None) -> Path:
    """Title, lay out and write a matplotlib figure as a PNG atomically, then free it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
