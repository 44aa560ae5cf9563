"""The one-time move of the state an earlier version kept in `<root>/state` to the state directory.

Contract: `move_legacy_state(paths) -> str | None` is called by the commands that change things (`run`,
rollback, mark-safe) before they take the run lock. When `<root>/state` is a real directory (not a link),
is not itself the state directory, and the state directory is missing or empty (systemd's
`StateDirectory=` creates it empty), it moves the old directory there and returns the message saying so,
once: the old place is gone afterwards. It holds the old lock while it moves, so it never moves the state
of a run that an earlier version is still doing (that raises `LockHeld`, exit 75). When the state directory
already holds something, nothing is merged: the old directory is renamed `<root>/state.old` (never
overwriting one) and the message says where it went and that it is no longer read. A state directory
holding only what commands create before any state (a lock file, an empty journal, logs: a checksummer
run first, say) counts as unused: the old entries are moved into it one by one. Read-only commands
never call it; `legacy_note(paths)` gives them the line that says a move is pending.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from .errors import UnsafePermissions, UpdatesError
from .lock import STATE_DIR_MODE, hold_existing_lock
from .paths import Paths
from .permissions import check_tree, enforced


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


# What a command creates in a state directory before it holds any state (the checksummer's lock and
# journal, the log directory): such a directory still counts as unused.
_SCAFFOLD = frozenset({"updates.lock", "journal", "logs"})


def _empty(path: Path) -> bool:
    try:
        return not any(path.iterdir())
    except FileNotFoundError:
        return True


def _unused(state: Path) -> bool:
    """No state in it yet: missing, empty, or only a lock file, an empty journal and logs."""
    try:
        entries = list(state.iterdir())
    except FileNotFoundError:
        return True
    for entry in entries:
        if entry.name not in _SCAFFOLD or entry.is_symlink():
            return False
        if entry.name == "journal" and not (entry.is_dir() and _empty(entry)):
            return False
    return True


def _legacy(paths: Paths) -> Path | None:
    old = paths.legacy_state
    if not _is_real_dir(old):
        return None
    with contextlib.suppress(OSError):
        if old.samefile(paths.state):
            return None  # UPDATES_STATE_DIR names it: it is the state directory, not a leftover
    return old


def legacy_note(paths: Paths) -> str | None:
    """For `status`/`verify`: one line when an earlier version's state waits at `<root>/state`."""
    old = _legacy(paths)
    if old is None:
        return None
    if _unused(paths.state):
        return f"note: {old} holds an earlier version's state; the next run moves it to {paths.state}"
    return (
        f"note: {old} holds an earlier version's state, which is no longer read "
        f"(the state is {paths.state}); the next run renames it {old.name}.old"
    )


def _move(old: Path, new: Path) -> None:
    """Rename `old` onto `new` (missing, or an empty directory); across file systems, copy then remove."""
    try:
        old.rename(new)  # rename(2) replaces an empty directory
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    staging = new.with_name(f".{new.name}.moving")
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    elif os.path.lexists(staging):
        staging.unlink()
    if old.is_dir() and not old.is_symlink():
        shutil.copytree(old, staging, symlinks=True)
    else:
        shutil.copy2(old, staging, follow_symlinks=False)
    if new.is_dir():
        new.rmdir()  # still empty: checked before
    staging.rename(new)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _merge(old: Path, state: Path) -> None:
    """Move each entry of `old` into an unused `state` (see `_unused`), but its lock; what `state`
    already has (its logs) stays, and the old one is left in `old`."""
    # The journal first: a kill part-way must never leave an unfinished change behind in the old place,
    # which the next run, seeing the new place in use, would only set aside.
    for entry in sorted(old.iterdir(), key=lambda e: (e.name != "journal", e.name)):
        target = state / entry.name
        if entry.name == "updates.lock":
            continue
        if target.is_dir() and not target.is_symlink() and _empty(target):
            target.rmdir()
        if not os.path.lexists(target):
            _move(entry, target)


def _aside(old: Path) -> Path:
    target = old.with_name(f"{old.name}.old")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = old.with_name(f"{old.name}.old{n}")
    old.rename(target)
    return target


def move_legacy_state(paths: Paths) -> str | None:
    """Move `<root>/state` to the state directory once; the message to show, or None when nothing moved."""
    old = _legacy(paths)
    if old is None:
        return None
    if enforced() and (problems := check_tree(old)):
        # Whoever could change the old state would hand root its journal, backups and history.
        raise UnsafePermissions(
            f"refusing to take over the state of an earlier version in {old}: {problems[0]}",
            hint=f"check what is in it, then `chown -R root:root {old} && chmod -R go-w {old}`, or remove it",
        )
    lock = old / "updates.lock"
    with (
        hold_existing_lock(lock, f"a run of an earlier version holds the lock {lock}"),
        hold_existing_lock(paths.lock, f"another run holds the lock {paths.lock}"),
    ):
        done = f"moved the state of an earlier version from {old} to {paths.state}, where it now lives"
        if _empty(paths.state):
            paths.state.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            _move(old, paths.state)
            paths.state.chmod(STATE_DIR_MODE)
            return done
        if _unused(paths.state):
            _merge(old, paths.state)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            if _empty(old):
                old.rmdir()
                return done
            kept = _aside(old)
            return (
                f"{done}; "
                f"what {paths.state} already had (its logs) was kept, the old copy is in {kept}"
            )
        moved = _aside(old)
        return (
            f"{paths.state} already holds the state; an earlier version's state at {old} is not merged "
            f"and was renamed {moved} (remove it once you no longer need it)"
        )


def move_legacy_state_or_refuse(paths: Paths) -> str | None:
    """`move_legacy_state` for a command line: an OSError becomes an `UpdatesError` naming both places."""
    try:
        return move_legacy_state(paths)
    except OSError as exc:
        raise UpdatesError(
            f"cannot move the state of an earlier version from {paths.legacy_state}: {exc.strerror or exc}",
            hint=f"move it to {paths.state} by hand",
        ) from exc
