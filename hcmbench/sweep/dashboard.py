"""`hcmbench dashboard`: optuna-dashboard on the studies' storage (the optional extra `dashboard`).

MLflow shows each trial as a run; optuna-dashboard shows the studies as Optuna sees them: the history,
parameter importances, slices and contours, every trial's parameters and state. It runs in this process
(a threaded WSGI server, no child process), reading the same storage as `hcmbench sweep`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hcmbench.errors import HcmbenchError
from hcmbench.processes import STOP_SIGNALS
from hcmbench.sweep.coordination import default_storage, display_url

INSTALL = "pip install 'hcmbench[dashboard]'"


def _load_dashboard():
    try:
        import optuna_dashboard
    except ImportError:
        raise HcmbenchError(f"hcmbench dashboard needs optuna-dashboard, an optional extra: {INSTALL}") from None
    return optuna_dashboard


class _Server(ThreadingMixIn, WSGIServer):
    """A WSGI server answering each request in a thread of its own: the dashboard asks for several at once,
    and one slow request (parameter importances) does not hold the others."""

    daemon_threads = True


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the standard signature)
        pass  # one line per request on stderr otherwise


def serve_dashboard(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                    on_ready: Callable[[], None] | None = None) -> None:
    """Serve optuna-dashboard on `storage` (default: the sweeps' `sqlite:///mlruns/optuna.db`) at host:port
    until SIGINT (Ctrl-C), SIGTERM or SIGHUP; `on_ready()` is called once it listens. HcmbenchError when the
    extra is not installed, the storage holds no studies yet (a SQLite file that does not exist) or the
    port is taken.

    Served by its own threads while this one waits for a signal: optuna-dashboard's own `run_server`
    serves in this thread through wsgiref, which takes a Ctrl-C that arrives during a request for an error
    of that request, and goes on serving."""
    dashboard = _load_dashboard()
    storage = storage or default_storage()
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise HcmbenchError(f"no studies at {display_url(storage)}: run `hcmbench sweep` first (or pass --storage)")
    app = dashboard.wsgi(storage)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_Handler)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise HcmbenchError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    stop = threading.Event()

    def request_stop(signum: int, frame) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    serving = threading.Thread(target=server.serve_forever, name="optuna-dashboard", daemon=True)
    try:
        serving.start()
        if on_ready is not None:
            on_ready()
        while not stop.wait(1.0):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        closing = threading.Thread(target=server.shutdown, daemon=True)  # waits for the loop to end
        closing.start()
        closing.join(5.0)
        server.server_close()
