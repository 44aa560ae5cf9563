"""The one subprocess wrapper every part of `updates` uses.

Contract: commands are argument lists (never a shell), every call has a timeout, and the child gets an
explicit environment: a small safe base (PATH, LANG, HOME) plus what the caller adds, never the whole
environment of the orchestrator by accident. Failures raise `CommandError` with one readable line.

`run(..., as_user=Identity(uid, gid))` runs the child as that user instead (root only): primary group
`gid`, no supplementary groups, a new session (no controlling terminal it could push keystrokes into),
an environment built from constants only (no PATH or HOME of root's), HOME pointing nowhere, and `/` as
the working directory unless the caller names one. `utils.executables.run_executable` decides when an
executable must run that way.
"""
from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A home that does not exist: a tool run as a service user must not read or write root's dotfiles, and
# finds none of its own to be steered by.
UNPRIVILEGED_HOME = "/nonexistent"


@dataclass(frozen=True)
class Identity:
    """A user to run a child process as: `uid` with primary group `gid` and no supplementary groups."""

    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} gid {self.gid}"


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


def unprivileged_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child run as another user: constants only, plus what the caller adds."""
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": UNPRIVILEGED_HOME}
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
    as_user: Identity | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` and capture its output.

    `env` is added to `base_env()` (to `unprivileged_env()` with `as_user`); pass the full environment you
    need there. Raises `CommandError` when the program is missing, times out, or (with `check`) exits
    non-zero.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise CommandError("empty command")
    if as_user is not None:
        if os.geteuid() != 0 and (as_user.uid, as_user.gid) != (os.geteuid(), os.getegid()):
            raise CommandError(f"{args[0]}: cannot run as {as_user}: only root can switch users")
        child_env = unprivileged_env(env)
        # The child changes directory before it drops root, so any directory works; `/` is one every user
        # may be in, so that the tool does not start somewhere it cannot even look at.
        cwd = Path("/") if cwd is None else cwd
        log.debug("running %s as %s (timeout %ss)", args, as_user, timeout)
    else:
        child_env = base_env(env)
        log.debug("running %s (timeout %ss)", args, timeout)
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=child_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            user=None if as_user is None else as_user.uid,
            group=None if as_user is None else as_user.gid,
            # Without this the child would keep root's supplementary groups (gid 0 among them).
            extra_groups=[] if as_user is not None and os.geteuid() == 0 else None,
            # No controlling terminal: a child of another user must not push keystrokes into an operator's
            # root shell (TIOCSTI) when a run is started by hand.
            start_new_session=as_user is not None,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{args[0]}: command not found") from exc
    except PermissionError as exc:
        who = f" (as {as_user})" if as_user is not None else ""
        raise CommandError(f"{args[0]}: permission denied{who}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{args[0]}: timed out after {timeout:g} s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else "no output"
        raise CommandError(f"{' '.join(args[:3])}: exit code {result.returncode}: {last}")
    return result
