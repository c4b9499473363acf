"""What a dataset holds (per-group summary) and what its preprocessed slices look like (a PNG grid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hcmbench.atomic import atomic_path
from hcmbench.data.acdc import Dataset, read_header
from hcmbench.data.slices import SPLITS, SliceSet
from hcmbench.errors import HcmbenchError


@dataclass(frozen=True)
class GroupSummary:
    """One ACDC group of a dataset: its patients, their volumes (from headers) and its kept slices."""

    group: str
    patients: int
    slices_per_volume: tuple[int, int]
    kept_slices: int
    spacing_mm: tuple[float, float]
    thickness_mm: tuple[float, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]
    split_patients: dict[str, int]
    split_slices: dict[str, int]


def summarize(dataset: Dataset, slices: SliceSet) -> list[GroupSummary]:
    """Per-group figures for the patients that made it into `slices` (headers of their ED volumes)."""
    summaries = []
    kept_patients = set(slices.patient.tolist())
    for group in slices.config.groups:
        patients = [p for p in dataset.patients if p.group == group and p.id in kept_patients]
        if not patients:
            continue
        shapes, spacings = zip(*(read_header(p.image_path(p.info.ed)) for p in patients))
        in_group = slices.group == group
        first_split = {pid: s for pid, s in zip(slices.patient.tolist(), slices.split.tolist())}
        summaries.append(GroupSummary(
            group=group,
            patients=len(patients),
            slices_per_volume=(min(s[2] for s in shapes), max(s[2] for s in shapes)),
            kept_slices=int(in_group.sum()),
            spacing_mm=(min(z[0] for z in spacings), max(z[0] for z in spacings)),
            thickness_mm=tuple(sorted({round(z[2], 2) for z in spacings})),
            rows=(min(s[0] for s in shapes), max(s[0] for s in shapes)),
            cols=(min(s[1] for s in shapes), max(s[1] for s in shapes)),
            split_patients={s: sum(first_split[p.id] == s for p in patients) for s in SPLITS},
            split_slices={s: int((in_group & (slices.split == s)).sum()) for s in SPLITS},
        ))
    return summaries


def _label_strip(text: str, height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("L", (width, height), 0)
    ImageDraw.Draw(strip).text((6, height // 2 - 6), text, fill=255)
    return np.asarray(strip, dtype=np.float32) / 255.0


def preview_grid(
    slices: SliceSet,
    out: str | Path,
    groups: tuple[str, ...] | None = None,
    per_group: int = 8,
    seed: int = 0,
    tile: int = 128,
) -> Path:
    """Write a PNG with one row per group of `per_group` randomly chosen preprocessed slices.

    Slices are drawn from as many different patients as possible; each row is labelled with its group.
    """
    from PIL import Image

    groups = groups or slices.config.groups
    rng = np.random.default_rng(seed)
    rows = []
    for group in groups:
        index = np.flatnonzero(slices.group == group)
        if len(index) == 0:
            raise HcmbenchError(f"no preprocessed slices of group {group} to preview")
        # One slice per patient first, then more from the same patients if a row is still short.
        shuffled = rng.permutation(index)
        _, first = np.unique(slices.patient[shuffled], return_index=True)
        order = np.concatenate([shuffled[np.sort(first)], np.delete(shuffled, first)])[:per_group]
        tiles = [np.asarray(Image.fromarray((slices.images[i] * 255).astype(np.uint8)).resize((tile, tile)),
                            dtype=np.float32) / 255.0 for i in order]
        tiles += [np.zeros((tile, tile), np.float32)] * (per_group - len(tiles))
        rows.append(np.concatenate([_label_strip(group, tile, 56), *tiles], axis=1))
    grid = np.concatenate(rows, axis=0)
    out = Path(out)
    with atomic_path(out) as tmp:
        Image.fromarray((grid * 255).round().astype(np.uint8)).save(tmp, format="PNG")
    return out
