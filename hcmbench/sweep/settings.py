"""What a study keeps for life, stored in the study itself, and how a dead worker is noticed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hcmbench.errors import HcmbenchError
from hcmbench.redact import has_masked_password, mask_passwords


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
        """Kept in the study with the tracking URI's password masked: whoever can read the storage can read
        its attributes, and a worker brings its own credentials (`tracking_uri_for`)."""
        study.set_user_attr(SETTINGS_ATTR, {**dataclasses.asdict(self),
                                            "tracking_uri": mask_passwords(self.tracking_uri)})

    def tracking_uri_for(self, study_name: str, storage: str) -> str:
        """The study's tracking URI as a worker can use it. A password in it was not stored: a database on
        the study storage's server, as its user, takes the storage's password; an MLflow server takes the
        worker's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; anything else must be named here."""
        if not has_masked_password(self.tracking_uri):
            return self.tracking_uri
        from sqlalchemy.engine import make_url

        tracked, store = make_url(self.tracking_uri), make_url(storage)
        if tracked.drivername in ("http", "https"):
            if os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
                parts = urlsplit(self.tracking_uri)
                return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        elif store.password and (tracked.get_backend_name(), tracked.username, tracked.host, tracked.port) == (
                store.get_backend_name(), store.username, store.host, store.port):
            return tracked.set(password=store.password).render_as_string(hide_password=False)
        raise HcmbenchError(f"study {study_name!r} is tracked in {self.tracking_uri}, whose password the study "
                            "does not keep: pass --tracking-uri (or set MLFLOW_TRACKING_URI) with it here"
                            + (", or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                               if tracked.drivername in ("http", "https") else ""))
