"""Module version tags: `<name>-v<version>-<YYYYMMDD>` or `<name>-v<version>-<YYYYMMDDHHMMSS>` (UTC).

Contract: pure functions on dataclasses, no I/O. `format_tag` builds a name, `parse_tag(name, tag)` reads
one back (None when the tag is not a well-formed tag of that module; module names never contain `-`, so
`gogs-v...` cannot match `gogs_mirror-v...`), and `newest_first` orders tags by their UTC stamp, then by the
tagged commit's time, then by name so that the order never depends on git's output order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

DAY_FORMAT = "%Y%m%d"
SECOND_FORMAT = "%Y%m%d%H%M%S"
# A version becomes part of a git ref name, so it keeps to characters git allows there without quoting.
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
_STAMP_RE = re.compile(r"^(\d{8}|\d{14})$")


@dataclass(frozen=True)
class ModuleTag:
    """A parsed tag of one module; `commit` and `commit_time` come from git, the rest from the name."""

    name: str
    version: str
    stamp: datetime
    tag: str
    commit: str = ""
    commit_time: int = 0

    @property
    def has_time(self) -> bool:
        """True for the `-<YYYYMMDDHHMMSS>` form (a second tag of the same day)."""
        return len(self.tag) - self.tag.rfind("-") - 1 == 14

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "timestamp": self.stamp, "tag": self.tag, "commit": self.commit}


def check_version(version: str) -> str | None:
    """Why `version` cannot be part of a tag name, or None when it can."""
    if not VERSION_RE.match(version):
        return "a version may hold only letters, digits and . _ + - and must start with a letter or digit"
    if ".." in version or version.endswith((".", ".lock")):
        return "a version may not contain '..' or end with '.' or '.lock' (git ref name rules)"
    return None


def format_tag(name: str, version: str, moment: datetime, *, with_time: bool = False) -> str:
    """The tag for `version` of module `name` deployed at `moment` (converted to UTC)."""
    utc = moment.astimezone(timezone.utc)
    return f"{name}-v{version}-{utc.strftime(SECOND_FORMAT if with_time else DAY_FORMAT)}"


def parse_stamp(text: str) -> datetime | None:
    if not _STAMP_RE.match(text):
        return None
    try:
        parsed = datetime.strptime(text, DAY_FORMAT if len(text) == 8 else SECOND_FORMAT)
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc)


def parse_tag(name: str, tag: str) -> ModuleTag | None:
    """`tag` read as a tag of module `name`, or None when it is not one (or is malformed)."""
    prefix = f"{name}-v"
    if not tag.startswith(prefix):
        return None
    version, sep, stamp_text = tag[len(prefix) :].rpartition("-")
    stamp = parse_stamp(stamp_text) if sep else None
    if stamp is None or not version or check_version(version) is not None:
        return None
    return ModuleTag(name=name, version=version, stamp=stamp, tag=tag)


def newest_first(tags: Iterable[ModuleTag]) -> list[ModuleTag]:
    return sorted(tags, key=lambda t: (t.stamp, t.commit_time, t.tag), reverse=True)
