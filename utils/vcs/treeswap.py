"""Directory-level file operations for rollback: write a tree, swap two directories, move one aside.

Contract:
- `write_tree(files, dest)` creates `dest` (which must not exist) holding exactly `files`, each fsynced, so a
  crash after a later rename never exposes empty files.
- `exchange(a, b)` (defined in fsutil) swaps two directories in one step with Linux
  `renameat2(RENAME_EXCHANGE)`: a reader sees either the old or the new directory at each path, never a
  gap or a mix. Where the kernel or filesystem lacks it, two renames are used (a reader may then find the
  path missing for an instant, still no mix).
- `move_tree(src, dst)` renames, or on another filesystem copies (links kept as links) and returns True so
  that the caller removes `src` once it no longer needs it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..fsutil import exchange, fsync_dir
from .git import TreeFile

log = logging.getLogger(__name__)

__all__ = ["exchange", "move_tree", "write_tree"]  # exchange lives in fsutil: installers use it too



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
