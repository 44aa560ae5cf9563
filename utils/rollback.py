"""Version tags and rollback of update modules: the Python API and `python utils/rollback.py`.

Contract (DESIGN.md, "Rollback"):
- `tag_module(name, version=None)` tags HEAD `<name>-v<version>-<YYYYMMDD>` and returns the tag name;
  `list_available_versions(name)` returns dicts `version`, `timestamp` (UTC datetime), `tag`, `commit`,
  newest first. Both raise `RollbackError` (or `CommandError`) when they cannot do it.
- `rollback_module(name, version)`, `rollback_to_last_safe(name)` and `mark_safe(name)` return True or False
  and log why; they never raise for a refusal, and a refused or failed rollback leaves the module as it was.
  Rollback does not commit: the operator decides what git records.
- Every function takes `paths` (default: this installation) and `git` (default: `git` on PATH in the root);
  rollback and mark-safe also take the timer's lock (`timer_state`, default /var/lib/updates) when it is
  another existing file, so a hand-run rollback with another `UPDATES_STATE_DIR` never races the nightly
  run. On the command line, rollback and mark-safe first move the state an earlier version left in
  `<root>/state` (utils/state_move.py), so the lock and the backup are in the one state directory;
  `list` creates nothing.
- Command line: `list NAME [--json]`, `tag NAME [--version V] [--push]`, `rollback NAME [--to VERSION]
  [--force]`, `mark-safe NAME`. Exit 0 on success, 1 when refused or failed (one line on stderr saying
  why; for an unexpected error, where its traceback was logged), 2 for usage or manifest errors, 75 when
  a run holds the lock, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a script: become part of the package first
    import runpy

    sys.dont_write_bytecode = True
    _bootstrap = runpy.run_path(str(Path(__file__).resolve().with_name("bootstrap.py")))
    __package__ = _bootstrap["script_package"](__file__)

from .cliparse import Parser, ParserExit, report_early_error
from .errors import LockHeld, UpdatesError
from .journal import Recovered
from .log import setup_logging
from .manifest import load_manifest
from .paths import Paths
from .report.history import append_recovery
from .report.views import table
from .state_move import move_legacy_state_or_refuse
from .vcs.git import Git
from .vcs.operations import STEPS, TIMER_STATE_DIR, StepHook, context, perform_rollback, set_last_safe
from .vcs.signing import Signature
from .vcs.tagging import create_tag, module_tags, push_tag, tag_signatures

__all__ = [
    "STEPS",
    "list_available_versions",
    "main",
    "mark_safe",
    "rollback_module",
    "rollback_to_last_safe",
    "tag_module",
]

# Named for the module even when it runs as `__main__`, so that its records reach the configured handlers.
log = logging.getLogger(f"{__package__}.rollback")


def tag_module(
    name: str,
    version: str | None = None,
    *,
    paths: Paths | None = None,
    git: Git | None = None,
    now: datetime | None = None,
    sign: bool = False,
) -> str:
    """Tag HEAD for module `name` at `version` (default: the manifest's) and return the tag name; `sign`
    makes it a signed tag with the operator's git signing key."""
    paths, git = context(paths, git)
    return create_tag(name, version, paths=paths, git=git, now=now, sign=sign)


def list_available_versions(
    name: str, *, paths: Paths | None = None, git: Git | None = None
) -> list[dict[str, Any]]:
    """The module's tagged versions, newest first: dicts with `version`, `timestamp`, `tag`, `commit`,
    `signed` (True/False; None when signing is off) and `signer` (the allowed principal, or None)."""
    paths, git = context(paths, git)
    git.prefix()  # refuses outside a work tree with a clear message
    tags = module_tags(name, git)
    signatures = tag_signatures(tags, paths=paths, git=git)
    return [{**t.as_dict(), **_signed(signatures[t.tag])} for t in tags]


def _attempt(what: str, action: Callable[[], object]) -> bool:
    """Run `action`; True when it succeeded, else False with one logged line saying why (never raises)."""
    try:
        action()
    except LockHeld as exc:
        log.error("%s refused: %s", what, exc)
        return False
    except (UpdatesError, OSError) as exc:
        log.error("%s failed: %s", what, exc)
        return False
    except Exception as exc:
        # The contract promises True or False: a bug below must not escape to the caller's code. The
        # terminal gets one line, the log file the traceback.
        log.error("%s failed unexpectedly: %s: %s", what, type(exc).__name__, exc, exc_info=True)
        return False
    return True


def timer_state_dir(timer_state: Path | None = TIMER_STATE_DIR) -> Path | None:
    """The timer's state directory: `UPDATES_TIMER_STATE_DIR` when set (a timer whose drop-in moved its
    state; the test suite, which must not meet this machine's timer), else the unit's /var/lib/updates. A
    directory the caller names itself is kept."""
    if timer_state is not TIMER_STATE_DIR:
        return timer_state
    return Path(os.environ.get("UPDATES_TIMER_STATE_DIR") or TIMER_STATE_DIR)


def recorder(paths: Paths) -> Callable[[list[Recovered]], None]:
    """Records in the run history what a rollback completed of an interrupted change before its own work."""
    return lambda done: append_recovery(paths, done, command="rollback")


def rollback_module(
    name: str,
    target_version: str,
    *,
    force: bool = False,
    paths: Paths | None = None,
    git: Git | None = None,
    timer_state: Path | None = TIMER_STATE_DIR,
    _on_step: StepHook | None = None,
) -> bool:
    """Restore module `name` to the tagged `target_version`; True on success, False (logged) otherwise.

    `force` proceeds when the directory does not match its own checksum file (the backup keeps the edit).
    `timer_state` is the timer's state directory, whose lock is taken too (None: only `paths`' lock).
    `_on_step` is called with each name in `STEPS` as the rollback passes it (tests inject failures there).
    """
    paths, git = context(paths, git)
    return _attempt(
        f"{name}: rollback to {target_version}",
        lambda: perform_rollback(
            name,
            target_version,
            force=force,
            paths=paths,
            git=git,
            on_step=_on_step,
            timer_state=timer_state_dir(timer_state),
            on_recovered=recorder(paths),
        ),
    )


def rollback_to_last_safe(
    name: str,
    *,
    force: bool = False,
    paths: Paths | None = None,
    git: Git | None = None,
    timer_state: Path | None = TIMER_STATE_DIR,
) -> bool:
    """`rollback_module` to the entry's `lastSafeVersion`."""
    paths, git = context(paths, git)
    return _attempt(
        f"{name}: rollback to the last safe version",
        lambda: perform_rollback(
            name,
            None,
            force=force,
            paths=paths,
            git=git,
            timer_state=timer_state_dir(timer_state),
            on_recovered=recorder(paths),
        ),
    )


def mark_safe(
    name: str,
    *,
    paths: Paths | None = None,
    git: Git | None = None,
    timer_state: Path | None = TIMER_STATE_DIR,
) -> bool:
    """Set the entry's `lastSafeVersion` to its current `version`; True on success."""
    paths, git = context(paths, git)
    return _attempt(
        f"{name}: mark-safe",
        lambda: set_last_safe(
            name, paths=paths, git=git, timer_state=timer_state_dir(timer_state), on_recovered=recorder(paths)
        ),
    )


# -- command line -------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="rollback.py",
        description="Tag deployed module versions and roll modules back to a tagged version.",
        epilog="exit codes: 0 done, 1 refused or failed, 2 usage or manifest error, "
        "75 a run holds the lock, 130 interrupted",
    )
    parser.add_argument("--manifest", type=Path, metavar="PATH", help="manifest to read and update")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    listing = sub.add_parser("list", help="the module's tagged versions, newest first")
    listing.add_argument("name", metavar="NAME")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tag = sub.add_parser("tag", help="tag HEAD as the module's deployed version")
    tag.add_argument("name", metavar="NAME")
    tag.add_argument("--version", dest="version", help="version to tag (default: the manifest's)")
    tag.add_argument("--push", action="store_true", help="push the tag to origin")
    tag.add_argument("--sign", action="store_true", help="sign the tag with your git signing key (SSH)")
    roll = sub.add_parser("rollback", help="restore the module directory from a tag")
    roll.add_argument("name", metavar="NAME")
    roll.add_argument("--to", metavar="VERSION", help="version to restore (default: lastSafeVersion)")
    roll.add_argument("--force", action="store_true", help="even when the directory has uncommitted edits")
    safe = sub.add_parser("mark-safe", help="record the current version as lastSafeVersion")
    safe.add_argument("name", metavar="NAME")
    return parser


