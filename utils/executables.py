"""Whether root may run an executable a module names (a release binary asked for its version), and as whom.

Contract: `exec_decision(path)` decides whether root may run `path` itself (the file and every directory on
the way to it, links and their targets included, belong to root and none is writable by group or others,
except root's sticky directories), must run it as the one other user who could change it (its owner, or
the owner of a directory on the way), or must refuse (writable by group or others, or more than one other
user could change it). `exec_identity(path)` says as whom, raising on a refusal. `run_executable(path,
args, ...)` acts on that decision through `utils.proc.run`, raising `UnsafePermissions` (naming the path
and why) on a refusal. Outside root's runs (`permissions.enforced`) the checks do not apply.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UnsafePermissions
from .permissions import enforced, user_name, writable_problem
from .proc import Identity, run

EXEC_HINT = (
    "make it and its directories root's and not writable by group or others, or leave it to the one "
    "service user who owns it (it is then run as that user)"
)
NOGROUP = 65534  # the group of a uid with no passwd entry: no group's privileges at all
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


@dataclass(frozen=True)
class ExecDecision:
    """How root may run an executable: `identity` None means as ourselves; `problem` set means not at all.

    `path` is the file the decision is about, every link resolved. Run as another user, that is the file
    executed (that user could repoint a link of theirs after the check); run as root, the chain was root's
    alone, so the name as given (which a multi-call binary may look at) leads to the same file.
    """

    path: Path
    identity: Identity | None = None
    problem: str | None = None


def _lookup(path: Path) -> tuple[Path, list[tuple[Path, os.stat_result]]]:
    """Resolve `path` as the kernel would, returning the real path and every entry the lookup went through:
    `/`, each directory, each link (as a link) and the final file. Raises OSError when it cannot."""
    pending = list(Path(path).absolute().parts[1:])  # `..` kept: it applies after links
    current = Path("/")
    seen = [(current, os.lstat(current))]
    links = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # `current` is already real: its parent is the real parent
            continue
        candidate = current / name
        st = os.lstat(candidate)
        seen.append((candidate, st))
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
            target = candidate.readlink()
            if target.is_absolute():
                current = Path("/")
            pending[:0] = [part for part in target.parts if part != target.anchor]
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(candidate))
        current = candidate
    return current, seen


def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        # Not the file's group: a uid without a passwd entry has no known groups, and the file's group could
        # be any (disk, shadow) that its owner could not otherwise use.
        return NOGROUP


def exec_decision(path: Path, *, euid: int | None = None) -> ExecDecision:
    """Whether root may run `path` itself, must run it as the one user who could change it, or must refuse.

    See the module docstring. Outside root's runs the checks do not apply: `path` runs as ourselves.
    """
    path = Path(path)
    if not enforced(euid):
        return ExecDecision(path)
    try:
        real, seen = _lookup(path)
    except OSError as exc:
        where = exc.filename or path
        return ExecDecision(path, problem=f"refusing to run {path}: {where}: {exc.strerror or exc}")
    final = seen[-1][1]
    if not stat.S_ISREG(final.st_mode):
        return ExecDecision(real, problem=f"refusing to run {path}: {real}: not a regular file")
    others: dict[int, Path] = {}  # uid -> the first entry on the way that this user owns
    for entry, st in seen:
        writable = writable_problem(entry, st, allow_sticky=True)
        if writable:
            return ExecDecision(real, problem=f"refusing to run {path}: {writable}")
        if st.st_uid != 0:
            others.setdefault(st.st_uid, entry)
    if not others:
        return ExecDecision(real)
    if len(others) > 1:
        who = ", ".join(f"{user_name(uid)} (owner of {entry})" for uid, entry in others.items())
        return ExecDecision(
            real, problem=f"refusing to run {path}: more than one user can change it: {who}"
        )
    (uid,) = others
    return ExecDecision(real, identity=Identity(uid, _primary_gid(uid)))


def exec_identity(path: Path, *, euid: int | None = None) -> Identity | None:
    """Who to run `path` as: None for ourselves, else the user who owns it; `UnsafePermissions` when
    neither is safe."""
    decision = exec_decision(path, euid=euid)
    if decision.problem:
        raise UnsafePermissions(decision.problem, hint=EXEC_HINT)
    return decision.identity


def run_executable(
    path: Path,
    args: Sequence[str | os.PathLike[str]] = (),
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    input: bytes | None = None,  # noqa: A002 - mirrors subprocess.run
) -> subprocess.CompletedProcess[bytes]:
    """`utils.proc.run([path, *args], ...)` as `exec_decision(path)` allows: as ourselves when root alone
    controls the file, as its owner when one other user does (see `utils.proc.run` for that child's
    environment), `UnsafePermissions` otherwise. `CommandError` as `run` raises it.

    Run as another user, the file is executed relative to its working directory (default: the file's own
    directory), which the child enters before it drops root: the user needs no access to the directories
    above, which may well be root's alone (`/root/...`, a 0700 state directory).
    """
    decision = exec_decision(path)
    if decision.problem:
        raise UnsafePermissions(decision.problem, hint=EXEC_HINT)
    if decision.identity is None:
        return run([path, *args], timeout=timeout, env=env, cwd=cwd, check=check, input=input)
    real = decision.path
    workdir = Path(cwd) if cwd is not None else real.parent
    try:
        program = f"./{real.relative_to(workdir.resolve())}"
    except ValueError:
        program = str(real)
    return run(
        [program, *args],
        timeout=timeout,
        env=env,
        cwd=workdir,
        check=check,
        input=input,
        as_user=decision.identity,
    )
