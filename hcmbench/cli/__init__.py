"""The `hcmbench` command line: parses options, calls the library, shows the results. No logic here.

- `app`: the group, --quiet, and one way of failing (one line, exit status 2);
- `options`: the options several commands share, TrainConfig's generated from its fields;
- `display`: everything shown while a command works (status lines, bars, a run's and a sweep's live view);
- one short module per command group: `data`, `train`, `generate` (sample, generate), `evaluate`
  (evaluate, figure, compare), `sweep` (sweep, worker, dashboard), `registry` (promote, ui), `experiments`
  (study, utility).
"""

from hcmbench.cli import data, evaluate, experiments, generate, registry, sweep, train  # noqa: F401  (register commands)
from hcmbench.cli.app import main

__all__ = ["main"]
