"""Run history: one JSON line per run in `<state>/history.jsonl`, rotated by size.

Contract:
- `make_record(results, started=..., finished=..., exit_code=..., dry_run=...)` builds the record of one run
  (schema 1, below) from the runner's results; `append_run(state, record)` appends it as one line.
- A record is a JSON object (schemas/history-record.schema.json): `schema` (1), `host`, `started` and
  `finished` (ISO 8601 UTC, `2024-06-10T15:23:00Z`), `duration_s`, `ok` (no module failed and not
  interrupted), `exit_code`, `dry_run`, `interrupted`, and `modules`: a list of `{name, status, duration_s,
  summary, error}` in run order. Optional: `only`, `skip` (the run's selection), `error` and `refused`
  (`lock` or `permissions`) of a run that ran no module, `lock_holder` (`pid`, `since`), `recovered`,
  `command`. Extra keys are allowed.
- The append is a single `write()` on a descriptor opened with `O_APPEND`, so a concurrent reader sees whole
  lines (or, after a crash, at worst one truncated last line, which readers skip). Writers are serialised
  by the run lock. Before appending, a file larger than `max_bytes` is rotated with `os.replace`:
  `history.jsonl` -> `.1` -> `.2` ... up to `keep` old files; the oldest falls off.
- The history file is never reached through a link: appends open it with `O_NOFOLLOW` and refuse
  (`UnsafePermissions`, which the publisher logs) a link or anything but a regular file at its place, and
  readers skip such a file with a warning. Rotation renames names, never what a link points to.
- `read_runs(state, limit)` returns runs newest first across the current and rotated files, skipping
  lines that are not whole JSON objects. `last_status_by_module(runs)` tells, per module, the status of the
  last real run that considered it and when that run finished.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UnsafePermissions, UpdatesError
from ..journal import Recovered
from ..paths import Paths
from ..results import Status

log = logging.getLogger(__name__)

SCHEMA = 1
HISTORY_FILE = "history.jsonl"
MAX_BYTES = 1024 * 1024
KEEP = 3
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class LastStatus(NamedTuple):
    status: str
    finished_at: str | None


def _state_dir(state: Paths | Path | str) -> Path:
    return state.state if isinstance(state, Paths) else Path(state)


def history_path(state: Paths | Path | str) -> Path:
    return _state_dir(state) / HISTORY_FILE


def iso_utc(moment: datetime | float) -> str:
    """A datetime or epoch seconds as `2024-06-10T15:23:00Z`."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def _module_dict(result: Any) -> dict[str, Any]:
    raw = result if isinstance(result, Mapping) else result.as_dict()
    return {
        "name": raw["name"],
        "status": raw["status"],
        "duration_s": raw.get("duration_s"),
        "summary": raw.get("summary"),
        "error": raw.get("error"),
    }


def host_name() -> str:
    """This server's name, in every JSON document and record: many servers may post to one webhook."""
    return socket.gethostname()


