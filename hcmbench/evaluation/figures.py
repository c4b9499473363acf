"""The study's figures for any set of trained generators: Figure 4 (a real slice beside one sample of
each model) and the loss curves of each model (its Figures 5–8)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hcmbench.errors import HcmbenchError


def study_figures(checkpoints: list[str | Path], out: str | Path, data_root: str | Path | None = None,
                  seed: int = 0, names: list[str] | None = None,
                  sample_options: dict[str, Any] | None = None,
                  check: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """Write `samples.png` (a real held-out slice, then one sample per checkpoint) and `losses_<name>.png`
    per checkpoint into `out`; return the paths. `check` is given the files to write once their names are
    known, before any work (the CLI refuses to replace existing ones there).

    The real slice is a seeded pick from the test split (the training split when the test split is
    empty) of `data_root`, by default the first checkpoint's training data. `names` label the panels
    (default: the model names, numbered when a model appears twice). `sample_options` go to the models
    that take them (a diffusion model's sampler and steps).
    """
    from hcmbench.atomic import output_folder
    from hcmbench.checkpoints import data_config_of, load_generator
    from hcmbench.data.slices import load_slices
    from hcmbench.plots import save_loss_plot, save_side_by_side
    from hcmbench.sampling import draw

    if not checkpoints:
        raise HcmbenchError("name at least one checkpoint")
    generators = [load_generator(path) for path in checkpoints]
    if names is None:
        models = [g.model.name for g in generators]
        names = [m if models.count(m) == 1 else f"{m} ({models[:i + 1].count(m)})" for i, m in enumerate(models)]
    elif len(names) != len(generators):
        raise HcmbenchError(f"{len(names)} names for {len(generators)} checkpoints")
    out = Path(out)
    slugs = [re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") for name in names]
    if check is not None:
        check([out / "samples.png", *(out / f"losses_{slug}.png" for slug, g in zip(slugs, generators)
                                      if g.state.get("history"))])
    first = generators[0].state
    if data_root is None and not first.get("data_root"):
        raise HcmbenchError(f"{checkpoints[0]} does not say where its training data are: give --data")
    root = Path(data_root if data_root is not None else first["data_root"])
    if not root.exists():
        raise HcmbenchError(f"{root}: the data of {checkpoints[0]} are not there; give --data")
    slices = load_slices(root, data_config_of(first))
    pool = slices.of_split("test") if (slices.split == "test").any() else slices.of_split("train")
    real = pool.images[np.random.default_rng(seed).integers(len(pool))] * 2 - 1
    panels: list[tuple[str, torch.Tensor | np.ndarray]] = [("real", real)]
    for name, generator in zip(names, generators):
        options = {k: v for k, v in (sample_options or {}).items() if k in generator.model.sample_options}
        images, _ = draw(generator, 1, seed=seed, options=options)
        panels.append((name, images[0, 0]))
    out = output_folder(out)
    paths = [save_side_by_side(panels, out / "samples.png", title=f"real {', '.join(data_config_of(first).groups)} "
                               "slice and one sample per model")]
    for name, slug, generator in zip(names, slugs, generators):
        history = generator.state.get("history") or []
        if history:
            paths.append(save_loss_plot(history, out / f"losses_{slug}.png", title=name))
    return paths
