"""The package as pip builds it: a wheel that holds the search spaces, which a plain (non-editable)
install finds wherever it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """hcmbench built with `pip wheel` and installed (not editable) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(REPO)],
                   check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("hcmbench-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, text=True)
    return wheel, tmp / "site"


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A command of the installed copy, from a folder that holds no source tree (the installed copy
    comes first on the path, as in a virtual environment that installed the wheel)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_holds_the_search_spaces(installed_wheel):
    wheel, _ = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (REPO / "hcmbench" / "sweep" / "spaces").glob("*.yaml"))
    assert shipped and all(f"hcmbench/sweep/spaces/{name}" in names for name in shipped)
    assert not any(name.startswith(("tests/", "sweeps/")) for name in names)


def test_an_installed_copy_finds_its_search_spaces_anywhere(installed_wheel, tmp_path):
    _, site = installed_wheel
    where = run_installed(site, tmp_path, "-c", "import hcmbench.sweep as s; print(s.__file__); "
                                                "print(','.join(m for m in s.shipped_models() if s.load_space(m)))")
    assert where.returncode == 0, where.stderr
    path, models = where.stdout.split()
    assert path.startswith(str(site)) and models.split(",") == ["acgan", "dcgan", "ddpm", "gan", "infogan", "vae"]
    printed = run_installed(site, tmp_path, "-m", "hcmbench", "sweep", "--model", "dcgan", "--print-space")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["model"] == "dcgan"
    assert not (tmp_path / "mlruns").exists()
