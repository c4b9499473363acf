"""The figures a generator is scored by, and which way each is better.

Below evaluation, sweep and tracking, which all choose by them: a sweep's objective, `promote`'s
champion, the order of MLflow searches. `val_score` is a model's own validation score, not a table
figure.
"""

from __future__ import annotations

DIRECTIONS: dict[str, str] = {
    "fid": "minimize", "kid": "minimize", "ssim": "maximize", "cc": "maximize", "mse": "minimize",
    "precision": "maximize", "recall": "maximize", "density": "maximize", "coverage": "maximize",
    "memorization": "minimize", "diversity": "minimize", "sample_ms": "minimize", "val_score": "minimize",
    "detectability": "minimize",
}

