"""The crash journal: a change of several files says what it is about to do before its first step.

Contract:
- `begin(directory, op, describe=..., module=...)` writes a record `<directory>/<id>.json` (atomically,
  mode 0600, in a 0700 directory) before it returns; the caller then adds the actions that undo each step
  *before* taking that step, takes its steps, and calls `commit()` once the new state is complete.
- A record holds three lists of actions: `undo` (run in order to put the old state back), `after`
  (commands run once the undo is done: a reload, a service start), and `cleanup` (run after the commit:
  removing staging leftovers). Each action looks at the disk before it acts, so running it twice, or
  after a crash half-way through it, is harmless. Files are identified by their SHA-256, directories by
  their inode, never by a name alone, so a stale copy is never restored over newer data.
- `commit()` marks the record committed (the point of no return), runs the cleanup, and removes the
  record. `revert()` runs undo and after, then removes the record. Leaving `with operation(...)` by an
  exception reverts (after whatever undo the caller did itself; the actions find that work done).
- `recover(directory, run)` is called by every command that takes the run lock (so no live process owns
  a record): newest first, a committed record is finished, a pending one reverted. A record whose
  recovery fails stays for the next command, with the older records of its process; `pending(directory)`
  lists what is there (for `status`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UpdatesError
from .fsutil import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

FORMAT = 1
DIRNAME = "journal"
Action = dict[str, Any]
# Runs an `after` command: (argv, timeout seconds). Injected so that this module needs no subprocess code.
CommandRunner = Callable[[Sequence[str], float], None]


class JournalError(UpdatesError):
    """An interrupted change could not be finished or undone; its record stays for the next command."""


def journal_dir(state: Path) -> Path:
    """The journal of a state directory."""
    return state / DIRNAME


def module_journal_dir(module_state: Path) -> Path:
    """The journal for a module, from the `state_dir` it is given (`<state>/modules/<name>`)."""
    if module_state.parent.name == "modules":
        return journal_dir(module_state.parent.parent)
    return module_state / DIRNAME  # a module called outside the orchestrator (tests, a shell)


def sha256_file(path: Path) -> str | None:
    """SHA-256 of a regular file (links not followed), or None when nothing is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inode(path: Path) -> list[int] | None:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [st.st_dev, st.st_ino]


def _remove(path: Path) -> None:
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
    fsync_dir(path.parent)


# Actions: each one a JSON object; `_ACTIONS` maps its "do" to the function that carries it out.


