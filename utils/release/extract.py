"""Safe extraction from downloaded tar.gz archives.

Contract: an archive is never extracted blindly. Every member is checked first, and one bad member
refuses the whole archive: absolute names, `..` components, symbolic and hard links, devices, FIFOs and
duplicate names raise `ExtractError`. Only regular files and directories are accepted.
- `extract_file` copies one member, named by its exact path, into a new temporary file in `dest_dir`
  (streamed, constant memory) with the given mode, and returns that file's path; the caller renames it.
- `extract_tree` recreates everything under one top directory of the archive (stored as an entry or only
  implied by its members' paths) in `dest` (a new or an empty directory, which is removed again on
  failure); files get 0755 or 0644 (no setuid/setgid/sticky, no group/other write).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import UpdatesError

CHUNK = 256 * 1024


class ExtractError(UpdatesError):
    """The archive is unreadable, unsafe, or lacks what the module expects."""


def _clean(archive: Path, info: tarfile.TarInfo) -> str:
    name = info.name
    if name.startswith("/"):
        raise ExtractError(f"{archive.name}: refusing absolute member path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(f"{archive.name}: refusing member path with '..': {name!r}")
    if info.issym() or info.islnk():
        raise ExtractError(f"{archive.name}: refusing link member {name!r} -> {info.linkname!r}")
    if not (info.isreg() or info.isdir()):
        raise ExtractError(f"{archive.name}: refusing special member {name!r} (device, FIFO or other)")
    return "/".join(parts)


def _checked_members(archive: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        name = _clean(archive, info)
        if not name:
            continue
        if name in members and not (info.isdir() and members[name].isdir()):
            raise ExtractError(f"{archive.name}: member {name!r} appears twice")
        members[name] = info
    return members


@contextlib.contextmanager
def _open(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            yield tar
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ExtractError(f"{archive.name}: not a readable tar.gz archive ({exc})") from exc


def _copy_member(tar: tarfile.TarFile, info: tarfile.TarInfo, out_fd: int, mode: int) -> None:
    source = tar.extractfile(info)
    if source is None:
        raise ExtractError(f"cannot read member {info.name!r}")
    with source, os.fdopen(out_fd, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
        out.flush()
        os.fchmod(out.fileno(), mode)
        os.fsync(out.fileno())


def list_members(archive: Path) -> list[str]:
    """The archive's checked member names (raises `ExtractError` when any member is unsafe)."""
    with _open(archive) as tar:
        return sorted(_checked_members(archive, tar))


def extract_file(archive: Path, member: str, dest_dir: Path, *, mode: int = 0o755) -> Path:
    """Copy `member` (exact path) into a new temporary file in `dest_dir`; return its path."""
    with _open(archive) as tar:
        members = _checked_members(archive, tar)
        info = members.get(member.strip("/"))
        if info is None or not info.isreg():
            shown = ", ".join(sorted(members)[:20])
            raise ExtractError(f"{archive.name} has no file {member!r} (it holds: {shown})")
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{Path(member).name}.", suffix=".new")
        tmp = Path(tmp_name)
        try:
            _copy_member(tar, info, fd, mode)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return tmp


def extract_tree(archive: Path, top: str, dest: Path) -> None:
    """Recreate the archive's `top/` directory as `dest` (new or empty)."""
    top = top.strip("/")
    with _open(archive) as tar:
        members = _checked_members(archive, tar)
        # The top directory may be implied by its members (tar builders need not store directory entries).
        top_is_file = top in members and not members[top].isdir()
        if top_is_file or not any(n.startswith(top + "/") for n in members):
            raise ExtractError(f"{archive.name}: expected one top directory {top + '/'!r}")
        outside = [n for n in members if n != top and not n.startswith(top + "/")]
        if outside:
            raise ExtractError(f"{archive.name}: members outside {top + '/'}: {', '.join(outside[:5])}")
        dest.mkdir(mode=0o755, exist_ok=True)
        if any(dest.iterdir()):
            raise ExtractError(f"{dest} is not empty; refusing to extract into it")
        dest.chmod(0o755)
        try:
            for name in sorted(members):  # parents sort before their children
                info = members[name]
                target = dest / name[len(top) :].lstrip("/") if name != top else dest
                if info.isdir():
                    target.mkdir(mode=0o755, exist_ok=True)
                    continue
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                _copy_member(tar, info, fd, 0o755 if info.mode & 0o111 else 0o644)
                os.utime(target, (info.mtime, info.mtime))
            for root, dirs, _files in os.walk(dest):  # whatever the umask, directories are 0755
                for name in dirs:
                    Path(root, name).chmod(0o755)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
