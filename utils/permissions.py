"""StrictModes-like ownership and mode checks on what root is about to run.

Contract: when the orchestrator runs as root, code that someone else can change is code that someone else
runs as root. These functions find such places and return them as one-line problems (an empty list: all
good); they never raise for a problem they can describe, and they never follow a symbolic link.
- A file or directory is unsafe when it is writable by group or others (mode bits; a POSIX ACL shows up
  in the group bits as its mask), or owned by a user other than root or the effective user (`euid`).
- `check_tree(dir)` checks a module directory and everything below it; a symbolic link inside is reported
  and not followed.
- `check_file(path)` checks one file (the manifest, `index.py`) and the directory holding it.
- `check_ancestors(dir)` checks the directories above `dir` up to `/`: each must be owned by root or `euid`
  and not writable by others, unless it has the sticky bit and belongs to root (as `/tmp` does), since then
  nobody else can rename our directory away.
- `check_install(root, manifest)` bundles the checks that decide whether a run may start at all: the
  manifest, `index.py`, `__init__.py`, the root directory and its ancestors, the `utils/` tree, and the
  virtual environment the orchestrator runs from (its third-party code, `requests` included, runs as root
  too; links inside it, like `bin/python`, are its normal make-up and are allowed, their directories are
  checked).
- `check_state_dir(dir)` checks the state directory (lock, history, journal, caches) like code: the
  directory itself (a link is checked as a link and then as its target), and the directories above it,
  with the same sticky exception. Parts that do not exist yet are skipped: the caller creates them.
- Executables that modules run (a release binary asked for its version): `exec_decision(path)` decides
  whether root may run `path` itself (the file and every directory on the way to it, links and their
  targets included, belong to root and none is writable by group or others, except root's sticky
  directories), must run it as the one other user who could change it (its owner, or the owner of a
  directory on the way), or must refuse (writable by group or others, or more than one other user could
  change it). `run_executable(path, args, ...)` acts on that decision through `utils.proc.run`, raising
  `UnsafePermissions` (naming the path and why) on a refusal.
`euid` defaults to `os.geteuid()`; `enforced(euid)` says whether the checks apply (only root).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UnsafePermissions
from .proc import Identity, run

FIX_HINT = "fix with `chown -R root: PATH && chmod -R go-w PATH`, after checking that nobody changed it"


def enforced(euid: int | None = None) -> bool:
    """The checks guard root's runs only: an unprivileged run can do no more harm than its user can."""
    return (os.geteuid() if euid is None else euid) == 0


def _euid(euid: int | None) -> int:
    return os.geteuid() if euid is None else euid


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _writable_problem(path: Path | str, st: os.stat_result, *, allow_sticky: bool) -> str | None:
    """Why others than the owner can change `path` (None: they cannot)."""
    if stat.S_ISLNK(st.st_mode):
        return None  # a link's own mode means nothing; callers decide about links
    mode = stat.S_IMODE(st.st_mode)
    if allow_sticky and mode & stat.S_ISVTX and st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
        return None  # like /tmp: others may add names but cannot rename or remove ours
    writers = []
    if mode & stat.S_IWGRP:
        writers.append("group")
    if mode & stat.S_IWOTH:
        writers.append("others")
    if writers:
        return f"{path}: writable by {' and '.join(writers)} (mode {mode:04o})"
    return None


def _stat_problems(
    path: Path | str, st: os.stat_result, euid: int, *, allow_sticky: bool = False
) -> list[str]:
    problems = []
    if st.st_uid not in (0, euid):
        owner = "root" if euid == 0 else f"root or {_user(euid)}"
        problems.append(f"{path}: owned by {_user(st.st_uid)}, not {owner}")
    writable = _writable_problem(path, st, allow_sticky=allow_sticky)
    if writable:
        problems.append(writable)
    return problems


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _lstat(path: Path) -> tuple[os.stat_result | None, str | None]:
    try:
        return path.lstat(), None
    except OSError as exc:
        return None, f"{path}: cannot check: {exc.strerror or exc}"


def running_venv() -> Path | None:
    """The virtual environment this interpreter runs from, or None outside one."""
    return Path(sys.prefix) if sys.prefix != sys.base_prefix else None


