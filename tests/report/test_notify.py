"""Notifications: validation of the manifest's `notify` object, webhook and ping delivery to real receivers
on 127.0.0.1, and delivery failures (hang, HTTP 500, refused connection) that never raise."""

from __future__ import annotations

import functools
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from updates.utils.http import make_session
from updates.utils.report.notify import (
    NotifyConfig,
    notify_finished,
    ping_body,
    ping_start,
    redact,
    scrub,
    should_send_webhook,
)
from updates.utils.schema import validate_notify
from werkzeug import Request, Response

ROOT = Path(__file__).resolve().parents[2]
FAST = functools.partial(make_session, backoff=0)
REPORT: dict[str, Any] = {
    "ok": False,
    "dry_run": False,
    "modules": [
        {"name": "adblock", "status": "changed", "duration_s": 2.0, "summary": "1.2 -> 1.3", "error": None},
        {"name": "gogs", "status": "failed", "duration_s": 0.4, "summary": None, "error": "HTTP 500"},
    ],
}


def paths_hit(server: HTTPServer) -> list[tuple[str, str]]:
    return [(request.method, request.path) for request, _response in server.log]


# -- validation --------------------------------------------------------------------------------------


def test_a_full_valid_object_has_no_problems() -> None:
    obj = {
        "webhook": {"url": "https://hooks.example.org/T0/abc", "on": "change", "timeout": 4},
        "ping": "https://hc-ping.com/0b6d3f0e-uuid",
        "metrics_file": "/var/lib/node_exporter/textfile_collector/updates.prom",
    }
    assert validate_notify(obj) == []
    assert validate_notify({}) == []
    cfg = NotifyConfig.parse(obj)
    assert cfg.webhook_on == "change" and cfg.webhook_timeout == 4.0
    assert cfg.ping_url == obj["ping"] and cfg.metrics_file == obj["metrics_file"]
    assert NotifyConfig.parse({"webhook": {"url": "http://x"}}).webhook_on == "failure"
    assert NotifyConfig.parse(None) == NotifyConfig()


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([], "notify: must be an object"),
        ({"hook": {}}, "notify.hook: unknown key"),
        ({"webhook": "https://x"}, "notify.webhook: must be an object with at least a url"),
        ({"webhook": {}}, "notify.webhook.url: required"),
        ({"webhook": {"url": "ftp://x/y"}}, "notify.webhook.url: must be an http:// or https:// URL"),
        ({"webhook": {"url": "https:///nohost"}}, "notify.webhook.url: must be an http:// or https:// URL"),
        ({"webhook": {"url": "https://x", "on": "sometimes"}}, "notify.webhook.on: must be one of failure"),
        ({"webhook": {"url": "https://x", "timeout": 0}}, "notify.webhook.timeout: must be more than 0"),
        ({"webhook": {"url": "https://x", "timeout": 600}}, "notify.webhook.timeout: must be more than 0"),
        ({"webhook": {"url": "https://x", "timeout": True}}, "notify.webhook.timeout: must be a number"),
        ({"webhook": {"url": "https://x", "retries": 3}}, "notify.webhook.retries: unknown key"),
        ({"ping": 42}, "notify.ping: must be a non-empty string"),
        ({"ping": "https://hc-ping.com/a b"}, "notify.ping: must not contain whitespace"),
        ({"metrics_file": "updates.prom"}, "notify.metrics_file: must be an absolute path"),
        ({"metrics_file": "/var/lib/x/updates.txt"}, "notify.metrics_file: must end in .prom"),
    ],
)
def test_problems_name_the_key(obj: object, expected: str) -> None:
    problems = validate_notify(obj)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_on_rules() -> None:
    assert should_send_webhook("failure", exit_ok=False, changed=False)
    assert not should_send_webhook("failure", exit_ok=True, changed=True)
    assert should_send_webhook("change", exit_ok=True, changed=True)
    assert should_send_webhook("change", exit_ok=False, changed=False)
    assert not should_send_webhook("change", exit_ok=True, changed=False)
    assert should_send_webhook("always", exit_ok=True, changed=False)


