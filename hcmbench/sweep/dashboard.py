"""`hcmbench dashboard`: optuna-dashboard on the studies' storage (the optional extra `dashboard`).

MLflow shows each trial as a run; optuna-dashboard shows the studies as Optuna sees them: the history,
parameter importances, slices and contours, every trial's parameters and state. It runs in this process
(a WSGI server, no child process), reading the same storage as `hcmbench sweep`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from hcmbench.errors import HcmbenchError
from hcmbench.processes import accepts_connections
from hcmbench.sweep.coordination import default_storage, display_url

INSTALL = "pip install 'hcmbench[dashboard]'"


def _load_dashboard():
    try:
        import optuna_dashboard
    except ImportError:
        raise HcmbenchError(f"hcmbench dashboard needs optuna-dashboard, an optional extra: {INSTALL}") from None
    return optuna_dashboard


def serve_dashboard(storage: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                    on_ready: Callable[[], None] | None = None) -> None:
    """Serve optuna-dashboard on `storage` (default: the sweeps' `sqlite:///mlruns/optuna.db`) at host:port
    until interrupted; `on_ready()` is called once it accepts connections. HcmbenchError when the extra is
    not installed, the storage holds no studies yet (a SQLite file that does not exist) or the port is taken."""
    dashboard = _load_dashboard()
    storage = storage or default_storage()
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise HcmbenchError(f"no studies at {display_url(storage)}: run `hcmbench sweep` first (or pass --storage)")
    if accepts_connections(host, port):
        raise HcmbenchError(f"port {port} on {host} is taken: pass --port")
    if on_ready is not None:
        def wait_then_call() -> None:
            for _ in range(600):
                if accepts_connections(host, port):
                    on_ready()
                    return
                time.sleep(0.1)

        threading.Thread(target=wait_then_call, daemon=True).start()
    try:
        dashboard.run_server(storage, host=host, port=port)
    except OSError as exc:  # the port was taken meanwhile, or the address does not exist here
        raise HcmbenchError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
