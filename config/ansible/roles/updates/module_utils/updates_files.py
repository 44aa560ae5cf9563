"""Atomic file replacement for the role's modules, as `index.py` writes its own files.

Contract: `write_atomic(path, text, mode=None)` leaves either the old file or the complete new one at `path`:
a temp file in the same directory, fsynced, renamed over `path`, then the directory fsynced. `mode` None
keeps the mode of the file it replaces (0644 for a new one).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = NEW_FILE_MODE
    tmp = Path(tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)[1])
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
