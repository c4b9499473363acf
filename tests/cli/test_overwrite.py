"""No command replaces a file the user already has, unless told to with --force; and the refusal comes
before the work (preprocessing, sampling, evaluating), in one line that names --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.evaluation.features import FeatureConfig

MINE = "the user's own file"


def run(*args: str):
    return CliRunner().invoke(main, ["--quiet", *args])


def refused(result, path: Path) -> None:
    """One `error:` line naming the file and --force; the file is untouched."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}{result.exception!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(path) in lines[0] and "--force" in lines[0], lines[0]
    assert path.read_text() == MINE


def mine(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINE)
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Preprocessing, loading a checkpoint and looking up runs fail the test: a refusal must come first."""
    import hcmbench.checkpoints
    import hcmbench.data.slices
    import hcmbench.tracking

    def forbidden(*args, **kwargs):
        raise AssertionError("the command did work before refusing to overwrite")

    for module, name in ((hcmbench.data.slices, "load_slices"), (hcmbench.checkpoints, "load_generator"),
                         (hcmbench.tracking, "best_runs"), (hcmbench.tracking, "resolve_checkpoint")):
        monkeypatch.setattr(module, name, forbidden)


def test_data_preview_does_not_replace_a_file_without_force(split_phantom, tmp_path):
    png = mine(tmp_path / "grid.png")
    args = ["data", "preview", "--data", str(split_phantom), "--size", "32", "--per-group", "1", "--out", str(png)]
    refused(run(*args), png)
    assert run(*args, "--force").exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_evaluate_does_not_replace_a_table_without_force(toy, tmp_path, monkeypatch):
    import hcmbench.evaluation.features as features

    monkeypatch.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))
    table = mine(tmp_path / "eval" / "table.csv")
    args = ["evaluate", str(toy), "-n", "6", "--detect-seeds", "0", "--no-calibration", "--out", str(tmp_path / "eval")]
    with monkeypatch.context() as patch:
        patch.setattr("hcmbench.evaluation.report.evaluate_checkpoint",
                      lambda *a, **k: pytest.fail("evaluated before refusing"))
        refused(run(*args), table)
    assert run(*args, "--force").exit_code == 0
    assert table.read_text().startswith("name,")


@pytest.mark.parametrize("command, args, written", [
    ("evaluate", ["CKPT", "--out", "{out}"], "table.md"),
    ("compare", ["--models", "toy", "--out", "{out}"], "table.csv"),
    ("figure", ["CKPT", "--out", "{out}"], "samples.png"),
    ("utility", ["--model-uri", "CKPT", "--out", "{out}"], "utility.png"),
])
def test_commands_that_write_tables_and_figures_refuse_before_working(command, args, written, toy, tmp_path, no_work):
    out = tmp_path / "out"
    existing = mine(out / written)
    refused(run(command, *[a.replace("CKPT", str(toy)).format(out=out) for a in args]), existing)


def test_sample_refuses_a_folder_with_files_before_sampling(toy, tmp_path, monkeypatch):
    existing = mine(tmp_path / "s" / "notes.txt")
    monkeypatch.setattr("hcmbench.sampling.draw", lambda *a, **k: pytest.fail("sampled before refusing"))
    result = run("sample", str(toy), "-n", "2", "--out", str(tmp_path / "s"))
    assert result.exit_code == 2 and "already exists and is not empty" in result.output
    assert existing.read_text() == MINE


def test_a_resumed_run_still_writes_into_its_own_folder(toy, split_phantom, tmp_path):
    import shutil

    folder = Path(shutil.copytree(toy.parent.parent, tmp_path / "run"))
    result = run("train", "--model", "toy", "--data", str(split_phantom), "--out", str(folder), "--resume",
                 "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert (folder / "samples" / "epoch_002.png").exists()