def restore_file(path: Path, old_sha256: str | None, copy: Path | None) -> Action:
    """Put back the file whose content had `old_sha256` (None: there was no file) from `copy`, with the
    mode and owner it has now (call this before the step that replaces it)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        owner, mode = None, None
    else:
        owner, mode = [st.st_uid, st.st_gid], st.st_mode & 0o7777
    return {"do": "restore_file", "path": str(path), "sha256": old_sha256,
            "copy": str(copy) if copy else None, "owner": owner, "mode": mode}  # fmt: skip


def write_bytes(path: Path, data: bytes | None) -> Action:
    """Make `path` hold `data` (None: no file); for small files (a manifest, a state file)."""
    encoded = base64.b64encode(data).decode("ascii") if data is not None else None
    return {"do": "write", "path": str(path), "data": encoded}


def restore_dir(path: Path, old_inode: list[int], places: Sequence[Path], discard: Path | None) -> Action:
    """Put the directory `old_inode` back at `path` from whichever of `places` holds it; what is at `path`
    then goes to `discard` (kept for diagnosis) or is removed."""
    return {"do": "restore_dir", "path": str(path), "inode": old_inode,
            "places": [str(p) for p in places], "discard": str(discard) if discard else None}  # fmt: skip


def remove(path: Path, *, unless_inode: list[int] | None = None) -> Action:
    """Remove a file or tree we created (never the directory `unless_inode`)."""
    return {"do": "remove", "path": str(path), "unless_inode": unless_inode}


def sweep(directory: Path, prefix: str, suffix: str = ".tmp", *, since: float | None = None) -> Action:
    """Remove the temp files we name `<prefix>...<suffix>` in `directory`; with `since` (a time stamp), only
    those changed since then, so a file of that name someone else made earlier stays."""
    return {"do": "sweep", "dir": str(directory), "prefix": prefix, "suffix": suffix, "since": since}


def command(argv: Sequence[str], timeout: float) -> Action:
    return {"do": "run", "argv": list(argv), "timeout": timeout}


def _do_restore_file(action: Action, run: CommandRunner) -> None:
    path, old = Path(action["path"]), action["sha256"]
    if sha256_file(path) == old:
        return
    if old is None:
        _remove(path)
        return
    copy = Path(action["copy"]) if action["copy"] else None
    if copy is None or sha256_file(copy) != old:
        raise JournalError(f"cannot restore {path}: its saved copy {copy} is missing or not the old file")
    data = copy.read_bytes()
    try:
        atomic_write_bytes(path, data, mode=action["mode"])
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        # A bind-mounted file (a container's /etc/hosts) cannot be replaced, only rewritten.
        with open(path, "r+b") as dest:
            dest.write(data)
            dest.truncate()
            os.fsync(dest.fileno())
    if action["owner"] and os.geteuid() == 0:
        os.chown(path, *action["owner"], follow_symlinks=False)


def _do_write(action: Action, run: CommandRunner) -> None:
    path = Path(action["path"])
    if action["data"] is None:
        _remove(path)
        return
    data = base64.b64decode(action["data"])
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)


def put_back_dir(path: Path, old_inode: list[int], places: Sequence[Path], discard: Path | None) -> bool:
    """Make `path` the directory `old_inode` again, taking it from whichever of `places` holds it; what is
    at `path` goes to `discard` (or is removed). False when it already was; JournalError when the old
    directory is nowhere to be found."""
    if inode(path) == old_inode:
        return False
    holder = next((p for p in places if inode(p) == old_inode), None)
    if holder is None:
        where = ", ".join(map(str, places))
        raise JournalError(f"cannot put {path} back: the previous directory is in none of {where}")
    if os.path.lexists(path):
        if discard is not None and not os.path.lexists(discard):
            discard.parent.mkdir(parents=True, exist_ok=True)
            path.rename(discard)
        else:
            _remove(path)
    holder.rename(path)
    fsync_dir(path.parent)
    if holder.parent != path.parent:
        fsync_dir(holder.parent)
    return True


def _do_restore_dir(action: Action, run: CommandRunner) -> None:
    discard = Path(action["discard"]) if action["discard"] else None
    put_back_dir(Path(action["path"]), action["inode"], [Path(p) for p in action["places"]], discard)


def _do_remove(action: Action, run: CommandRunner) -> None:
    path = Path(action["path"])
    if action.get("unless_inode") is not None and inode(path) == action["unless_inode"]:
        return
    _remove(path)


def _do_sweep(action: Action, run: CommandRunner) -> None:
    sweep_temps(Path(action["dir"]), action["prefix"], action["suffix"], since=action.get("since"))


def _do_run(action: Action, run: CommandRunner) -> None:
    run(action["argv"], float(action["timeout"]))


_ACTIONS: dict[str, Callable[[Action, CommandRunner], None]] = {
    "restore_file": _do_restore_file,
    "write": _do_write,
    "restore_dir": _do_restore_dir,
    "remove": _do_remove,
    "sweep": _do_sweep,
    "run": _do_run,
}


def sweep_temps(
    directory: Path, prefix: str, suffix: str = ".tmp", *, since: float | None = None
) -> list[Path]:
    """Remove what a killed process left under the names we give temp files (changed at or after `since`,
    when given); returns what went."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(suffix):
            with contextlib.suppress(FileNotFoundError):
                if since is not None and entry.stat(follow_symlinks=False).st_mtime < since:
                    continue
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
    return removed


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
            handler = _ACTIONS.get(action.get("do", ""))
            if handler is None:
                raise JournalError(f"{self.path.name}: unknown journal action {action.get('do')!r}")
            if handler is _do_run and run is None:
                raise JournalError(f"{self.path.name}: no way to run {action['argv'][0]}")
            handler(action, run or _no_runner)

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.files)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fsync_dir(self.path.parent)


def _no_runner(argv: Sequence[str], timeout: float) -> None:  # pragma: no cover - guarded in _run
    raise JournalError("no command runner")


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
