"""The README's two newcomer commands exist, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv")]


def test_readme_has_a_setup_and_run_command_and_a_test_command():
    setup_and_run, test = readme_commands()
    assert "pip install torch==2.13.0" in setup_and_run and "hcmbench" in setup_and_run.split("pip install -e .")[1]
    assert test.endswith("python -m pytest") and "torch==2.13.0" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test = readme_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines
