"""The crash journal: a change of several files says what it is about to do before its first step.

Contract:
- `begin(directory, op, describe=..., module=...)` writes a record `<directory>/<id>.json` (atomically,
  mode 0600, in a 0700 directory) before it returns; the caller then adds the actions that undo each step
  *before* taking that step, takes its steps, and calls `commit()` once the new state is complete.
- A record holds three lists of actions: `undo` (run in order to put the old state back), `after`
  (commands run once the undo is done: a reload, a service start), and `cleanup` (run after the commit:
  removing staging leftovers), built and carried out by `journal_actions.py`: each looks at the disk
  before it acts, so running it twice, or after a crash half-way through it, is harmless.
- `commit()` marks the record committed (the point of no return), runs the cleanup, and removes the
  record. `revert()` runs undo and after, then removes the record. Leaving `with operation(...)` by an
  exception reverts (after whatever undo the caller did itself; the actions find that work done).
- `recover(directory, run)` is called by every command that takes the run lock (so no live process owns
  a record): newest first, a committed record is finished, a pending one reverted. A record whose
  recovery fails stays for the next command, with the older records of its process; `pending(directory)`
  lists what is there (for `status`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_bytes, fsync_dir
from .journal_actions import (
    Action,
    CommandRunner,
    JournalError,
    command,
    inode,
    put_back_dir,
    remove,
    restore_dir,
    restore_file,
    run_action,
    sha256_file,
    sweep,
    sweep_temps,
    write_bytes,
)

# The actions live in journal_actions.py; callers import them from here, with the records.
__all__ = [
    "Action",
    "CommandRunner",
    "JournalError",
    "Operation",
    "Recovered",
    "begin",
    "command",
    "inode",
    "journal_dir",
    "module_journal_dir",
    "operation",
    "pending",
    "put_back_dir",
    "records",
    "recover",
    "remove",
    "restore_dir",
    "restore_file",
    "sha256_file",
    "sweep",
    "sweep_temps",
    "write_bytes",
]

log = logging.getLogger(__name__)

FORMAT = 1
DIRNAME = "journal"
def journal_dir(state: Path) -> Path:
    """The journal of a state directory."""
    return state / DIRNAME


def module_journal_dir(module_state: Path) -> Path:
    """The journal for a module, from the `state_dir` it is given (`<state>/modules/<name>`)."""
    if module_state.parent.name == "modules":
        return journal_dir(module_state.parent.parent)
    return module_state / DIRNAME  # a module called outside the orchestrator (tests, a shell)


@dataclass
class Operation:
    """One journaled change; see the module docstring."""

    path: Path
    op: str
    describe: str
    module: str | None = None
    started: str = ""
    pid: int = 0
    state: str = "pending"
    undo: list[Action] = field(default_factory=list)
    after: list[Action] = field(default_factory=list)
    cleanup: list[Action] = field(default_factory=list)

    @property
    def files(self) -> Path:
        """A directory for copies of what the change replaces (created on first use)."""
        return self.path.with_suffix(".d")

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "op": self.op, "describe": self.describe, "module": self.module,
            "started": self.started, "pid": self.pid, "state": self.state,
            "undo": self.undo, "after": self.after, "cleanup": self.cleanup,
        }  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Operation:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            raw = json.loads(handle.read())
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError("not a journal record of this version")
        return cls(
            path=path, op=str(raw["op"]), describe=str(raw["describe"]), module=raw.get("module"),
            started=str(raw.get("started", "")), pid=int(raw.get("pid", 0)), state=str(raw["state"]),
            undo=list(raw["undo"]), after=list(raw["after"]), cleanup=list(raw["cleanup"]),
        )  # fmt: skip

    def save(self) -> None:
        data = json.dumps(self.as_dict(), indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        atomic_write_bytes(self.path, data, mode=0o600, follow_symlinks=False)

    def will_undo(self, *actions: Action) -> None:
        """Record how to undo the next step; on disk before this returns."""
        self.undo.extend(actions)
        self.save()

    def then_run(self, argv: Sequence[str], timeout: float) -> None:
        """A command to run after an undo (a reload, a service start)."""
        self.after.append(command(argv, timeout))
        self.save()

    def will_clean(self, *actions: Action) -> None:
        self.cleanup.extend(actions)
        self.save()

    def save_copy(self, path: Path) -> Path:
        """A copy of the file `path` that the undo can restore from (a hard link when on one file system:
        the change replaces the name with a new file, so the old inode stays as it is)."""
        self.files.mkdir(mode=0o700, exist_ok=True)
        copy = self.files / f"{sum(1 for _ in self.files.iterdir())}-{path.name}"
        try:
            os.link(path, copy, follow_symlinks=False)
        except OSError:
            shutil.copy2(path, copy, follow_symlinks=False)
        fsync_dir(self.files)
        return copy

    def discard(self) -> None:
        """The caller put the old state back itself: forget the record without acting on it."""
        self._forget()

    def commit(self, run: CommandRunner | None = None) -> None:
        """The change is complete: record that, tidy up, forget the record."""
        self.state = "committed"
        self.save()
        self._run(self.cleanup, run)
        self._forget()

    def revert(self, run: CommandRunner | None = None) -> None:
        """Put the old state back (undo, then the after commands), then forget the record."""
        self._run(self.undo, run)
        self._run(self.after, run)
        self._run(self.cleanup, run)
        self._forget()

    def finish(self, run: CommandRunner | None = None) -> str:
        """What recovery does: finish a committed change, revert a pending one; returns which."""
        if self.state == "committed":
            self._run(self.cleanup, run)
            self._forget()
            return "finished"
        self.revert(run)
        return "reverted"

    def _run(self, actions: Sequence[Action], run: CommandRunner | None) -> None:
        for action in actions:
            run_action(action, run, self.path.name)

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.files)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fsync_dir(self.path.parent)


def begin(directory: Path, op: str, *, describe: str, module: str | None = None) -> Operation:
    """Start a journaled change: its record is on disk before this returns."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The name sorts in the order the records were begun (recovery goes newest first).
    now_ns = time.time_ns()
    now = datetime.fromtimestamp(now_ns / 1e9, timezone.utc)
    ident = f"{now:%Y%m%dT%H%M%S}.{now_ns % 10**9:09d}-{os.getpid()}-{op}"
    record = Operation(
        path=directory / f"{ident}.json", op=op, describe=describe, module=module,
        started=now.strftime("%Y-%m-%dT%H:%M:%SZ"), pid=os.getpid(),
    )  # fmt: skip
    record.save()
    return record


