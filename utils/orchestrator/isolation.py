"""The isolation boundary around one module call.

Contract: `isolated()` restores, after the block and whatever it did or raised: the working directory,
the environment, `sys.path`, `sys.argv`, the umask, the handlers of SIGINT/SIGTERM/SIGHUP (so Ctrl-C and
systemd's stop still work for the rest of the run), `sys.stdin/stdout/stderr` and the logging disable
level (so the summary and later errors still reach the operator). During the block stdin is /dev/null:
a module runs unattended and must not wait for a terminal. With `stdout_to_stderr`, whatever the module
writes to stdout (Python prints, raw writes to fd 1, child processes) goes to stderr instead, keeping
stdout for the JSON report. It does not catch anything itself; the runner decides what an exception means.
Every restore step runs even when an earlier one fails (a working directory removed meanwhile, a signal);
then the first failure is raised and any later ones are logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

log = logging.getLogger(__name__)


def _restore_environ(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def _fd_redirect(target_fd: int, source_fd: int) -> Iterator[None]:
    """Point `target_fd` at what `source_fd` is for the block; a no-op where the fds are not usable."""
    try:
        saved = os.dup(target_fd)
    except OSError:
        yield
        return
    try:
        os.dup2(source_fd, target_fd)
        yield
    finally:
        os.dup2(saved, target_fd)
        os.close(saved)


def _run_all(steps: list[Callable[[], object]]) -> None:
    """Run every step, whatever the earlier ones raised (Ctrl-C included); then raise the first failure."""
    failures: list[BaseException] = []
    for step in steps:
        try:
            step()
        except BaseException as exc:
            failures.append(exc)
    if failures:
        for later in failures[1:]:  # logged once logging and the streams are back
            log.error("restoring the process state after a module also failed: %r", later)
        raise failures[0]


def _restore_streams(streams: tuple[Any, Any, Any]) -> None:
    sys.stdin, sys.stdout, sys.stderr = streams


def _restore_list(name: str, saved: list[str]) -> None:
    # In place, as it was taken: whoever holds a reference to sys.path or sys.argv sees the restored list.
    getattr(sys, name)[:] = saved


def _restore_handler(sig: int, handler: Any) -> None:
    if signal.getsignal(sig) is not handler and handler is not None:
        signal.signal(sig, handler)


def _flush_all() -> None:
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    for stream in {id(s): s for s in streams if s is not None}.values():
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()


@contextlib.contextmanager
def isolated(*, stdout_to_stderr: bool = False) -> Iterator[None]:
    try:
        cwd = Path.cwd()
    except FileNotFoundError:  # started from a directory since removed: come back somewhere that exists
        cwd = Path("/")
    environ = dict(os.environ)
    path = list(sys.path)
    argv = list(sys.argv)
    umask = os.umask(0o022)
    os.umask(umask)
    streams = (sys.stdin, sys.stdout, sys.stderr)
    disabled = logging.root.manager.disable
    main_thread = threading.current_thread() is threading.main_thread()
    handlers: dict[int, Any] = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main_thread else {}
    with contextlib.ExitStack() as stack:
        devnull = stack.enter_context(open(os.devnull, encoding="utf-8"))
        _flush_all()
        stack.enter_context(_fd_redirect(0, devnull.fileno()))
        if stdout_to_stderr:
            stack.enter_context(_fd_redirect(1, 2))
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        sys.stdin = devnull
        try:
            yield
        finally:
            _run_all(
                [
                    # Before fd 1 is pointed back: text a module left in a buffer belongs where it wrote it.
                    _flush_all,
                    functools.partial(_restore_streams, streams),
                    functools.partial(os.chdir, cwd),
                    functools.partial(_restore_environ, environ),
                    functools.partial(_restore_list, "path", path),
                    functools.partial(_restore_list, "argv", argv),
                    functools.partial(os.umask, umask),
                    functools.partial(logging.disable, disabled),
                    *(functools.partial(_restore_handler, sig, handler) for sig, handler in handlers.items()),
                ]
            )
