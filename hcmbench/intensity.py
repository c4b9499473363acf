"""The one conversion between a generator's intensity range, [-1, 1], and the data's, [0, 1]."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Images = TypeVar("Images", torch.Tensor, np.ndarray)


def to_unit_range(images: Images) -> Images:
    """Images from a generator's [-1, 1] to [0, 1], clipped, as float32: a tensor stays a tensor (on
    its device), anything else becomes a NumPy array."""
    if isinstance(images, torch.Tensor):
        return ((images.float() + 1) / 2).clamp(0, 1)
    return np.clip((np.asarray(images, dtype=np.float32) + 1) / 2, 0, 1).astype(np.float32)
