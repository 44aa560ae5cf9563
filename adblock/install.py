"""Install the compiled list: a managed block inside a file (/etc/hosts) or a whole file of our own.

Contract:
- Block mode: only the lines from `# BEGIN updates-adblock` to `# END updates-adblock` are ours; every
  other byte of the file stays as the administrator wrote it. No block yet -> it is appended. A BEGIN
  without its END (or the reverse) is refused: we never guess which lines are ours.
- `write_file` keeps the previous file as `<state_dir>/backups/<name>.bak` first, then replaces the file
  atomically (temp file in the same directory, fsync, os.replace). A file that is a mount point (a
  bind-mounted /etc/hosts in a container), or whose replace fails with EBUSY/EXDEV, is rewritten in place
  instead, after the backup.
- Temp files left by a run that was killed mid-write are removed before the next write.
- Whole-file mode never replaces a file we did not write unless told to (`check_whole_file`): /etc/hosts, or
  any existing file that does not start with our own header line, needs `args.overwrite: true`.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..utils.argspec import arg_error
from ..utils.errors import UpdatesError
from ..utils.fsutil import atomic_write_bytes
from .render import GENERATOR, comment_prefix

BLOCK_FORMATS = ("hosts", "dnsmasq", "unbound", "domains")  # formats whose comments start with '#'

log = logging.getLogger(__name__)

BEGIN = b"# BEGIN updates-adblock"
END = b"# END updates-adblock"
MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes space, tab, newline and backslash as \ooo


@dataclass(frozen=True)
class Current:
    """The target as it is now: the whole file (None if absent) and where our part of it is (no copies:
    the file may be tens of megabytes)."""

    full: bytes | None
    region: tuple[int, int] | None = None  # our content: between the markers, or the whole file
    span: tuple[int, int] | None = None  # the managed block, markers included

    def ours(self) -> memoryview | None:
        if self.full is None or self.region is None:
            return None
        return memoryview(self.full)[self.region[0] : self.region[1]]

    def body(self) -> memoryview | None:
        """The installed list without its header (see render.body_of), or None when nothing is installed."""
        if self.full is None or self.region is None:
            return None
        start, end = self.region
        view = memoryview(self.full)
        if self.full[start : start + 1] == b"\n":
            return view[start + 1 : end]
        gap = self.full.find(b"\n\n", start, end)
        return view[gap + 2 : end] if gap != -1 else view[start:end]


def _line_spans(data: bytes, marker: bytes) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        index = data.find(marker, start)
        if index == -1:
            return spans
        end = data.find(b"\n", index)
        end = len(data) if end == -1 else end + 1
        at_line_start = index == 0 or data[index - 1 : index] == b"\n"
        if at_line_start and data[index:end].rstrip(b"\r\n") == marker:
            spans.append((index, end))
        start = index + len(marker)


def read_current(path: Path, block: bool) -> Current:
    """Read the target; raises UpdatesError when the managed block's markers are damaged."""
    try:
        full = path.read_bytes()
    except FileNotFoundError:
        return Current(None)
    except OSError as exc:
        raise UpdatesError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not block:
        return Current(full, (0, len(full)))
    begins, ends = _line_spans(full, BEGIN), _line_spans(full, END)
    if not begins and not ends:
        return Current(full)
    if len(begins) != 1 or len(ends) != 1 or ends[0][0] < begins[0][1]:
        raise UpdatesError(
            f"{path}: the '# BEGIN updates-adblock' / '# END updates-adblock' markers are damaged "
            f"({len(begins)} BEGIN, {len(ends)} END); fix the file by hand, nothing was written"
        )
    return Current(full, (begins[0][1], ends[0][0]), (begins[0][0], ends[0][1]))


def check_whole_file(path: Path, fmt: str, overwrite: bool, system_hosts: Path = Path("/etc/hosts")) -> None:
    """Raise ArgsError when installing `fmt` as the whole of `path` would replace lines we did not write:
    /etc/hosts (always: localhost and the machine's own name live there), or an existing file that does not
    start with the header we write, unless `overwrite` says so."""
    if overwrite:
        return
    if os.path.realpath(path) == os.path.realpath(system_hosts):
        what = f"all of {path}, including its localhost lines"
    else:
        try:
            with path.open("rb") as handle:
                head = handle.read(4096)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UpdatesError(f"cannot read {path}: {exc.strerror or exc}") from exc
        ours = f"{comment_prefix(fmt)} Generated by the {GENERATOR}\n".encode()
        if not head.strip() or head.startswith(ours):
            return
        what = f"{path}, which holds lines the adblock module did not write"
    block = 'use "install": "block" to manage only our block in it, or ' if fmt in BLOCK_FORMATS else ""
    problem = f'"file" would replace {what}; {block}set "overwrite": true to replace the whole file'
    raise arg_error("install", problem)


def compose(current: Current, ours: Sequence[bytes | bytearray], block: bool) -> bytes | bytearray:
    """The new file content with `ours` (its pieces, in order: render.render_pieces) installed."""
    if not block:
        return ours[0] if len(ours) == 1 else b"".join(ours)
    # One join, one copy: the list may be tens of MB.
    managed = [BEGIN, b"\n", *ours, END, b"\n"]
    full = memoryview(current.full or b"")
    if current.span is None:
        gap = [b"\n"] if full and full[-1:] != b"\n" else []
        return b"".join([full, *gap, *managed])
    start, end = current.span
    return b"".join([full[:start], *managed, full[end:]])


def is_mount_point(path: Path, mountinfo: Path = MOUNTINFO) -> bool:
    """True when `path` itself is mounted (a bind-mounted file), per /proc/self/mountinfo."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    target = os.path.realpath(path)
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == target:
                return True
    return False


def _remove_stale_temps(path: Path) -> None:
    # atomic_write_bytes names its temp files ".<name>.<random>.tmp" beside the target.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
            log.info("removed %s left by an interrupted write", stale)
        except OSError:
            pass


def _rewrite_in_place(path: Path, data: bytes | bytearray) -> None:
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def write_file(
    path: Path,
    data: bytes | bytearray,
    previous: bytes | None,
    backup_dir: Path,
    *,
    mountinfo: Path = MOUNTINFO,
) -> str:
    """Write `data` to `path` (see the module docstring); returns "replaced" or "in place"."""
    if previous is not None:
        backup_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(backup_dir / f"{path.name}.bak", previous, mode=0o600, follow_symlinks=False)
    _remove_stale_temps(path)
    if previous is not None and is_mount_point(path, mountinfo):
        _rewrite_in_place(path, data)
        return "in place"
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV) or previous is None:
            raise UpdatesError(f"cannot write {path}: {exc.strerror or exc}") from exc
        log.info("%s cannot be replaced (%s); rewriting it in place", path, exc.strerror)
        _rewrite_in_place(path, data)
        return "in place"
    return "replaced"
