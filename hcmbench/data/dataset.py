"""Torch view of preprocessed slices: images in [-1, 1] with integer class labels."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hcmbench.data.slices import SliceSet


def label_kind(slices: SliceSet) -> str:
    """What conditional models condition on: the ACDC group when several are selected, else the phase."""
    return "group" if len(slices.config.groups) > 1 else "phase"


class SliceDataset(Dataset):
    """One split of a SliceSet as (image (1, S, S) float32 in [-1, 1], label int64) pairs.

    `classes` are the label names in index order; they come from the whole SliceSet, so that every
    split of it uses the same indices.
    """

    def __init__(self, slices: SliceSet, split: str | None = "train", label_by: str = "auto") -> None:
        kind = label_kind(slices) if label_by == "auto" else label_by
        if kind not in ("group", "phase"):
            raise ValueError(f"label_by must be 'auto', 'group' or 'phase', got {label_by!r}")
        names = slices.config.groups if kind == "group" else sorted(set(slices.phase.tolist()))
        self.classes: list[str] = list(names)
        self.label_by = kind
        chosen = slices if split is None else slices.of_split(split)
        index = {name: i for i, name in enumerate(self.classes)}
        values = chosen.group if kind == "group" else chosen.phase
        self.images = torch.from_numpy(np.ascontiguousarray(chosen.images)).unsqueeze(1) * 2.0 - 1.0
        self.labels = torch.tensor([index[v] for v in values.tolist()], dtype=torch.int64)
        self.slices = chosen

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]
