"""Legacy shell scripts as manifest entries: `{"name": "foo", "script": "update_foo.sh", "checksum": ...}`.

Contract:
- The script is a regular file directly in the root (a plain file name, no directory part, not a link).
  Its manifest `checksum` is required and is the plain SHA-256 of the file (`sha256sum update_foo.sh`);
  `utils.schema.validate_script_entry` states the manifest rules, `verify_script` checks the digest.
- `run_script(root, script, timeout=..., dry_run=..., log=...)` runs `bash <root>/<script>` with cwd `root`,
  stdin from /dev/null and an explicit environment: the safe base of `utils.proc` plus `UPDATES_ROOT`,
  `UPDATES_UTILS` (`<root>/config/utils.sh`, to `source`), `UPDATES_DRY_RUN` (`0`/`1`), `UPDATES_NAME`,
  `UPDATES_RESULT` (a file where `report_changed`/`report_ok` of utils.sh leave status and summary), and
  `UPDATES_STATE` (the entry's state directory) when given. stdout and stderr go to `log` line by line.
- The script runs in its own session; when it outlives `timeout` (default one hour: there is always one)
  its whole process group gets SIGTERM, then SIGKILL after a grace period. Processes it leaves behind
  after exiting are ended the same way, and so are they when the caller is interrupted (Ctrl-C, the
  runner's own deadline): nothing it started survives the call.
- It returns `(status, summary)`: `ok` or `changed` (from the script's report; `ok` by default); `failed`
  with `exit code N: <last output line>`, `killed by SIGx`, or `timed out after N s`. Under `dry_run` a
  script runs only when its entry says it honours `UPDATES_DRY_RUN` (`honours_dry_run`); otherwise it is
  `skipped`, since a script that ignores the flag would change the system.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..digest import script_checksum
from ..errors import ChecksumError
from ..proc import base_env
from ..results import Status
from ..schema import script_name_problem

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0
KILL_GRACE = 5.0
MAX_LINE = 64 * 1024


def verify_script(root: Path, script: str, expected: str | None) -> str:
    """The script's live digest after checking it equals `expected`; ChecksumError otherwise."""
    live = script_checksum(Path(root) / script)
    if expected is None:
        raise ChecksumError(f"{script}: no checksum in the manifest (live digest {live})")
    if live != expected:
        raise ChecksumError(f"{script}: checksum mismatch: expected {expected} (manifest), got {live}")
    return live


# -- process groups ------------------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    try:
        entries = [p.name for p in Path("/proc").iterdir()]
    except OSError:
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat_line = fh.read()
        except OSError:
            continue
        fields = stat_line[stat_line.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _wait_group(proc: subprocess.Popen[bytes], pgid: int, seconds: float) -> bool:
    """Reap `proc` and wait up to `seconds` for the group to empty; True when it did."""
    end = time.monotonic() + seconds
    while True:
        proc.poll()
        if not _group_members(pgid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def _end_group(proc: subprocess.Popen[bytes], pgid: int, grace: float, label: str) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_members(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _wait_group(proc, pgid, wait):
            break
    else:
        log.warning("%s: processes of group %d still alive after SIGKILL", label, pgid)
    proc.poll()


# -- running -------------------------------------------------------------------------------------------


def _read_output(stream: Any, out_log: logging.Logger, label: str, tail: collections.deque[str]) -> None:
    for raw in iter(lambda: stream.readline(MAX_LINE), b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.strip():
            tail.append(line)
        out_log.info("%s: %s", label, line)


def _read_report(path: Path) -> tuple[Status | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None, None
    status, _, summary = text.partition("\t")
    if status not in (Status.OK, Status.CHANGED):
        return None, None
    return Status(status), summary.strip() or None


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_script(
    root: Path,
    script: str,
    *,
    timeout: float | None,
    dry_run: bool,
    log: logging.Logger | None = None,
    name: str | None = None,
    state_dir: Path | None = None,
    honours_dry_run: bool = False,
    expected_checksum: str | None = None,
    kill_grace: float = KILL_GRACE,
) -> tuple[Status, str | None]:
    """Run one legacy script; see the module docstring. Never raises for the script's own failures."""
    out_log = log or logging.getLogger(__name__)
    root = Path(root)
    label = name or script
    if problem := script_name_problem(script):
        return Status.FAILED, f"script {problem}"
    path = root / script
    if path.is_symlink() or not path.is_file():
        return Status.FAILED, f"{script}: not a regular file in {root}"
    if expected_checksum is not None:
        try:
            verify_script(root, script, expected_checksum)
        except ChecksumError as exc:
            return Status.FAILED, str(exc)
    if dry_run and not honours_dry_run:
        why = "it does not declare that it honours UPDATES_DRY_RUN"
        return Status.SKIPPED, f"dry run: {script} not run ({why})"
    limit = DEFAULT_TIMEOUT if not timeout or timeout <= 0 else float(timeout)

    with tempfile.TemporaryDirectory(prefix="updates-script-") as scratch:
        report = Path(scratch) / "result"
        env = {
            "UPDATES_ROOT": str(root),
            "UPDATES_UTILS": str(root / "config" / "utils.sh"),
            "UPDATES_DRY_RUN": "1" if dry_run else "0",
            "UPDATES_NAME": label,
            "UPDATES_RESULT": str(report),
        }
        if state_dir is not None:
            env["UPDATES_STATE"] = str(state_dir)
        out_log.info("%s: running bash %s (timeout %g s)", label, script, limit)
        try:
            proc = subprocess.Popen(
                ["bash", str(path)],
                cwd=root,
                env=base_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return Status.FAILED, f"cannot start bash for {script}: {exc.strerror or exc}"
        pgid = proc.pid  # start_new_session: the child leads its own session and process group
        tail: collections.deque[str] = collections.deque(maxlen=1)
        reader = threading.Thread(
            target=_read_output, args=(proc.stdout, out_log, label, tail), name=f"script-{label}", daemon=True
        )
        reader.start()
        timed_out = False
        try:
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                out_log.error("%s: timed out after %g s; ending its process group", label, limit)
        finally:
            # Whatever happened (exit, timeout, Ctrl-C, the runner's deadline), nothing of the script stays.
            if _group_members(pgid):
                if not timed_out and proc.returncode is not None:
                    out_log.warning("%s: exited but left processes behind; ending them", label)
                _end_group(proc, pgid, kill_grace, label)
            reader.join(timeout=2)
            if reader.is_alive():
                # Something that left the process group (setsid) still holds the pipe. Closing the stream
                # now would wait for the reader's lock, so the daemon reader is left to end with the pipe.
                out_log.warning("%s: a process outside its group still holds its output open", label)
            elif proc.stdout is not None:
                with contextlib.suppress(OSError):
                    proc.stdout.close()
        reported_status, reported_summary = _read_report(report)

    code = proc.wait()
    if timed_out:
        return Status.FAILED, f"timed out after {limit:g} s"
    last = _clip(tail[-1]) if tail else "no output"
    if code < 0:
        return Status.FAILED, f"killed by {signal.Signals(-code).name}: {last}"
    if code != 0:
        return Status.FAILED, f"exit code {code}: {last}"
    return reported_status or Status.OK, reported_summary
