"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main


@pytest.fixture(scope="module")
def toy(split_phantom, tmp_path_factory) -> Path:
    """A toy checkpoint trained on HCM of the split phantom (which has a test split to evaluate against), one
    per test module."""
    folder = tmp_path_factory.mktemp("toy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HCMBENCH_CACHE", str(folder / "cache"))
        result = CliRunner().invoke(main, [
            "--quiet", "train", "--model", "toy", "--data", str(split_phantom), "--groups", "HCM", "--size", "32",
            "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8", "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run" / "checkpoints" / "best.pt"