def check_tree(path: Path, *, euid: int | None = None, allow_links: bool = False) -> list[str]:
    """Problems in directory `path` and everything below it (links reported, never followed).

    `allow_links` accepts links below `path` (checking only their owner), for trees such as a venv.
    """
    uid = _euid(euid)
    top = Path(path)
    st, error = _lstat(top)
    if st is None:
        return [error or f"{top}: cannot check"]
    if stat.S_ISLNK(st.st_mode):
        return [f"{top}: is a symbolic link; refusing to follow it"]
    problems = _stat_problems(top, st, uid)
    if not stat.S_ISDIR(st.st_mode):
        return problems

    # Plain strings and scandir: a venv holds thousands of files, and a pathlib object per name costs more
    # than the lstat itself (this walk is most of a nightly run's fixed start-up). Order as os.walk's:
    # each directory's subdirectories, then its files, by name; links never followed.
    stack = [os.fspath(top)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as exc:
            problems.append(f"{directory}: cannot check: {exc.strerror or exc}")
            continue
        entries.sort(key=lambda e: e.name)
        kinds = [_is_dir(e) for e in entries]
        dirs = [e for e, is_dir in zip(entries, kinds, strict=True) if is_dir]
        files = [e for e, is_dir in zip(entries, kinds, strict=True) if not is_dir]
        for entry in dirs + files:
            try:
                child_st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                problems.append(f"{entry.path}: cannot check: {exc.strerror or exc}")
                continue
            problems += _stat_problems(entry.path, child_st, uid)
            if stat.S_ISLNK(child_st.st_mode) and not allow_links:
                problems.append(f"{entry.path}: is a symbolic link; not followed")
        stack.extend(e.path for e in reversed(dirs) if not e.is_symlink())
    return problems


def check_file(path: Path, *, euid: int | None = None) -> list[str]:
    """Problems with one file root reads code or configuration from, and with the directory holding it.

    A symbolic link is checked as a link (its owner) and then as the file it points to, with that file's
    directory: whoever can change either changes what root runs.
    """
    uid = _euid(euid)
    path = Path(path)
    st, error = _lstat(path)
    if st is None:
        return [error or f"{path}: cannot check"]
    problems = _stat_problems(path, st, uid)  # for a link: its owner only
    directories = [path.parent]
    target, target_st = path, st
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        found, error = _lstat(target)
        if found is None:
            return [*problems, error or f"{target}: cannot check"]
        target_st = found
        problems += _stat_problems(target, target_st, uid)
        directories.append(target.parent)
    if not stat.S_ISREG(target_st.st_mode):
        problems.append(f"{target}: not a regular file")
    for directory in dict.fromkeys(directories):
        dir_st, error = _lstat(directory)
        if dir_st is None:
            problems.append(error or f"{directory}: cannot check")
            continue
        problems += [p for p in _stat_problems(directory, dir_st, uid) if p not in problems]
    return problems


def check_ancestors(path: Path, *, euid: int | None = None) -> list[str]:
    """Problems with the directories above `path`, up to `/` (sticky root-owned ones like /tmp are fine)."""
    uid = _euid(euid)
    problems: list[str] = []
    for parent in Path(path).absolute().parents:
        st, error = _lstat(parent)
        if st is None:
            problems.append(error or f"{parent}: cannot check")
            continue
        problems += _stat_problems(parent, st, uid, allow_sticky=True)
    return problems


_RUNNING = object()


def check_install(
    root: Path, manifest: Path, *, euid: int | None = None, venv: Path | object | None = _RUNNING
) -> list[str]:
    """Everything that must be safe before a run as root may start (see the module docstring).

    `venv` defaults to the environment of the running interpreter (`running_venv()`); None skips it.
    """
    root = Path(root)
    problems: list[str] = []

    def add(found: list[str]) -> None:
        problems.extend(p for p in found if p not in problems)

    add(check_file(Path(manifest), euid=euid))
    for name in ("index.py", "__init__.py"):
        add(check_file(root / name, euid=euid))
    add(check_ancestors(root, euid=euid))
    add(check_tree(root / "utils", euid=euid))
    utils_sh = root / "config" / "utils.sh"
    if utils_sh.exists():
        add(check_file(utils_sh, euid=euid))
    env = running_venv() if venv is _RUNNING else venv
    if isinstance(env, Path):
        # A venv reached through a link (`venv -> /opt/venvs/updates`): the link's directories, then the
        # real tree and the directories above it.
        add(check_ancestors(env, euid=euid))
        real = env.resolve()
        if real != env.absolute():
            add(check_ancestors(real, euid=euid))
        add(check_tree(real, euid=euid, allow_links=True))
    return problems


def _existing_ancestors_problems(path: Path, euid: int) -> list[str]:
    problems: list[str] = []
    for parent in path.parents:
        try:
            st = parent.lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # to be created by the caller, as root, under the directories checked here
        except OSError as exc:
            problems.append(f"{parent}: cannot check: {exc.strerror or exc}")
            continue
        problems += _stat_problems(parent, st, euid, allow_sticky=True)
    return problems


def check_state_dir(path: Path, *, euid: int | None = None) -> list[str]:
    """Problems with the state directory and the directories above it (missing parts are skipped).

    Whoever can write the state directory can plant links or files where root writes its lock, history and
    journal, so it is held to the same rule as code. A link (the directory itself or one above it) is
    checked as a link, and the real directory and the directories above that are checked too.
    """
    uid = _euid(euid)
    path = Path(path).absolute()
    problems: list[str] = []

    def add(found: list[str]) -> None:
        problems.extend(p for p in found if p not in problems)

    add(_existing_ancestors_problems(path, uid))
    real = path.resolve()
    if real != path:
        add(_existing_ancestors_problems(real, uid))
    for place in dict.fromkeys((path, real)):
        try:
            st = place.lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # creating it will fail or make it; either way there is nothing to check yet
        except OSError as exc:
            add([f"{place}: cannot check: {exc.strerror or exc}"])
            continue
        add(_stat_problems(place, st, uid))
        if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            add([f"{place}: not a directory"])
    if real != path and not real.exists() and path.is_symlink():
        add([f"{path}: a link to {real}, which does not exist"])
    return problems


# --- executables a module runs --------------------------------------------------------------------------

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
        writable = _writable_problem(entry, st, allow_sticky=True)
        if writable:
            return ExecDecision(real, problem=f"refusing to run {path}: {writable}")
        if st.st_uid != 0:
            others.setdefault(st.st_uid, entry)
    if not others:
        return ExecDecision(real)
    if len(others) > 1:
        who = ", ".join(f"{_user(uid)} (owner of {entry})" for uid, entry in others.items())
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
