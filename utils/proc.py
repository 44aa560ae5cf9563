"""The one subprocess wrapper every part of `updates` uses.

Contract: commands are argument lists (never a shell), every call has a timeout, and the child gets an
explicit environment: a small safe base (PATH, LANG, HOME) plus what the caller adds, never the whole
environment of the orchestrator by accident. Failures raise `CommandError` with one readable line.
"""
from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CommandError

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for child processes, plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH", SAFE_PATH),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/root"),
    }
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    input: bytes | None = None,  # noqa: A002 - mirrors subprocess.run
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` and capture its output.

    `env` is added to `base_env()`; pass the full environment you need there. Raises `CommandError` when
    the program is missing, times out, or (with `check`) exits non-zero.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise CommandError("empty command")
    log.debug("running %s (timeout %ss)", args, timeout)
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=base_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{args[0]}: command not found") from exc
    except PermissionError as exc:
        raise CommandError(f"{args[0]}: permission denied") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{args[0]}: timed out after {timeout:g} s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else "no output"
        raise CommandError(f"{' '.join(args[:3])}: exit code {result.returncode}: {last}")
    return result
