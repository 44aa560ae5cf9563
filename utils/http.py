"""The one HTTP session factory for modules that talk to the network.

Contract of `make_session()`:
- a `User-Agent` naming this project;
- a default (connect, read) timeout on every request unless the caller passes its own;
- bounded retries with exponential backoff on connection errors, 429 and 5xx, honouring `Retry-After`
  (capped, so a hostile or confused server cannot park a nightly run for hours);
- TLS verification always on (`verify=False` is refused);
- an optional bearer token sent only to `token_origin` (the API's scheme, host and port), never to
  another origin, and never carried over a redirect to another host.

`requests` is imported here and only here: the rest of the code takes its types (`Session`, `Response`)
and exceptions (`RequestException`, `Timeout`) from this module, and code that may run without network
(notifications) imports this module lazily, so commands that need no network do not pay for it.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

Session = requests.Session
Response = requests.Response
RequestException = requests.RequestException
Timeout = requests.Timeout

USER_AGENT = "updates-orchestrator/1.0 (+self-hosted update runner)"
DEFAULT_TIMEOUT = (10.0, 60.0)
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 60.0


class _CappedRetry(Retry):
    """urllib3 Retry whose Retry-After sleep is capped at `MAX_RETRY_AFTER` seconds."""

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
