"""Passwords out of what hcmbench shows or stores: a URL's password (postgresql://user:PASSWORD@host/db,
http://user:PASSWORD@host) is replaced by *** in messages, tags, study attributes and failure reasons, so that
no secret is kept in clear in the Optuna or MLflow stores, nor printed into a container's log."""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ — the password runs to the last "@" before the path (an unescaped "@" in a
# password is then masked whole); percent-escaped passwords are matched as written
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):([^/?#\s]*)@")


def mask_passwords(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with the password of every URL replaced by ***; the user
    name and everything else stay."""
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def has_masked_password(url: str) -> bool:
    """Whether `url` holds a password that was masked by `mask_passwords` (or SQLAlchemy's
    hide_password): it cannot be used to connect as it is."""
    match = _CREDENTIALS.search(url)
    return match is not None and match.group(2) == MASK
