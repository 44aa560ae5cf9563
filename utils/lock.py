"""The run lock: one orchestrator run or rollback at a time.

Contract: `run_lock(paths)` holds `fcntl.flock(LOCK_EX | LOCK_NB)` on `<state>/updates.lock` for the
duration of the `with` block and raises `LockHeld` at once when another holder has it. The lock file records
the holder's pid for the operator; the kernel drops the lock when the holder dies, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import LockHeld, UpdatesError
from .paths import Paths


def _flock_or_raise(fd: int, message: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise LockHeld(
            f"{message} (pid {holder})",
            hint="wait for it to finish; the lock is released when that process exits",
        ) from None


@contextlib.contextmanager
def hold_existing_lock(lock: Path, message: str) -> Iterator[None]:
    """Hold an existing lock file as a run would (flock), without creating or writing it."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield  # removed since we looked: no run holds it
        return
    try:
        _flock_or_raise(fd, message)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(paths: Paths) -> Iterator[None]:
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UpdatesError(
            f"cannot create the lock file {paths.lock}: {exc.strerror or exc}",
            hint="run as root, or set UPDATES_STATE_DIR to a writable directory",
        ) from exc
    try:
        _flock_or_raise(fd, f"another run holds the lock {paths.lock}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
