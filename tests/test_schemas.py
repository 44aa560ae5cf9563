"""The shipped JSON Schemas (config/schemas/) describe what the program really writes (issue 13, item 6):
real outputs of real runs are validated against them, refusals included, and every document carries its
`schema` version and the host name."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from orchestrator_support import CHANGED_MODULE, OK_MODULE, add_module, group, write_manifest
from pytest_httpserver import HTTPServer
from updates.utils.orchestrator.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "config" / "schemas"
NAMES = ("manifest", "run-report", "webhook", "history-record", "status")


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def check(name: str, document: Any) -> None:
    jsonschema.Draft202012Validator(schema(name), format_checker=jsonschema.FormatChecker()).validate(document)


def problems(name: str, document: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(schema(name)).iter_errors(document)]


@pytest.mark.parametrize("name", NAMES)
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))


def test_the_shipped_manifest_names_its_schema_and_follows_it() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    assert (ROOT / manifest["$schema"]).resolve() == SCHEMAS / "manifest.schema.json"
    check("manifest", manifest)


@pytest.mark.parametrize(
    "entry",
    [{"name": "Bad"}, {"name": "utils"}, {"name": "a", "checksum": "ABC"}, {"name": "a", "args": {"dry_run": True}},
     {"name": "a", "timeout": 0}, {"name": "a", "lastApplied": "yesterday"}],
)
def test_the_manifest_schema_refuses_what_the_loader_refuses(entry: dict[str, Any], tmp_path: Path) -> None:
    add_module(tmp_path, "a", OK_MODULE)  # so that only the entry itself is wrong
    document = {"updates": [entry], "entrypoint": "a"}
    assert problems("manifest", document)
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    assert main(["verify"], root=tmp_path) == 2  # the program refuses it too


@pytest.fixture
def root(tmp_path: Path) -> Path:
    add_module(tmp_path, "alpha", CHANGED_MODULE)
    add_module(tmp_path, "beta", "def main(args):\n    raise OSError('boom')\n")
    add_module(tmp_path, "gamma", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha", "beta", "gamma"]), {"name": "alpha"}, {"name": "beta"},
                              {"name": "gamma", "enabled": False}])  # fmt: skip
    return tmp_path


def stdout_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def history_lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "state" / "history.jsonl").read_text().splitlines()]


def test_run_reports_history_and_status_follow_their_schemas(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--json"], root=root) == 1
    report = stdout_json(capsys)
    check("run-report", report)
    assert report["schema"] == 1 and report["host"] == socket.gethostname() and report["exit_code"] == 1
    assert main(["run", "--json", "--dry-run", "--only", "alpha"], root=root) == 0
    check("run-report", stdout_json(capsys))
    # Refused by the lock: the same shape on stdout, and a history record naming the holder.
    with open(root / "state" / "updates.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert main(["run", "--json"], root=root) == 75
        refused = stdout_json(capsys)
        check("run-report", refused)
        assert refused["refused"] == "lock" and refused["modules"] == [] and refused["exit_code"] == 75
        assert main(["status", "--json"], root=root) == 0
        status = stdout_json(capsys)
        check("status", status)
        assert status["running"]["pid"] == os.getpid()
    # A usage error under --json: the same shape again.
    assert main(["run", "--json", "--only", "nope"], root=root) == 2
    usage = stdout_json(capsys)
    check("run-report", usage)
    assert usage["exit_code"] == 2 and usage["error"].startswith("--only: unknown module nope")
    records = history_lines(root)
    assert [r["exit_code"] for r in records] == [1, 0, 75]
    for record in records:
        check("history-record", record)
        assert record["host"] == socket.gethostname()
    assert main(["history", "--json"], root=root) == 0
    history = stdout_json(capsys)
    assert history["schema"] == 1 and history["host"] == socket.gethostname()
    for record in history["runs"]:
        check("history-record", record)
    assert main(["status", "--json"], root=root) == 0
    status = stdout_json(capsys)
    check("status", status)
    assert status["schema"] == 1 and status["running"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="permission checks apply only to runs as root")
def test_a_permission_refusal_follows_the_schemas(
    root: Path, capsys: pytest.CaptureFixture[str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["notify"] = {"webhook": {"url": httpserver.url_for("/hook")}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "manifest.json").chmod(0o666)
    assert main(["run", "--json"], root=root) == 2
    check("run-report", stdout_json(capsys))
    (record,) = history_lines(root)
    check("history-record", record)
    assert record["refused"] == "permissions"
    (body,) = [json.loads(request.get_data()) for request, _ in httpserver.log]
    check("webhook", body)
    assert body["host"] == socket.gethostname() and body["refused"] == "permissions"


def test_the_webhook_body_follows_its_schema_and_names_the_host(
    root: Path, capsys: pytest.CaptureFixture[str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["notify"] = {"webhook": {"url": httpserver.url_for("/hook"), "on": "always"}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run"], root=root) == 1
    (body,) = [json.loads(request.get_data()) for request, _ in httpserver.log]
    check("webhook", body)
    assert body["host"] == socket.gethostname() and body["schema"] == 1
    assert [m["status"] for m in body["modules"]] == ["changed", "failed", "skipped"]