def test_redact_hides_the_secret_path() -> None:
    assert redact("https://user:pw@hc-ping.com/0b6d-secret?x=1") == "https://hc-ping.com/…"


# -- delivery ----------------------------------------------------------------------------------------


def test_failed_run_posts_the_report_and_pings_fail(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    httpserver.expect_request("/ping/uuid/fail", method="POST").respond_with_data("OK")
    cfg = {"webhook": {"url": httpserver.url_for("/hook")}, "ping": httpserver.url_for("/ping/uuid")}
    outcome = notify_finished(cfg, REPORT, exit_ok=False, changed=True, session_factory=FAST)
    assert outcome == {"webhook": True, "ping": True}
    (hook_req, _), (ping_req, _) = httpserver.log
    assert hook_req.path == "/hook"
    assert hook_req.headers["Content-Type"] == "application/json"
    assert json.loads(hook_req.get_data()) == REPORT
    assert ping_req.path == "/ping/uuid/fail"
    assert ping_req.get_data(as_text=True) == "adblock: changed (1.2 -> 1.3)\ngogs: failed (HTTP 500)\n"


def test_successful_run_pings_the_plain_url_and_sends_no_failure_webhook(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ping/uuid", method="POST").respond_with_data("OK")
    cfg = NotifyConfig(webhook_url=httpserver.url_for("/hook"), ping_url=httpserver.url_for("/ping/uuid/"))
    report = {"ok": True, "modules": [{"name": "adblock", "status": "ok", "summary": None}]}
    outcome = notify_finished(cfg, report, exit_ok=True, changed=False, session_factory=FAST)
    assert outcome == {"webhook": None, "ping": True}
    assert paths_hit(httpserver) == [("POST", "/ping/uuid")]
    assert httpserver.log[0][0].get_data(as_text=True) == "adblock: ok\n"


def test_change_and_always_webhooks(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/hook")
    quiet = {"ok": True, "modules": []}
    assert notify_finished({"webhook": {"url": url, "on": "change"}}, quiet, True, False, FAST)["webhook"] is None
    assert notify_finished({"webhook": {"url": url, "on": "change"}}, quiet, True, True, FAST)["webhook"] is True
    assert notify_finished({"webhook": {"url": url, "on": "always"}}, quiet, True, False, FAST)["webhook"] is True
    assert paths_hit(httpserver) == [("POST", "/hook"), ("POST", "/hook")]


def test_ping_start(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ping/uuid/start", method="GET").respond_with_data("OK")
    assert ping_start({"ping": httpserver.url_for("/ping/uuid")}, FAST) is True
    assert ping_start({}, FAST) is None
    assert ping_start(None, FAST) is None
    assert paths_hit(httpserver) == [("GET", "/ping/uuid/start")]


def test_http_500_is_swallowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("broken", status=500)
    httpserver.expect_request("/ping/fail").respond_with_data("broken", status=500)
    cfg = {"webhook": {"url": httpserver.url_for("/hook")}, "ping": httpserver.url_for("/ping")}
    outcome = notify_finished(cfg, REPORT, exit_ok=False, changed=False, session_factory=FAST)
    assert outcome == {"webhook": False, "ping": False}
    hook_bodies = [json.loads(r.get_data()) for r, _ in httpserver.log if r.path == "/hook"]
    assert hook_bodies == [REPORT]  # received once: a POST is not repeated on 5xx


def test_a_hanging_receiver_costs_only_the_timeout() -> None:
    received: list[Any] = []

    def hang(request: Request) -> Response:
        received.append(json.loads(request.get_data()))
        time.sleep(2.5)
        return Response("too late")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook").respond_with_handler(hang)
    server.start()
    try:
        cfg = {"webhook": {"url": server.url_for("/hook"), "timeout": 0.5}}
        started = time.monotonic()
        outcome = notify_finished(cfg, REPORT, exit_ok=False, changed=False)  # the default session factory
        elapsed = time.monotonic() - started
        assert outcome == {"webhook": False, "ping": None}
        assert elapsed < 2.0, f"a 0.5 s timeout took {elapsed:.1f} s"
        assert received == [REPORT]  # it got the report, and a POST is not sent twice after a timeout
    finally:
        server.stop()


def test_refused_connection_is_swallowed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    base = f"http://127.0.0.1:{port}"
    cfg = {"webhook": {"url": f"{base}/hook", "on": "always"}, "ping": f"{base}/p"}
    started = time.monotonic()
    assert notify_finished(cfg, REPORT, exit_ok=True, changed=False, session_factory=FAST) == {
        "webhook": False,
        "ping": False,
    }
    assert ping_start(cfg, FAST) is False
    assert time.monotonic() - started < 10


def test_a_broken_session_factory_is_swallowed_too() -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("no session today")

    assert notify_finished({"ping": "http://127.0.0.1:9/p"}, REPORT, False, False, broken) == {
        "webhook": None,
        "ping": False,
    }


def test_importing_notify_does_not_import_requests() -> None:
    import subprocess

    code = (
        "import sys, runpy\n"
        f"runpy.run_path({str(ROOT / 'utils' / 'bootstrap.py')!r})['register_package']()\n"
        "import updates.utils.report.notify\n"
        "print('requests' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-B", "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_ping_body_lists_modules() -> None:
    assert ping_body({"modules": []}) == "no modules ran\n"
    assert ping_body(REPORT).splitlines()[1] == "gogs: failed (HTTP 500)"



def test_delivery_errors_never_log_the_secret_parts_of_the_url(caplog: pytest.LogCaptureFixture) -> None:
    # urllib3 quotes the path in "Max retries exceeded with url: /<uuid>/start": the uuid is the secret.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    ping = f"http://127.0.0.1:{port}/0b6d3f0e-secret-uuid"
    hook = f"http://user:hunter2@127.0.0.1:{port}/hooks/T0KEN?sig=s3cr3t"
    cfg = {"webhook": {"url": hook, "on": "always"}, "ping": ping}
    with caplog.at_level("WARNING", logger="updates.utils.report.notify"):
        assert ping_start(cfg, FAST) is False
        assert notify_finished(cfg, REPORT, exit_ok=False, changed=False, session_factory=FAST) == {
            "webhook": False,
            "ping": False,
        }
    # Only our records: urllib3's own logger has a NullHandler and never reaches the orchestrator's log.
    warnings = [r.getMessage() for r in caplog.records if r.name == "updates.utils.report.notify"]
    assert len(warnings) == 3
    for secret in ("secret-uuid", "T0KEN", "s3cr3t", "hunter2", "/start", "/fail"):
        assert not any(secret in w for w in warnings), (secret, warnings)
    assert all(f"http://127.0.0.1:{port}/…" in w for w in warnings)


def test_scrub_removes_url_path_query_and_credentials() -> None:
    url = "https://u:pw@hc.example.org/ping/abc-123?x=1"
    text = f"Invalid URL {url}; Max retries exceeded with url: /ping/abc-123?x=1 (/ping/abc-123)"
    cleaned = scrub(text, url)
    assert "abc-123" not in cleaned and "pw" not in cleaned and "x=1" not in cleaned
    assert cleaned.startswith("Invalid URL https://hc.example.org/…;")
    assert scrub("connection refused", "http://h/") == "connection refused"


def test_hanging_webhook_and_ping_receivers_cost_a_run_under_ten_seconds() -> None:
    # Receivers that accept the connection and never answer, with the default timeouts: start ping, webhook
    # and end ping together stay under 10 s (they cost about 15 s before the budgets).
    hung: list[str] = []

    def hang(request: Request) -> Response:
        hung.append(request.path)
        time.sleep(12)
        return Response("too late")

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/hook").respond_with_handler(hang)
    server.expect_request("/ping/start").respond_with_handler(hang)
    server.expect_request("/ping/fail").respond_with_handler(hang)
    server.start()
    try:
        cfg = {"webhook": {"url": server.url_for("/hook")}, "ping": server.url_for("/ping")}
        started = time.monotonic()
        assert ping_start(cfg) is False
        assert notify_finished(cfg, REPORT, exit_ok=False, changed=False) == {"webhook": False, "ping": False}
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"notifications took {elapsed:.1f} s"
        assert sorted(set(hung)) == ["/hook", "/ping/fail", "/ping/start"]
    finally:
        server.stop()
