"""A server started by a command (`hcmbench ui`), with all of its processes ended when the command ends.

`mlflow ui` is a tree of processes: the MLflow CLI, uvicorn and its workers, a job runner, huey
consumers. Ending the CLI alone (what a signal to `hcmbench ui` did) leaves the others listening on
the port. So the server gets a session, hence a process group, of its own, and whatever ends the
command (SIGTERM, SIGINT or SIGHUP to its PID alone, Ctrl-C in a terminal, an error, the server's
own exit) ends the whole group: SIGTERM, then SIGKILL for what is left after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hcmbench.errors import HcmbenchError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on host:port (the wildcard addresses are tried on loopback)."""
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def serve(command: Sequence[str], host: str, port: int, on_ready: Callable[[], None] | None = None,
          env: Mapping[str, str] | None = None, grace: float = 5.0) -> int:
    """Run the server `command` (in environment `env`, default this one) in a process group of its own until
    it exits or this process is told to stop (SIGTERM, SIGINT, SIGHUP); `on_ready()` is called once
    host:port accepts connections. The whole group is ended before returning. Returns the server's exit
    status, or 0 when stopped by a signal. HcmbenchError when something already listens on host:port."""
    if accepts_connections(host, port):
        raise HcmbenchError(f"port {port} on {host} is taken (another server, or a `hcmbench ui` still running): "
                            "pass --port")

    def stop(signum: int, frame) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    server = None
    try:
        server = subprocess.Popen(list(command), start_new_session=True, env=env)
        ready = on_ready is None
        while server.poll() is None:
            if not ready and accepts_connections(host, port):
                ready = True
                on_ready()
            time.sleep(0.2)
        return server.returncode
    except Stopped:
        return 0
    finally:
        for signum in STOP_SIGNALS:  # a second signal while the group ends must not cut that short
            signal.signal(signum, signal.SIG_IGN)
        if server is not None:
            end_group(server, grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: an orphan of the group is reaped
    by the system's init, which in a container may never do it."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member that changed its user: still there
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command)": state, ppid, pgrp, ...
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                return True
    return False


def end_group(leader: subprocess.Popen, grace: float = 5.0) -> None:
    """End every process of `leader`'s process group (its session, started with `start_new_session`):
    SIGTERM, a wait of up to `grace` seconds for the group to exit, then SIGKILL."""
    group = leader.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        leader.poll()  # reaps the leader: a zombie still counts as a member of its group
        if leader.returncode is not None and not _group_alive(group):
            return
        time.sleep(0.1)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    leader.wait()
