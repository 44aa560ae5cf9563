"""Install a whole application directory the way gogs documents its upgrades.

Contract of `install_directory(plan, new_dir, version, old_version, journal=...)`:
1. `new_dir` holds the extracted release, beside the install directory (same file system). Its binary must
   report `version` before anything installed is touched; otherwise `InstallError`, nothing changed.
2. The installed directory must hold nothing but what the release ships and the `keep` entries
   (custom/, data/, log/ as gogs documents, plus what the administrator adds); anything else would be left
   behind in the backup, so the install is refused, naming it, before anything changes. The file system
   must have room for the copies of `keep`. Then a running service is stopped and the `keep` entries are
   copied from the installed directory into `new_dir`, byte for byte, with modes, times and (when we run
   as root) owners; symbolic links inside them are copied as links.
3. The switch swaps `new_dir` and the install directory in one step (`fsutil.exchange`), so the install
   directory never goes missing, then renames the previous one to the backup
   `<backup_dir>/<name>-<old>-<stamp>` (kept, the newest `keep_backups` of them).
4. The service is started and its health polled. On failure the new directory is moved aside as
   `<name>-failed-<new>-<stamp>` (kept for diagnosis; only the newest `keep_backups` of them, each holds a
   copy of data/), the previous one put back, the service restarted, and `InstallError` says so. A service
   that cannot be stopped, or whose state the service command cannot tell (no such unit), refuses the
   upgrade before anything changes. The undo finds the previous directory by its inode, wherever the switch
   stopped, and is shielded from the module's timeout, SIGTERM and Ctrl-C, delivered once it is done.
5. With `journal`, the same undo is recorded before the first step (a running service stopped, since by
   then it may run the new version; the previous directory put back and the interrupted new one removed,
   not kept as failed; the service started), so a process
   killed at any point is reverted by the next command that takes the run lock; the record is committed
   once the health check passed.
The backup directory must be on the install directory's file system (checked before anything changes).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..deadline import shielded
from ..errors import UpdatesError
from ..fsutil import exchange, fsync_dir
from ..journal import begin, inode, put_back_dir, restore_dir
from ..journal import remove as remove_action
from ..recovery import run_after_command
from .binary import (
    InstallError,
    ServicePlan,
    VersionProbe,
    probe_version,
    prune_backups,
    raise_after_undo,
    restart_after_undo,
    service_start,
    service_stop,
    start_and_check,
    stop_for_switch,
    undo_limit,
    unique_path,
    utc_stamp,
)
from .version import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectoryInstall:
    install_dir: Path
    binary: str  # path of the binary inside the directory
    probe: VersionProbe
    backup_dir: Path
    keep: tuple[str, ...] = ("custom", "data", "log")
    keep_backups: int = 2
    service: ServicePlan | None = None


def _chown_like(source: Path, dest: Path) -> None:
    """Give everything under `dest` the owner of the matching path under `source` (root only)."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(dest):
        for name in [".", *dirs, *files]:
            path = Path(root) / name if name != "." else Path(root)
            match = source / path.relative_to(dest)
            try:
                st = match.lstat()
            except FileNotFoundError:
                continue
            os.lchown(path, st.st_uid, st.st_gid)


