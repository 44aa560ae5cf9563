"""What happens after a run, besides the summary: run history, metrics file, notifications.

Contract: `publish(...)` appends the run to `<state>/history.jsonl`, writes the Prometheus metrics file
when one is configured (not in dry-run) and sends the configured webhook and ping (not in dry-run). None
of these can change the run's result or exit code: each failure is logged as a warning and the next step
still happens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LockHeld, UpdatesError
from ..paths import Paths
from ..results import ModuleResult, Status
from .history import append_run, iso_utc, make_record
from .metrics import mark_refused, read_previous, render_metrics, write_metrics
from .notify import NotifyConfig, notify_finished, ping_start
from .views import refusal_report

log = logging.getLogger(__name__)


def announce_start(config: NotifyConfig, *, dry_run: bool) -> None:
    """The healthchecks-style `/start` ping, so a run that never finishes is noticed."""
    if dry_run:
        return
    try:
        ping_start(config)
    except Exception as exc:  # a notification must never decide a run
        log.warning("start ping failed: %s", exc)


def publish(
    paths: Paths,
    config: NotifyConfig,
    results: Sequence[ModuleResult],
    report: dict[str, Any],
    *,
    started: float,
    finished: float,
    exit_code: int,
    dry_run: bool,
    interrupted: bool,
    metrics_file: Path | None,
    known_modules: set[str],
    selection: dict[str, Any],
) -> None:
    try:
        record = make_record(
            results,
            started=started,
            finished=finished,
            exit_code=exit_code,
            dry_run=dry_run,
            interrupted=interrupted,
            **selection,
        )
        append_run(paths, record)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
    if dry_run:
        return
    target = metrics_file or (Path(config.metrics_file) if config.metrics_file else None)
    if target is not None:
        try:
            text = render_metrics(
                results,
                started,
                read_previous(target),
                run_finished=finished,
                interrupted=interrupted,
                known_modules=known_modules,
            )
            write_metrics(target, text)
        except (OSError, UpdatesError) as exc:
            log.warning("%s", exc)
    try:
        notify_finished(
            config,
            json.loads(json.dumps(report)),
            exit_ok=exit_code == 0,
            changed=any(r.status == Status.CHANGED for r in results),
        )
    except Exception as exc:  # a notification must never decide a run
        log.warning("notification failed: %s", exc)


def publish_lock_refusal(
    paths: Paths,
    config: NotifyConfig,
    error: LockHeld,
    *,
    dry_run: bool,
    selection: dict[str, Any],
    metrics_file: Path | None,
    now: float,
) -> None:
    """A run refused by the lock (exit 75, a success for the unit) leaves a history line naming the holder
    and since when, and the time of the refusal in the metrics, so a stuck run cannot hide the nights."""
    since = iso_utc(error.since) if error.since is not None else None
    try:
        record = make_record(
            [], started=now, finished=now, exit_code=error.exit_code, dry_run=dry_run, error=str(error),
            refused="lock", lock_holder={"pid": error.pid, "since": since}, **selection,
        )  # fmt: skip
        record["ok"] = False
        # Without the lock: one O_APPEND write is safe beside the holder's, a rotation would not be.
        append_run(paths, record, rotate=False)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
    target = metrics_file or (Path(config.metrics_file) if config.metrics_file else None)
    if target is not None and not dry_run:
        try:
            write_metrics(target, mark_refused(read_previous(target), now))
        except (OSError, UpdatesError) as exc:
            log.warning("%s", exc)


def publish_refusal(
    paths: Paths,
    config: NotifyConfig,
    error: UpdatesError,
    *,
    started: float,
    dry_run: bool,
    selection: dict[str, Any],
) -> None:
    """A run refused before any module ran still leaves a history line and tells the receivers."""
    try:
        record = make_record(
            [],
            started=started,
            finished=started,
            exit_code=error.exit_code,
            dry_run=dry_run,
            error=str(error),
            refused="permissions",
            **selection,
        )
        record["ok"] = False
        append_run(paths, record)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
    if dry_run:
        return
    try:
        report = refusal_report(str(error), error.exit_code, dry_run=False, refused="permissions")
        notify_finished(config, report, exit_ok=False, changed=False)
    except Exception as exc:  # a notification must never decide a run
        log.warning("notification failed: %s", exc)

