"""Notifications about a run: a webhook receiving the JSON run report, and a healthchecks-style ping.

Contract:
- The manifest may hold an optional top-level object
  `"notify": {"webhook": {"url": URL, "on": "failure"|"change"|"always", "timeout": SECONDS},
  "ping": URL, "metrics_file": "/abs/path.prom"}`; every key is optional. `utils.schema.validate_notify`
  states its rules (the manifest checks them on load), and `NotifyConfig.parse` turns a valid object into
  a `NotifyConfig`.
- `ping_start(cfg, session_factory)` GETs `<ping>/start` when a run begins; `notify_finished(cfg, report,
  exit_ok, changed, session_factory)` POSTs `report` as JSON to the webhook when `on` asks for it (`failure`:
  the run failed; `change`: the run failed or a module changed something; `always`), and pings `<ping>` on
  success or `<ping>/fail` on failure with a one-line summary as the body.
- Delivery never changes a run's outcome: any error (timeout, refused connection, HTTP >= 400) is logged
  and swallowed; the functions return what happened for the caller's log and for tests. Each attempt's
  connect and read timeouts together fit its time budget, and a retry is made only when the budget still
  holds a whole second attempt: the start ping costs at most `START_BUDGET` (3 s) and the end of the run
  (webhook and ping together) at most `END_BUDGET` (6 s), so dead or hanging receivers cost a run under
  10 s in all.
- URLs may carry secrets (a ping UUID, a webhook token): logs show only scheme and host, and the
  messages of delivery errors (which quote the URL or its path) are scrubbed the same way.
- `requests` is imported lazily, so importing this module costs nothing when no notification is set up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..results import Status

log = logging.getLogger(__name__)

DEFAULT_ON = "failure"
DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0
RETRIES = 1
START_BUDGET = 3.0
END_BUDGET = 6.0

SessionFactory = Callable[..., Any]


@dataclass(frozen=True)
class NotifyConfig:
    webhook_url: str | None = None
    webhook_on: str = DEFAULT_ON
    webhook_timeout: float = DEFAULT_TIMEOUT
    ping_url: str | None = None
    metrics_file: str | None = None

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | None) -> NotifyConfig:
        """A config from a valid manifest `notify` object; None or empty: nothing set up."""
        if not obj:
            return cls()
        hook = obj.get("webhook") or {}
        return cls(
            webhook_url=hook.get("url"),
            webhook_on=hook.get("on", DEFAULT_ON),
            webhook_timeout=float(hook.get("timeout", DEFAULT_TIMEOUT)),
            ping_url=obj.get("ping"),
            metrics_file=obj.get("metrics_file"),
        )


def _config(cfg: NotifyConfig | Mapping[str, Any] | None) -> NotifyConfig:
    return cfg if isinstance(cfg, NotifyConfig) else NotifyConfig.parse(cfg)


def redact(url: str) -> str:
    """`https://hc-ping.com/…`: enough to tell which receiver, without the secret path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def scrub(text: str, url: str) -> str:
    """`text` without the secret parts of `url`: exception messages of requests and urllib3 quote the URL
    or its path (`Max retries exceeded with url: /<uuid>/start`), which would put the secret in the log."""
    parts = urlsplit(url)
    secrets = [url, url.split("#", 1)[0]]
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    if tail not in ("", "/"):
        secrets += [tail, parts.path]
    if parts.query:
        secrets.append(parts.query)
    if "@" in parts.netloc:
        secrets.append(parts.netloc.rpartition("@")[0])
    for secret in sorted({s for s in secrets if s and s != "/"}, key=len, reverse=True):
        text = text.replace(secret, redact(url) if secret.startswith(f"{parts.scheme}:") else "…")
    return text


def _timeouts(timeout: float, budget: float) -> tuple[float, float]:
    """(connect, read) for one attempt: the read within `timeout`, both together within `budget`."""
    connect = min(CONNECT_TIMEOUT, timeout, budget / 2)
    return (connect, max(min(timeout, budget - connect), 0.1))


