"""Turning results into what the operator reads: summary lines, JSON reports, aligned tables.

Contract: pure functions from results/rows to text; nothing here prints or touches files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .runner import FAILED, ModuleResult


def summary_line(result: ModuleResult) -> str:
    """`adblock: changed (1.2 -> 1.3) 2.1s`."""
    detail = result.error if result.status == FAILED and result.error else result.summary
    text = f"{result.name}: {result.status}"
    if detail:
        text += f" ({detail})"
    if result.status != "skipped":
        text += f" {result.duration_s:.1f}s"
    return text


def summary_text(
    results: Sequence[ModuleResult], *, entrypoint: str, interrupted: bool, dry_run: bool
) -> str:
    if not results:
        return f"nothing to do: {entrypoint} has no modules to run\n"
    lines = [summary_line(r) for r in results]
    counts = Counter(r.status for r in results)
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    tail = f"{len(results)} module{'s' if len(results) != 1 else ''}: {tally}"
    if dry_run:
        tail += " (dry run: nothing was changed)"
    if interrupted:
        tail += " (interrupted)"
    lines.append(tail)
    return "\n".join(lines) + "\n"


def json_report(results: Sequence[ModuleResult], *, interrupted: bool, dry_run: bool, **extra: Any) -> str:
    ok = not interrupted and all(r.status != FAILED for r in results)
    report = {"ok": ok, "dry_run": dry_run, "interrupted": interrupted, **extra}
    report["modules"] = [r.as_dict() for r in results]
    return json.dumps(report, indent=2) + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"