def carry_over(old_dir: Path, new_dir: Path, keep: tuple[str, ...]) -> list[str]:
    """Copy the `keep` entries (directories or files) from `old_dir` into `new_dir`."""
    copied = []
    for name in keep:
        source = old_dir / name
        if not source.exists():
            continue
        if source.is_symlink() or not (source.is_dir() or source.is_file()):
            raise InstallError(f"{source} is a link or special file; refusing to guess how to carry it over")
        dest = new_dir / name
        if dest.exists():
            raise InstallError(f"the new release ships {name} itself; refusing to overwrite it with yours")
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=True, copy_function=shutil.copy2)
        else:
            shutil.copy2(source, dest)
        _chown_like(source, dest)
        copied.append(name)
    return copied


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed); `path` may be a file itself."""
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = (Path(root) / name).lstat()
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def check_space(install_dir: Path, new_dir: Path, keep: tuple[str, ...]) -> None:
    """Refuse, before the service is stopped, when the copies of `keep` would not fit on the disk."""
    needed = sum(tree_bytes(install_dir / name) for name in keep if (install_dir / name).exists())
    needed += needed // 20 + 16 * 1024 * 1024  # headroom: the service writes its log while we work
    free = shutil.disk_usage(new_dir).free
    if free < needed:
        raise InstallError(
            f"not enough free space beside {install_dir} to copy {'/'.join(keep)} "
            f"({needed // 2**20} MiB needed, {free // 2**20} MiB free); nothing changed"
        )


def left_behind(old_dir: Path, new_dir: Path, keep: tuple[str, ...]) -> list[str]:
    """Top-level entries of the installed directory that the switch would leave behind (in the backup)."""
    return sorted(p.name for p in old_dir.iterdir() if p.name not in keep and not (new_dir / p.name).exists())


def check_nothing_left_behind(install_dir: Path, new_dir: Path, keep: tuple[str, ...]) -> None:
    """Refuse when the installed directory holds entries neither the release nor `keep` accounts for: the
    new version would run without them, and they would go with the backup when it is pruned."""
    left = left_behind(install_dir, new_dir, keep)
    if left:
        raise InstallError(
            f"{install_dir} holds {', '.join(left)}, which the release does not ship and the carry-over list "
            f"({', '.join(keep)}) does not name; add them to the module's 'carry_over' arg, or move them out "
            "of the directory (or delete them if they are stale); nothing changed"
        )


def _owner_like(reference: Path, tree: Path) -> None:
    """The release files take the owner of the installed directory (gogs runs as its own user)."""
    if os.geteuid() != 0:
        return
    st = reference.stat()
    for root, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            os.lchown(Path(root) / name, st.st_uid, st.st_gid)
    os.lchown(tree, st.st_uid, st.st_gid)


def install_directory(
    plan: DirectoryInstall,
    new_dir: Path,
    version: Version,
    old_version: Version | None,
    *,
    journal: Path | None = None,
) -> Path | None:
    """Switch `plan.install_dir` to `new_dir`; return the backup directory (None on a fresh install).
    With `journal` (a journal directory), a kill at any point is reverted by the next command."""
    label = f"the new {plan.binary} {version}"
    reported = probe_version(new_dir / plan.binary, plan.probe, cwd=new_dir, label=label)
    if reported != version:
        raise InstallError(f"{label} reports {reported}, expected {version}; nothing changed")
    install_dir = plan.install_dir
    parent = install_dir.parent
    if not install_dir.exists():
        new_dir.rename(install_dir)
        fsync_dir(parent)
        log.info("installed %s %s fresh", install_dir, version)
        return None
    plan.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if plan.backup_dir.stat().st_dev != install_dir.stat().st_dev:
        raise InstallError(
            f"backup_dir {plan.backup_dir} is not on the file system of {install_dir}; nothing changed"
        )
    check_nothing_left_behind(install_dir, new_dir, plan.keep)
    # Failed copies of earlier nights beyond the bound go before the space check counts what is free.
    prune_backups(plan.backup_dir, f"{install_dir.name}-failed", max(plan.keep_backups - 1, 1))
    check_space(install_dir, new_dir, plan.keep)
    service = plan.service
    # Asked before anything changes: a misnamed unit or a service command that cannot answer stops here.
    was_active = service is not None and service.manager.is_active(service.unit)
    stamp = utc_stamp()
    backup = unique_path(plan.backup_dir / f"{install_dir.name}-{old_version or 'unknown'}-{stamp}")
    failed = unique_path(plan.backup_dir / f"{install_dir.name}-failed-{version}-{stamp}")
    old_inode = inode(install_dir)
    assert old_inode is not None  # it exists: checked above
    record = None
    if journal is not None:
        record = begin(journal, "directory-install", describe=f"install of {install_dir} {version}")
        # Whatever instant a kill lands: the old directory back in place, the half-built one gone.
        # One save for the stop and the start: a record that stops the service must also start it again.
        record.after.extend(service_start(service, was_active))
        record.will_undo(
            *service_stop(service, was_active),
            # Not kept as `-failed-`: a kill says nothing against the release, and each copy holds data/.
            restore_dir(install_dir, old_inode, [backup, new_dir], discard=None),
            remove_action(new_dir, unless_inode=old_inode),
        )
    switch = Switch(install_dir, old_inode, (backup, new_dir), failed)
    try:
        if service is not None and was_active:
            stop_for_switch(service, f"{install_dir.name} {old_version or ''}".strip())
        _owner_like(install_dir, new_dir)
        copied = carry_over(install_dir, new_dir, plan.keep)
        log.info("carried over %s into the new %s", ", ".join(copied) or "nothing", install_dir.name)
        # One atomic step: the install directory always holds one whole version, never nothing.
        exchange(new_dir, install_dir)
        new_dir.rename(backup)  # new_dir holds the previous directory now
        fsync_dir(parent)
        fsync_dir(plan.backup_dir)
        if service is not None and was_active:
            start_and_check(service)
        elif service is not None:
            log.info("%s was not running; left stopped, no health check", service.unit)
    except BaseException as exc:  # undo on anything, see install.install_binary
        with shielded(f"rolling back {install_dir.name} {version}", limit=undo_limit(service)):
            note, undone = _undo(plan, switch, was_active)
            if record is not None and undone:
                record.discard()  # done here; a failed undo stays in the journal for the next command
        # Outside the shield: removing a whole data/ may take long, and the undo's time limit is for the undo.
        # Each failed copy holds one: a release that fails every night must not fill the disk.
        try:
            prune_backups(plan.backup_dir, f"{install_dir.name}-failed", plan.keep_backups)
        except OSError as prune_exc:
            log.warning("cannot prune the failed copies in %s: %s", plan.backup_dir, prune_exc)
        raise_after_undo(exc, f"{install_dir.name} {version}", note)
    if record is not None:
        record.commit(run_after_command)
    log.info("installed %s %s; previous directory kept as %s", install_dir, version, backup)
    prune_backups(plan.backup_dir, install_dir.name, plan.keep_backups)
    return backup


@dataclass(frozen=True)
class Switch:
    """Where the previous directory may be during the switch (found by its inode, whatever the instant
    the switch stopped at), and where a new directory that failed is kept."""

    install_dir: Path
    old_inode: list[int]
    places: tuple[Path, ...]
    failed: Path


def _undo(plan: DirectoryInstall, switch: Switch, was_active: bool) -> tuple[str, bool]:
    """Put the previous directory back and restart the service; (note for the message, undone)."""
    service = plan.service
    try:
        if service is not None and was_active:
            try:
                service.manager.stop(service.unit)
            except UpdatesError as exc:
                log.warning("stopping %s for the rollback failed: %s", service.unit, exc)
        moved = put_back_dir(switch.install_dir, switch.old_inode, switch.places, switch.failed)
    except (OSError, UpdatesError) as exc:
        where = next((str(p) for p in switch.places if inode(p) == switch.old_inode), "unknown")
        return f"; ROLLBACK FAILED ({exc}); the previous directory is {where}", False
    if moved and switch.failed.exists():
        note = f"; rolled back to the previous directory (the failed one is kept as {switch.failed})"
    else:
        note = "; the previous directory is in place (the new one was not switched in)"
    return note + restart_after_undo(service, was_active), True
