"""Figures written for people, the same way in every command and document."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """12 s, 4:05 (minutes:seconds) or 1:02:03 (hours:minutes:seconds)."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
