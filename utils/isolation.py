"""The isolation boundary around one module call.

Contract: `isolated()` restores the working directory, the environment, `sys.path`, `sys.argv` and the
umask after the block, whatever the block did or raised. It does not catch anything itself; the runner
decides what an exception means.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _restore_environ(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    cwd = Path.cwd()
    environ = dict(os.environ)
    path = list(sys.path)
    argv = list(sys.argv)
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        yield
    finally:
        os.chdir(cwd)
        _restore_environ(environ)
        sys.path[:] = path
        sys.argv[:] = argv
        os.umask(umask)