def _notes(paths: Paths, name: str) -> dict[str, str]:
    """version -> `current`/`last safe` remarks for the listing; empty when the manifest is unreadable."""
    try:
        entry = load_manifest(paths).entries.get(name)
    except UpdatesError:
        return {}
    notes: dict[str, list[str]] = {}
    if entry is not None:
        for label, version in (("current", entry.version), ("last safe", entry.last_safe_version)):
            if version:
                notes.setdefault(version, []).append(label)
    return {version: ", ".join(labels) for version, labels in notes.items()}


def _signed(signature: Signature | None) -> dict[str, Any]:
    """The listing's `signed` (True, False, or None when signing is off) and `signer` keys."""
    if signature is None:
        return {"signed": None, "signer": None}
    return {"signed": signature.good, "signer": signature.principal or None}


def _signed_cell(signature: Signature | None) -> str:
    if signature is None:
        return "-"
    return signature.principal if signature.good else signature.state


def cmd_list(paths: Paths, git: Git, opts: argparse.Namespace) -> int:
    git.prefix()
    tags = module_tags(opts.name, git)
    signatures = tag_signatures(tags, paths=paths, git=git)
    if opts.json:
        rows = [{**t.as_dict(), "timestamp": t.stamp.isoformat(), **_signed(signatures[t.tag])} for t in tags]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not tags:
        sys.stdout.write(f"{opts.name}: no version tags (create one with `rollback.py tag {opts.name}`)\n")
        return 0
    notes = _notes(paths, opts.name)
    seen: set[str] = set()
    cells = []
    for t in tags:
        # Only the newest tag of a version is what a rollback to it restores.
        note = notes.get(t.version, "") if t.version not in seen else "(older tag)"
        seen.add(t.version)
        when = t.stamp.strftime("%Y-%m-%d %H:%M:%S" if t.has_time else "%Y-%m-%d")
        cells.append([t.version, when, t.tag, t.commit[:12], _signed_cell(signatures[t.tag]), note])
    sys.stdout.write(table(["VERSION", "DATE (UTC)", "TAG", "COMMIT", "SIGNED", "NOTE"], cells))
    return 0


