"""Directory-level file operations for rollback: write a tree, swap two directories, move one aside.

Contract:
- `write_tree(files, dest)` creates `dest` (which must not exist) holding exactly `files`, each fsynced, so a
  crash after a later rename never exposes empty files.
- `exchange(a, b)` swaps two directories in one step with Linux `renameat2(RENAME_EXCHANGE)`: a reader sees
  either the old or the new directory at each path, never a gap or a mix. Where the kernel or filesystem
  lacks it, two renames are used (a reader may then find the path missing for an instant, still no mix).
- `move_tree(src, dst)` renames, or on another filesystem copies (links kept as links) and returns True so
  that the caller removes `src` once it no longer needs it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..fsutil import fsync_dir
from .git import TreeFile

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_tree(files: Iterable[TreeFile], dest: Path, *, mode: int = 0o755) -> None:
    dest.mkdir(mode=0o700)
    dirs = {dest}
    for item in files:
        target = dest.joinpath(*item.path.split("/"))
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True)
            dirs.update(dest / p for p in target.relative_to(dest).parents)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(item.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, item.mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in dirs:
        directory.chmod(0o755)
        fsync_dir(directory)
    dest.chmod(mode)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """True when the kernel swapped the two paths; False when renameat2/RENAME_EXCHANGE is unavailable."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def exchange(a: Path, b: Path, *, atomic: bool = True) -> None:
    """Swap directories `a` and `b` (same filesystem) and flush the change."""
    if not (atomic and _renameat2_exchange(a, b)):
        log.debug("swapping %s and %s with two renames", a, b)
        parking = a.with_name(a.name + ".swap")
        a.rename(parking)
        try:
            b.rename(a)
        except BaseException:
            parking.rename(a)
            raise
        parking.rename(b)
    fsync_dir(a.parent)
    if b.parent != a.parent:
        fsync_dir(b.parent)


def move_tree(src: Path, dst: Path) -> bool:
    """Move `src` to `dst`; returns True when it had to copy (then `src` is still there)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        src.rename(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        try:
            shutil.copytree(src, dst, symlinks=True)
        except BaseException:
            shutil.rmtree(dst, ignore_errors=True)
            raise
        fsync_dir(dst.parent)
        return True
    fsync_dir(dst.parent)
    return False
