"""Writing files and folders so that a crash never leaves a half-written one behind; where they cannot be
written, one line that says why (HcmbenchError), early if possible; and a lock between processes."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hcmbench.errors import HcmbenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, else removed.

    The temporary name keeps the final suffix, so writers that infer a format from it still work.
    """
    path = Path(path)
    output_folder(path.parent, path)
    if path.is_dir():
        raise HcmbenchError(f"cannot write {path}: it is a folder")
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    os.close(handle)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise cannot_write(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; on success it is renamed onto `path`, else removed.

    `path` must not exist or be an empty folder (HcmbenchError otherwise), so nothing is overwritten.
    """
    path = Path(path)
    check_new_folder(path)
    output_folder(path.parent, path)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise cannot_write(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_new_folder(path: str | Path) -> None:
    """Refuse (HcmbenchError) a folder to write that `atomic_folder` would refuse: one that exists and is not
    empty, or that cannot be made. Makes nothing: commands call it before their work, so that a refusal
    comes at once rather than after minutes of sampling."""
    path = Path(path)
    check_writable(path, folder=True)
    if path.is_dir() and any(path.iterdir()):
        raise HcmbenchError(f"output folder {path} already exists and is not empty")


# -- where a file or folder cannot be written: one line that says why -----------------------------------

_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


def _nearest_existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (or is a link)."""
    path = Path(os.path.abspath(path)) if not path.is_absolute() else path
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _shown(path: Path, relative_to: Path) -> Path:
    """`path` (absolute) as the user wrote the path it belongs to: relative if they gave a relative one."""
    if relative_to.is_absolute():
        return path
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _blocker(path: Path) -> str | None:
    """Why `path` cannot be made, as far as can be told without writing: the nearest existing part of it
    is a file, or a folder this process may not write into; None when nothing stands in the way."""
    existing = _nearest_existing(path)
    target = Path(os.path.abspath(path))
    if existing == target:
        return None
    if not existing.is_dir():
        return f"{_shown(existing, path)} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{_shown(existing, path)} is not writable"
    return None


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Refuse (HcmbenchError, one line) a path whose folder cannot be made: part of it is a file, or the
    nearest existing folder is not writable; with `folder`, also a path that is a file itself. Writes nothing."""
    if folder and os.path.lexists(path) and not Path(path).is_dir():
        raise HcmbenchError(f"cannot write into {path}: it is a file, not a folder")
    reason = _blocker(Path(path))
    if reason is not None:
        raise HcmbenchError(f"cannot write {path}: {reason}{_in_cache(path)}")


def cannot_write(path: str | Path, exc: OSError) -> HcmbenchError:
    """The one-line error for an OSError met while writing `path`."""
    reason = _blocker(Path(path))
    if reason is None:
        what = (exc.strerror or type(exc).__name__).lower()
        where = Path(exc.filename) if exc.filename else None
        if where is not None and where.name.startswith(".") and where.parent == Path(path).parent:
            where = where.parent  # our hidden temporary sibling: the folder is what the user knows
        if exc.errno in _REFUSED and where is not None:
            reason = f"{where} is not writable"
        else:
            reason = what + (f" ({where})" if where is not None and str(where) != str(path) else "")
    return HcmbenchError(f"cannot write {path}: {reason}{_in_cache(path)}")


def _in_cache(path: str | Path) -> str:
    """A hint when `path` lies in hcmbench's cache folder, which the user did not name on the command line."""
    from hcmbench.config import cache_dir

    try:
        cache = Path(os.path.abspath(cache_dir()))
    except HcmbenchError:
        return ""
    inside = Path(os.path.abspath(path))
    if inside != cache and cache not in inside.parents:
        return ""
    return " (the cache folder: set HCMBENCH_CACHE to a folder you may write)"


def output_folder(path: str | Path, target: str | Path | None = None) -> Path:
    """Make folder `path` (and its parents) if missing; an OSError becomes a one-line HcmbenchError about
    `target` (default: the folder itself), the file or folder that was to be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if target is None and os.path.lexists(path) and not path.is_dir():
            raise HcmbenchError(f"cannot write into {path}: it is a file, not a folder") from None
        raise cannot_write(target if target is not None else path, exc) from None
    return path


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `path` for the block: one process at a time, across
    processes on this machine. `path` is a folder, or a file created if missing. A dead process's lock goes
    with it."""
    try:
        handle = os.open(path, os.O_RDONLY) if os.path.isdir(path) else os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock
