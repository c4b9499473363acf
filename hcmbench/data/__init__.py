"""Data layer: the ACDC reader, the built-in phantom, preprocessing and the torch dataset.

`resolve_data_root` picks the dataset a command works on: `--data`, else `$HCMBENCH_DATA`, else the
phantom, generated once into the cache folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hcmbench.config import DataConfig, cache_dir
from hcmbench.data.acdc import GROUPS, Dataset, Patient, open_dataset
from hcmbench.data.slices import SliceSet, load_slices

# Bump with any change to the phantom's output, so that a stale cached phantom is not reused.
PHANTOM_VERSION = 1
PHANTOM_SEED = 0


def default_phantom_root() -> Path:
    """Where the built-in phantom lives once generated."""
    return cache_dir() / f"phantom-v{PHANTOM_VERSION}-seed{PHANTOM_SEED}"


def resolve_data_root(
    data: str | Path | None = None,
    announce: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """The dataset root to use: `data`, else $HCMBENCH_DATA, else the (generated on first use) phantom.

    `announce` receives one line saying that the phantom is used, and whether it was just generated.
    """
    if data is not None:
        return Path(data)
    if os.environ.get("HCMBENCH_DATA"):
        return Path(os.environ["HCMBENCH_DATA"])
    from hcmbench.data.phantom import PhantomConfig, write_phantom

    root = default_phantom_root()
    if (root / "training").is_dir():
        if announce:
            announce(f"Using the built-in phantom at {root} (pass --data or set HCMBENCH_DATA for real data).")
        return root
    if announce:
        announce(f"No --data given: generating the built-in phantom (synthetic ACDC layout) into {root} ...")
    try:
        write_phantom(root, PhantomConfig(seed=PHANTOM_SEED), progress=progress)
    except Exception:
        if not (root / "training").is_dir():  # another process may have won the race to write it
            raise
    return root


__all__ = [
    "GROUPS", "DataConfig", "Dataset", "Patient", "SliceSet", "default_phantom_root", "load_slices",
    "open_dataset", "resolve_data_root",
]