@contextlib.contextmanager
def operation(
    directory: Path,
    op: str,
    *,
    describe: str,
    module: str | None = None,
    run: CommandRunner | None = None,
) -> Iterator[Operation]:
    """`begin` for a `with` block: an exception in it reverts what the record says (after the caller's
    own undo, if any); a revert that fails leaves the record for the next command and is logged."""
    record = begin(directory, op, describe=describe, module=module)
    try:
        yield record
    except BaseException:
        if record.path.exists():
            try:
                record.revert(run)
            except Exception as exc:  # the original error is the one to report; this one is logged
                log.error("undoing %s failed (%s); the next run will retry (%s)", describe, exc, record.path)
        raise
    if record.path.exists():
        raise JournalError(f"{describe}: the change was neither committed nor reverted (a bug)")


@dataclass(frozen=True)
class Recovered:
    """What recovery did with one record."""

    op: str
    describe: str
    module: str | None
    started: str
    outcome: str  # "finished", "reverted" or "failed"
    error: str | None = None

    def line(self) -> str:
        what = f"an interrupted {self.describe} (started {self.started})"
        if self.outcome == "failed":
            return f"could not recover {what}: {self.error}; it stays in the journal for the next run"
        return f"recovered {what}: {self.outcome}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "describe": self.describe, "module": self.module,
                "started": self.started, "outcome": self.outcome, "error": self.error}  # fmt: skip


def records(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def pending(directory: Path) -> list[Operation | Path]:
    """The records a crash left (an unreadable one as its path); reads only."""
    found: list[Operation | Path] = []
    for path in records(directory):
        try:
            found.append(Operation.load(path))
        except (OSError, ValueError, KeyError, TypeError):
            found.append(path)
    return found


def recover(directory: Path, run: CommandRunner) -> list[Recovered]:
    """Finish or revert every record in `directory`, newest first; call it holding the run lock.

    One process may nest changes (a download whose temp files an install then switches in): the inner,
    later one is undone first, as a stack unwinds. When a record fails, the older records of the same
    process wait for the next command (their undo may need the failed one's done first); records of
    other processes are independent and go on."""
    done: list[Recovered] = []
    sweep_temps(directory, ".", ".tmp")  # a record being written when the process was killed
    blocked: set[int] = set()
    for path in reversed(records(directory)):
        try:
            record = Operation.load(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            done.append(Recovered("unknown", path.name, None, "?", "failed", f"unreadable record: {exc}"))
            blocked.add(_pid_in_name(path))
            continue
        error: str | None = None
        if record.pid in blocked:
            outcome, error = "failed", "waits until a later change of the same run is recovered"
        else:
            try:
                outcome = record.finish(run)
            except Exception as exc:  # each run's records on their own: one that fails must not stop others
                log.debug("recovery of %s failed", path, exc_info=True)
                outcome, error = "failed", str(exc)
                blocked.add(record.pid)
        done.append(Recovered(record.op, record.describe, record.module, record.started, outcome, error))
    return done


def _pid_in_name(path: Path) -> int:
    """The pid in a record's name (`<time>-<pid>-<op>.json`), for a record too damaged to read."""
    parts = path.name.split("-")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else -1