def cmd_tag(paths: Paths, git: Git, opts: argparse.Namespace) -> int:
    tag = create_tag(opts.name, opts.version, paths=paths, git=git, now=None, sign=opts.sign)
    sys.stdout.write(f"{tag}\n")
    if opts.push:
        push_tag(tag, git=git)
        sys.stdout.write(f"pushed {tag} to origin\n")
    return 0


def cmd_rollback(paths: Paths, git: Git, opts: argparse.Namespace) -> int:
    result = perform_rollback(
        opts.name, opts.to, force=opts.force, paths=paths, git=git, on_recovered=recorder(paths),
        timer_state=timer_state_dir(),
    )  # fmt: skip
    if result.backup is None:
        sys.stdout.write(f"{result.name}: already exactly {result.tag}; nothing changed\n")
        return 0
    sys.stdout.write(
        f"{result.name}: rolled back {result.previous_version or '?'} -> {result.version} ({result.tag})\n"
        f"previous directory kept in {result.backup}\n"
        f"not committed; to record it: git add {result.name} {paths.manifest.name} && "
        f'git commit -m "Roll {result.name} back to {result.version}"\n'
    )
    return 0


def cmd_mark_safe(paths: Paths, git: Git, opts: argparse.Namespace) -> int:
    version = set_last_safe(opts.name, paths=paths, git=git, on_recovered=recorder(paths),
                            timer_state=timer_state_dir())  # fmt: skip
    sys.stdout.write(f"{opts.name}: lastSafeVersion = {version}\n")
    return 0


HANDLERS = {"list": cmd_list, "tag": cmd_tag, "rollback": cmd_rollback, "mark-safe": cmd_mark_safe}


def main(argv: Sequence[str] | None = None, root: Path | None = None, git: Git | None = None) -> int:
    """Parse `argv`, run the command, and return the exit code (never raises, never exits)."""
    try:
        opts = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except ParserExit as done:
        return done.status
    except UpdatesError as exc:
        return report_early_error(exc)
    paths = Paths.create(root, manifest=opts.manifest)
    moved = None
    if opts.command in ("rollback", "mark-safe"):
        try:
            # Before the lock and the backup: both belong in the one state directory the timer uses.
            moved = move_legacy_state_or_refuse(paths)
        except UpdatesError as exc:
            return report_early_error(exc)
    log_file = setup_logging(paths.logs, -1 if opts.quiet else opts.verbose, create=opts.command != "list")
    if moved:
        log.warning("%s", moved)
    paths, git = context(paths, git)
    try:
        return HANDLERS[opts.command](paths, git, opts)
    except (UpdatesError, OSError) as exc:
        log.debug("%s failed", opts.command, exc_info=True)
        log.error("%s", exc)
        hint = getattr(exc, "hint", None)
        if hint:
            sys.stderr.write(f"hint: {hint}\n")
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        log.error("%s: interrupted", opts.command)
        return 130
    except Exception as exc:  # a bug: one line for the operator, the traceback in the log file
        where = f"; its traceback is in {log_file}" if log_file else ""
        log.error("%s: unexpected error (a bug in updates%s): %s: %s", opts.command, where,
                  type(exc).__name__, exc, exc_info=True)  # fmt: skip
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
