"""Prometheus textfile-collector metrics of the last run.

Contract:
- `render_metrics(results, run_started, previous_text)` returns the text of the `.prom` file; it is pure.
  Metrics (all gauges, each with HELP and TYPE lines):
  - `updates_module_status{module,status}`: for each module of this run, one series per status in
    `ok`, `changed`, `failed`, `skipped`; the one it ended with is 1, the others 0. (The enum pattern:
    series never go stale between runs, and `updates_module_status{status="failed"} == 1` is the alert.)
  - `updates_module_duration_seconds{module}`: wall time of the module in this run.
  - A module that this run did not consider (a `--only` run by hand) keeps the status and duration series of
    the run that last did, read back from `previous_text`: the `status` command shows the same, and a
    failure alert does not vanish because the operator ran another module by hand.
  - `updates_module_last_success_timestamp_seconds{module}`: epoch seconds of the end of the last run in
    which the module ended `ok` or `changed`. For modules that did not succeed this run (failed, skipped, or
    not part of it), the value is carried over from `previous_text`, the file the last run wrote, so
    `time() - updates_module_last_success_timestamp_seconds > 2 * 86400` alerts on a module stuck failing.
  - `updates_run_timestamp_seconds` (start of the run), `updates_run_duration_seconds`, `updates_run_ok`
    (1 when no module failed and the run was not interrupted).
  - `updates_run_refused_timestamp_seconds`: when a run was last refused because another held the lock
    (exit 75, which the unit counts as success); `mark_refused(previous_text, when)` sets it in the last
    file and render_metrics carries it over. `updates_run_refused_timestamp_seconds >
    updates_run_timestamp_seconds` alerts on a stuck run hiding the timer's activations.
- Label values are escaped as the exposition format requires (backslash, double quote, newline).
- `write_metrics(path, text)` replaces the file atomically with mode 0644, so node_exporter (not root) can
  read it and never sees a half-written file; its temp file does not end in `.prom`, which the collector
  ignores.
- Dry runs change nothing and should not be rendered: their successes did not happen.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UpdatesError
from ..fsutil import atomic_write_text
from ..results import Status

STATUSES = tuple(Status)
SUCCESS = Status.succeeded()
LAST_SUCCESS = "updates_module_last_success_timestamp_seconds"
REFUSED = "updates_run_refused_timestamp_seconds"
FILE_MODE = 0o644

_HELP = {
    "updates_module_status": "Status of each module in the last run (1 for the status it ended with).",
    "updates_module_duration_seconds": "Wall time of each module in the last run.",
    LAST_SUCCESS: "End of the last run in which the module ended ok or changed (Unix time).",
    "updates_run_timestamp_seconds": "Start of the last run (Unix time).",
    "updates_run_duration_seconds": "Wall time of the last run.",
    "updates_run_ok": "1 when no module failed in the last run and it was not interrupted, else 0.",
    REFUSED: "Last time a run was refused because another run held the lock (Unix time).",
}

# One sample line: name, optional {labels}, value, optional timestamp.
_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL_RE = re.compile(r'\s*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def parse_labels(text: str) -> dict[str, str] | None:
    """`module="a",status="ok"` -> dict; None when the text is not a well-formed label set."""
    labels: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _LABEL_RE.match(text, pos)
        if not match:
            return None
        labels[match.group("key")] = unescape_label(match.group("value"))
        pos = match.end()
    return labels


def _previous_samples(previous_text: str | None, metric: str) -> Iterable[tuple[dict[str, str], float]]:
    """(labels, value) of each well-formed, finite sample of `metric` with a `module` label."""
    for raw in (previous_text or "").splitlines():
        line = raw.strip()
        if not line.startswith(metric):
            continue
        match = _SAMPLE_RE.match(line)
        if not match or match.group("name") != metric:
            continue
        labels = parse_labels(match.group("labels") or "")
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        if labels and "module" in labels and math.isfinite(value):
            yield labels, value


def previous_last_success(previous_text: str | None) -> dict[str, float]:
    """Per module, the last success time recorded in an earlier metrics file; malformed lines are ignored."""
    return {labels["module"]: value for labels, value in _previous_samples(previous_text, LAST_SUCCESS)}


def previous_results(previous_text: str | None) -> dict[str, dict[str, Any]]:
    """Per module, `{"name", "status", "duration_s"}` as an earlier metrics file recorded them."""
    found: dict[str, dict[str, Any]] = {}
    for labels, value in _previous_samples(previous_text, "updates_module_status"):
        if value == 1 and labels.get("status"):
            name = labels["module"]
            found[name] = {"name": name, "status": labels["status"], "duration_s": None}
    for labels, value in _previous_samples(previous_text, "updates_module_duration_seconds"):
        if labels["module"] in found:
            found[labels["module"]]["duration_s"] = value
    return found


def _as_dict(result: Any) -> Mapping[str, Any]:
    return result if isinstance(result, Mapping) else result.as_dict()


def render_metrics(
    results: Iterable[Any],
    run_started: float,
    previous_text: str | None,
    *,
    run_finished: float | None = None,
    interrupted: bool = False,
    known_modules: Collection[str] | None = None,
) -> str:
    """The metrics file for a run; see the module docstring.

    `results` are `ModuleResult`s or dicts (`name`, `status`, `duration_s`). `run_finished` defaults to now.
    `known_modules`, when given, drops carried-over series of modules no longer in the manifest.
    """
    finished = time.time() if run_finished is None else run_finished
    modules: dict[str, Mapping[str, Any]] = {}
    for result in results:
        data = _as_dict(result)
        modules[str(data["name"])] = data  # a module listed twice counts with its last result
    last_success = previous_last_success(previous_text)
    for name, data in modules.items():
        if data.get("status") in SUCCESS:
            last_success[name] = finished
    if known_modules is not None:
        last_success = {k: v for k, v in last_success.items() if k in known_modules or k in modules}
    run_ok = not interrupted and all(data.get("status") != Status.FAILED for data in modules.values())
    carried = previous_results(previous_text)
    for name in sorted(carried):
        if name not in modules and (known_modules is None or name in known_modules):
            modules[name] = carried[name]

    out: list[str] = []

    def header(name: str) -> None:
        out.append(f"# HELP {name} {_HELP[name]}")
        out.append(f"# TYPE {name} gauge")

    header("updates_module_status")
    for name, data in modules.items():
        for status in STATUSES:
            current = int(data.get("status") == status)
            out.append(f"updates_module_status{_labels(module=name, status=status)} {current}")
        if data.get("status") not in STATUSES:
            out.append(f"updates_module_status{_labels(module=name, status=str(data.get('status')))} 1")
    header("updates_module_duration_seconds")
    for name, data in modules.items():
        duration = data.get("duration_s")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            out.append(f"updates_module_duration_seconds{_labels(module=name)} {_number(duration)}")
    header(LAST_SUCCESS)
    for name in sorted(last_success):
        out.append(f"{LAST_SUCCESS}{_labels(module=name)} {_number(last_success[name])}")
    header("updates_run_timestamp_seconds")
    out.append(f"updates_run_timestamp_seconds {_number(run_started)}")
    header("updates_run_duration_seconds")
    out.append(f"updates_run_duration_seconds {_number(round(max(finished - run_started, 0.0), 3))}")
    header("updates_run_ok")
    out.append(f"updates_run_ok {int(run_ok)}")
    refused = previous_refused(previous_text)
    if refused is not None:
        header(REFUSED)
        out.append(f"{REFUSED} {_number(refused)}")
    return "\n".join(out) + "\n"


def previous_refused(previous_text: str | None) -> float | None:
    """The last lock refusal an earlier metrics file recorded, or None."""
    for raw in (previous_text or "").splitlines():
        match = _SAMPLE_RE.match(raw.strip())
        if match and match.group("name") == REFUSED and not match.group("labels"):
            try:
                value = float(match.group("value"))
            except ValueError:
                return None
            return value if math.isfinite(value) else None
    return None


def mark_refused(previous_text: str | None, when: float) -> str:
    """The last metrics file with `updates_run_refused_timestamp_seconds` set to `when` (pure)."""
    kept = [
        line for line in (previous_text or "").splitlines()
        if not (line.startswith(REFUSED) or line.startswith((f"# HELP {REFUSED} ", f"# TYPE {REFUSED} ")))
    ]  # fmt: skip
    kept += [f"# HELP {REFUSED} {_HELP[REFUSED]}", f"# TYPE {REFUSED} gauge", f"{REFUSED} {_number(when)}"]
    return "\n".join(kept) + "\n"


def read_previous(path: Path) -> str | None:
    """The metrics file an earlier run wrote, or None when there is none or it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def write_metrics(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, world-readable (0644). Raises UpdatesError when it cannot."""
    path = Path(path)
    try:
        atomic_write_text(path, text, mode=FILE_MODE)
    except OSError as exc:
        # The hint is often dropped by callers that log one line: name the usual cause in the message.
        missing = "" if path.parent.is_dir() else f" (the directory {path.parent} does not exist)"
        raise UpdatesError(
            f"cannot write the metrics file {path}: {exc.strerror or exc}{missing}",
            hint="create its directory (node_exporter's --collector.textfile.directory) or fix the path",
        ) from exc
