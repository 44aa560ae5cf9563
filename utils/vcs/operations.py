"""Restoring module versions: the operations behind `utils/rollback.py` (tags are made and listed by
tagging.py).

Contract: these functions raise (`RollbackError` for a refusal, `LockHeld` when a run holds the lock,
`ManifestError`, `CommandError`, `OSError`) and change nothing when they do, except where stated.
- `perform_rollback` replaces the module directory with the tagged tree under the run lock: extract from
  the object store beside the live directory, verify its checksum, swap the two directories in one rename,
  move the old one to `<state>/rollback/<name>-<UTC time>/`, then write `version` and `checksum` to the
  manifest. Any failure before that write ends puts the original directory back, untouched.
- `set_last_safe` records the current version as `lastSafeVersion`, under the run lock.
- "The run lock" is `<state>/updates.lock` of `paths`, and also the lock of the timer's state directory
  (`TIMER_STATE_DIR`, where config/updates.service and config/updates.cron keep it) when that lock file
  exists and is another file: an operator who runs a rollback by hand without `UPDATES_STATE_DIR` still
  never races the nightly run. That second lock is only taken (flock on a read-only descriptor), never
  created or written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..digest import compute_folder_sha256, read_checksum_file
from ..errors import RollbackError, UpdatesError
from ..journal import Operation, Recovered, begin, inode, journal_dir, restore_dir, write_bytes
from ..journal import remove as remove_action
from ..journal import sweep as sweep_action
from ..lock import hold_existing_lock, run_lock
from ..manifest import Entry, update_entry
from ..paths import Paths
from ..recovery import recover, run_after_command
from .git import Git, TreeFile
from .signing import load_signers, tag_signature
from .tagging import live_problem, module_entry, module_tags
from .tags import ModuleTag
from .treeswap import exchange, move_tree, write_tree

log = logging.getLogger(__name__)

# The state directory of the systemd unit and of the cron example (see config/): their runs lock it.
TIMER_STATE_DIR = Path("/var/lib/updates")
StepHook = Callable[[str], None]
RecoveryHook = Callable[[list[Recovered]], None]
# The points at which `perform_rollback` calls its `on_step` hook, in order (tests inject failures there).
STEPS = ("extracted", "swapped", "backed-up")


@dataclass(frozen=True)
class RollbackResult:
    name: str
    version: str
    previous_version: str | None
    tag: str
    checksum: str
    backup: Path | None  # None when the module already was exactly the tagged tree


def context(paths: Paths | None, git: Git | None) -> tuple[Paths, Git]:
    paths = paths or Paths.create()
    return paths, git or Git(paths.root)


@contextlib.contextmanager
def locked(
    paths: Paths, timer_state: Path | None = TIMER_STATE_DIR, on_recovered: RecoveryHook | None = None
) -> Iterator[None]:
    """The run lock of `paths`, plus the timer's when it is another, existing file (see the docstring);
    once held, what a killed run or rollback left unfinished is completed first (and, when there was
    something, handed to `on_recovered`, which records it)."""
    with run_lock(paths):
        other = timer_state / "updates.lock" if timer_state is not None else None
        if other is None or not other.is_file() or other.resolve() == paths.lock.resolve():
            _recover(paths, on_recovered)
            yield
            return
        log.debug("also taking the timer's lock %s", other)
        with hold_existing_lock(other, f"a run of the timer holds the lock {other}"):
            _recover(paths, on_recovered)
            yield


def _recover(paths: Paths, on_recovered: RecoveryHook | None) -> None:
    done = recover(paths)
    if done and on_recovered is not None:
        on_recovered(done)


def _backup_path(paths: Paths, name: str) -> Path:
    base = paths.state / "rollback" / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


class _UndoFailed(RollbackError):
    """The rollback failed and putting the original back failed too: keep every directory for the operator."""


def perform_rollback(
    name: str,
    target_version: str | None,
    *,
    force: bool = False,
    paths: Paths,
    git: Git,
    on_step: StepHook | None = None,
    timer_state: Path | None = TIMER_STATE_DIR,
    on_recovered: RecoveryHook | None = None,
) -> RollbackResult:
    """Restore module `name` to the newest tag of `target_version` (default: its lastSafeVersion)."""
    with locked(paths, timer_state, on_recovered):
        entry = module_entry(paths, name)
        target = target_version or entry.last_safe_version
        if not target:
            raise RollbackError(
                f"{name}: no version given and no lastSafeVersion in the manifest",
                hint="name one with --to VERSION (see the `list` command)",
            )
        prefix = git.prefix()
        live_dir = paths.module_dir(name)
        live_digest, edited = live_problem(live_dir)
        if edited and not force:
            raise RollbackError(
                f"{name}/ does not match its checksum file ({edited}): an edit in progress?",
                hint="commit or revert the edit, or pass --force (the backup keeps it)",
            )
        tags = module_tags(name, git)
        chosen = next((t for t in tags if t.version == target), None)
        if chosen is None:
            known = ", ".join(dict.fromkeys(t.version for t in tags)) or "none"
            raise RollbackError(f"{name}: no tag for version {target} (tagged versions: {known})")
        signers = load_signers(paths.root)
        if signers is not None and not force:
            signature = tag_signature(git, signers, f"refs/tags/{chosen.tag}")
            if not signature.good:
                raise RollbackError(
                    f"{name}: the tag {chosen.tag} is {signature.describe()}; with signing on, `run` would "
                    "refuse the restored code",
                    hint="sign the tag (rollback.py tag --sign on that commit), or pass --force",
                )
        files = git.read_tree(chosen.commit, f"{prefix}{name}")
        describe = f"rollback of {name} ({entry.version or 'no version'} -> {chosen.version})"
        record = begin(journal_dir(paths.state), "rollback", describe=describe, module=name)
        staging = _staging_dir(paths, name)
        backup = _backup_path(paths, name)
        old_inode = inode(live_dir)
        assert old_inode is not None  # module_entry checked that the directory exists
        manifest_file = Path(os.path.realpath(paths.manifest))
        try:
            # Whatever instant a kill lands, these put the previous directory and manifest back.
            record.will_undo(
                restore_dir(live_dir, old_inode, [staging / name, backup], discard=None),
                write_bytes(manifest_file, manifest_file.read_bytes()),
                remove_action(backup, unless_inode=old_inode),
                remove_action(staging),
                sweep_action(manifest_file.parent, f".{manifest_file.name}."),
            )
            record.will_clean(remove_action(staging))
            staging.mkdir(mode=0o700)
            result = _swap_in(
                entry,
                chosen,
                files=files,
                new_dir=staging / name,
                backup=backup,
                live_dir=live_dir,
                live_digest=None if edited else live_digest,
                paths=paths,
                on_step=on_step,
            )
        except BaseException as exc:
            _undo(record, name, old_inode, [staging / name, backup], cause=exc)
            raise
        record.commit(run_after_command)
        return result


def _staging_dir(paths: Paths, name: str) -> Path:
    """`<root>/.<name>.rollback-<random>`: beside the live directory (one file system, so the swap is a
    rename), and named so that recovery can sweep one a kill left behind."""
    return paths.root / f".{name}.rollback-{secrets.token_hex(4)}"


def _swap_in(
    entry: Entry,
    chosen: ModuleTag,
    *,
    files: list[TreeFile],
    new_dir: Path,
    backup: Path,
    live_dir: Path,
    live_digest: str | None,
    paths: Paths,
    on_step: StepHook | None,
) -> RollbackResult:
    step = on_step or (lambda _name: None)
    name = entry.name
    write_tree(files, new_dir, mode=live_dir.stat().st_mode & 0o7777)
    digest = compute_folder_sha256(new_dir)
    recorded = read_checksum_file(new_dir)
    if recorded != digest:
        raise RollbackError(
            f"{chosen.tag}: the tagged {name}/ fails its checksum: its checksum file says "
            f"{recorded or 'nothing'}, its files give {digest}",
            hint="that tag cannot be restored safely; pick another version",
        )
    if live_digest == digest and entry.version == chosen.version and entry.checksum in (None, digest):
        log.info("%s: already exactly %s; nothing to do", name, chosen.tag)
        return RollbackResult(name, chosen.version, entry.version, chosen.tag, digest, backup=None)
    step("extracted")
    exchange(new_dir, live_dir)  # new_dir now holds the previous directory
    step("swapped")
    move_tree(new_dir, backup)  # a copy when on another file system; the original goes with the staging
    step("backed-up")
    # lastApplied was the newer version's run: the restored one has not been applied yet.
    update_entry(paths.manifest, name, {"version": chosen.version, "checksum": digest, "lastApplied": None})
    log.info("%s: rolled back %s -> %s (%s); previous directory in %s",
             name, entry.version, chosen.version, chosen.tag, backup)  # fmt: skip
    return RollbackResult(name, chosen.version, entry.version, chosen.tag, digest, backup=backup)


def _undo(
    record: Operation, name: str, old_inode: list[int], places: list[Path], *, cause: BaseException
) -> None:
    """Put the original directory and manifest back, by the journal record the steps were taken under."""
    try:
        record.revert(run_after_command)
    except BaseException as undo_exc:
        where = next((str(p) for p in places if inode(p) == old_inode), "an unknown place")
        log.critical(
            "%s: rollback failed (%s) and undoing it failed too (%s); the original directory is in %s",
            name, cause, undo_exc, where,
        )  # fmt: skip
        raise _UndoFailed(
            f"{name}: rollback failed and could not be undone; the original directory is in {where}",
            hint="the next run or rollback retries the undo (see `index.py status`)",
        ) from cause
    log.info("%s: rollback failed (%s); the module directory is unchanged", name, cause)


def set_last_safe(
    name: str,
    *,
    paths: Paths,
    git: Git,
    timer_state: Path | None = TIMER_STATE_DIR,
    on_recovered: RecoveryHook | None = None,
) -> str:
    """Record the entry's current version as `lastSafeVersion`; returns that version."""
    with locked(paths, timer_state, on_recovered):
        entry = module_entry(paths, name)
        if not entry.version:
            raise RollbackError(f"{name}: the manifest has no version to mark safe")
        update_entry(paths.manifest, name, {"lastSafeVersion": entry.version})
    try:
        tagged = any(t.version == entry.version for t in module_tags(name, git))
    except UpdatesError as exc:
        log.debug("cannot list tags of %s: %s", name, exc)
        tagged = True  # nothing useful to warn about without git
    if not tagged:
        log.warning("%s: no tag for version %s yet, so a rollback to it would fail; run `tag %s`",
                    name, entry.version, name)  # fmt: skip
    return entry.version
