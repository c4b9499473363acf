"""What a sweep tells its display, one event per thing that happens, and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preparing:
    message: str


@dataclass(frozen=True)
class Joined:
    """This process works on the study: `done` of its `total` trials have ended so far."""

    study: str
    total: int
    done: int
    worker: str


@dataclass(frozen=True)
class TrialStarted:
    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialEpoch:
    number: int
    epoch: int  # the round: an epoch, or a kimg tick
    epochs: int | None
    val_score: float
    unit: str = "epoch"
    kimg: float = 0.0


@dataclass(frozen=True)
class TrialEnded:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, STOPPED
    value: float | None
    best_value: float | None
    best_number: int | None
    reason: str = ""
    done: int = 0  # the study's trials ended so far, by every worker


@dataclass(frozen=True)
class Waiting:
    """Nothing left to start, but trials run elsewhere; one whose worker goes silent is queued again."""

    running: tuple[int, ...]
    grace: int


SweepDisplay = Callable[[Any], None]


@dataclass
class SweepResult:
    study_name: str
    storage: str
    parent_run_id: str
    trials_run: int  # by this process
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    counts: dict[str, int]  # this process's trials by final state
    total: int = 0  # the study's trial budget
    finished: bool = False  # the study has all its trials
    model: str = ""
    metric: str = ""
