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
`euid` defaults to `os.geteuid()`; `enforced(euid)` says whether the checks apply (only root).
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
from pathlib import Path

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


def _stat_problems(path: Path, st: os.stat_result, euid: int, *, allow_sticky: bool = False) -> list[str]:
    problems = []
    if st.st_uid not in (0, euid):
        owner = "root" if euid == 0 else f"root or {_user(euid)}"
        problems.append(f"{path}: owned by {_user(st.st_uid)}, not {owner}")
    if stat.S_ISLNK(st.st_mode):
        return problems  # a link's own mode means nothing; callers decide about links
    mode = stat.S_IMODE(st.st_mode)
    if allow_sticky and mode & stat.S_ISVTX and st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
        return problems  # like /tmp: others may add names but cannot rename or remove ours
    writers = []
    if mode & stat.S_IWGRP:
        writers.append("group")
    if mode & stat.S_IWOTH:
        writers.append("others")
    if writers:
        problems.append(f"{path}: writable by {' and '.join(writers)} (mode {mode:04o})")
    return problems


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

    def on_error(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot check: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=on_error):
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            child = base / name
            child_st, error = _lstat(child)
            if child_st is None:
                problems.append(error or f"{child}: cannot check")
                continue
            problems += _stat_problems(child, child_st, uid)
            if stat.S_ISLNK(child_st.st_mode) and not allow_links:
                problems.append(f"{child}: is a symbolic link; not followed")
        dirnames.sort()
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
