"""The actions a crash-journal record holds, and the code that carries each one out.

Contract: each builder (`restore_file`, `write_bytes`, `restore_dir`, `remove`, `sweep`, `command`) returns
a JSON-ready dict that `journal.py` stores in a record; `run_action(action, run)` carries one out. Every
action looks at the disk before it acts, so running it twice, or after a crash half-way through it, is
harmless. Files are identified by their SHA-256 and directories by their inode, never by a name alone, so
a stale copy is never restored over newer data. `sweep_temps` removes the temp files our writers name.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import UpdatesError
from .fsutil import atomic_write_bytes, fsync_dir

Action = dict[str, Any]
# Runs an `after` command: (argv, timeout seconds). Injected so that this module needs no subprocess code.
CommandRunner = Callable[[Sequence[str], float], None]


class JournalError(UpdatesError):
    """An interrupted change could not be finished or undone; its record stays for the next command."""


def sha256_file(path: Path) -> str | None:
    """SHA-256 of a regular file (links not followed), or None when nothing is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inode(path: Path) -> list[int] | None:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [st.st_dev, st.st_ino]


def _remove(path: Path) -> None:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
    fsync_dir(path.parent)


# Actions: each one a JSON object; `_ACTIONS` maps its "do" to the function that carries it out.


def restore_file(path: Path, old_sha256: str | None, copy: Path | None) -> Action:
    """Put back the file whose content had `old_sha256` (None: there was no file) from `copy`, with the
    mode and owner it has now (call this before the step that replaces it)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        owner, mode = None, None
    else:
        owner, mode = [st.st_uid, st.st_gid], st.st_mode & 0o7777
    return {"do": "restore_file", "path": str(path), "sha256": old_sha256,
            "copy": str(copy) if copy else None, "owner": owner, "mode": mode}  # fmt: skip


def write_bytes(path: Path, data: bytes | None) -> Action:
    """Make `path` hold `data` (None: no file); for small files (a manifest, a state file)."""
    encoded = base64.b64encode(data).decode("ascii") if data is not None else None
    return {"do": "write", "path": str(path), "data": encoded}


def restore_dir(path: Path, old_inode: list[int], places: Sequence[Path], discard: Path | None) -> Action:
    """Put the directory `old_inode` back at `path` from whichever of `places` holds it; what is at `path`
    then goes to `discard` (kept for diagnosis) or is removed."""
    return {"do": "restore_dir", "path": str(path), "inode": old_inode,
            "places": [str(p) for p in places], "discard": str(discard) if discard else None}  # fmt: skip


def remove(path: Path, *, unless_inode: list[int] | None = None) -> Action:
    """Remove a file or tree we created (never the directory `unless_inode`)."""
    return {"do": "remove", "path": str(path), "unless_inode": unless_inode}


def sweep(directory: Path, prefix: str, suffix: str = ".tmp", *, since: float | None = None) -> Action:
    """Remove the temp files we name `<prefix>...<suffix>` in `directory`; with `since` (a time stamp), only
    those changed since then, so a file of that name someone else made earlier stays."""
    return {"do": "sweep", "dir": str(directory), "prefix": prefix, "suffix": suffix, "since": since}


def command(argv: Sequence[str], timeout: float) -> Action:
    return {"do": "run", "argv": list(argv), "timeout": timeout}


def _do_restore_file(action: Action, run: CommandRunner) -> None:
    path, old = Path(action["path"]), action["sha256"]
    if sha256_file(path) == old:
        return
    if old is None:
        _remove(path)
        return
    copy = Path(action["copy"]) if action["copy"] else None
    if copy is None or sha256_file(copy) != old:
        raise JournalError(f"cannot restore {path}: its saved copy {copy} is missing or not the old file")
    data = copy.read_bytes()
    try:
        atomic_write_bytes(path, data, mode=action["mode"])
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        # A bind-mounted file (a container's /etc/hosts) cannot be replaced, only rewritten.
        with open(path, "r+b") as dest:
            dest.write(data)
            dest.truncate()
            os.fsync(dest.fileno())
    if action["owner"] and os.geteuid() == 0:
        os.chown(path, *action["owner"], follow_symlinks=False)


def _do_write(action: Action, run: CommandRunner) -> None:
    path = Path(action["path"])
    if action["data"] is None:
        _remove(path)
        return
    data = base64.b64decode(action["data"])
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)


def put_back_dir(path: Path, old_inode: list[int], places: Sequence[Path], discard: Path | None) -> bool:
    """Make `path` the directory `old_inode` again, taking it from whichever of `places` holds it; what is
    at `path` goes to `discard` (or is removed). False when it already was; JournalError when the old
    directory is nowhere to be found."""
    if inode(path) == old_inode:
        return False
    holder = next((p for p in places if inode(p) == old_inode), None)
    if holder is None:
        where = ", ".join(map(str, places))
        raise JournalError(f"cannot put {path} back: the previous directory is in none of {where}")
    if os.path.lexists(path):
        if discard is not None and not os.path.lexists(discard):
            discard.parent.mkdir(parents=True, exist_ok=True)
            path.rename(discard)
        else:
            _remove(path)
    holder.rename(path)
    fsync_dir(path.parent)
    if holder.parent != path.parent:
        fsync_dir(holder.parent)
    return True


def _do_restore_dir(action: Action, run: CommandRunner) -> None:
    discard = Path(action["discard"]) if action["discard"] else None
    put_back_dir(Path(action["path"]), action["inode"], [Path(p) for p in action["places"]], discard)


def _do_remove(action: Action, run: CommandRunner) -> None:
    path = Path(action["path"])
    if action.get("unless_inode") is not None and inode(path) == action["unless_inode"]:
        return
    _remove(path)


def _do_sweep(action: Action, run: CommandRunner) -> None:
    sweep_temps(Path(action["dir"]), action["prefix"], action["suffix"], since=action.get("since"))


def _do_run(action: Action, run: CommandRunner) -> None:
    run(action["argv"], float(action["timeout"]))


_ACTIONS: dict[str, Callable[[Action, CommandRunner], None]] = {
    "restore_file": _do_restore_file,
    "write": _do_write,
    "restore_dir": _do_restore_dir,
    "remove": _do_remove,
    "sweep": _do_sweep,
    "run": _do_run,
}


def sweep_temps(
    directory: Path, prefix: str, suffix: str = ".tmp", *, since: float | None = None
) -> list[Path]:
    """Remove what a killed process left under the names we give temp files (changed at or after `since`,
    when given); returns what went."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(suffix):
            with contextlib.suppress(FileNotFoundError):
                if since is not None and entry.stat(follow_symlinks=False).st_mtime < since:
                    continue
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
    return removed


def run_action(action: Action, run: CommandRunner | None, where: str) -> None:
    """Carry out one action of the record named `where`; a command needs `run`."""
    handler = _ACTIONS.get(action.get("do", ""))
    if handler is None:
        raise JournalError(f"{where}: unknown journal action {action.get('do')!r}")
    if handler is _do_run and run is None:
        raise JournalError(f"{where}: no way to run {action['argv'][0]}")
    handler(action, run or _no_runner)


def _no_runner(argv: Sequence[str], timeout: float) -> None:  # pragma: no cover - guarded in run_action
    raise JournalError("no command runner")
