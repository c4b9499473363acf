"""Bad input a user can give — an output path that cannot be written, a cache that is not a folder, a damaged
or hand-made checkpoint, a setting of the wrong type — ends in one line on stderr and exit status 2, never a
traceback, and leaves nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.evaluation.features import FeatureConfig


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--quiet", *args], env=env)


def one_line_error(result, *fragments: str) -> str:
    """The one `error: …` line of a command that failed as it should; asserts there is nothing else."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}{result.exception!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tiny_features(monkeypatch):
    """`evaluate` with a tiny feature network, so that a command that wrongly gets that far is not slow."""
    import hcmbench.evaluation.features as features

    monkeypatch.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))


def writers(toy: Path, phantom: Path, out: Path) -> dict[str, list[str]]:
    """Every command that writes where --out says, writing to `out`."""
    data = ["--data", str(phantom), "--size", "32"]
    return {
        "sample": ["sample", str(toy), "-n", "2", "--out", str(out)],
        "generate": ["generate", str(toy), "-n", "2", "--format", "png", "--out", str(out)],
        "train": ["train", "--model", "toy", *data, "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "8",
                  "--out", str(out)],
        "data synth": ["data", "synth", "--patients-per-group", "1", "--out", str(out)],
        "data preview": ["data", "preview", *data, "--groups", "HCM", "--per-group", "1", "--out", str(out / "p.png")],
        "evaluate": ["evaluate", str(toy), "-n", "6", "--detect-seeds", "0", "--no-calibration", "--out", str(out)],
    }


