"""`hcmbench train` and `hcmbench sample` end to end with the toy model."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def train_toy(phantom_root, out, *extra, quiet=False):
    return run(*(["--quiet"] if quiet else []), "train", "--model", "toy", "--data", str(phantom_root), "--groups", "HCM,NOR", "--size", "32",
               "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(out), *extra)


def test_train_prints_epochs_and_the_checkpoint_then_resume_extends(phantom_root, tmp_path):
    out = tmp_path / "run"
    result = train_toy(phantom_root, out)
    assert result.exit_code == 0, result.output
    assert "epoch   2/2" in result.output and f"Checkpoint: {out / 'checkpoints' / 'best.pt'}" in result.output
    assert (out / "samples" / "epoch_002.png").exists() and (out / "plots" / "losses.png").exists()
    again = train_toy(phantom_root, out)
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = run("train", "--model", "toy", "--out", str(out), "--resume", "--epochs", "3")
    assert resumed.exit_code == 0, resumed.output
    assert "epoch   3/3" in resumed.output and "epoch   1/" not in resumed.output


def test_train_by_kimg_prints_ticks_and_images_and_refuses_two_budgets(phantom_root, tmp_path):
    out = tmp_path / "run"
    result = run("train", "--model", "toy", "--data", str(phantom_root), "--size", "32", "--batch-size", "8",
                 "--kimg", "0.04", "--tick-kimg", "0.02", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "for 0.04 kimg (validated every 0.02 kimg)" in result.output
    assert "tick   2/2  0.0 kimg" in result.output and "finished after 2 ticks (0.0 kimg" in result.output
    both = train_toy(phantom_root, tmp_path / "both", "--kimg", "1")
    assert both.exit_code == 2 and both.output.strip().endswith("give a budget in epochs or in kimg, not both")
    assert not (tmp_path / "both").exists()
    wrong = run("train", "--model", "toy", "--out", str(out), "--resume", "--epochs", "3")
    assert wrong.exit_code == 2 and "extend it with kimg, not epochs" in wrong.output


def test_train_with_a_bad_model_or_setting_exits_2(phantom_root, tmp_path):
    result = run("train", "--model", "nope", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and result.output.startswith("error: unknown model 'nope'")
    bad = train_toy(phantom_root, tmp_path / "y", "--set", "width=3")
    assert bad.exit_code == 2 and "unknown setting(s) width" in bad.output
    assert not (tmp_path / "y" / "checkpoints").exists()
    frames = train_toy(phantom_root, tmp_path / "z", "--frames", "ED,mid")
    assert frames.exit_code == 2 and "unknown frame 'mid'" in frames.output and not (tmp_path / "z").exists()
    no_cine = train_toy(phantom_root, tmp_path / "c", "--frames", "cine")  # the phantom fixture writes no _4d files
    assert no_cine.exit_code == 2 and "frames 'cine' need" in no_cine.output
    assert not (tmp_path / "c" / "checkpoints").exists()


def test_train_on_cine_frames(tmp_path):
    from hcmbench.checkpoints import read_checkpoint
    from hcmbench.data.phantom import PhantomConfig, write_phantom

    root = write_phantom(tmp_path / "cine", PhantomConfig(patients_per_group=3, seed=1, cine=True, groups=("HCM",)))
    result = run("train", "--model", "toy", "--data", str(root), "--frames", "cine", "--size", "32", "--epochs", "1",
                 "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert tuple(state["data_config"]["frames"]) == ("cine",)
    assert len(state["classes"]) > 2 and {"ED", "ES"} <= set(state["classes"])  # labelled by phase, F02 … too


def test_nan_stops_training_with_one_line(phantom_root, tmp_path):
    result = train_toy(phantom_root, tmp_path / "run", "--set", "nan_after=2", quiet=True)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: toy: loss mse became nan at epoch 1, step 2")


def test_sample_writes_pngs_and_npz_honouring_labels(phantom_root, tmp_path):
    out = tmp_path / "run"
    train_toy(phantom_root, out, "--set", "per_class=true")
    samples = tmp_path / "samples"
    result = run("sample", str(out / "checkpoints" / "best.pt"), "-n", "5", "--out", str(samples), "--label", "nor")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in samples.iterdir()) == [f"sample_{i:05d}.png" for i in range(5)] + ["samples.npz"]
    stored = np.load(samples / "samples.npz")
    assert stored["images"].shape == (5, 32, 32) and list(stored["labels"]) == [1] * 5
    assert list(stored["classes"]) == ["HCM", "NOR"]
    png = np.asarray(Image.open(samples / "sample_00000.png"), dtype=np.float32) / 255
    assert np.abs(png - stored["images"][0]).max() <= 1 / 255 + 1e-6


def test_sample_refuses_bad_requests_in_one_line(phantom_root, tmp_path):
    out = tmp_path / "run"
    train_toy(phantom_root, out)
    best = str(out / "checkpoints" / "best.pt")
    for args, fragment in [
        (("--label", "HCM"), "unconditional"),
        (("--sampler", "ddim"), "does not take sampler"),
    ]:
        result = run("sample", best, "-n", "2", "--out", str(tmp_path / "s"), *args)
        assert result.exit_code == 2 and result.output.startswith("error: ") and fragment in result.output
        assert not (tmp_path / "s").exists()
    missing = run("sample", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "s"))
    assert missing.exit_code == 2 and "no such checkpoint" in missing.output
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    result = run("sample", str(garbage), "--out", str(tmp_path / "s"))
    assert result.exit_code == 2 and "not a readable hcmbench checkpoint" in result.output


def test_a_preset_fills_settings_that_explicit_options_override(phantom_root, tmp_path):
    import torch

    out = tmp_path / "run"
    result = run("--quiet", "train", "--model", "toy", "--data", str(phantom_root), "--size", "32", "--preset", "cpu",
                 "--kimg", "0.02", "--lr", "0.01", "--set", "noise=0.2", "--out", str(out))
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    config = state["train_config"]
    # the preset's batch size and tick stay; its 50-kimg budget gave way to --kimg, its lr to --lr
    assert config["batch_size"] == 8 and config["tick_kimg"] == 0.02 and config["kimg"] == 0.02
    assert config["lr"] == 0.01 and state["settings"]["noise"] == 0.2
    unknown = run("train", "--model", "toy", "--preset", "gpu", "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 2 and "toy has no preset 'gpu' (its presets: cpu)" in unknown.output
