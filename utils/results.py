"""What one module's run came to: its `Status` and the `ModuleResult` the runner hands to the reports.

Contract: `Status` is the closed set of module statuses (`ok`, `changed`, `failed`, `skipped`). Each member
is a `str` equal to its value, so it compares equal to the plain strings stored in history files, JSON
reports and metrics, and prints and serialises as that string. Everything that names a status uses it.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Status(str, enum.Enum):
    # str mixin rather than enum.StrEnum: the orchestrator still supports Python 3.10.
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"

    # Python < 3.12 would print `Status.OK`; operators and JSON readers must see `ok`.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def succeeded(cls) -> frozenset[Status]:
        """The statuses a module ends with when nothing went wrong."""
        return frozenset({cls.OK, cls.CHANGED})


@dataclass
class ModuleResult:
    name: str
    status: Status
    duration_s: float = 0.0
    summary: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)  # a plain string in JSON and history records
        return data
