"""Filesystem helpers: atomic writes, directory fsync, and swapping two directories in one step.

Contract: `atomic_write_bytes` leaves either the old file or the complete new one at `path`, never a mix,
even when the process is killed mid-write. The temp file lives in the same directory (same filesystem),
is fsynced before `os.replace`, and the directory is fsynced afterwards so the rename is durable. A
symlink at `path` stays a symlink: its target is what gets replaced (an administrator's `/etc/hosts` may
well be a link). With `follow_symlinks=False`, for the files of the state directory, a link (or anything
but a regular file) at `path` is refused with `UnsafePermissions` and left as it is: whoever planted it
must not choose what root overwrites. The old file's mode, and (when we may) its owner and group, carry
over, so root writing an administrator's file does not take it over.
`exchange(a, b)` swaps two directories with Linux `renameat2(RENAME_EXCHANGE)`: each path always holds
either the old or the new directory, never nothing. Where the kernel or file system lacks it, two renames
are used (the path may then be missing for an instant; the crash journal covers that gap).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UnsafePermissions

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_dir(path: Path) -> None:
    """Flush a directory entry change (a rename or a new file) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """A temp file beside `dest`, renamed over it when the block succeeds and removed when it fails."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(dest.parent)


def _seal(fd: int, owner: tuple[int, int] | None, mode: int) -> None:
    """Give the temp file its final owner (when we may) and mode, then flush it to disk."""
    if owner is not None and owner != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):  # only root may give a file away
            os.fchown(fd, *owner)
    os.fchmod(fd, mode)  # after chown, which clears setuid/setgid bits
    os.fsync(fd)


def _existing(path: Path, *, follow_symlinks: bool) -> tuple[Path, os.stat_result | None]:
    """The file to replace and its current status (None: nothing there yet)."""
    if follow_symlinks:
        path = Path(os.path.realpath(path))
        try:
            return path, path.stat()
        except FileNotFoundError:
            return path, None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path, None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePermissions(f"{path}: is a symbolic link; refusing to write through it or replace it")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePermissions(f"{path}: not a regular file; refusing to replace it")
    return path, st


def atomic_write_bytes(
    path: Path, data: bytes | bytearray, *, mode: int | None = None, follow_symlinks: bool = True
) -> None:
    """Replace `path` with `data` atomically, keeping the old file's mode unless `mode` is given.

    `follow_symlinks=False` refuses a link at `path` instead of replacing its target (see the module
    docstring); use it for every file under the state directory.
    """
    path, st = _existing(Path(path), follow_symlinks=follow_symlinks)
    owner = (st.st_uid, st.st_gid) if st is not None else None
    if mode is None:
        mode = st.st_mode & 0o7777 if st is not None else 0o644
    with _replacing(path) as tmp:
        # The temp file is ours (mkstemp made it); O_NOFOLLOW in case its name was swapped for a link since.
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            _seal(handle.fileno(), owner, mode)


def atomic_write_text(
    path: Path, text: str, *, mode: int | None = None, follow_symlinks: bool = True
) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, follow_symlinks=follow_symlinks)


def copy_file_atomic(source: Path, dest: Path, *, owner: tuple[int, int] | None = None) -> None:
    """Copy `source` to `dest` (mode and times kept) through a temp file beside `dest`, then rename.

    With `owner` (uid, gid) the copy gets that owner (when we may give files away) before it appears at
    `dest`, so there is no moment in which, say, a service's database belongs to root.
    """
    with _replacing(dest) as tmp:
        shutil.copy2(source, tmp)
        with open(tmp, "rb+") as handle:
            _seal(handle.fileno(), owner, os.fstat(handle.fileno()).st_mode & 0o7777)


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
