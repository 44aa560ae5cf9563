"""Release versions as these projects tag them, ordered the way semantic versioning orders them.

Contract: `Version.parse` understands the tags these projects use (`v18.19.0`, `0.14.3`, `v18.20.0-beta.3`)
and returns None for anything else (`latest-commit-build`), so non-version tags never win a comparison.
A prerelease sorts before its release. Pure: no imports from the package.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Version | None:
        match = _VERSION_RE.match((text or "").strip())
        if not match:
            return None
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch or 0), pre)

    def _key(self) -> tuple[Any, ...]:
        # A prerelease sorts before its release; its dot-separated parts compare numerically when numeric.
        pre: tuple[Any, ...] = (1,)
        if self.pre is not None:
            pre = (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre.split(".")))
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    @property
    def minor_series(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return f"{base}-{self.pre}" if self.pre else base
