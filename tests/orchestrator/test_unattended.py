"""The unattended-run features wired into `index.py`: scripts, history, metrics, notifications,
permission checks and SIGTERM, exercised end to end through the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from orchestrator_support import (
    CHANGED_MODULE,
    OK_MODULE,
    RECORDING_MODULE,
    add_module,
    group,
    install_copy,
    read_manifest,
    run_index,
    write_manifest,
)
from pytest_httpserver import HTTPServer
from updates.utils.orchestrator.cli import main

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="permission checks apply only to runs as root")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def script_entry(root: Path, name: str, body: str, **extra: object) -> dict:
    path = root / f"update_{name}.sh"
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    return {"name": name, "script": path.name, "checksum": hashlib.sha256(path.read_bytes()).hexdigest(), **extra}


def test_legacy_scripts_run_with_checksum_and_timeout(tmp_path, capsys):
    install = install_copy(tmp_path / "updates")
    install.joinpath("config").mkdir()
    (install / "config" / "utils.sh").write_bytes((Path(__file__).resolve().parents[2] / "config" / "utils.sh").read_bytes())
    good = script_entry(install, "good", 'echo "hello from $UPDATES_ROOT" > "$UPDATES_ROOT/marker"\n')
    bad = script_entry(install, "bad", "echo failing >&2\nexit 4\n")
    slow = script_entry(install, "slow", "sleep 30\n", timeout=0.5)
    tampered = script_entry(install, "tampered", "echo original\n")
    (install / "update_tampered.sh").write_text("#!/usr/bin/env bash\necho evil > \"$UPDATES_ROOT/evil\"\n")
    write_manifest(install, [group(["good", "bad", "slow", "tampered"]), good, bad, slow, tampered])
    proc = run_index(install, "--json")
    assert proc.returncode == 1, proc.stderr
    report = {m["name"]: m for m in json.loads(proc.stdout)["modules"]}
    assert report["good"]["status"] == "ok"
    assert (install / "marker").read_text() == f"hello from {install}\n"
    assert report["bad"]["status"] == "failed" and "4" in report["bad"]["error"]
    assert report["slow"]["status"] == "failed" and "timed out" in report["slow"]["error"]
    assert report["tampered"]["status"] == "failed" and "checksum mismatch" in report["tampered"]["error"]
    assert not (install / "evil").exists()
    assert read_manifest(install)["updates"][1]["lastApplied"]
    assert "update_good.sh" not in proc.stdout  # script output goes to the log, not the report
    assert "hello" not in proc.stdout


def test_script_entry_requires_a_checksum(tmp_path, capsys):
    entry = script_entry(tmp_path, "legacy", "true\n")
    del entry["checksum"]
    write_manifest(tmp_path, [group(["legacy"]), entry])
    assert main(["run"], root=tmp_path) == 2
    assert "updates[1].checksum: required for a script entry" in capsys.readouterr().err


def test_history_records_each_run_and_status_shows_the_last(tmp_path, capsys):
    add_module(tmp_path, "alpha", CHANGED_MODULE)
    add_module(tmp_path, "beta", "def main(args):\n    raise RuntimeError('nope')\n")
    write_manifest(tmp_path, [group(["alpha", "beta"]), {"name": "alpha"}, {"name": "beta"}])
    assert main(["run"], root=tmp_path) == 1
    assert main(["run", "--only", "alpha", "--dry-run"], root=tmp_path) == 0
    capsys.readouterr()
    lines = (tmp_path / "state" / "history.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["schema"] == 1 and first["exit_code"] == 1 and first["ok"] is False
    assert [(m["name"], m["status"]) for m in first["modules"]] == [("alpha", "changed"), ("beta", "failed")]
    assert second["dry_run"] is True and second["only"] == ["alpha"]
    assert main(["history", "--json", "-n", "1"], root=tmp_path) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert len(runs) == 1 and runs[0]["dry_run"] is True
    assert main(["history"], root=tmp_path) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) >= 3
    assert main(["status", "--json"], root=tmp_path) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["modules"]}
    assert rows["beta"]["lastRun"] == "failed"
    assert rows["alpha"]["lastRun"] == "changed"  # dry runs do not count as the last real run


def test_history_n_must_be_positive(tmp_path, capsys):
    write_manifest(tmp_path, [group([])])
    assert main(["history", "-n", "0"], root=tmp_path) == 2


def test_metrics_file_written_and_carried_over(tmp_path, capsys):
    add_module(tmp_path, "alpha", OK_MODULE)
    add_module(tmp_path, "beta", "def main(args):\n    raise RuntimeError('x')\n")
    write_manifest(tmp_path, [group(["alpha", "beta"]), {"name": "alpha"}, {"name": "beta"}])
    metrics = tmp_path / "textfile" / "updates.prom"
    metrics.parent.mkdir()
    assert main(["run", "--metrics-file", str(metrics)], root=tmp_path) == 1
    text = metrics.read_text()
    assert 'updates_module_status{module="alpha",status="ok"} 1' in text
    assert 'updates_module_status{module="beta",status="failed"} 1' in text
    assert "updates_run_ok 0" in text
    assert metrics.stat().st_mode & 0o777 == 0o644
    first_success = [line for line in text.splitlines()
                     if line.startswith('updates_module_last_success_timestamp_seconds{module="alpha"}')]
    assert len(first_success) == 1
    assert main(["run", "--only", "beta", "--metrics-file", str(metrics)], root=tmp_path) == 1
    # alpha did not run this time: its last success is carried over from the previous file.
    assert first_success[0] in metrics.read_text()


def test_unwritable_metrics_file_does_not_change_the_result(tmp_path, capsys):
    add_module(tmp_path, "alpha", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}])
    assert main(["run", "--metrics-file", str(tmp_path / "missing-dir" / "x.prom")], root=tmp_path) == 0
    assert "cannot write the metrics file" in capsys.readouterr().err


def test_notifications_from_the_manifest(tmp_path, capsys, httpserver: HTTPServer):
    add_module(tmp_path, "alpha", CHANGED_MODULE)
    add_module(tmp_path, "beta", "def main(args):\n    raise RuntimeError('broken')\n")
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    httpserver.expect_request("/ping/start").respond_with_data("ok")
    httpserver.expect_request("/ping/fail", method="POST").respond_with_data("ok")
    httpserver.expect_request("/ping", method="POST").respond_with_data("ok")
    manifest = {
        "updates": [group(["alpha", "beta"]), {"name": "alpha"}, {"name": "beta"}],
        "entrypoint": "all_services",
        "notify": {"webhook": {"url": httpserver.url_for("/hook"), "on": "failure"},
                   "ping": httpserver.url_for("/ping")},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert main(["run"], root=tmp_path) == 1
    hits = [(req.method, req.path) for req, _resp in httpserver.log]
    assert hits == [("GET", "/ping/start"), ("POST", "/hook"), ("POST", "/ping/fail")]
    posted = json.loads(httpserver.log[1][0].get_data())
    assert posted["ok"] is False
    assert [m["status"] for m in posted["modules"]] == ["changed", "failed"]
    # A dry run notifies nobody.
    httpserver.clear_log()
    assert main(["run", "--dry-run"], root=tmp_path) == 1
    assert httpserver.log == []


def test_notify_errors_refuse_the_manifest(tmp_path, capsys):
    manifest = {"updates": [group([])], "entrypoint": "all_services", "notify": {"webhook": {"url": "ftp://x"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run"], root=tmp_path) == 2
    assert "notify.webhook.url" in capsys.readouterr().err


def test_unreachable_webhook_does_not_change_the_exit_code(tmp_path, capsys):
    add_module(tmp_path, "alpha", OK_MODULE)
    manifest = {"updates": [group(["alpha"]), {"name": "alpha"}], "entrypoint": "all_services",
                "notify": {"webhook": {"url": "http://127.0.0.1:9/hook", "on": "always", "timeout": 1}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run"], root=tmp_path) == 0


@needs_root
def test_group_writable_module_is_refused_and_others_run(tmp_path, capsys):
    risky = add_module(tmp_path, "risky", RECORDING_MODULE)
    add_module(tmp_path, "fine", RECORDING_MODULE)
    (risky / "index.py").chmod(0o664)
    write_manifest(tmp_path, [group(["risky", "fine"]), {"name": "risky"}, {"name": "fine"}])
    assert main(["run", "--json"], root=tmp_path) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["modules"][0]["status"] == "failed"
    assert report["modules"][0]["error"].startswith("refusing to run: ")  # the name only once, in "name"
    assert "index.py" in report["modules"][0]["error"]
    assert not (tmp_path / "state" / "modules" / "risky" / "calls.jsonl").exists()
    assert (tmp_path / "state" / "modules" / "fine" / "calls.jsonl").exists()
    assert main(["verify"], root=tmp_path) == 1
    lines = capsys.readouterr().out.splitlines()
    # The refusal decides the module's line; nothing says "ok" about a module root will not run.
    assert lines[0] == f"risky: refused as root: {risky / 'index.py'}: writable by group (mode 0664) (checksum ok)"
    assert lines[1] == "fine: ok"
    assert lines[-1] == (
        "verify failed: 1 problem listed above; manifest.json is valid, 2 of 2 module checksums match; "
        "permissions checked (running as root)"
    )


@needs_root
def test_verify_of_a_group_writable_manifest_does_not_end_saying_valid_and_verified(tmp_path, capsys):
    add_module(tmp_path, "alpha", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}]).chmod(0o664)
    assert main(["verify"], root=tmp_path) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"permissions: {tmp_path / 'manifest.json'}: writable by group (mode 0664)"
    assert "modules verified" not in lines[-1]
    assert lines[-1].startswith("verify failed: 1 problem listed above; ")
    (tmp_path / "manifest.json").chmod(0o644)
    assert main(["verify"], root=tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "manifest.json: valid; 1 of 1 modules verified; permissions checked (running as root)"
    )


@needs_root
def test_world_writable_manifest_refuses_the_whole_run(tmp_path, capsys, httpserver: HTTPServer):
    add_module(tmp_path, "alpha", RECORDING_MODULE)
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    manifest = {"updates": [group(["alpha"]), {"name": "alpha"}], "entrypoint": "all_services",
                "notify": {"webhook": {"url": httpserver.url_for("/hook")}}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    path.chmod(0o666)
    assert main(["run"], root=tmp_path) == 2
    assert "refusing to run as root:" in capsys.readouterr().err
    assert not (tmp_path / "state" / "modules" / "alpha" / "calls.jsonl").exists()
    # The refusal is not silent: a history line and the failure webhook.
    record = json.loads((tmp_path / "state" / "history.jsonl").read_text())
    assert record["exit_code"] == 2 and record["ok"] is False and "refusing to run" in record["error"]
    assert len(httpserver.log) == 1
    assert json.loads(httpserver.log[0][0].get_data())["ok"] is False


def test_hand_picked_runs_do_not_ping(tmp_path, capsys, httpserver: HTTPServer):
    add_module(tmp_path, "alpha", OK_MODULE)
    httpserver.expect_request("/ping/start").respond_with_data("ok")
    httpserver.expect_request("/ping", method="POST").respond_with_data("ok")
    manifest = {"updates": [group(["alpha"]), {"name": "alpha"}], "entrypoint": "all_services",
                "notify": {"ping": httpserver.url_for("/ping")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert main(["run", "--only", "alpha"], root=tmp_path) == 0
    assert httpserver.log == []
    assert main(["run"], root=tmp_path) == 0
    assert [req.path for req, _ in httpserver.log] == ["/ping/start", "/ping"]


def test_json_report_started_is_the_start_time(tmp_path, capsys):
    from datetime import datetime, timezone

    add_module(tmp_path, "slow", "import time\ndef main(args):\n    time.sleep(1.5)\n")
    write_manifest(tmp_path, [group(["slow"]), {"name": "slow"}])
    assert main(["run", "--json"], root=tmp_path) == 0
    after = datetime.now(timezone.utc)
    report = json.loads(capsys.readouterr().out)
    started = datetime.strptime(report["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert (after - started).total_seconds() >= 1.0


def test_sigterm_ends_the_run_like_ctrl_c(tmp_path):
    install = install_copy(tmp_path / "updates")
    add_module(install, "sleeper", "import time\ndef main(args):\n    print('in', flush=True)\n    time.sleep(60)\n")
    add_module(install, "never", RECORDING_MODULE)
    write_manifest(install, [group(["sleeper", "never"]), {"name": "sleeper"}, {"name": "never"}])
    proc = subprocess.Popen([sys.executable, str(install / "index.py")], cwd=install, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "in"
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert out.splitlines()[0].startswith("sleeper: failed (interrupted)")
    history = json.loads((tmp_path / "state" / "history.jsonl").read_text().splitlines()[-1])
    assert history["interrupted"] is True and history["exit_code"] == 130
    assert not (tmp_path / "state" / "modules" / "never" / "calls.jsonl").exists()
