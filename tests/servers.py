"""Servers the tests start for real: a free loopback port, and `mlflow server` running on one until the test is done."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_mlflow(arguments: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                  name: str = "the MLflow server", timeout: float = 120) -> Iterator[str]:
    """`mlflow ARGUMENTS --host 127.0.0.1 --port PORT --workers 1` (ARGUMENTS start with `server`) in a session of
    its own, its output in `log`, with `env` (default: this process's); yields its URL once /health answers 200.
    Fails the test, with the log, when it exits or does not answer within `timeout` s. On the way out its
    process group gets SIGTERM, then SIGKILL after 20 s."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    with open(log, "w") as out:  # a file, not a pipe nobody reads: a full pipe would block it
        process = subprocess.Popen(
            [str(mlflow), *arguments, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=None if env is None else dict(env), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            with suppress(ProcessLookupError):  # it may have exited, group and all
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{name} did not start:\n{log.read_text()}")
        time.sleep(0.3)
    try:
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
