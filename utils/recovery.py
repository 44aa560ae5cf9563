"""What every command that takes the run lock does first: complete what a killed process left behind.

Contract: `recover(paths)` (call it holding the run lock) finishes or reverts each record in the
journal (see journal.py), then removes the temp files and staging folders our own writers name and a kill
can leave: `.manifest.json.*.tmp` beside the manifest, `.checksum.*.tmp` in module directories,
`.<module>.rollback-*` in the root, and `.*.tmp` in the state directory, in each module's state directory
and in the folders directly in it.
It returns what it recovered (one `Recovered` per record) and logs one line for each; the caller prints
and records them. `pending(paths)` lists unfinished records without touching anything (for `status`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from .digest import CHECKSUM_FILE
from .journal import Operation, Recovered, journal_dir, sweep_temps
from .journal import pending as journal_pending
from .journal import recover as journal_recover
from .paths import Paths
from .proc import run

log = logging.getLogger(__name__)

_STAGING = re.compile(r"\.[a-z][a-z0-9_]*\.rollback-")


def run_after_command(argv: Sequence[str], timeout: float) -> None:
    run(list(argv), timeout=timeout)


def recover(paths: Paths) -> list[Recovered]:
    """Finish or revert what crashed runs left, then sweep their temp files (see the docstring)."""
    done = journal_recover(journal_dir(paths.state), run_after_command)
    for item in done:
        if item.outcome == "failed":
            log.error("%s", item.line())
        else:
            log.warning("%s", item.line())
    swept = sweep_temps(paths.manifest.parent, f".{paths.manifest.name}.")
    for directory in _module_dirs(paths):
        swept += sweep_temps(directory, f".{CHECKSUM_FILE}.")
    swept += _sweep_staging(paths)
    swept += sweep_temps(paths.state, ".")
    modules_state = paths.state / "modules"
    # Two levels: a module's own files and its folders' (cache/, backups/); never deeper, into the copies
    # of a service's data that backups hold, whose file names are not ours to judge.
    for directory in _subdirs(modules_state):
        swept += sweep_temps(directory, ".")
        for inner in _subdirs(directory):
            swept += sweep_temps(inner, ".")
    for path in swept:
        log.info("removed %s, left by an interrupted run", path)
    return done


def _subdirs(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _module_dirs(paths: Paths) -> list[Path]:
    """Folders of the root that hold a module (read from disk: the manifest may be the broken part)."""
    try:
        return sorted(p for p in paths.root.iterdir() if (p / "index.py").is_file() and not p.is_symlink())
    except OSError:
        return []


def _sweep_staging(paths: Paths) -> list[Path]:
    """Rollback staging folders in the root; their journal record, if any, was handled first."""
    removed: list[Path] = []
    try:
        entries = sorted(paths.root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if _STAGING.match(entry.name) and entry.is_dir() and not entry.is_symlink():
            removed += sweep_temps(paths.root, entry.name, "")
    return removed


def pending(paths: Paths) -> list[Operation | Path]:
    """Unfinished records (an unreadable one as its path), read only."""
    return journal_pending(journal_dir(paths.state))