COMMANDS = ["sample", "generate", "train", "data synth", "data preview", "evaluate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_file_is_refused_in_one_line(command, toy, split_phantom, tmp_path, tiny_features):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    line = one_line_error(run(*writers(toy, split_phantom, blocker / "out")[command]))
    assert f"{blocker} is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing half-written beside it


@pytest.mark.parametrize("command", ["sample", "generate", "train", "data synth", "evaluate"])
def test_an_output_folder_that_is_a_file_is_refused_in_one_line(command, toy, split_phantom, tmp_path, tiny_features):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    line = one_line_error(run(*writers(toy, split_phantom, notes)[command]))
    assert f"{notes}" in line and "is a file, not a folder" in line
    assert notes.read_text() == "a file, not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("where", ["--out", "--results"])
def test_a_study_that_cannot_write_its_results_is_refused_before_training(where, split_phantom, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    places = {"--out": str(tmp_path / "study"), "--results": str(tmp_path / "results.md"), where: str(notes / "x")}
    result = run("study", "--data", str(split_phantom), "--models", "toy", "--minutes", "0.01", "-n", "6",
                 "--detect-seeds", "0", *[a for key, value in places.items() for a in (key, value)])
    one_line_error(result, f"{notes} is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no run, no store, no study folder


@pytest.mark.parametrize("command", [["sweep", "--model", "dcgan", "--trials", "1"], ["promote", "--model", "dcgan"]])
def test_a_store_folder_that_is_a_file_is_refused_in_one_line(command, split_phantom, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlruns").write_text("a file, not a folder")
    data = ["--data", str(split_phantom)] if command[0] == "sweep" else []
    one_line_error(run(*command, *data), "mlruns: it is a file, not a folder")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_in_a_read_only_folder_is_refused_in_one_line(command, toy, split_phantom, tmp_path, tiny_features):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user (root) may write into a read-only folder")
        one_line_error(run(*writers(toy, split_phantom, locked / "out")[command]), f"{locked}")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_cache_that_is_a_file_is_refused_in_one_line(split_phantom, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    env = {"HCMBENCH_CACHE": str(cache)}
    one_line_error(run("data", "inspect", "--data", str(split_phantom), "--size", "32", env=env),
                   f"HCMBENCH_CACHE is {cache}, a file, not a folder")
    one_line_error(run("data", "inspect", "--size", "32", env=env), "HCMBENCH_CACHE")  # the phantom goes there
    under = {"HCMBENCH_CACHE": str(cache / "sub")}
    one_line_error(run("data", "inspect", "--data", str(split_phantom), "--size", "32", env=under),
                   f"HCMBENCH_CACHE is {cache / 'sub'}", f"{cache} is a file, not a folder")
    assert cache.read_text() == "not a folder"


def unwritable_folders(tmp_path: Path) -> list[Path]:
    """Folders nothing can be written under: /proc (even by root), and a read-only folder (unless root)."""
    folders = [Path("/proc/hcmbench-test")] if Path("/proc/self").is_dir() else []
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if not os.access(locked, os.W_OK):
        folders.append(locked / "cache")
    return folders


def test_a_cache_that_cannot_be_written_is_refused_in_one_line_naming_it(split_phantom, tmp_path):
    folders = unwritable_folders(tmp_path)
    if not folders:
        pytest.skip("no folder here that this user cannot write")
    try:
        for cache in folders:
            env = {"HCMBENCH_CACHE": str(cache)}
            one_line_error(run("data", "inspect", "--data", str(split_phantom), "--size", "32", env=env),
                           f"cannot write {cache}", "set HCMBENCH_CACHE to a folder you may write")
            one_line_error(run("data", "inspect", "--size", "32", env=env), f"cannot write {cache}", "HCMBENCH_CACHE")
    finally:
        (tmp_path / "locked").chmod(0o755)


def crafted(folder: Path, name: str, state: dict) -> Path:
    path = folder / name
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def bad_checkpoints(toy, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """{name: (a damaged or hand-made checkpoint, what its error line says)}."""
    from hcmbench.checkpoints import save_checkpoint
    from hcmbench.config import DataConfig
    from hcmbench.models.registry import build_model

    folder = tmp_path_factory.mktemp("bad")
    real = torch.load(toy, weights_only=True)
    dcgan = build_model("dcgan", image_size=32, latent_dim=8, width=4)
    wider = {"model": "dcgan", "settings": {**dcgan.settings, "width": 8}, "state_dict": dcgan.state_dict(),
             "ema_state_dict": None, "classes": [], "data_config": {"groups": ["HCM"], "size": 32}}
    return {
        "weights of another width": (save_checkpoint(wider, folder / "wider.pt"),
                                     "its weights do not fit a dcgan with its settings"),
        "format and model only": (crafted(folder, "bare.pt", {"format": 1, "model": "dcgan"}),
                                  "not a complete hcmbench checkpoint"),
        "settings not a mapping": (crafted(folder, "list.pt", {**real, "settings": [1, 2]}),
                                   "not a complete hcmbench checkpoint"),
        "unknown model": (crafted(folder, "nope.pt", {**real, "model": "nope"}), "unknown model 'nope'"),
        "setting of the wrong type": (crafted(folder, "type.pt", {**real, "settings": {**real["settings"],
                                                                                          "noise": "loud"}}),
                                      "noise must be a number, got 'loud'"),
        "no data settings": (crafted(folder, "nodata.pt", {k: v for k, v in real.items() if k != "data_config"}),
                             "not a complete hcmbench checkpoint"),
        "data settings of the wrong form": (crafted(folder, "dataform.pt", {**real, "data_config": {"size": "big"}}),
                                            "not a complete hcmbench checkpoint"),
        "another version's DataConfig": (crafted(folder, "datafield.pt", {**real, "data_config": {
            **DataConfig().__dict__, "slice_gap": 2}}), "not a complete hcmbench checkpoint"),
    }


@pytest.mark.parametrize("case", ["weights of another width", "format and model only", "settings not a mapping",
                                  "unknown model", "setting of the wrong type", "no data settings",
                                  "data settings of the wrong form", "another version's DataConfig"])
@pytest.mark.parametrize("command", ["sample", "generate", "evaluate"])
def test_a_damaged_or_hand_made_checkpoint_is_refused_in_one_line(command, case, bad_checkpoints, tmp_path,
                                                                   tiny_features):
    path, fragment = bad_checkpoints[case]
    args = {"sample": ["sample", str(path), "-n", "2", "--out", str(tmp_path / "out")],
            "generate": ["generate", str(path), "-n", "2", "--out", str(tmp_path / "out")],
            "evaluate": ["evaluate", str(path), "-n", "6", "--detect-seeds", "0", "--out", str(tmp_path / "out")]}
    one_line_error(run(*args[command]), str(path), fragment)
    assert not (tmp_path / "out").exists()


def test_a_hand_made_last_checkpoint_does_not_resume(toy, tmp_path):
    run_folder = tmp_path / "run"
    (run_folder / "checkpoints").mkdir(parents=True)
    real = torch.load(toy.with_name("last.pt"), weights_only=True)
    for state in ({"format": 1, "model": "toy"}, {k: v for k, v in real.items() if k != "optimizers"}):
        torch.save(state, run_folder / "checkpoints" / "last.pt")
        one_line_error(run("train", "--model", "toy", "--out", str(run_folder), "--resume", "--epochs", "2"),
                       "last.pt", "not a complete hcmbench checkpoint")


@pytest.mark.parametrize("setting, says", [
    ("width=abc", "dcgan: width must be an integer, got 'abc'"),
    ("width=2.5", "dcgan: width must be an integer, got 2.5"),
    ("latent_dim=[8, 8]", "dcgan: latent_dim must be an integer, got (8, 8)"),
    ("mbstd=3", "dcgan: mbstd must be true or false, got 3"),
    ("lecam_weight=much", "dcgan: lecam_weight must be a number, got 'much'"),
    ("d_norm=7", "dcgan: d_norm must be a text, got 7"),
])
def test_a_setting_of_the_wrong_type_is_refused_in_one_line(setting, says, split_phantom, tmp_path):
    result = run("train", "--model", "dcgan", "--data", str(split_phantom), "--size", "32", "--epochs", "1",
                 "--set", setting, "--out", str(tmp_path / "run"))
    one_line_error(result, says)
    assert not (tmp_path / "run").exists()


def test_a_ddpm_tuple_setting_is_checked_item_by_item(split_phantom, tmp_path):
    result = run("train", "--model", "ddpm", "--data", str(split_phantom), "--size", "32", "--epochs", "1",
                 "--set", "channel_mults=[1, two]", "--out", str(tmp_path / "run"))
    one_line_error(result, "ddpm: channel_mults must be a list of integers, got (1, 'two')")
