"""Wall time of one Optuna study run by 1 and by 2 worker processes (one thread each), and the ratio.

    python bench/scale_workers.py [--model dcgan] [--trials 8] [--epochs 3] [--data ROOT]
                                  [--storage postgresql://…]   # default: a fresh SQLite file per run

Each run is a fresh study of `--trials` trials of `--model`'s shipped search space with
pruning switched off, so that both runs do the same work: `hcmbench sweep` alone, then `hcmbench sweep`
plus one `hcmbench worker`, every process with OMP_NUM_THREADS=1. Before timing, a one-trial study
prepares the data and the scoring feature space in a shared cache, so neither timed run pays for them.
The wall time runs from starting the processes to the last one's exit (imports included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import yaml
from rich.console import Console
from rich.table import Table

from hcmbench.sweep import space_text


def hcmbench(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hcmbench", "--quiet", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(process.args[3:])} failed:\n{output}")


def run_study(workers: int, trials: int, space: Path, data: list[str], storage: str | None, epochs: int,
              folder: Path, env: dict[str, str]) -> tuple[float, dict[str, int], int]:
    """(wall seconds, trial states, distinct workers that ran trials) for one fresh study."""
    folder.mkdir(parents=True)
    study = f"scale-{workers}-{uuid.uuid4().hex[:6]}"
    shared = ["--storage", storage] if storage else []
    start = time.perf_counter()
    processes = [hcmbench(["sweep", "--model", space.stem, "--trials", str(trials), "--space", str(space),
                           "--study", study, "--epochs", str(epochs), *data, *shared], folder, env)]
    processes += [hcmbench(["worker", "--study", study, "--wait", "300", *shared], folder, env)
                  for _ in range(workers - 1)]
    wait_all(processes)
    seconds = time.perf_counter() - start
    url = storage or f"sqlite:///{folder / 'mlruns' / 'optuna.db'}"
    ran = optuna.load_study(study_name=study, storage=url).get_trials()
    states: dict[str, int] = {}
    for trial in ran:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return seconds, states, len({t.user_attrs.get("worker") for t in ran})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default=None, help="Dataset root (default: the built-in phantom).")
    parser.add_argument("--storage", default=None, help="Optuna storage shared by the workers (default: SQLite).")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="hcmbench-scale-"))
    space = yaml.safe_load(space_text(args.model))
    space.setdefault("budget", {})["pruner"] = "none"  # equal work in both runs
    space_path = work / f"{args.model}.yaml"
    space_path.write_text(yaml.safe_dump(space))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HCMBENCH_CACHE": os.environ.get("HCMBENCH_CACHE", str(work / "cache"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    data = ["--data", args.data] if args.data else []

    console = Console()
    console.print(f"Warming the cache (data, feature space) in {env['HCMBENCH_CACHE']} …")
    run_study(1, 1, space_path, data, None, 1, work / "warm-up", env)
    rows = []
    for workers in (1, 2):
        console.print(f"{args.trials} trials of {args.model}, {args.epochs} epochs each, {workers} worker(s) …")
        rows.append((workers, *run_study(workers, args.trials, space_path, data, args.storage, args.epochs,
                                         work / f"workers-{workers}", env)))

    table = Table(title=f"One {args.trials}-trial {args.model} study ({os.cpu_count()} CPUs, one thread per worker)")
    for column in ("workers", "wall time (s)", "trials", "processes that ran trials"):
        table.add_column(column, justify="right")
    for workers, seconds, states, ran_by in rows:
        table.add_row(str(workers), f"{seconds:.1f}", ", ".join(f"{n} {s.lower()}" for s, n in states.items()),
                      str(ran_by))
    console.print(table)
    console.print(f"Speed-up with 2 workers: {rows[0][1] / rows[1][1]:.2f}× (1-worker time / 2-worker time)")


if __name__ == "__main__":
    main()
