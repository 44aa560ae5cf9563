"""What happens after a run, besides the summary: run history, metrics file, notifications.

Contract: `publish(...)` appends the run to `<state>/history.jsonl`, writes the Prometheus metrics file
when one is configured (not in dry-run) and sends the configured webhook and ping (not in dry-run). None
of these can change the run's result or exit code: each failure is logged as a warning and the next step
still happens. `publish_recovery` records, for a command other than `run`, the interrupted changes it
completed before its own work.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UpdatesError
from ..journal import Recovered
from ..paths import Paths
from ..results import ModuleResult, Status
from .history import append_run, make_record
from .metrics import read_previous, render_metrics, write_metrics
from .notify import NotifyConfig, notify_finished, ping_start

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
            **selection,
        )
        record["ok"] = False
        append_run(paths, record)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
    if dry_run:
        return
    try:
        report = {"ok": False, "dry_run": False, "interrupted": False, "error": str(error), "modules": []}
        notify_finished(config, report, exit_ok=False, changed=False)
    except Exception as exc:  # a notification must never decide a run
        log.warning("notification failed: %s", exc)


def publish_recovery(paths: Paths, recovered: Sequence[Recovered], *, command: str) -> None:
    """A command other than `run` that completed an interrupted change leaves a history line saying so."""
    if not recovered:
        return
    try:
        now = time.time()
        failed = any(item.outcome == "failed" for item in recovered)
        record = make_record(
            [], started=now, finished=now, exit_code=1 if failed else 0, dry_run=False,
            command=command, recovered=[item.as_dict() for item in recovered],
        )  # fmt: skip
        record["ok"] = not failed
        append_run(paths, record)
    except (OSError, UpdatesError) as exc:
        log.warning("could not append to the run history: %s", exc)
