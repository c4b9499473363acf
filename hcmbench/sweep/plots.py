"""Optuna's plots of a study, for its MLflow parent run."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def study_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs (importances need two finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    paths = []
    plots = [("history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 2 and any(len(t.distributions) for t in complete):
        plots.append(("importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                axes = plot(study)
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=100)
            plt.close(figure)
            paths.append(folder / name)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances when every value is equal
            plt.close("all")
    return paths
