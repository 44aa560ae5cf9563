"""The `run` command behind `index.py [run]`: lock, checks, the runner, the summary, publishing.

Contract: `cmd_run(paths, opts) -> int` returns the exit code (0, 1 when a module failed, 130 when
interrupted), raising an `UpdatesError` subclass for anything the operator must fix (the CLI maps it to one
line and a code). It holds the run lock throughout, refuses to start as root when other users could change
the code (StrictModes), first finishes or reverts what a killed run left (recovery.py; a recovery that
fails makes the exit code 1), treats SIGTERM like Ctrl-C, and publishes the outcome (history, metrics,
notifications) without letting that change the result.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from types import FrameType

from ..errors import UnsafePermissions, UsageError
from ..lock import run_lock
from ..manifest import (
    Manifest,
    load_manifest,
    update_entry,
)
from ..paths import Paths
from ..permissions import FIX_HINT, enforced
from ..recovery import recover
from ..report.notify import NotifyConfig
from ..report.publish import announce_start, publish, publish_refusal
from ..report.views import json_report, summary_text
from ..results import Status
from ..schema import utc_timestamp
from .runner import Runner, RunOptions, install_problems

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


def cmd_run(paths: Paths, opts: argparse.Namespace) -> int:
    with run_lock(paths), _sigterm_as_interrupt():
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
        options = RunOptions(
            dry_run=opts.dry_run, only=only, skip=skip, quiet_stdout=opts.json, check_permissions=strict
        )

        def record(name: str) -> None:
            update_entry(paths.manifest, name, {"lastApplied": utc_timestamp()})

        announce_start(config, dry_run=opts.dry_run)
        runner = Runner(paths, manifest, options, on_success=record)
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
