"""Install one binary atomically, health-check its service, and undo by itself on failure.

Contract of `install_binary(plan, new_file, version, old_version)`:
1. `new_file` (a temporary file in the target's directory) must report `version` through the tool's
   version command before anything installed is touched; otherwise `InstallError`, nothing changed.
2. The current binary is copied to the backup directory (the last `keep_backups` copies are kept). The new
   binary gets the current one's mode and (when we run as root) owner.
3. A running service is stopped, the files in `extra_backups` (a database, say) are copied to the backup
   directory while it is stopped, the binary is replaced with `os.replace` (atomic; a process still running
   the old file keeps its inode), the service is started and its health endpoint polled.
   A service that was not running is left stopped (the administrator stopped it) and not polled.
4. On any failure after step 2 the previous binary and the extra files are put back (with their owners),
   the service is started again, and `InstallError` says what failed and that it was rolled back (or that
   the rollback failed too).
   An interruption (module timeout, Ctrl-C) is undone the same way and then propagates unchanged.
   The undo is shielded (`utils.deadline.shielded`): a timeout, SIGTERM or Ctrl-C that comes during it
   waits until it is done (bounded by `undo_limit`) and is delivered then.
5. With `journal`, the same undo is recorded before the service is touched (stop, files back by their
   hashes, start), so the next command that takes the run lock reverts a process killed at any point.
`probe_version` runs `<binary> <args>` (as the file's owner when that is not root: root never executes a file
another user can change; see `executables.run_executable`) and parses the tool's real output format.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from ..deadline import shielded
from ..errors import CommandError, UnsafePermissions, UpdatesError
from ..executables import run_executable
from ..fsutil import copy_file_atomic, fsync_dir
from ..journal import Action, Operation, begin, command, restore_file, sha256_file
from ..recovery import run_after_command
from .service import HealthCheck, ServiceManager, poll_health
from .version import Version

log = logging.getLogger(__name__)


class InstallError(UpdatesError):
    """The new version was not installed (and whatever had changed was undone)."""


@dataclass(frozen=True)
class VersionProbe:
    args: tuple[str, ...]
    pattern: str  # a regex whose group 1 is the version, searched in the command's output
    timeout: float = 30.0

    def parse(self, output: str) -> Version | None:
        match = re.search(self.pattern, output, re.MULTILINE)
        return Version.parse(match.group(1)) if match else None


@dataclass(frozen=True)
class ServicePlan:
    unit: str
    manager: ServiceManager
    health: HealthCheck | None


@dataclass(frozen=True)
class BinaryInstall:
    target: Path
    probe: VersionProbe
    backup_dir: Path
    keep_backups: int = 3
    service: ServicePlan | None = None
    extra_backups: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Saved:
    """A file copied aside before the switch, and the owner it must get back when restored."""

    original: Path
    copy: Path
    owner: tuple[int, int] | None

    def restore(self) -> None:
        copy_file_atomic(self.copy, self.original, owner=self.owner)


def raise_after_undo(exc: BaseException, what: str, note: str) -> NoReturn:
    """Re-raise what stopped an install that was undone: errors we can explain become one InstallError
    line; anything else (a module timeout, Ctrl-C) goes on as it was, after a log line."""
    if not isinstance(exc, (UpdatesError, OSError)):
        log.error("interrupted while installing %s%s", what, note)
        raise exc
    if isinstance(exc, StopFailed):
        # Nothing was switched: the message says so itself; only a failed restart or undo is news.
        if "ROLLBACK FAILED" in note:
            extra = note  # the whole of it: where the previous binary is now
        elif "does not come up" in note and "; " in note[1:]:
            extra = note[note.index("; ", 1) :]  # the restart's failure, not the routine put-back
        else:
            extra = ""
        raise InstallError(f"{exc}{extra}") from exc
    raise InstallError(f"{what} failed: {exc}{note}") from exc


def give_to(path: Path, owner: tuple[int, int] | None) -> None:
    """Give `path` this (uid, gid) when we may: a service running as its own user must keep access to
    its database after we wrote it as root."""
    st = path.lstat()
    if owner is None or (st.st_uid, st.st_gid) == owner:
        return
    try:
        os.chown(path, *owner, follow_symlinks=False)
    except PermissionError:
        log.warning("cannot give %s back to uid %d gid %d (not running as root)", path, *owner)


def probe_version(
    binary: Path, probe: VersionProbe, *, cwd: Path | None = None, label: str | None = None
) -> Version:
    """The version `binary` reports; `InstallError` when it does not run or prints something else.
    Messages name `label` (`the new filebrowser 2.63.23`), or the binary's path when there is none."""
    name = label or str(binary)
    try:
        # Root never runs a file another user can change: such a binary runs as its owner, or not at all.
        result = run_executable(binary, probe.args, timeout=probe.timeout, cwd=cwd, check=False)
    except UnsafePermissions as exc:
        raise InstallError(f"{name}: version check failed: {exc}") from exc
    except CommandError as exc:
        # proc's messages start with the program's path (a hidden temp file here): keep only the reason.
        reason = str(exc).split(": ", 1)[-1]
        raise InstallError(f"{name}: version check failed: {reason}") from exc
    output = (result.stdout or result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        lines = output.strip().splitlines()
        said = f": {lines[-1][:200]}" if lines else ""
        raise InstallError(
            f"{name}: version check failed: `{' '.join(probe.args)}` exit code {result.returncode}{said}"
        )
    version = probe.parse(output)
    if version is None:
        first = output.strip().splitlines()[0] if output.strip() else "no output"
        raise InstallError(f"{name}: cannot read a version from {' '.join(probe.args)!r} output: {first!r}")
    return version


def installed_version(binary: Path, probe: VersionProbe, *, cwd: Path | None = None) -> Version | None:
    """The installed tool's version, or None when it is not installed."""
    if not binary.exists():
        return None
    return probe_version(binary, probe, cwd=cwd)


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def prune_backups(backup_dir: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest `keep` backups named `<prefix>-<version>-<stamp>` in `backup_dir`."""
    pattern = re.compile(re.escape(prefix) + r"-[0-9][^/]*-(\d{8}T\d{6}Z)(?:\.(\d+))?$")

    def age(path: Path) -> tuple[str, int, int]:
        match = pattern.match(path.name)
        assert match is not None
        # Within one second, `.N` and then the inode change time order the backups.
        return (match.group(1), int(match.group(2) or 0), path.lstat().st_ctime_ns)

    found = sorted((p for p in backup_dir.iterdir() if pattern.match(p.name)), key=age)
    for old in found[: max(0, len(found) - max(keep, 1))]:
        log.info("removing old backup %s", old)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def unique_path(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... when it exists (two installs within one second)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def start_and_check(service: ServicePlan) -> None:
    service.manager.start(service.unit)
    if service.health is not None:
        poll_health(service.health)


UNDO_FILE_STEPS_S = 300.0


def undo_limit(service: ServicePlan | None) -> float:
    """How long an undo may take: each of its service steps is bounded by its own timeout (stop, start,
    health wait), plus time for putting the files back. Only an undo that hangs beyond that is cut off."""
    limit = UNDO_FILE_STEPS_S
    if service is not None:
        limit += 2 * service.manager.timeout + (service.health.timeout_s if service.health else 0.0)
    return limit


class StopFailed(InstallError):
    """The running service could not be stopped for the switch; nothing was switched."""


def stop_for_switch(service: ServicePlan, running: str) -> None:
    """Stop the running service before the switch; `StopFailed` (nothing changed) when that fails."""
    try:
        service.manager.stop(service.unit)
    except UpdatesError as exc:
        raise StopFailed(
            f"cannot stop {service.unit} for the upgrade ({exc}); nothing changed, {running} is still "
            "installed"
        ) from exc


def restart_after_undo(service: ServicePlan | None, was_active: bool) -> str:
    """Start the service again after an undo; return a note for the error message."""
    if service is None or not was_active:
        return ""
    try:
        start_and_check(service)
    except UpdatesError as exc:
        return f"; the previous version does not come up either: {exc}"
    return ""


def install_binary(
    plan: BinaryInstall,
    new_file: Path,
    version: Version,
    old_version: Version | None,
    *,
    journal: Path | None = None,
    source: str | None = None,
) -> None:
    """Install `new_file` as `plan.target`; see the module docstring for the steps and guarantees.
    `source` names where the new binary came from (the asset) in messages."""
    label = f"the new {plan.target.name} {version}" + (f" (from {source})" if source else "")
    reported = probe_version(new_file, plan.probe, label=label)
    if reported != version:
        raise InstallError(f"{label} reports {reported}, expected {version}; nothing changed")
    target = plan.target
    service = plan.service
    # Asked before anything changes: a misnamed unit or a service command that cannot answer stops here.
    was_active = service is not None and service.manager.is_active(service.unit)
    stamp = utc_stamp()
    plan.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    backup: Path | None = None
    owner: tuple[int, int] | None = None
    if target.exists():
        st = target.stat()
        owner = (st.st_uid, st.st_gid)
        give_to(new_file, owner)  # before chmod: chown clears setuid/setgid bits
        new_file.chmod(st.st_mode & 0o7777)
        backup = unique_path(plan.backup_dir / f"{target.name}-{old_version or 'unknown'}-{stamp}")
        copy_file_atomic(target, backup)
    extras = [
        (extra, unique_path(plan.backup_dir / f"{extra.name}-{old_version or 'unknown'}-{stamp}"))
        for extra in plan.extra_backups
    ]
    record = _journal_install(
        plan, journal, version=version, backup=backup, extras=extras, was_active=was_active
    )
    extra_saved: list[Saved] = []
    try:
        if service is not None and was_active:
            stop_for_switch(service, f"{target.name} {old_version or ''}".strip())
        for extra, saved in extras:
            if extra.exists():
                st = extra.stat()
                copy_file_atomic(extra, saved)
                extra_saved.append(Saved(extra, saved, (st.st_uid, st.st_gid)))
                log.info("backed up %s to %s", extra, saved)
        new_file.replace(target)
        fsync_dir(target.parent)
        if service is not None and was_active:
            start_and_check(service)
        elif service is not None:
            log.info("%s was not running; left stopped, no health check", service.unit)
    except BaseException as exc:
        # Undo on anything, a module timeout or Ctrl-C included: a stopped service or a half-done switch is
        # worse than the old version running. Errors we can explain become one InstallError line.
        with shielded(f"rolling back {target.name} {version}", limit=undo_limit(service)):
            previous = Saved(target, backup, owner) if backup else None
            note, undone = _undo_binary(plan, previous, extra_saved, was_active)
            if record is not None and undone:
                record.discard()  # done here; a failed undo stays in the journal for the next command
            raise_after_undo(exc, f"{target.name} {version}", note)
    if record is not None:
        record.commit(run_after_command)
    if backup is None:
        log.info("installed %s %s (fresh install, nothing to back up)", target, version)
    else:
        log.info("installed %s %s (previous binary kept as %s)", target, version, backup)
    prune_backups(plan.backup_dir, target.name, plan.keep_backups)
    for extra in plan.extra_backups:
        prune_backups(plan.backup_dir, extra.name, plan.keep_backups)


def _journal_install(
    plan: BinaryInstall,
    journal: Path | None,
    *,
    version: Version,
    backup: Path | None,
    extras: Sequence[tuple[Path, Path]],
    was_active: bool,
) -> Operation | None:
    """Record, before anything installed changes, how to put it all back: each file by the hash it has
    now (restored only from a copy with that hash), then the service started again."""
    if journal is None:
        return None
    target = plan.target
    record = begin(journal, "binary-install", describe=f"install of {target} {version}")
    # One save for the stop and the start: a record that stops the service must also start it again.
    record.after.extend(service_start(plan.service, was_active))
    record.will_undo(
        *service_stop(plan.service, was_active),
        restore_file(target, sha256_file(target), backup),
        *(restore_file(extra, sha256_file(extra), saved) for extra, saved in extras),
    )
    return record


def service_stop(service: ServicePlan | None, was_active: bool) -> list[Action]:
    """The journal's first undo step for a service that was running: stop it, since by the time of a
    crash it may be running the new version, which a `start` would leave running."""
    if service is None or not was_active:
        return []
    return [command([*service.manager.command, "stop", service.unit], service.manager.timeout)]


def service_start(service: ServicePlan | None, was_active: bool) -> list[Action]:
    """The journal's step after the undo: the service that was running runs again, the old version now."""
    if service is None or not was_active:
        return []
    return [command([*service.manager.command, "start", service.unit], service.manager.timeout)]


def _undo_binary(
    plan: BinaryInstall, backup: Saved | None, extra_saved: Sequence[Saved], was_active: bool
) -> tuple[str, bool]:
    """Put the previous binary and files back and restart the service; (note for the message, undone)."""
    service = plan.service
    try:
        if service is not None and was_active:
            with contextlib.suppress(UpdatesError):
                service.manager.stop(service.unit)
        if backup is not None:
            backup.restore()
        else:
            with contextlib.suppress(FileNotFoundError):
                plan.target.unlink()
        for saved in extra_saved:
            saved.restore()
    except OSError as exc:
        where = backup.copy if backup else "nowhere (fresh install)"
        return f"; ROLLBACK FAILED ({exc}); the previous binary is at {where}", False
    what = f"rolled back to the previous binary ({backup.copy.name})" if backup else "removed the new binary"
    if extra_saved:
        what += " and restored " + ", ".join(str(s.original) for s in extra_saved)
    return f"; {what}" + restart_after_undo(service, was_active), True