def _default_factory(**kwargs: Any) -> Any:
    from ..http import make_session  # noqa: PLC0415 - requests is loaded only when something is sent

    return make_session(**kwargs)


def _send(
    what: str,
    method: str,
    url: str,
    timeout: float,
    session_factory: SessionFactory | None,
    *,
    budget: float = START_BUDGET,
    **request: Any,
) -> bool:
    """One delivery (a retry only when two attempts fit `budget` seconds); True when the receiver answered
    2xx/3xx."""
    factory = session_factory or _default_factory
    timeouts = _timeouts(timeout, budget)
    retries = RETRIES if sum(timeouts) * (RETRIES + 1) <= budget else 0
    try:
        session = factory(timeout=timeouts, retries=retries)
        try:
            response = session.request(method, url, timeout=timeouts, allow_redirects=False, **request)
        finally:
            session.close()
    except Exception as exc:  # a notification must never change the run's outcome
        log.warning("%s to %s not delivered: %s", what, redact(url), scrub(_one_line(exc), url))
        return False
    if response.status_code >= 400:
        log.warning("%s to %s not delivered: HTTP %d", what, redact(url), response.status_code)
        return False
    log.info("%s delivered to %s (HTTP %d)", what, redact(url), response.status_code)
    return True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _ping_url(base: str, suffix: str) -> str:
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + (f"/{suffix}" if suffix else "")
    return parts._replace(path=path).geturl()


def ping_start(
    cfg: NotifyConfig | Mapping[str, Any] | None, session_factory: SessionFactory | None = None
) -> bool | None:
    """Ping `<ping>/start`; None when no ping is configured, else whether it was delivered."""
    config = _config(cfg)
    if not config.ping_url:
        return None
    return _send("start ping", "GET", _ping_url(config.ping_url, "start"), DEFAULT_TIMEOUT, session_factory,
                 budget=START_BUDGET)  # fmt: skip


def should_send_webhook(on: str, exit_ok: bool, changed: bool) -> bool:
    if on == "always":
        return True
    if on == "change":
        return changed or not exit_ok
    return not exit_ok


def ping_body(report: Mapping[str, Any]) -> str:
    """One line per module, e.g. `gogs: failed (HTTP 500)`, for the healthchecks log of the ping."""
    lines = []
    for module in report.get("modules") or ():
        if not isinstance(module, Mapping):
            continue
        detail = module.get("error") if module.get("status") == Status.FAILED else module.get("summary")
        lines.append(f"{module.get('name')}: {module.get('status')}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines) + "\n" if lines else "no modules ran\n"


def notify_finished(
    cfg: NotifyConfig | Mapping[str, Any] | None,
    report: Mapping[str, Any],
    exit_ok: bool,
    changed: bool,
    session_factory: SessionFactory | None = None,
) -> dict[str, bool | None]:
    """Send the end-of-run notifications; returns `{"webhook": ..., "ping": ...}` (None: not sent)."""
    config = _config(cfg)
    outcome: dict[str, bool | None] = {"webhook": None, "ping": None}
    ends = time.monotonic() + END_BUDGET
    send_hook = bool(config.webhook_url) and should_send_webhook(config.webhook_on, exit_ok, changed)
    if config.webhook_url and send_hook:
        # Half the budget when a ping follows, so a hanging webhook cannot starve the check-in.
        share = END_BUDGET / 2 if config.ping_url else END_BUDGET
        outcome["webhook"] = _send(
            "webhook", "POST", config.webhook_url, config.webhook_timeout, session_factory, budget=share,
            json=dict(report),
        )  # fmt: skip
    if config.ping_url:
        outcome["ping"] = _send(
            "success ping" if exit_ok else "failure ping",
            "POST",
            _ping_url(config.ping_url, "" if exit_ok else "fail"),
            DEFAULT_TIMEOUT,
            session_factory,
            budget=max(ends - time.monotonic(), 0.5),
            data=ping_body(report).encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    return outcome
