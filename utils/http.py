"""The one HTTP session factory for modules that talk to the network.

Contract of `make_session()`:
- a `User-Agent` naming this project;
- a default (connect, read) timeout on every request unless the caller passes its own;
- bounded retries with exponential backoff on connection errors, 429 and 5xx, honouring `Retry-After` up
  to `MAX_RETRY_AFTER` seconds; an answer that asks for a longer wait (`Retry-After`, or a used-up rate
  limit whose `x-ratelimit-reset` is further away) is returned at once, not retried, so the caller can
  say "rate limited until ..." instead of parking a nightly run for minutes per module;
- TLS verification always on (`verify=False` is refused);
- an optional bearer token sent only to `token_origin` (the API's scheme, host and port), never to
  another origin, and never carried over a redirect to another host.

URLs that reach a message or a log go through `scrub_url` / `scrub_text` (query string, fragment and
credentials removed: a signed download URL's `?sig=...` is a bearer secret), and `connection_problem` turns
a connection failure into words ("cannot reach api.github.com: connection refused"); urllib3's own retry
warnings are scrubbed by a filter on its logger.

`requests` is imported here and only here: the rest of the code takes its types (`Session`, `Response`)
and exceptions (`RequestException`, `Timeout`) from this module, and code that may run without network
(notifications) imports this module lazily, so commands that need no network do not pay for it.
"""
from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

Session = requests.Session
Response = requests.Response
RequestException = requests.RequestException
Timeout = requests.Timeout
# What reading a streamed body (`response.raw`) raises when the connection breaks: urllib3's own errors.
StreamError = urllib3.exceptions.HTTPError

USER_AGENT = "updates-orchestrator/1.0 (+self-hosted update runner)"
DEFAULT_TIMEOUT = (10.0, 60.0)
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 60.0


def scrub_url(url: str) -> str:
    """`url` without query string, fragment and user:password (what may be a secret), for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_QUERY_RE = re.compile(r"\?[^\s'\"()<>]*")
_USERINFO_RE = re.compile(r"(://)[^/\s@'\"]*@")


def scrub_text(text: str) -> str:
    """`text` with every query string and every `user:password@` of the URLs in it removed."""
    return _USERINFO_RE.sub(r"\1", _QUERY_RE.sub("?<query removed>", text))


class _ScrubFilter(logging.Filter):
    """urllib3 logs retries and requests with the full URL (a signed query included): scrub it first."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):  # a record that cannot be formatted is left as it is
            record.msg, record.args = scrub_text(record.getMessage()), None
        return True


for _name in ("connectionpool", "connection", "poolmanager", "response", "util.retry"):
    logging.getLogger(f"urllib3.{_name}").addFilter(_ScrubFilter())


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, its causes and contexts, and the exceptions urllib3 keeps in its arguments (`reason`)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if any(item is s for s in seen):
            continue
        seen.append(item)
        for nxt in (item.__cause__, item.__context__, getattr(item, "reason", None), *item.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return seen


def connection_problem(exc: BaseException) -> str:
    """A failed request's cause in a few words: `name resolution failed`, `connection refused`, `timed
    out`, `connection reset`, `connection broken off`, `TLS error`; `connection failed` otherwise."""
    chain = _causes(exc)
    checks: list[tuple[tuple[type[BaseException], ...], str]] = [
        ((socket.gaierror, urllib3.exceptions.NameResolutionError), "name resolution failed"),
        ((ConnectionRefusedError,), "connection refused"),
        ((requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError, socket.timeout), "timed out"),
        ((ConnectionResetError, BrokenPipeError), "connection reset"),
        ((requests.exceptions.SSLError, urllib3.exceptions.SSLError), "TLS error"),
        (
            (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError),
            "connection broken off",
        ),
    ]
    for types, words in checks:
        if any(isinstance(item, types) for item in chain):
            if words == "TLS error":
                detail = next((str(i) for i in chain if "CERTIFICATE_VERIFY_FAILED" in str(i)), "")
                return "TLS certificate not trusted" if detail else words
            return words
    return "connection failed"


def cannot_reach(url: str, exc: BaseException, log: logging.Logger | None = None) -> str:
    """`cannot reach <host>: <problem>` for the host that failed (after a redirect, the one redirected to);
    the scrubbed detail goes to `log` (for the log file only)."""
    failed = getattr(getattr(exc, "request", None), "url", None)
    url = failed if isinstance(failed, str) and failed else url
    parts = urlsplit(url)
    where = parts.hostname or scrub_url(url)
    if parts.port:
        where = f"{where}:{parts.port}"
    problem = connection_problem(exc)
    if log is not None:
        log.info("request to %s failed: %s", scrub_url(url), scrub_text(f"{type(exc).__name__}: {exc}"))
    return f"cannot reach {where}: {problem}"


def long_wait(headers: Any, now: float | None = None) -> float | None:
    """Seconds a rate-limit or overload answer asks us to wait when that is longer than
    `MAX_RETRY_AFTER` (then retrying within this run is pointless), else None."""
    now = time.time() if now is None else now
    wait: float | None = None
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    if retry_after:
        try:
            wait = float(retry_after)
        except ValueError:
            wait = None
    if wait is None and headers.get("x-ratelimit-remaining") == "0":
        try:
            wait = float(headers.get("x-ratelimit-reset", "")) - now
        except ValueError:
            wait = None
    return wait if wait is not None and wait > MAX_RETRY_AFTER else None


class _CappedRetry(Retry):
    """urllib3 Retry that gives up at once on an answer asking for a wait above `MAX_RETRY_AFTER`
    (the response goes back to the caller), and otherwise sleeps as `Retry-After` says."""

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        # Only statuses in RETRY_STATUSES reach here; of those, 429 and 503 are the ones that ask for a wait.
        if response is not None and response.status in (429, 503) and long_wait(response.headers):
            raise urllib3.exceptions.MaxRetryError(_pool, url or "", None)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), MAX_RETRY_AFTER)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`, the port made explicit for http and https."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _OriginBearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer` only to requests for exactly the origin of `base_url`."""

    def __init__(self, base_url: str, token: str) -> None:
        self.origin = origin(base_url)
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if origin(request.url or "") == self.origin:
            request.headers["Authorization"] = f"Bearer {self.token}"
        else:
            request.headers.pop("Authorization", None)
        return request


class UpdatesSession(requests.Session):
    """A Session with a default timeout and TLS verification that cannot be switched off."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("verify") is False:
            raise ValueError("TLS verification cannot be disabled")
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def make_session(
    *,
    token: str | None = None,
    token_origin: str | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    user_agent: str = USER_AGENT,
) -> requests.Session:
    """Build a configured session; see the module docstring for what it guarantees."""
    session = UpdatesSession(timeout)
    session.headers["User-Agent"] = user_agent
    retry = _CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if token:
        if not token_origin or not origin(token_origin)[1]:
            raise ValueError("a token needs the URL of the API it belongs to (token_origin)")
        session.auth = _OriginBearerAuth(token_origin, token)
    return session
