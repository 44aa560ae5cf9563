"""Prometheus textfile metrics: rendering, carrying last-success times over, escaping, atomic 0644 writes."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from updates.utils.errors import UpdatesError
from updates.utils.report.metrics import (
    escape_label,
    parse_labels,
    previous_last_success,
    read_previous,
    render_metrics,
    write_metrics,
)
from updates.utils.results import ModuleResult

STARTED = 1_760_000_000.0
FINISHED = STARTED + 42.5

# An independent reading of the exposition format, strict enough to catch malformed output.
SAMPLE = re.compile(r'^([a-z_]+)(\{((?:[a-z_]+="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (-?[0-9.e+]+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[str, list[str]]]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    meta: dict[str, list[str]] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name = line.split()[1:3]
            assert kind in ("HELP", "TYPE")
            meta.setdefault(name, []).append(kind)
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        name = match.group(1)
        assert meta.get(name) == ["HELP", "TYPE"], f"{name} has no HELP/TYPE before its samples"
        labels = tuple(
            (k, re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v))
            for k, v in LABEL.findall(match.group(3) or "")
        )
        key = (name, labels)
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(match.group(4))
    return samples, meta


def status_of(samples: dict, module: str) -> str:
    ones = [
        dict(labels)["status"]
        for (name, labels), value in samples.items()
        if name == "updates_module_status" and dict(labels)["module"] == module and value == 1
    ]
    assert len(ones) == 1, ones
    return ones[0]


def test_render_reports_status_duration_last_success_and_the_run() -> None:
    previous = (
        "# HELP updates_module_last_success_timestamp_seconds x\n"
        "# TYPE updates_module_last_success_timestamp_seconds gauge\n"
        'updates_module_last_success_timestamp_seconds{module="gogs"} 1000\n'
        'updates_module_last_success_timestamp_seconds{module="atuin"} 2000.5\n'
        'updates_module_last_success_timestamp_seconds{module="adblock"} 3000\n'
        'updates_module_last_success_timestamp_seconds{module="retired"} 4000\n'
    )
    results = [
        ModuleResult("adblock", "changed", 2.25, summary="1.2 -> 1.3"),
        ModuleResult("gogs", "failed", 0.5, error="HTTP 500"),
        {"name": "atuin", "status": "skipped", "duration_s": 0.0},
        ModuleResult("filebrowser", "ok", 1.0),
    ]
    text = render_metrics(results, STARTED, previous, run_finished=FINISHED)
    samples, meta = parse(text)
    assert all(kinds == ["HELP", "TYPE"] for kinds in meta.values())
    assert "# TYPE updates_run_ok gauge" in text.splitlines()
    assert [status_of(samples, m) for m in ("adblock", "gogs", "atuin", "filebrowser")] == [
        "changed",
        "failed",
        "skipped",
        "ok",
    ]
    # Every module has all four status series, so none goes stale when its status changes.
    assert sum(1 for (name, _labels) in samples if name == "updates_module_status") == 16
    assert samples[("updates_module_duration_seconds", (("module", "adblock"),))] == 2.25
    last = {dict(lb)["module"]: v for (n, lb), v in samples.items() if n.endswith("last_success_timestamp_seconds")}
    assert last == {"adblock": FINISHED, "filebrowser": FINISHED, "gogs": 1000, "atuin": 2000.5, "retired": 4000}
    assert samples[("updates_run_timestamp_seconds", ())] == STARTED
    assert samples[("updates_run_duration_seconds", ())] == 42.5
    assert samples[("updates_run_ok", ())] == 0

    pruned, _ = parse(render_metrics(results, STARTED, previous, run_finished=FINISHED, known_modules={"gogs"}))
    assert ("updates_module_last_success_timestamp_seconds", (("module", "retired"),)) not in pruned
    assert ("updates_module_last_success_timestamp_seconds", (("module", "gogs"),)) in pruned


def test_successive_runs_carry_the_last_success_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "updates.prom"
    write_metrics(path, render_metrics([ModuleResult("gogs", "ok", 1.0)], STARTED, None, run_finished=FINISHED))
    later = STARTED + 86400
    second = render_metrics(
        [ModuleResult("gogs", "failed", 1.0)], later, read_previous(path), run_finished=later + 5
    )
    write_metrics(path, second)
    samples, _ = parse(path.read_text())
    assert samples[("updates_module_last_success_timestamp_seconds", (("module", "gogs"),))] == FINISHED
    assert samples[("updates_run_ok", ())] == 0
    assert samples[("updates_run_timestamp_seconds", ())] == later
    assert read_previous(tmp_path / "missing.prom") is None


def test_a_clean_run_and_an_interrupted_one() -> None:
    ok, _ = parse(render_metrics([ModuleResult("a", "ok", 0.1)], STARTED, None, run_finished=FINISHED))
    assert ok[("updates_run_ok", ())] == 1
    cut, _ = parse(render_metrics([ModuleResult("a", "ok")], STARTED, None, interrupted=True))
    assert cut[("updates_run_ok", ())] == 0
    empty, _ = parse(render_metrics([], STARTED, "garbage\n{{{\n", run_finished=FINISHED))
    assert empty[("updates_run_ok", ())] == 1
    assert not any(name.startswith("updates_module") for name, _ in empty)


def test_label_values_are_escaped_and_read_back() -> None:
    weird = 'we"ird\\name\nline'
    assert escape_label(weird) == 'we\\"ird\\\\name\\nline'
    text = render_metrics([ModuleResult(weird, "ok", 1.0)], STARTED, None, run_finished=FINISHED)
    assert "\nline" not in text  # the newline inside the value is escaped, not a line break
    samples, _ = parse(text)
    assert samples[("updates_module_last_success_timestamp_seconds", (("module", weird),))] == FINISHED
    assert previous_last_success(text) == {weird: FINISHED}
    assert parse_labels('a="1", b="x\\"y"') == {"a": "1", "b": 'x"y'}
    assert parse_labels('a="unterminated') is None


def test_previous_file_with_odd_lines_is_tolerated() -> None:
    previous = (
        'updates_module_last_success_timestamp_seconds{module="a"} 10 1700000000000\n'  # with a timestamp
        'updates_module_last_success_timestamp_seconds{module="b"} NaN\n'
        'updates_module_last_success_timestamp_seconds{module="c"} notanumber\n'
        "updates_module_last_success_timestamp_seconds 5\n"
        'updates_module_last_success_timestamp_seconds_other{module="d"} 7\n'
        '  updates_module_last_success_timestamp_seconds{ module = "e" } 12\n'
    )
    assert previous_last_success(previous) == {"a": 10.0, "e": 12.0}


def test_write_is_world_readable_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "updates.prom"
    path.write_text("old\n")
    path.chmod(0o600)
    old_umask = os.umask(0o077)
    try:
        write_metrics(path, "updates_run_ok 1\n")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "updates_run_ok 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["updates.prom"]  # no temp file left behind


def test_write_into_a_missing_directory_raises_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "updates.prom"
    with pytest.raises(UpdatesError, match=r"cannot write the metrics file .*dir does not exist"):
        write_metrics(target, "x 1\n")
    assert not (tmp_path / "no").exists()


def test_modules_left_out_of_a_run_keep_the_series_of_their_last_run(tmp_path: Path) -> None:
    path = tmp_path / "updates.prom"
    nightly = [ModuleResult("gogs", "failed", 3.5), ModuleResult("atuin", "ok", 1.25), ModuleResult("old", "ok", 1)]
    write_metrics(path, render_metrics(nightly, STARTED, None, run_finished=FINISHED))
    # The operator then runs only atuin by hand; gogs' failure must stay visible until gogs runs again.
    later = STARTED + 3600
    by_hand = render_metrics(
        [ModuleResult("atuin", "changed", 2.0)],
        later,
        read_previous(path),
        run_finished=later + 2,
        known_modules={"gogs", "atuin"},  # "old" left the manifest
    )
    write_metrics(path, by_hand)
    samples, meta = parse(path.read_text())
    assert all(kinds == ["HELP", "TYPE"] for kinds in meta.values())  # still one header per metric
    assert status_of(samples, "gogs") == "failed"
    assert status_of(samples, "atuin") == "changed"
    assert sum(1 for (name, labels) in samples if name == "updates_module_status" and dict(labels)["module"] == "gogs") == 4
    assert samples[("updates_module_duration_seconds", (("module", "gogs"),))] == 3.5
    assert samples[("updates_module_duration_seconds", (("module", "atuin"),))] == 2.0
    assert not any(dict(labels).get("module") == "old" for _name, labels in samples)
    assert samples[("updates_run_ok", ())] == 1  # this run failed nothing; gogs' old failure is not this run's
    assert samples[("updates_module_last_success_timestamp_seconds", (("module", "atuin"),))] == later + 2
    # The next full run replaces the carried series.
    fixed = render_metrics([ModuleResult("gogs", "ok", 1.0)], later + 10, read_previous(path), run_finished=later + 11)
    samples, _ = parse(fixed)
    assert status_of(samples, "gogs") == "ok"
