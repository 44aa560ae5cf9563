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
- Executables that modules run are judged by the same rules in utils/executables.py.
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


def user_name(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def writable_problem(path: Path | str, st: os.stat_result, *, allow_sticky: bool) -> str | None:
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
        owner = "root" if euid == 0 else f"root or {user_name(euid)}"
        problems.append(f"{path}: owned by {user_name(st.st_uid)}, not {owner}")
    writable = writable_problem(path, st, allow_sticky=allow_sticky)
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
