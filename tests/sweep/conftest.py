"""Fixtures of the sweep tests."""

from __future__ import annotations

import pytest

from hcmbench.evaluation.features import FeatureConfig


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder as the working directory (the default stores, mlruns/, land in it), no tracking server set,
    and a tiny feature space."""
    import hcmbench.evaluation.features as features

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))
    return tmp_path
