"""Safe extraction from downloaded tar.gz archives.

Contract: an archive is never extracted blindly. Every member is checked first, and one bad member
refuses the whole archive: absolute names, `..` components, symbolic and hard links, devices, FIFOs and
duplicate names raise `ExtractError`. Only regular files and directories are accepted.
- `extract_file` copies one member, named by its exact path, into a new temporary file in `dest_dir`
  (streamed, constant memory) with the given mode, and returns that file's path; the caller renames it.
- `extract_tree` recreates everything under one top directory of the archive (stored as an entry or only
  implied by its members' paths) in `dest` (a new or an empty directory, which is removed again on
  failure); files get 0755 or 0644 (no setuid/setgid/sticky, no group/other write).
- Messages name the archive by `label` (the asset and its release, `linux-amd64-filebrowser.tar.gz
  (release 2.63.23)`), never by the hidden temporary file it was downloaded to.
- Errors are `ExtractError`s that say which side failed: reading a damaged archive is "not a readable
  tar.gz archive"; writing the output says what and where (`no space left on device writing <path>`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import UpdatesError

CHUNK = 256 * 1024
# What reading a damaged archive raises: tarfile's own errors, EOFError and zlib.error from a truncated or
# corrupt gzip stream, OSError (gzip.BadGzipFile) for one that is not gzip at all.
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


class ExtractError(UpdatesError):
    """The archive is unreadable, unsafe, or lacks what the module expects."""


def _clean(archive: str, info: tarfile.TarInfo) -> str:
    name = info.name
    if name.startswith("/"):
        raise ExtractError(f"{archive}: refusing absolute member path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(f"{archive}: refusing member path with '..': {name!r}")
    if info.issym() or info.islnk():
        raise ExtractError(f"{archive}: refusing link member {name!r} -> {info.linkname!r}")
    if not (info.isreg() or info.isdir()):
        raise ExtractError(f"{archive}: refusing special member {name!r} (device, FIFO or other)")
    return "/".join(parts)


def _checked_members(archive: str, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    try:
        infos = tar.getmembers()  # reads through the whole archive
    except _READ_ERRORS as exc:
        raise _unreadable(archive, exc) from exc
    for info in infos:
        name = _clean(archive, info)
        if not name:
            continue
        if name in members and not (info.isdir() and members[name].isdir()):
            raise ExtractError(f"{archive}: member {name!r} appears twice")
        members[name] = info
    return members


def _unreadable(archive: str, exc: BaseException) -> ExtractError:
    return ExtractError(f"{archive}: not a readable tar.gz archive ({exc})")


def _unwritable(exc: OSError, fallback: Path) -> ExtractError:
    """`no space left on device writing <path>`: what failed on the output side, and where."""
    what = exc.strerror.lower() if exc.strerror else str(exc)
    return ExtractError(f"{what} writing {exc.filename or fallback}")


@contextlib.contextmanager
def _open(archive: Path, label: str) -> Iterator[tarfile.TarFile]:
    """The archive opened for reading. Only opening is wrapped here: an error raised by the caller's block
    (writing the output, say) must keep its own meaning, not become "not a readable archive"."""
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115 - closed by the `with` below, outside this try
    except FileNotFoundError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(label, exc) from exc
    with tar:
        yield tar


def _chunks(archive: str, source: IO[bytes]) -> Iterator[bytes]:
    """The member's bytes; a truncated or corrupt archive shows up here, as a read error."""
    while True:
        try:
            chunk = source.read(CHUNK)
        except _READ_ERRORS as exc:
            raise _unreadable(archive, exc) from exc
        if not chunk:
            return
        yield chunk


def _copy_member(
    archive: str, tar: tarfile.TarFile, info: tarfile.TarInfo, out_fd: int, *, target: Path, mode: int
) -> None:
    """Copy `info`'s bytes into `out_fd` (closed in any case) with `mode`; `target` names it in errors."""
    try:
        with os.fdopen(out_fd, "wb") as out:
            try:
                source = tar.extractfile(info)
            except _READ_ERRORS as exc:
                raise _unreadable(archive, exc) from exc
            if source is None:
                raise ExtractError(f"cannot read member {info.name!r}")
            with source:
                for chunk in _chunks(archive, source):
                    out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
    except OSError as exc:  # read errors are ExtractError by now: this is the output side
        raise _unwritable(exc, target) from exc


def list_members(archive: Path, *, label: str | None = None) -> list[str]:
    """The archive's checked member names (raises `ExtractError` when any member is unsafe)."""
    name = label or archive.name
    with _open(archive, name) as tar:
        return sorted(_checked_members(name, tar))


def extract_file(
    archive: Path,
    member: str,
    dest_dir: Path,
    *,
    mode: int = 0o755,
    label: str | None = None,
    anywhere: bool = False,
) -> Path:
    """Copy `member` (exact path; with `anywhere`, the one regular file of that name at any depth) into a
    new temporary file in `dest_dir`; return its path."""
    name = label or archive.name
    with _open(archive, name) as tar:
        members = _checked_members(name, tar)
        if anywhere:
            found = [path for path, i in members.items() if i.isreg() and path.rsplit("/", 1)[-1] == member]
            if len(found) > 1:
                raise ExtractError(f"{name} holds {len(found)} files named {member!r}: {', '.join(found)}")
            member = found[0] if found else member
        info = members.get(member.strip("/"))
        if info is None or not info.isreg():
            shown = ", ".join(sorted(members)[:20])
            raise ExtractError(f"{name} has no file {member!r} (it holds: {shown})")
        try:
            fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{Path(member).name}.", suffix=".new")
        except OSError as exc:
            raise _unwritable(exc, dest_dir) from exc
        tmp = Path(tmp_name)
        try:
            _copy_member(name, tar, info, fd, target=tmp, mode=mode)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return tmp


def extract_tree(archive: Path, top: str, dest: Path, *, label: str | None = None) -> None:
    """Recreate the archive's `top/` directory as `dest` (new or empty)."""
    top = top.strip("/")
    name = label or archive.name
    with _open(archive, name) as tar:
        members = _checked_members(name, tar)
        # The top directory may be implied by its members (tar builders need not store directory entries).
        top_is_file = top in members and not members[top].isdir()
        if top_is_file or not any(n.startswith(top + "/") for n in members):
            raise ExtractError(f"{name}: expected one top directory {top + '/'!r}")
        outside = [n for n in members if n != top and not n.startswith(top + "/")]
        if outside:
            raise ExtractError(f"{name}: members outside {top + '/'}: {', '.join(outside[:5])}")
        try:
            dest.mkdir(mode=0o755, exist_ok=True)
            if any(dest.iterdir()):
                raise ExtractError(f"{dest} is not empty; refusing to extract into it")
            dest.chmod(0o755)
        except OSError as exc:
            raise _unwritable(exc, dest) from exc
        try:
            _write_tree(name, tar, members, top, dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _write_tree(
    archive: str, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], top: str, dest: Path
) -> None:
    target = dest
    try:
        for name in sorted(members):  # parents sort before their children
            info = members[name]
            target = dest / name[len(top) :].lstrip("/") if name != top else dest
            if info.isdir():
                target.mkdir(mode=0o755, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            _copy_member(archive, tar, info, fd, target=target, mode=0o755 if info.mode & 0o111 else 0o644)
            os.utime(target, (info.mtime, info.mtime))
        for root, dirs, _files in os.walk(dest):  # whatever the umask, directories are 0755
            for name in dirs:
                target = Path(root, name)
                target.chmod(0o755)
    except OSError as exc:
        raise _unwritable(exc, target) from exc
