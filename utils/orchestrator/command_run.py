"""The `run` command behind `index.py [run]`: lock, checks, the runner, the summary, publishing.

Contract: `cmd_run(paths, opts) -> int` returns the exit code (0, 1 when a module failed, 130 when
interrupted), raising an `UpdatesError` subclass for anything the operator must fix (the CLI maps it to one
line and a code). It holds the run lock throughout, refuses to start as root when other users could change
the code (StrictModes), first finishes or reverts what a killed run left (recovery.py; a recovery that
fails makes the exit code 1), treats SIGTERM like Ctrl-C, and publishes the outcome (history, metrics,
notifications) without letting that change the result. A run refused by the lock (LockHeld, exit 75) is
recorded too (history with the holder's pid and since when, the metrics' refusal time). The first real
run on a state directory without history says what it is about to change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from types import FrameType

from ..errors import LockHeld, UnsafePermissions, UpdatesError, UsageError
from ..lock import run_lock
from ..manifest import (
    Manifest,
    load_manifest,
    update_entry,
)
from ..paths import Paths
from ..permissions import FIX_HINT, enforced
from ..recovery import recover
from ..report.history import history_path
from ..report.notify import NotifyConfig
from ..report.publish import announce_start, publish, publish_lock_refusal, publish_refusal
from ..report.views import json_report, summary_text
from ..results import Status
from ..schema import utc_timestamp
from ..vcs.signing import UntrustedCode
from .command_pull import signing_gate
from .runner import Runner, RunOptions, install_problems

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


def _known_names(manifest: Manifest, names: Sequence[str], flag: str) -> frozenset[str]:
    unknown = [n for n in names if n not in manifest.entries]
    if unknown:
        raise UsageError(f"{flag}: unknown module {', '.join(unknown)}; known: {', '.join(manifest.entries)}")
    return frozenset(names)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """systemd stops a unit with SIGTERM: end like Ctrl-C, with a summary and a history record."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _refused_by_lock(paths: Paths, opts: argparse.Namespace, error: LockHeld) -> None:
    """Record a run the lock refused (history and metrics); the manifest is only read, for its settings."""
    try:
        config = NotifyConfig.parse(load_manifest(paths).raw.get("notify"))
    except UpdatesError:
        config = NotifyConfig()  # the holder may be rewriting it; the history line matters more
    selection = {"only": sorted(opts.only) if opts.only else None, "skip": sorted(opts.skip)}
    publish_lock_refusal(paths, config, error, dry_run=opts.dry_run, selection=selection,
                         metrics_file=opts.metrics_file, now=time.time())  # fmt: skip


def _first_run_notice(runner: Runner, manifest: Manifest, paths: Paths) -> None:
    """On a new install (no history yet), say once what the run is about to change, before it does."""
    enabled = [manifest.entries[n] for n in runner.planned() if manifest.entries[n].enabled]
    if not enabled:
        return
    what = "; ".join(f"{e.name} ({e.description})" if e.description else e.name for e in enabled)
    log.warning(
        "first run with the state in %s: this run changes the system: %s. "
        "`index.py run --dry-run` shows what would change without changing anything",
        paths.state, what,
    )  # fmt: skip


def cmd_run(paths: Paths, opts: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(paths))
        except LockHeld as error:
            _refused_by_lock(paths, opts, error)
            raise
        stack.enter_context(_sigterm_as_interrupt())
        # Before anything reads the manifest or a module: a killed rollback may have left either half-done.
        recovered = recover(paths)
        manifest = load_manifest(paths)
        only = _known_names(manifest, opts.only, "--only") if opts.only is not None else None
        skip = _known_names(manifest, opts.skip, "--skip")
        config = NotifyConfig.parse(manifest.raw.get("notify"))
        if only is not None or skip:
            # A hand-picked run is not the nightly check-in: healthchecks must not count it as one.
            config = dataclasses.replace(config, ping_url=None)
        selection: dict[str, object] = {"only": sorted(only) if only else None, "skip": sorted(skip)}
        if recovered:
            selection["recovered"] = [item.as_dict() for item in recovered]
        started = time.time()
        strict = enforced()
        if strict and (problems := install_problems(paths)):
            more = f" (+{len(problems) - 1} more; see `index.py verify`)" if len(problems) > 1 else ""
            refusal = UnsafePermissions(f"refusing to run as root: {problems[0]}{more}", hint=FIX_HINT)
            publish_refusal(
                paths, config, refusal, started=started, dry_run=opts.dry_run, selection=selection
            )
            raise refusal
        try:
            signed = signing_gate(paths)
        except UntrustedCode as refusal:
            publish_refusal(
                paths, config, refusal, started=started, dry_run=opts.dry_run, selection=selection
            )
            raise
        if signed:
            log.info("code: %s", signed)
        options = RunOptions(
            dry_run=opts.dry_run, only=only, skip=skip, quiet_stdout=opts.json, check_permissions=strict
        )

        def record(name: str) -> None:
            update_entry(paths.manifest, name, {"lastApplied": utc_timestamp()})

        announce_start(config, dry_run=opts.dry_run)
        runner = Runner(paths, manifest, options, on_success=record)
        if not opts.dry_run and not history_path(paths).exists():
            _first_run_notice(runner, manifest, paths)
        results = runner.run()
        finished = time.time()
        if runner.interrupted:
            code = EXIT_INTERRUPTED
        else:
            failed = any(r.status == Status.FAILED for r in results)
            code = 1 if failed or any(item.outcome == "failed" for item in recovered) else 0
        report_text = json_report(
            results,
            interrupted=runner.interrupted,
            dry_run=opts.dry_run,
            started=utc_timestamp(datetime.fromtimestamp(started, timezone.utc)),
            duration_s=round(finished - started, 3),
            exit_code=code,
        )
        if opts.json:
            sys.stdout.write(report_text)
        else:
            sys.stdout.write(
                summary_text(
                    results,
                    entrypoint=manifest.entrypoint,
                    interrupted=runner.interrupted,
                    dry_run=opts.dry_run,
                )
            )
        sys.stdout.flush()
        publish(
            paths,
            config,
            results,
            json.loads(report_text),
            started=started,
            finished=finished,
            exit_code=code,
            dry_run=opts.dry_run,
            interrupted=runner.interrupted,
            metrics_file=opts.metrics_file,
            known_modules=set(manifest.entries),
            selection=selection,
        )
    return code
