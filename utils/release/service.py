"""Service control through a configurable command, and bounded health polling.

Contract:
- `ServiceManager(command)` runs `<command> stop|start|is-active --quiet <unit>` through `utils.proc.run`;
  the command is an argument list (default `["systemctl"]`), so tests and non-systemd hosts pass their own.
  `is_active` reads systemctl's documented exit codes: 0 active, 3 inactive (stopped); 4 "no such unit"
  raises `ServiceError` naming the unit, and any other answer (a command that does not understand
  `is-active --quiet`, a missing command) raises `ServiceError` too: an installer that cannot tell whether
  the service runs must not replace its binary and skip the restart and health check.
- `poll_health(check)` asks `check.url` until it answers 200 with a body `check.accept` approves, or until
  `check.timeout_s` has passed; then it raises `HealthError` with the last reason seen. It never sends a
  token, never goes through a proxy from the environment, and never retries inside one attempt (the loop
  is the retry).
- Body rules for the three tools live here as small pure functions (`json_status`, `gogs_database_ok`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CommandError, UpdatesError
from ..http import RequestException, Session, Timeout, make_session, scrub_url
from ..proc import run

log = logging.getLogger(__name__)


class HealthError(UpdatesError):
    """The service did not report healthy within the allowed time."""


class ServiceError(UpdatesError):
    """The service command cannot say whether the unit runs: no such unit, or the command failed."""


ACTIVE, INACTIVE, NO_SUCH_UNIT = 0, 3, 4  # `systemctl is-active` exit codes (LSB status codes)


@dataclass(frozen=True)
class ServiceManager:
    command: tuple[str, ...] = ("systemctl",)
    timeout: float = 120.0

    @classmethod
    def from_args(cls, command: Sequence[str] | None) -> ServiceManager:
        if not command:
            return cls()
        return cls(tuple(str(part) for part in command))

    def is_active(self, unit: str) -> bool:
        """True when `unit` runs, False when it is stopped; `ServiceError` when that cannot be told."""
        argv = [*self.command, "is-active", "--quiet", unit]
        shown = " ".join(argv)
        try:
            result = run(argv, timeout=self.timeout, check=False)
        except CommandError as exc:
            raise ServiceError(f"cannot tell whether the service {unit} runs: {exc}") from exc
        if result.returncode == ACTIVE:
            return True
        if result.returncode == INACTIVE and not self._unit_missing(unit):
            return False
        if result.returncode in (INACTIVE, NO_SUCH_UNIT):
            code = result.returncode
            raise ServiceError(
                f"no service unit named {unit!r} (`{shown}` answered exit code {code}"
                + (", LoadState not-found" if code == INACTIVE else "")
                + "); "
                "fix the module's service arg, or set it to \"\" when the tool runs without a service"
            )
        said = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        raise ServiceError(
            f"cannot tell whether the service {unit} runs: `{shown}` answered exit code {result.returncode}"
            + (f" ({said[-1][:160]})" if said else "")
            + "; service_command must understand `is-active --quiet UNIT` as systemctl does"
        )

    def _unit_missing(self, unit: str) -> bool:
        """systemctl itself answers `is-active` for a unit it has never heard of with 3, like a stopped one:
        ask it for the unit's LoadState (`not-found`). Other service commands are taken at their word."""
        if Path(self.command[0]).name != "systemctl":
            return False
        argv = [*self.command, "show", "--property=LoadState", "--value", unit]
        try:
            result = run(argv, timeout=self.timeout, check=False)
        except CommandError:
            return False
        return result.returncode == 0 and result.stdout.decode("utf-8", "replace").strip() == "not-found"

    def stop(self, unit: str) -> None:
        log.info("stopping %s", unit)
        run([*self.command, "stop", unit], timeout=self.timeout)

    def start(self, unit: str) -> None:
        log.info("starting %s", unit)
        run([*self.command, "start", unit], timeout=self.timeout)


def json_status(expected: str) -> Callable[[str], bool]:
    """Accept a JSON body whose `status` field equals `expected` (`{"status":"OK"}`)."""

    def accept(body: str) -> bool:
        try:
            data = json.loads(body)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("status") == expected

    accept.__doc__ = f'JSON body with "status": "{expected}"'
    return accept


def gogs_database_ok(body: str) -> bool:
    """Gogs' `/healthcheck` body: `* Database connection: OK` (0.14 answers 200 with an error body)."""
    return any(line.strip() == "* Database connection: OK" for line in body.splitlines())


gogs_database_ok.__doc__ = "body line '* Database connection: OK'"


def health_session() -> Session:
    """No retries inside one poll, short timeouts, and never a proxy from the environment: the endpoint is
    this machine's service, and an `HTTPS_PROXY` set for GitHub must not turn every upgrade into a
    rollback."""
    session = make_session(retries=0, timeout=(2.0, 5.0))
    session.trust_env = False
    return session


@dataclass(frozen=True)
class HealthCheck:
    url: str
    accept: Callable[[str], bool]
    timeout_s: float = 60.0
    interval_s: float = 1.0
    session_factory: Callable[[], Session] = field(default=health_session, compare=False)


def short_reason(exc: RequestException) -> str:
    """One short phrase for a failed health request (`connection refused`), not urllib3's paragraph."""
    if isinstance(exc, Timeout):
        return "no answer in time (timeout)"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    for arg in exc.args:  # urllib3 wraps the socket error in its own exceptions' arguments
        inner = getattr(arg, "reason", arg)
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror.lower()
        text = str(inner)
        if "Errno" in text:
            return text.rsplit("] ", 1)[-1].rstrip(")'\"").lower()
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def poll_health(
    check: HealthCheck,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once `check.url` is healthy; raise `HealthError` after `check.timeout_s`."""
    deadline = clock() + check.timeout_s
    reason = "no answer yet"
    session = check.session_factory()
    try:
        while True:
            try:
                response = session.get(check.url, allow_redirects=False)
                body = response.text
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}: {body.strip()[:120]!r}"
                elif not check.accept(body):
                    reason = f"unhealthy body {body.strip()[:120]!r} (want {check.accept.__doc__})"
                else:
                    log.info("%s is healthy", scrub_url(check.url))
                    return
            except RequestException as exc:
                reason = short_reason(exc)
            if clock() >= deadline:
                raise HealthError(f"{scrub_url(check.url)} not healthy after {check.timeout_s:g} s: {reason}")
            sleep(min(check.interval_s, max(0.0, deadline - clock())))
    finally:
        session.close()
