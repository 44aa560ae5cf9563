"""A cache of compiled module code in the state directory, keyed by the verified source it came from.

Contract: `BytecodeCache(directory, write=...).code(source, path)` returns the code object of `source` (the
exact bytes the module's digest covered) compiled as `path`: from `<directory>/<key>.code` when a valid entry
is there, else by `compile`, then stored there (unless `write` is false: a dry run writes nothing).
- The key is the SHA-256 of the interpreter's bytecode magic, the optimisation level, `path` and the
  source's own SHA-256: an entry is only ever found for the same bytes compiled the same way, so a changed
  module, a rollback or a new Python never meets stale code.
- An entry is used only when it is a regular file (opened without following links) owned by the effective
  user and writable by nobody else, in a directory that is the same, and when its payload matches the
  SHA-256 recorded in its header (a torn or damaged file does not) and unmarshals to a code object. Anything
  else is skipped and replaced: the cache can slow a run down, never change what it runs. The directory lives
  in the state directory, which the orchestrator checks like code before a run.
- Entries are written atomically (utils/fsutil.py); the cache keeps at most `max_entries` of them
  (MAX_ENTRIES: the modules of many versions), dropping the least recently written first. A failure to
  read or write it is logged at debug level and ignored.

Why: the loader compiles module source on every run (it never trusts bytecode beside the source, which
anyone who can write the module directory could plant); compiling adblock's modules costs about 25 ms of a
run's start-up, loading them from here well under 1 ms.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import marshal
import os
import stat
import sys
from pathlib import Path
from types import CodeType

from ..errors import UpdatesError
from ..fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

MAX_ENTRIES = 256
_MARK = b"updates-code\n"
_HEADER = len(_MARK) + 32  # the mark, then the SHA-256 of the payload


def _key(source: bytes, path: str) -> str:
    parts = (importlib.util.MAGIC_NUMBER, str(sys.flags.optimize).encode(), os.fsencode(path),
             hashlib.sha256(source).digest())  # fmt: skip
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def pack(code: CodeType) -> bytes:
    """An entry's bytes: the mark, the SHA-256 of the payload, the payload (the marshalled code)."""
    payload = marshal.dumps(code)
    return _MARK + hashlib.sha256(payload).digest() + payload


def unpack(data: bytes) -> CodeType | None:
    """The code object of an entry's bytes, or None when they are damaged or not an entry at all."""
    payload = memoryview(data)[_HEADER:]
    if not data.startswith(_MARK) or hashlib.sha256(payload).digest() != data[len(_MARK) : _HEADER]:
        return None
    try:
        code = marshal.loads(payload)  # noqa: S302 - our own file, its hash checked, in the private cache
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


class BytecodeCache:
    """See the module docstring."""

    def __init__(self, directory: Path, *, write: bool = True, max_entries: int = MAX_ENTRIES) -> None:
        self.directory = Path(directory)
        self.write = write
        self.max_entries = max_entries

    def code(self, source: bytes, path: str) -> CodeType:
        key = _key(source, path)
        cached = self._read(key)
        if cached is not None:
            return cached
        code = compile(source, path, "exec", dont_inherit=True)
        if self.write:
            try:
                self._store(key, pack(code))
            except (OSError, UpdatesError) as exc:
                log.debug("bytecode cache %s: not written: %s", self.directory, exc)
        return code

    def _usable_directory(self) -> bool:
        try:
            st = os.lstat(self.directory)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and _private(st)

    def _read(self, key: str) -> CodeType | None:
        if not self._usable_directory():
            return None
        path = self.directory / f"{key}.code"
        try:
            # O_NONBLOCK: a FIFO planted here must not hang the run (it is refused just below).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with open(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                if not (stat.S_ISREG(st.st_mode) and _private(st)):
                    log.debug("bytecode cache: %s is not ours alone; compiling instead", path)
                    return None
                data = handle.read()
        except OSError as exc:
            log.debug("bytecode cache: cannot read %s (%s); compiling instead", path, exc)
            return None
        code = unpack(data)
        if code is None:
            log.debug("bytecode cache: %s is damaged; compiling instead", path)
        return code

    def _store(self, key: str, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._usable_directory():
            log.debug("bytecode cache %s: others could write it; nothing stored", self.directory)
            return
        target = self.directory / f"{key}.code"
        # Only stored when no valid entry was found: whatever is there (someone else's file, a link) goes,
        # so that the new one is ours alone rather than inheriting its owner.
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        atomic_write_bytes(target, data, mode=0o600, follow_symlinks=False)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest MAX_ENTRIES entries; drop the temp files of a killed write (modules run under the
        run lock, so no other write is under way)."""
        entries: list[tuple[int, Path]] = []
        stale: list[Path] = []
        with os.scandir(self.directory) as found:
            for entry in found:
                if entry.name.endswith(".code"):
                    with contextlib.suppress(OSError):
                        entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path)))
                elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    stale.append(Path(entry.path))
        entries.sort()
        stale += [path for _, path in entries[: max(0, len(entries) - self.max_entries)]]
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()
