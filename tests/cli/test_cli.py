"""The `hcmbench` command line: data commands, the default phantom, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import hcmbench.data.phantom as phantom_module
from hcmbench.cli import main
from hcmbench.data import default_phantom_root


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_data_commands():
    result = run("--help")
    assert result.exit_code == 0 and "data" in result.output
    result = run("data", "--help")
    for command in ("synth", "inspect", "preview"):
        assert command in result.output


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "hcmbench", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "hcmbench" in result.stdout


def test_synth_writes_a_dataset_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "phantom"
    result = run("data", "synth", "--out", str(out), "--patients-per-group", "1", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "training").iterdir()) == [f"patient{i:03d}" for i in range(1, 6)]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    again = run("data", "synth", "--out", str(out), "--patients-per-group", "1")
    assert_one_line_error(again, str(out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in `output`, as lists of stripped cells."""
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in output.splitlines()
            if line.startswith("│")]


def test_inspect_reports_patients_slices_and_splits(split_phantom):
    from hcmbench.config import DataConfig
    from hcmbench.data import load_slices, open_dataset
    from hcmbench.data.acdc import read_header

    result = run("data", "inspect", "--data", str(split_phantom), "--size", "32")
    assert result.exit_code == 0, result.output
    slices = load_slices(split_phantom, DataConfig(groups=("HCM", "NOR"), size=32))
    volumes, kept = [], []
    for group in ("HCM", "NOR"):
        patients = [p for p in open_dataset(split_phantom).patients if p.group == group]
        depths = [read_header(p.image_path(p.info.ed))[0][2] for p in patients]
        volumes.append([group, str(len(patients)), f"{min(depths)}–{max(depths)}"])
        splits = [slices.subset(np.flatnonzero((slices.group == group) & (slices.split == split)))
                  for split in ("train", "val", "test")]
        kept.append([group, str(int((slices.group == group).sum())),
                     *(f"{len(part.patients)} / {len(part)}" for part in splits)])
    totals = [f"{len(slices.of_split(s).patients)} / {len(slices.of_split(s))}" for s in ("train", "val", "test")]
    assert all(total.split(" / ")[0] != "0" for total in totals)  # every split has patients to count
    rows = table_rows(result.output)
    assert [row[:3] for row in rows[:2]] == volumes and rows[2][:2] == ["all", "8"]
    assert rows[3:5] == kept and rows[5] == ["all", str(len(slices)), *totals]


def test_preview_writes_one_row_per_group(phantom_root, tmp_path):
    out = tmp_path / "grid.png"
    result = run("data", "preview", "--data", str(phantom_root), "--groups", "HCM,NOR", "--per-group", "3",
                 "--size", "32", "--out", str(out))
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * 128, 56 + 3 * 128)
    assert image[:, 56:].std() > 10  # real content, not a blank canvas


def test_without_data_the_phantom_is_generated_once_and_announced(monkeypatch):
    real_write = phantom_module.write_phantom
    calls = []

    def small_write(out, config, progress=None):
        calls.append(out)
        return real_write(out, phantom_module.PhantomConfig(patients_per_group=1, seed=config.seed), progress)

    monkeypatch.setattr(phantom_module, "write_phantom", small_write)
    first = run("data", "inspect", "--groups", "HCM", "--size", "32")
    assert first.exit_code == 0, first.output
    assert "generating the built-in phantom" in first.output
    second = run("data", "inspect", "--groups", "HCM", "--size", "32")
    assert "Using the built-in phantom" in second.output
    assert calls == [default_phantom_root()]


def test_hcmbench_data_env_var_is_used(phantom_root, monkeypatch):
    monkeypatch.setenv("HCMBENCH_DATA", str(phantom_root))
    result = run("data", "inspect", "--groups", "RV", "--size", "32")
    assert result.exit_code == 0 and str(phantom_root) in result.output.replace("\n", "")
    assert "phantom" not in result.output.split(str(phantom_root))[0].lower()


@pytest.mark.parametrize("damage", ["missing_root", "empty_root", "unknown_group", "corrupt_nifti", "bad_info"])
def test_bad_input_gives_one_line_and_exit_2(phantom_copy, tmp_path, damage):
    root, fragment, groups = phantom_copy, None, "HCM"
    if damage == "missing_root":
        root = fragment = tmp_path / "nowhere"
    elif damage == "empty_root":
        root = fragment = tmp_path / "empty"
        root.mkdir()
    elif damage == "unknown_group":
        groups, fragment = "HCM,XYZ", "XYZ"
    elif damage == "corrupt_nifti":
        fragment = root / "training" / "patient003" / "patient003_frame01.nii.gz"
        fragment.write_bytes(fragment.read_bytes()[:300])
    elif damage == "bad_info":
        fragment = root / "training" / "patient004" / "Info.cfg"
        fragment.write_text("ED: 1\nES: soon\nGroup: HCM\n")
    result = run("data", "inspect", "--data", str(root), "--groups", groups, "--size", "32")
    assert_one_line_error(result, str(fragment))


def test_skip_bad_reports_and_goes_on(phantom_copy):
    broken = phantom_copy / "training" / "patient003" / "patient003_frame01.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    result = run("data", "inspect", "--data", str(phantom_copy), "--groups", "HCM", "--size", "32", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "patient003" in result.output


def test_real_acdc_inspect_lists_100_patients(acdc_root):
    result = run("--quiet", "data", "inspect", "--data", str(acdc_root), "--size", "32")
    assert result.exit_code == 0, result.output
    volumes = result.output.split("Preprocessed slices")[0]
    assert "│ all   │      100 │" in volumes
    for group in ("DCM", "HCM", "MINF", "NOR", "RV"):
        assert f"│ {group:<5} │       20 │" in volumes


def test_written_files_get_the_usual_mode_not_0600(phantom_root, tmp_path):
    import os

    out = tmp_path / "grid.png"
    run("data", "preview", "--data", str(phantom_root), "--groups", "HCM", "--per-group", "1", "--size", "32",
        "--out", str(out))
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left beside it
