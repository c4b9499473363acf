"""What a study keeps for life, stored in the study itself, and how a dead worker is noticed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hcmbench.errors import HcmbenchError


@dataclass(frozen=True)
class Heartbeat:
    """How a dead worker is noticed. A running trial records a heartbeat every `interval` seconds; one
    silent for `grace` seconds is FAILED by the next worker that looks, and queued again with the same
    parameters, up to `max_retry` times."""

    interval: int = 60
    grace: int = 180
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval or self.max_retry < 0:
            raise HcmbenchError(f"heartbeat: need interval ≥ 1 s and grace > interval (got interval "
                                f"{self.interval} s, grace {self.grace} s) and max_retry ≥ 0")


SETTINGS_ATTR = "hcmbench"


@dataclass(frozen=True)
class StudySettings:
    """What a worker needs to join a study, stored in the study itself (one user attribute), so that
    `hcmbench worker --study NAME --storage URL` on any machine runs the same trials."""

    model: str
    space: dict[str, Any]  # the search-space mapping
    source: str  # where it was read from
    trials: int  # the study-wide total
    budget: dict[str, Any]  # each trial's TrainConfig budget fields (epochs, kimg, minutes, tick_kimg)
    seed: int
    data: str  # the data root where the study was created; "" for the built-in phantom
    tracking_uri: str
    parent_run: str

    # a study keeps these for life: changing them mid-study would mix incomparable trials
    FIXED = ("model", "space", "budget", "seed")

    def differences(self, other: "StudySettings") -> list[str]:
        return [name for name in self.FIXED if getattr(self, name) != getattr(other, name)]

    @classmethod
    def of(cls, study: Any) -> "StudySettings | None":
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if not isinstance(stored, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        if "budget" not in stored and "epochs" in stored:  # a study made before budgets could be in kimg
            stored = {**stored, "budget": {"epochs": stored["epochs"]}}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def store(self, study: Any) -> None:
        study.set_user_attr(SETTINGS_ATTR, dataclasses.asdict(self))
