"""The run lock: one orchestrator run or rollback at a time; and the state directory it lives in.

Contract: `run_lock(paths)` holds `fcntl.flock(LOCK_EX | LOCK_NB)` on `<state>/updates.lock` for the
duration of the `with` block and raises `LockHeld` at once when another holder has it; `run_lock(paths,
wait=S)` first waits up to S seconds for the holder to finish (`index.py pull --wait`, which a deploy
uses). The lock file records the holder's pid for the operator; the kernel drops the lock when the holder
dies, so a crash never leaves a stale lock behind.
- Before it opens anything, `run_lock` calls `ensure_state_dir`: the state directory is created 0700 when
  missing and, when root runs, refused (`UnsafePermissions`, exit 2) when it or a directory above it belongs
  to another user or can be written by group or others (root's sticky directories like /tmp excepted), as
  `utils.permissions.check_state_dir` finds.
- `lock_holder(lock)` tells, without taking or creating anything (for `status`), which process holds the
  lock and since when: `/proc/locks` names the holder of the file's flock; the file's mtime is when it
  took it (the holder rewrites the file then). `LockHeld` carries the same `pid` and `since`.
- The lock file is opened without following a link and must be a regular file with a single name; a link,
  a FIFO, a device or a hard link at its place is refused with `UnsafePermissions` and left untouched.
- A held lock belongs to the process that took it, not to its forks: a child made by `os.fork()` (adblock's
  parsing helper, multiprocessing) closes its copy of the descriptor at once. flock locks belong to the
  open file description, so the parent keeps the lock, and a helper outliving a killed orchestrator does
  not keep the next run out. The descriptor is close-on-exec as well.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import LockHeld, UnsafePermissions, UpdatesError
from .paths import Paths
from .permissions import FIX_HINT, check_state_dir, enforced

STATE_DIR_MODE = 0o700
PARENT_MODE = 0o755
LOCK_MODE = 0o644  # the pid in it is for any operator to read
WAIT_POLL = 0.5  # seconds between attempts of a run_lock that waits

# Descriptors of locks this process holds, closed in a forked child (see the module docstring).
_held: set[int] = set()


def _close_inherited_locks() -> None:
    # Only close: flock(LOCK_UN) here would release the lock for the parent too, since both descriptors
    # share one open file description.
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _release(fd: int) -> None:
    """Close a lock descriptor unless a fork already closed it (its number may be reused since)."""
    if fd in _held:
        _held.discard(fd)
        os.close(fd)


def ensure_state_dir(state: Path, *, euid: int | None = None) -> Path:
    """Create the state directory (0700) when missing; as root, refuse one that others could change.

    Raises `UnsafePermissions` (exit 2) with one line naming the first problem, or `OSError` when the
    directory cannot be created.
    """
    strict = enforced(euid)
    if strict and (problems := check_state_dir(state, euid=euid)):
        _refuse_state(state, problems)  # before creating anything under a directory someone else controls
    missing = [p for p in (state, *state.parents) if not os.path.lexists(p)]
    for directory in reversed(missing):
        # Explicit modes whatever the umask: parents we make are no one else's to write, and the state
        # (lock, history, journal, backups) is root's business alone.
        mode = STATE_DIR_MODE if directory == state else PARENT_MODE
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            continue  # made meanwhile by someone else; the check below judges it
        directory.chmod(mode)
    if strict and (problems := check_state_dir(state, euid=euid)):
        _refuse_state(state, problems)
    return state


def _refuse_state(state: Path, problems: list[str]) -> None:
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    raise UnsafePermissions(
        f"refusing to use the state directory {state}: {problems[0]}{more}",
        hint=FIX_HINT,
    )


def _flock_or_raise(fd: int, message: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        # The holder truncates and rewrites the file as it takes the lock: its mtime is since when.
        since = os.fstat(fd).st_mtime if holder.isdigit() else None
        raise LockHeld(
            f"{message} (pid {holder})",
            hint="wait for it to finish; the lock is released when that process exits",
            pid=int(holder) if holder.isdigit() else None,
            since=since,
        ) from None


def _open_lock(lock: Path, flags: int) -> int:
    """Open the lock file without following a link; refuse anything but a regular file with one name."""
    try:
        # O_NONBLOCK: a FIFO planted at the lock's place must not hang the run before we can refuse it.
        fd = os.open(lock, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, LOCK_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePermissions(
                f"refusing the lock file {lock}: it is a symbolic link",
                hint="remove it, and find out who could write to the state directory",
            ) from exc
        if exc.errno == errno.ENXIO:  # a socket
            raise UnsafePermissions(
                f"refusing the lock file {lock}: not a regular file",
                hint="remove it, and find out who could write to the state directory",
            ) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"it has {st.st_nlink} names"
        raise UnsafePermissions(
            f"refusing the lock file {lock}: {what}",
            hint="remove it, and find out who could write to the state directory",
        )
    return fd


def lock_holder(lock: Path, proc_locks: Path = Path("/proc/locks")) -> tuple[int, float] | None:
    """(pid, since) of the process holding `lock`, or None when no one holds it (or it cannot be told)."""
    try:
        st = os.lstat(lock)
        table = proc_locks.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    for line in table.splitlines():
        fields = line.split()
        # `1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146545 0 EOF`; a blocked waiter's line reads `1: -> FLOCK`
        if len(fields) < 6 or fields[1] != "FLOCK" or not fields[4].isdigit():
            continue
        major, minor, inode = [*fields[5].split(":"), "", "", ""][:3]
        try:
            same = int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(st.st_dev), os.minor(st.st_dev))
        except ValueError:
            continue
        if same:
            return int(fields[4]), st.st_mtime
    return None


@contextlib.contextmanager
def hold_existing_lock(lock: Path, message: str) -> Iterator[None]:
    """Hold an existing lock file as a run would (flock), without creating or writing it."""
    try:
        fd = _open_lock(lock, os.O_RDONLY)
    except FileNotFoundError:
        yield  # removed since we looked: no run holds it
        return
    _held.add(fd)
    try:
        _flock_or_raise(fd, message)
        yield
    finally:
        _release(fd)


def _flock_waiting(fd: int, message: str, wait: float) -> None:
    """`_flock_or_raise`, trying again every WAIT_POLL seconds for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            _flock_or_raise(fd, message)
            return
        except LockHeld:
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(WAIT_POLL, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def run_lock(paths: Paths, *, wait: float = 0) -> Iterator[None]:
    try:
        ensure_state_dir(paths.state)
        fd = _open_lock(paths.lock, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise UpdatesError(
            f"cannot create the lock file {paths.lock}: {exc.strerror or exc}",
            hint="run as root, or set UPDATES_STATE_DIR to a writable directory",
        ) from exc
    _held.add(fd)
    try:
        _flock_waiting(fd, f"another run holds the lock {paths.lock}", wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        _release(fd)
