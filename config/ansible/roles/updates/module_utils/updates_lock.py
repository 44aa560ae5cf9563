"""The run lock of `updates` for the role's modules: `<state>/updates.lock`, held with flock as `index.py`
holds it.

Contract: `run_lock(path, timeout)` holds an exclusive flock on `path` for the `with` block, waiting up to
`timeout` seconds while a run, rollback or pull of this host holds it, then raises `LockBusy` naming the
file. A missing state directory means nothing has run yet and nothing can: the block runs without a lock
and nothing is created. The file is opened without following a link and must be a regular file with one
name (as `index.py` requires); anything else raises `LockBusy` and is left alone. Once held, the file says
the holder's pid and its mtime since when, as `index.py` writes them: a run refused meanwhile names the
play's process, not the last run's.
Why: a run reads manifest.json at its start and writes it back (`lastApplied`) at its end; a deploy that
changed the manifest or the checkout in between would be undone by that write, or would change the code
under a running module.
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
from typing import Any

LOCK_MODE = 0o644  # as index.py makes it: the pid in it is for any operator to read
POLL = 0.5  # seconds between attempts


class LockBusy(Exception):
    """The lock could not be taken: held for too long, or not a lock file we may use."""


@contextlib.contextmanager
def run_lock(path: str, timeout: float) -> Iterator[None]:
    if not Path(path).parent.is_dir():
        yield
        return
    try:
        # O_NONBLOCK: a FIFO at its place must not hang the play (it is refused below).
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, LOCK_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockBusy(f"{path} is a symbolic link; refusing to use it as the run lock") from None
        if exc.errno == errno.ENXIO:
            raise LockBusy(f"{path} is a socket; refusing to use it as the run lock") from None
        raise LockBusy(f"cannot open the run lock {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise LockBusy(f"{path} is not a regular file with one name; refusing to use it as the run lock")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise LockBusy(f"cannot lock {path}: {exc.strerror or exc}") from None
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"a run of updates has held {path} for more than {timeout:g} s; nothing was changed: "
                    "run the play again once it has finished (or raise updates_lock_timeout)"
                )
            time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def module_lock(module: Any) -> contextlib.AbstractContextManager[None]:
    """The lock an Ansible module takes from its `lock` and `lock_timeout` options; nothing in check mode,
    which only reads: it neither waits for a run nor creates the lock file."""
    if module.check_mode:
        return contextlib.nullcontext()
    return run_lock(module.params["lock"], module.params["lock_timeout"])
