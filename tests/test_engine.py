"""The training engine with a toy model: outputs, events, early stopping, resume, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench import HcmbenchError
from hcmbench.checkpoints import load_generator, read_checkpoint
from hcmbench.config import DataConfig, TrainConfig
from hcmbench.engine import Callback, TrainingDiverged, resume, train

DATA = DataConfig(groups=("HCM", "NOR", "DCM"), size=32)


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 0.05, "sample_every": 2, "grid_size": 16, **overrides})


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append(("start", None))

    def on_step_end(self, event):
        self.events.append(("step", event.epoch))

    def on_epoch_end(self, event):
        self.events.append(("epoch", event.epoch))

    def on_checkpoint(self, event):
        self.events.append((f"checkpoint-{event.kind}", event.epoch))

    def on_samples(self, event):
        self.events.append(("samples", event.epoch))

    def on_train_end(self, result):
        self.events.append(("end", result.epochs_run))


def test_a_run_writes_checkpoints_grids_plot_and_emits_events(phantom_root, tmp_path):
    recorder = Recorder()
    result = train("toy", phantom_root, tmp_path / "run", DATA, quick(), callbacks=[recorder])
    out = tmp_path / "run"
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_002.png", "epoch_003.png"]
    assert (out / "plots" / "losses.png").stat().st_size > 1000
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("epoch") == 3 and kinds.count("checkpoint-last") == 3 and kinds.count("samples") == 2
    # the loss falls: a learnable mean image converges towards the data mean
    assert result.history[-1]["losses"]["mse"] < result.history[0]["losses"]["mse"]
    assert result.best_score == min(h["val_score"] for h in result.history)


def test_checkpoints_load_safely_and_sample_like_the_trainer(phantom_root, tmp_path):
    result = train("toy", phantom_root, tmp_path / "run", DATA, quick())
    state = read_checkpoint(result.last_checkpoint)  # weights_only=True inside
    assert state["model"] == "toy" and state["epoch"] == 3 and len(state["optimizers"]) == 1
    assert state["classes"] == ["HCM", "NOR", "DCM"] and state["label_by"] == "group"
    first = load_generator(result.best_checkpoint).model
    second = load_generator(result.best_checkpoint).model
    a = first.sample(4, rng=torch.Generator().manual_seed(1))
    b = second.sample(4, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # sampling uses the EMA weights, which differ from the raw weights after training
    assert not torch.equal(state["ema_state_dict"]["means"], state["state_dict"]["means"])
    raw = load_generator(result.last_checkpoint, use_ema=False).model
    assert torch.equal(raw.means, state["state_dict"]["means"])


def test_same_seed_same_losses_other_seed_other_losses(phantom_root, tmp_path):
    runs = [train("toy", phantom_root, tmp_path / name, DATA, quick(seed=seed)).history
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    losses = [[h["losses"]["mse"] for h in run] for run in runs]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_early_stopping_after_patience(phantom_root, tmp_path):
    # A learning rate this small leaves the score unchanged, so only epoch 1 counts as an improvement.
    result = train("toy", phantom_root, tmp_path / "run", DATA, quick(epochs=20, lr=1e-12, patience=2, ema_decay=0.0))
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_resume_continues_at_the_right_epoch_with_identical_results(phantom_root, tmp_path):
    straight = train("toy", phantom_root, tmp_path / "straight", DATA, quick(epochs=4))
    train("toy", phantom_root, tmp_path / "split", DATA, quick(epochs=2))
    recorder = Recorder()
    continued = resume(tmp_path / "split", epochs=4, callbacks=[recorder])
    assert [h["epoch"] for h in continued.history] == [1, 2, 3, 4]
    assert [e for kind, e in recorder.events if kind == "epoch"] == [3, 4]
    assert [h["losses"] for h in continued.history] == [h["losses"] for h in straight.history]
    assert read_checkpoint(continued.last_checkpoint)["epoch"] == 4


def test_a_run_from_before_the_gan_settings_moved_to_the_model_resumes_with_them(phantom_root, tmp_path):
    """gp_weight and label_smoothing were training settings; a checkpoint that keeps them there still
    resumes, and the model gets the values the run was started with."""
    settings = {"latent_dim": 8, "width": 8, "gp_weight": 3.0, "label_smoothing": 0.2}
    train("dcgan", phantom_root, tmp_path / "run", DATA, quick(epochs=1), settings)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    for name in ("gp_weight", "label_smoothing"):  # as the run was saved before
        state["train_config"][name] = state["settings"].pop(name)
    torch.save(state, last)
    resumed = resume(tmp_path / "run", epochs=2)
    after = read_checkpoint(resumed.last_checkpoint)
    assert after["epoch"] == 2 and (after["settings"]["gp_weight"], after["settings"]["label_smoothing"]) == (3.0, 0.2)
    assert "gp_weight" not in after["train_config"]


def test_a_callback_that_raises_leaves_a_resumable_run(phantom_root, tmp_path):
    class StopAtTwo(Callback):
        def on_epoch_end(self, event):
            if event.epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("toy", phantom_root, tmp_path / "run", DATA, quick(epochs=4), callbacks=[StopAtTwo()])
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 2
    assert (tmp_path / "run" / "plots" / "losses.png").exists()
    assert resume(tmp_path / "run").epochs_run == 4


def test_existing_run_and_missing_run_are_refused(phantom_root, tmp_path):
    train("toy", phantom_root, tmp_path / "run", DATA, quick(epochs=1))
    with pytest.raises(HcmbenchError, match="already holds a run"):
        train("toy", phantom_root, tmp_path / "run", DATA, quick(epochs=1))
    with pytest.raises(HcmbenchError, match="no such checkpoint"):
        resume(tmp_path / "elsewhere")


def test_nan_loss_stops_with_a_clear_error(phantom_root, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss mse became nan at epoch 1, step 3"):
        train("toy", phantom_root, tmp_path / "run", DATA, quick(), model_settings={"nan_after": 3})


def test_conditional_grids_carry_every_class(phantom_root, tmp_path):
    result = train("toy", phantom_root, tmp_path / "run", DATA, quick(lr=0.2, ema_decay=0.0), model_settings={"per_class": True})
    model = load_generator(result.best_checkpoint).model
    assert model.conditional
    labels = torch.tensor([0, 1, 2])
    means = model.sample(3, labels, rng=torch.Generator().manual_seed(0)).mean(dim=(1, 2, 3))
    assert len(set(np.round(means.tolist(), 4))) == 3  # one learnt image per class


def test_unknown_model_and_setting_are_named(phantom_root, tmp_path):
    with pytest.raises(HcmbenchError, match="unknown model 'nope'"):
        train("nope", phantom_root, tmp_path / "run", DATA, quick())
    with pytest.raises(HcmbenchError, match="unknown setting.*width"):
        train("toy", phantom_root, tmp_path / "run", DATA, quick(), model_settings={"width": 3})


# -- budgets in images and minutes -------------------------------------------------------------------


class StepCounter(Callback):
    def __init__(self):
        self.steps, self.images, self.shares = {}, [], []

    def on_step_end(self, event):
        self.steps[event.epoch] = self.steps.get(event.epoch, 0) + 1
        self.images.append(event.kimg)
        self.shares.append(event.done)


def by_kimg(**overrides) -> TrainConfig:
    return quick(**{"epochs": None, "kimg": 0.1, "tick_kimg": 0.04, **overrides})


def test_a_kimg_budget_validates_at_fixed_ticks_whatever_the_split_size(phantom_root, tmp_path):
    counter = StepCounter()
    result = train("toy", phantom_root, tmp_path / "run", DATA, by_kimg(), callbacks=[counter])
    # ticks of 40 images at batch 8: 5 steps, 5 steps, then 3 steps up to the 100th image (104 shown)
    assert counter.steps == {1: 5, 2: 5, 3: 3}
    assert result.unit == "tick" and result.epochs_run == 3
    assert [h["kimg"] for h in result.history] == [0.04, 0.08, 0.104]
    assert counter.shares[-1] == 1.0 and counter.shares == sorted(counter.shares)
    small = TrainConfig(**{**by_kimg().__dict__, "max_steps_per_epoch": 2})  # passes of 2 batches: ticks span passes
    counter_small = StepCounter()
    train("toy", phantom_root, tmp_path / "small", DATA, small, callbacks=[counter_small])
    assert counter_small.steps == counter.steps


def test_a_kimg_run_resumes_with_identical_batches_and_extends(phantom_root, tmp_path):
    config = by_kimg(max_steps_per_epoch=3)  # ticks straddle passes, so the stream position must be restored
    straight = train("toy", phantom_root, tmp_path / "straight", DATA, config)
    train("toy", phantom_root, tmp_path / "split", DATA, by_kimg(max_steps_per_epoch=3, kimg=0.08))
    continued = resume(tmp_path / "split", kimg=0.1)
    assert [h["losses"] for h in continued.history] == [h["losses"] for h in straight.history]
    assert continued.kimg == straight.kimg == 0.104
    with pytest.raises(HcmbenchError, match="counts its budget in images: extend it with kimg"):
        resume(tmp_path / "split", epochs=9)
    train("toy", phantom_root, tmp_path / "epochs", DATA, quick(epochs=1))
    with pytest.raises(HcmbenchError, match="counts its budget in epochs"):
        resume(tmp_path / "epochs", kimg=1)


def test_minutes_cut_the_round_in_progress_then_resume_extends_them(phantom_root, tmp_path):
    # each step sleeps 0.2 s and the run may last 0.01 minutes (0.6 s): it stops after about 3 steps
    config = quick(epochs=None, minutes=0.01, tick_kimg=1.0)
    counter = StepCounter()
    result = train("toy", phantom_root, tmp_path / "run", DATA, config, {"step_seconds": 0.2}, callbacks=[counter])
    assert result.unit == "tick" and result.epochs_run == 1 and not result.stopped_early
    assert 2 <= sum(counter.steps.values()) <= 5 and result.seconds >= 0.6
    assert (tmp_path / "run" / "samples" / "epoch_001.png").exists()  # the cut round is closed: validated, drawn
    again = resume(tmp_path / "run")  # the same budget: nothing left to do
    assert again.epochs_run == 1
    longer = resume(tmp_path / "run", minutes=0.02)
    assert longer.epochs_run == 2 and longer.kimg > result.kimg


def test_budgets_are_checked_in_one_line():
    with pytest.raises(HcmbenchError, match="epochs or in kimg, not both"):
        TrainConfig(epochs=3, kimg=1)
    for field, value in (("kimg", 0), ("minutes", -1), ("tick_kimg", 0)):
        with pytest.raises(HcmbenchError, match=f"{field} must be positive"):
            TrainConfig(**{field: value})
    assert TrainConfig(kimg=10, tick_kimg=0.5).rounds_in_budget() == 20
    assert TrainConfig(minutes=5).rounds_in_budget() is None and TrainConfig(epochs=7).rounds_in_budget() == 7


def test_a_loss_reported_on_some_steps_is_averaged_over_those_steps(phantom_root, tmp_path, monkeypatch):
    from tests.toy_model import ToyModel

    plain = ToyModel.training_step

    def every_fourth(self, batch, optimizers):  # like lazy R1: a penalty computed on one step in four
        logs = plain(self, batch, optimizers)
        return {**logs, "gp": 4.0} if self.steps % 4 == 1 else logs

    monkeypatch.setattr(ToyModel, "training_step", every_fourth)
    result = train("toy", phantom_root, tmp_path / "run", DATA, quick(epochs=1))
    assert result.history[0]["losses"]["gp"] == 4.0
