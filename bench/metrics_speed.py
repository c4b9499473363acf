"""Nearest-neighbour SSIM / CC / MSE of 1000 generated against 1000 reference images: hcmbench's batched
torch code against a scikit-image loop, with the values checked to agree.

    python bench/metrics_speed.py [--n 1000] [--size 64] [--check-rows 10] [--threads N] [--data ROOT]

hcmbench: `nearest_by_ssim` (the whole n × n SSIM matrix in blocks, shared among `--threads` worker
threads, then CC and MSE of each matched pair), timed end to end. scikit-image:
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`
for every pair of `--check-rows` generated images against all n references, timed and extrapolated
linearly to n × n pairs (one call per pair: the cost is linear in the pair count). The same rows are
compared: largest SSIM difference, and whether the nearest neighbour is the same image. Images: real
preprocessed slices from `--data` (all groups, split in two halves) or, by default, smoothed random
images.

Both sides are timed in the same run, so the speed-up is the figure to compare across machines; the
load average is printed because other processes on the machine slow the two sides unequally.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from hcmbench.evaluation.metrics import nearest_by_ssim, ssim_matrix


def image_sets(n: int, size: int, data: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Two sets of n images in [0, 1]."""
    if data:
        from hcmbench.config import DataConfig
        from hcmbench.data.acdc import GROUPS
        from hcmbench.data.slices import load_slices

        images = load_slices(data, DataConfig(groups=GROUPS, size=size)).images
        rng = np.random.default_rng(0)
        picks = rng.choice(len(images), size=min(2 * n, len(images)), replace=len(images) < 2 * n)
        return images[picks[:n]], images[picks[n:2 * n]], f"real slices from {data}"
    rng = np.random.default_rng(0)
    smooth = np.stack([gaussian_filter(rng.random((size, size)), 1.5) for _ in range(2 * n)]).astype(np.float32)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return smooth[:n], smooth[n:], "smoothed random images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--check-rows", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, and hcmbench's worker threads (default: torch's choice)")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generated, reference, source = image_sets(args.n, args.size, args.data)

    start = time.perf_counter()
    match = nearest_by_ssim(generated, reference)
    ours = time.perf_counter() - start

    rows = generated[:args.check_rows]
    start = time.perf_counter()
    expected = np.array([[structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                data_range=1.0) for y in reference] for x in rows])
    loop = time.perf_counter() - start
    loop_total = loop * len(generated) / len(rows)
    ours_rows = ssim_matrix(rows, reference).numpy()
    max_diff = float(np.abs(ours_rows - expected).max())
    same_nn = int((match.index[:len(rows)].numpy() == expected.argmax(1)).sum())

    table = Table(title=f"Nearest-neighbour SSIM/CC/MSE, {len(generated)} × {len(reference)} images of "
                        f"{args.size} px ({source}), torch threads {torch.get_num_threads()}")
    for column in ("method", "seconds", "µs per pair", "speed-up"):
        table.add_column(column, justify="right" if column != "method" else "left")
    pairs = len(generated) * len(reference)
    table.add_row("hcmbench nearest_by_ssim", f"{ours:.1f}", f"{ours / pairs * 1e6:.1f}", f"{loop_total / ours:.1f}×")
    table.add_row(f"scikit-image loop (timed on {len(rows)} rows, extrapolated)", f"{loop_total:.1f}",
                  f"{loop / (len(rows) * len(reference)) * 1e6:.1f}", "1.0×")
    console = Console()
    console.print(table)
    console.print(f"Agreement on the {len(rows)} timed rows: largest |SSIM difference| {max_diff:.2e}; "
                  f"same nearest neighbour for {same_nn} of {len(rows)}.")
    console.print("Load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
