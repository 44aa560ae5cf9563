"""The error hierarchy. Each class carries the exit code the command line returns for it.

The user sees `str(error)` as one line (plus `hint` when set); the log file gets the traceback.
"""
from __future__ import annotations


class UpdatesError(Exception):
    """Something went wrong that the orchestrator can explain in one line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(UpdatesError):
    """The command line was wrong; nothing ran and nothing changed."""

    exit_code = 2


class ManifestError(UpdatesError):
    """The manifest could not be read or failed validation; nothing ran and nothing changed."""

    exit_code = 2


class LockHeld(UpdatesError):
    """Another run (or a rollback) holds the run lock: `pid` (None when unknown) since `since` (epoch seconds,
    the time the holder took it, or None)."""

    exit_code = 75

    def __init__(
        self, message: str, *, hint: str | None = None, pid: int | None = None, since: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.pid = pid
        self.since = since


class ChecksumError(UpdatesError):
    """A module directory cannot be digested or does not match its recorded checksum."""


class ModuleLoadError(UpdatesError):
    """A module could not be imported or does not define a usable `main(args)`."""


class CommandError(UpdatesError):
    """A subprocess failed, timed out or could not be started."""


class RollbackError(UpdatesError):
    """A tag or rollback operation was refused; the module was left as it was."""


class UnsafePermissions(UpdatesError):
    """Code or configuration that root would run can be changed by another user; nothing ran."""

    exit_code = 2


class ModuleTimeout(BaseException):
    """Raised inside a module when its `timeout` elapses.

    It derives from BaseException so that a module's own `except Exception` cannot swallow it.
    """

    def __init__(self, seconds: float, owner: object = None) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds
        self.owner = owner  # the deadline that expired, so nested boundaries let an outer one through
