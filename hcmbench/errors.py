"""The one exception type for errors a user can cause."""

from __future__ import annotations


class HcmbenchError(Exception):
    """A problem with the user's input (bad path, corrupt file, unknown name, empty selection).

    The CLI prints its message on one line and exits with status 2; library callers catch it to
    tell user errors apart from bugs. Messages name the offending file or value.
    """
