"""MLflow: where runs are stored, and finding a run's or a registered model's checkpoint.

MLflow is imported lazily (it takes seconds), so commands that do not track stay quick.
Tracking URI: $MLFLOW_TRACKING_URI, else `sqlite:///mlruns/mlflow.db` (MLflow 3 refuses the plain
`./mlruns` file store), with artifacts under `mlruns/artifacts`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from hcmbench.errors import HcmbenchError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
CHECKPOINT_ARTIFACT = "checkpoints/best.pt"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else the project's sqlite store under ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def is_tracking_reference(source: str) -> bool:
    """Whether `source` names an MLflow run (a run id, runs:/…) or a registered model (models:/…)."""
    return bool(RUN_ID.match(source)) or source.startswith(("runs:/", "models:/"))


def resolve_checkpoint(source: str | Path, download_to: str | Path | None = None) -> Path:
    """A local checkpoint file for a path, an MLflow run id, a `runs:/` URI or a `models:/` URI.

    A run id means the run's best checkpoint (`checkpoints/best.pt`); a `models:/NAME@ALIAS` or
    `models:/NAME/VERSION` URI means the checkpoint stored with that registered model. Downloads go to
    `download_to` (default: a new temporary folder). Anything that cannot be found raises HcmbenchError.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        return path
    if not is_tracking_reference(text):
        raise HcmbenchError(f"{text}: no such checkpoint file (nor an MLflow run id, runs:/ or models:/ URI)")
    uri = f"runs:/{text}/{CHECKPOINT_ARTIFACT}" if RUN_ID.match(text) else text
    folder = Path(download_to) if download_to is not None else Path(tempfile.mkdtemp(prefix="hcmbench-"))
    try:
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder),
                                                         tracking_uri=tracking_uri()))
    except Exception as exc:  # MLflow raises several types, with multi-line messages
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HcmbenchError(f"{text}: cannot fetch it from MLflow at {tracking_uri()} ({first_line})") from None
    if local.is_file():
        return local
    found = sorted(local.rglob("best.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise HcmbenchError(f"{text}: holds no checkpoint (.pt) file")
    return found[0]
