"""Write or check module checksums: `python utils/checksummer.py [--check] [NAME ...]`.

Contract: without `--check`, for each named module (default: every module in the manifest) it writes the
live digest to `<module>/checksum` and to the manifest's `checksum` field, atomically and only where they
differ, holding the run lock (exit 75 while a run holds it). The writes of one invocation are journaled
(see journal.py): a kill at any point leaves every checksum file and the manifest as they were before or
as they are after, and the next command that takes the lock finishes or reverts the rest, sweeping the
temp files a kill left in module directories before anything is hashed. With `--check` it changes
nothing, prints each mismatch, and exits 1 when there is any. Exit 2 for an invalid manifest or an
unknown name.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: become part of the package first
    import runpy

    _bootstrap = runpy.run_path(str(Path(__file__).resolve().with_name("bootstrap.py")))
    __package__ = _bootstrap["script_package"](__file__)

from . import journal
from .digest import CHECKSUM_FILE, compute_folder_sha256, read_checksum_file, script_checksum
from .errors import ChecksumError, ManifestError, UpdatesError
from .fsutil import atomic_write_text
from .lock import run_lock
from .manifest import load_manifest, update_entry
from .paths import Paths
from .recovery import recover, run_after_command
from .report.history import append_recovery


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="checksummer.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify; exit 1 on any mismatch")
    parser.add_argument("--manifest", type=Path, default=None, help="manifest to read and update")
    parser.add_argument("names", nargs="*", metavar="NAME", help="modules to process (default: all)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    opts = _parse(sys.argv[1:] if argv is None else argv)
    paths = Paths.create(root, manifest=opts.manifest)
    try:
        if opts.check:
            return _process(paths, opts)
        # Writing takes the run lock: a run records lastApplied in the same manifest.
        with run_lock(paths):
            append_recovery(paths, recover(paths), command="checksummer")  # recover() logs each one
            return _process(paths, opts)
    except UpdatesError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug: one line rather than a traceback over the operator's terminal
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc} (a bug in updates; report it)\n")
        return 1


def _process(paths: Paths, opts: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(paths)
    except ManifestError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    modules = {e.name: e for e in manifest.modules()}
    unknown = [n for n in opts.names if n not in modules]
    if unknown:
        known = ", ".join(modules) or "none"
        sys.stderr.write(f"error: not a module in the manifest: {', '.join(unknown)}; known: {known}\n")
        return 2
    problems = 0
    for name in opts.names or modules:
        entry = modules[name]
        directory = paths.module_dir(name)
        try:
            if entry.script:  # a legacy script: its digest lives only in the manifest
                live, recorded = script_checksum(paths.root / entry.script), entry.checksum
            else:
                live, recorded = compute_folder_sha256(directory), read_checksum_file(directory)
        except ChecksumError as exc:
            sys.stdout.write(f"{name}: error: {exc}\n")
            problems += 1
            continue
        if opts.check:
            # A module's manifest checksum may be null (its checksum file decides); a script's may not.
            sources = [("manifest", entry.checksum)] if entry.script else [("checksum file", recorded)]
            if not entry.script and entry.checksum is not None:
                sources.append(("manifest", entry.checksum))
            what = "file" if entry.script else "directory"
            for source, value in sources:
                if value != live:
                    sys.stdout.write(f"{name}: {source} says {value or 'nothing'}, {what} is {live}\n")
                    problems += 1
            continue
        changed = []
        try:
            changed = _seal(
                paths, name, live,
                file_stale=not entry.script and recorded != live, manifest_stale=entry.checksum != live,
            )  # fmt: skip
        except (OSError, UpdatesError) as exc:
            sys.stdout.write(f"{name}: error: cannot write: {exc}\n")
            problems += 1
            continue
        what = "updated " + " and ".join(changed) if changed else "unchanged"
        sys.stdout.write(f"{name}: {live} ({what})\n")
    if opts.check and not problems:
        sys.stdout.write(f"all {len(opts.names or modules)} checksums current\n")
    return 1 if problems else 0


def _seal(paths: Paths, name: str, live: str, *, file_stale: bool, manifest_stale: bool) -> list[str]:
    """Write `live` to what is stale of the checksum file and the manifest entry, as one journaled change."""
    if not (file_stale or manifest_stale):
        return []
    checksum_file = paths.module_dir(name) / CHECKSUM_FILE
    manifest_file = Path(os.path.realpath(paths.manifest))
    with journal.operation(
        journal.journal_dir(paths.state), "checksum", describe=f"checksum update of {name}", module=name,
        run=run_after_command,
    ) as record:  # fmt: skip
        record.will_undo(
            journal.write_bytes(checksum_file, _read_or_none(checksum_file)),
            journal.write_bytes(manifest_file, manifest_file.read_bytes()),
            journal.sweep(checksum_file.parent, f".{CHECKSUM_FILE}."),
            journal.sweep(manifest_file.parent, f".{manifest_file.name}."),
        )
        changed = []
        if file_stale:
            atomic_write_text(checksum_file, live + "\n", follow_symlinks=False)
            changed.append("checksum file")
        if manifest_stale:
            update_entry(paths.manifest, name, {"checksum": live})
            changed.append("manifest")
        record.commit(run_after_command)
    return changed


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
