"""Time writing the full synthetic phantom (100 patients, 20 per group) and report its disk size.

Usage: python bench/phantom_speed.py [--seed N] [--cine]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hcmbench.data.phantom import PhantomConfig, write_phantom


def main() -> None:
    """Write the phantom into a temporary folder and print wall time and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cine", action="store_true", help="also write the 4D cines")
    args = parser.parse_args()
    config = PhantomConfig(patients_per_group=20, seed=args.seed, cine=args.cine)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = write_phantom(Path(tmp) / "phantom", config)
        seconds = time.perf_counter() - start
        files = [f for f in out.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
    n = config.patients_per_group * len(config.groups)
    print(f"{n} patients, {len(files)} files, cine={config.cine}: {seconds:.1f} s wall "
          f"({seconds / n * 1000:.0f} ms/patient), {size / 2**20:.1f} MiB on disk")


if __name__ == "__main__":
    main()