def make_record(
    results: Iterable[Any],
    *,
    started: datetime | float,
    finished: datetime | float,
    exit_code: int,
    dry_run: bool,
    interrupted: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The history record of one run.

    `results` are `ModuleResult`s (anything with `as_dict()`) or dicts with the same keys; `started` and
    `finished` are aware datetimes or epoch seconds. `extra` keys (e.g. `only`, `skip`) are kept.
    """
    modules = [_module_dict(r) for r in results]
    start_ts = started.timestamp() if isinstance(started, datetime) else float(started)
    end_ts = finished.timestamp() if isinstance(finished, datetime) else float(finished)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "host": host_name(),
        "started": iso_utc(started),
        "finished": iso_utc(finished),
        "duration_s": round(max(end_ts - start_ts, 0.0), 3),
        "ok": not interrupted and all(m["status"] != Status.FAILED for m in modules),
        "exit_code": exit_code,
        "dry_run": dry_run,
        "interrupted": interrupted,
    }
    record.update(extra)
    record["modules"] = modules
    return record


def _rotate(path: Path, keep: int) -> None:
    """history.jsonl -> .1 -> .2 ...; each step is an atomic rename, so readers never see a partial file."""
    if keep <= 0:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if os.path.lexists(older):
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def _open_no_follow(path: Path, flags: int, mode: int = 0o600) -> int:
    """Open a history file without following a link; refuse anything but a regular file."""
    try:
        # O_NONBLOCK: a FIFO planted at the place must not hang the run.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePermissions(f"{path}: is a symbolic link; refusing to follow it") from exc
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a socket
            raise UnsafePermissions(f"{path}: not a regular file; refusing to use it") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePermissions(f"{path}: not a regular file; refusing to use it")
    return fd


def append_run(
    state: Paths | Path | str,
    record: Mapping[str, Any],
    *,
    max_bytes: int = MAX_BYTES,
    keep: int = KEEP,
    rotate: bool = True,
) -> Path:
    """Append `record` (schema added when missing) as one line; returns the history file's path.

    `rotate=False` for a writer without the run lock (a refused run): it never renames the files."""
    path = history_path(state)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"schema": SCHEMA, **record}
    # backslashreplace: a lone surrogate in some module's message must not cost the whole record.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    line = text.encode("utf-8", "backslashreplace")
    try:
        size = path.lstat().st_size  # a link's own size: it is refused below, not rotated into place
    except FileNotFoundError:
        size = 0
    if rotate and size and size + len(line) > max_bytes and not path.is_symlink():
        _rotate(path, keep)
    fd = _open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        written = os.write(fd, line)
        if written != len(line):
            # A short write to a regular file means a full disk; say so rather than leave it silent.
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    """Records of one file, oldest first; a line that is not a whole JSON object is skipped."""
    try:
        with os.fdopen(_open_no_follow(path, os.O_RDONLY), "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    except UnsafePermissions as exc:
        log.warning("not reading the run history: %s", exc)
        return []
    except OSError as exc:
        # `status` and `history` should still show what they can, e.g. to a user who may not read it.
        log.warning("cannot read the run history %s: %s", path, exc.strerror or exc)
        return []
    records: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = number == len(lines)  # no newline after it: a write still in flight or cut short by a crash
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            if last:
                log.debug("%s: skipping an incomplete last line", path)
            else:
                log.warning("%s:%d: skipping a line that is not a JSON object", path, number)
            continue
        records.append(value)
    return records


def read_runs(
    state: Paths | Path | str, limit: int | None = None, *, keep: int = KEEP
) -> list[dict[str, Any]]:
    """Past runs, newest first, at most `limit` of them (None: all that the files hold)."""
    path = history_path(state)
    runs: list[dict[str, Any]] = []
    for n in range(keep + 1):
        if limit is not None and len(runs) >= limit:
            break
        current = path if n == 0 else path.with_name(f"{path.name}.{n}")
        runs.extend(reversed(_parse_lines(current)))
    return runs if limit is None else runs[: max(limit, 0)]


def last_status_by_module(
    runs: Sequence[Mapping[str, Any]], *, include_dry_runs: bool = False
) -> dict[str, LastStatus]:
    """Per module name: the status it had in the newest run that considered it, and when that run finished.

    `runs` are newest first (as `read_runs` returns them). Dry runs are ignored unless asked for, since
    their `ok`/`changed` did not happen. A `skipped` status counts only when no older run did more.
    """
    found: dict[str, LastStatus] = {}
    skipped: dict[str, LastStatus] = {}
    for run in runs:
        if run.get("dry_run") and not include_dry_runs:
            continue
        modules = run.get("modules")
        if not isinstance(modules, list):
            continue
        for module in modules:
            if not isinstance(module, Mapping):
                continue
            name, status = module.get("name"), module.get("status")
            if not isinstance(name, str) or not isinstance(status, str) or name in found:
                continue
            entry = LastStatus(status, run.get("finished") if isinstance(run.get("finished"), str) else None)
            if status == Status.SKIPPED:
                skipped.setdefault(name, entry)
            else:
                found[name] = entry
    for name, entry in skipped.items():
        found.setdefault(name, entry)
    return found


def append_recovery(state: Paths | Path | str, recovered: Sequence[Recovered], *, command: str) -> None:
    """For a command other than `run` (which puts them in its own record): one history line saying which
    interrupted changes it completed before its own work. Never raises: the command's work matters more."""
    if not recovered:
        return
    now = time.time()
    failed = any(item.outcome == "failed" for item in recovered)
    record = make_record(
        [], started=now, finished=now, exit_code=1 if failed else 0, dry_run=False,
        command=command, recovered=[item.as_dict() for item in recovered],
    )  # fmt: skip
    record["ok"] = not failed
    try:
        append_run(state, record)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
