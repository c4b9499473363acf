"""The one display: quiet, plain lines (logs and pipes) and live bars (a terminal), for every kind of work."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from hcmbench.cli.display import Display, describe_budget
from hcmbench.config import TrainConfig
from hcmbench.sweep import Joined, Preparing, TrialEnded, TrialEpoch, TrialStarted, Waiting

REPO = Path(__file__).resolve().parents[2]


def stream(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def round_end(epoch: int, improved: bool = True):
    return SimpleNamespace(epoch=epoch, epochs=2, unit="epoch", kimg=0.5 * epoch, losses={"d_loss": 0.5},
                           val_score=0.25, improved=improved, seconds=1.5)


def step_end(step: int):
    return SimpleNamespace(epoch=1, step=step, steps=4, losses={"d_loss": 0.5}, kimg=0.1 * step, seconds_left=65.0)


def trainer():
    return SimpleNamespace(config=TrainConfig(kimg=2.0), epochs=None, model=SimpleNamespace(name="dcgan"),
                           train_images=range(10), device="cpu", validation_source="val")


def sweep_events():
    return [Preparing("Preparing data"), Joined("s", 3, 0, "host:1"), TrialStarted(0, {"lr": 1e-3}),
            TrialEpoch(0, 1, 2, 0.5), Waiting((1,), 180), Waiting((1,), 180),
            TrialEnded(0, "PRUNED", None, None, None, reason="pruned at epoch 1", done=1)]


def run_everything(display: Display) -> None:
    display.say("hello")
    with display.progress("counting") as progress:
        progress(1, 2)
    with display.phases() as phase:
        phase("scoring", 0, 2)
        phase("scoring", 1, 2)
        phase("drawing", 0, 1)
    with display.status("registering"):
        pass
    with display.training() as view:
        view.progress(3, 3)
        view.on_train_start(trainer())
        for step in (1, 2, 3, 4):
            view.on_step_end(step_end(step))
        view.on_epoch_end(round_end(1))
    with display.sweep(3) as show:
        for event in sweep_events():
            show(event)


def test_quiet_shows_nothing():
    console, out = stream(terminal=True)
    run_everything(Display(quiet=True, stream=console))
    assert out.getvalue() == ""


def test_a_log_gets_plain_lines_each_said_once():
    console, out = stream(terminal=False)
    run_everything(Display(stream=console))
    lines = out.getvalue().splitlines()
    assert lines[0] == "hello"
    assert lines.count("scoring…") == 1 and "drawing…" in lines  # a phase once, however often it reports
    assert "Training dcgan on 10 slices (cpu) for 2 kimg (validated every 1 kimg); validation on the val split." in lines
    assert "epoch   1/2  0.5 kimg  d_loss 0.5  val 0.25 best  1.5 s" in lines
    assert "Preparing data …" in lines and "Study s: 0 of 3 trials ended; working as host:1" in lines
    assert sum(line.startswith("waiting for trial(s) 1") for line in lines) == 1  # a wait said once
    assert "trial   0 pruned — pruned at epoch 1" in lines
    assert "\x1b" not in out.getvalue() and "━" not in out.getvalue()  # no bars, no control codes in a log


def test_a_terminal_gets_bars_and_keeps_the_lines_above_them():
    console, out = stream(terminal=True)
    run_everything(Display(stream=console))
    text = out.getvalue()
    assert "hello" in text and "epoch   1/2  0.5 kimg" in text and "trial   0 pruned" in text
    assert "round 1" in text and "0.4 kimg · 1:05 left" in text  # the run's live bar: round, kimg, time left
    assert "waiting for trial(s) 1 on other workers" in text and "1/3" in text  # the sweep's live line, as last set


def test_the_budget_reads_as_a_person_says_it():
    assert describe_budget(TrainConfig(epochs=100)) == "100 epochs"
    assert describe_budget(TrainConfig(kimg=20, minutes=15)) == "20 kimg (validated every 1 kimg), at most 15 minutes"
    assert describe_budget(TrainConfig(minutes=3, tick_kimg=0.5)) == "3 minutes (validated every 0.5 kimg)"


# -- in a real terminal ------------------------------------------------------------------------------------


def in_a_terminal(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """Everything `python -m hcmbench ARGS` writes, control codes included, with a pseudo-terminal of 120
    columns as its stdin, stdout and stderr: what a person at a terminal sees."""
    env = {k: v for k, v in os.environ.items() if k not in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR",
                                                            "NO_COLOR", "MLFLOW_TRACKING_URI")}
    env.update(TERM="xterm", COLUMNS="120", LINES="40", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "hcmbench", *args], stdin=terminal, stdout=terminal,
                               stderr=terminal, cwd=cwd, env=env, close_fds=True)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1.0)[0]:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: the process has closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        else:
            process.kill()
    finally:
        os.close(controller)
    output = b"".join(chunks).decode(errors="replace")
    assert process.wait(timeout=30) == 0, output
    return output


def test_a_training_run_in_a_terminal_shows_its_bar_and_quiet_removes_it(split_phantom, tmp_path):
    train = ["train", "--model", "dcgan", "--data", str(split_phantom), "--size", "32", "--batch-size", "8",
             "--kimg", "0.05", "--tick-kimg", "0.025", "--set", "width=4", "--set", "latent_dim=8", "--sample-every", "0"]
    shown = in_a_terminal([*train, "--out", "shown"], tmp_path)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the colours and cursor moves left out
    # the live bar, redrawn in place: round, bar, steps, images shown and the time left
    assert re.search(r"\rround 2 ━+ \d+/\d+ 0\.\d kimg · \S+( s)? left  d_loss \S+  g_loss \S+ ", text), text
    assert "\x1b[?25l" in shown  # the cursor hidden while the bar is live
    assert "tick   2/2  0.1 kimg" in text and "Checkpoint: " in text  # the lines above it stay

    quiet = in_a_terminal(["--quiet", *train, "--out", "quiet"], tmp_path)
    assert "━" not in quiet and "kimg" not in quiet and "\x1b[?25l" not in quiet
    assert re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", quiet).split() == ["Checkpoint:", "quiet/checkpoints/best.pt"]  # the result only
