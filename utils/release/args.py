"""The args every GitHub-release module shares: defaults, type checks and typo detection.

Contract: `read_args(args, own)` returns a `CommonArgs` plus the module's own values (defaults filled
in). An unknown key (a typo such as `alow_unverified`), a value of the wrong type or an unsafe value
raises `ArgsError` naming the key, before anything touches the network or the system. The reserved keys
`name`, `dry_run` and `state_dir` come from the orchestrator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import UpdatesError
from .github import DEFAULT_API

RESERVED = ("name", "dry_run", "state_dir")
LOOPBACK = ("localhost", "127.0.0.1", "::1")

# name -> (default, accepted type(s)); a None default means "optional, else this type".
COMMON: dict[str, tuple[Any, Any]] = {
    "api_url": (DEFAULT_API, str),
    "token_env": ("GITHUB_TOKEN", str),
    "version": (None, str),
    "include_prereleases": (False, bool),
    "allow_unverified": (False, bool),
    "install_missing": (False, bool),
    "arch": (None, str),
    "libc": ("auto", str),
    "service_command": (["systemctl"], list),
    "health_timeout": (60, (int, float)),
    "health_interval": (1, (int, float)),
    "http_retries": (3, int),
    "http_backoff": (0.5, (int, float)),
    "keep_backups": (3, int),
    "backup_dir": (None, str),
}


class ArgsError(UpdatesError):
    """A module arg is unknown, of the wrong type or unsafe."""


@dataclass(frozen=True)
class CommonArgs:
    name: str
    dry_run: bool
    state_dir: Path
    api_url: str
    token_env: str
    version: str | None
    include_prereleases: bool
    allow_unverified: bool
    install_missing: bool
    arch: str | None
    libc: str
    service_command: tuple[str, ...]
    health_timeout: float
    health_interval: float
    http_retries: int
    http_backoff: float
    keep_backups: int
    backup_dir: Path | None


def _check_type(key: str, value: Any, types: Any, optional: bool) -> None:
    if value is None and optional:
        return
    # bool is an int subclass; a `true` where a number belongs is a mistake, not 1.
    wrong_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    if wrong_bool or not isinstance(value, types):
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ArgsError(f"arg {key!r}: expected {names}, got {type(value).__name__} {value!r}")


def read_args(
    args: Mapping[str, Any], own: Mapping[str, tuple[Any, Any]]
) -> tuple[CommonArgs, dict[str, Any]]:
    """Validate `args` against the common spec plus `own`; return both parts with defaults filled in."""
    spec = {**COMMON, **own}
    unknown = sorted(set(args) - set(spec) - set(RESERVED))
    if unknown:
        raise ArgsError(f"unknown arg(s) {', '.join(unknown)} (known: {', '.join(sorted(spec))})")
    values: dict[str, Any] = {}
    for key, (default, types) in spec.items():
        value = args.get(key, default)
        _check_type(key, value, types, default is None)
        values[key] = value
    if not args.get("state_dir"):
        raise ArgsError("the orchestrator did not pass state_dir")
    api = urlsplit(values["api_url"])
    if api.scheme != "https" and not (api.scheme == "http" and api.hostname in LOOPBACK):
        raise ArgsError(
            f"arg 'api_url': must be https:// (plain http only on loopback), got {values['api_url']!r}"
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", values["token_env"]):
        raise ArgsError(f"arg 'token_env': not an environment variable name: {values['token_env']!r}")
    if values["libc"] not in ("auto", "gnu", "musl"):
        raise ArgsError(f"arg 'libc': use auto, gnu or musl, not {values['libc']!r}")
    command = values["service_command"]
    if not command or not all(isinstance(part, str) and part for part in command):
        raise ArgsError("arg 'service_command': a non-empty list of strings, e.g. [\"systemctl\"]")
    if values["keep_backups"] < 1 or values["http_retries"] < 0:
        raise ArgsError("args 'keep_backups' must be >= 1 and 'http_retries' >= 0")
    if values["health_timeout"] <= 0 or values["health_interval"] <= 0 or values["http_backoff"] < 0:
        raise ArgsError("args 'health_timeout' and 'health_interval' must be > 0, 'http_backoff' >= 0")
    fields = {key: values[key] for key in COMMON}
    fields.update(
        service_command=tuple(command),
        backup_dir=path_arg(values, "backup_dir") if values["backup_dir"] else None,
        health_timeout=float(values["health_timeout"]),
        health_interval=float(values["health_interval"]),
        http_backoff=float(values["http_backoff"]),
    )
    common = CommonArgs(
        name=str(args.get("name") or ""),
        dry_run=bool(args.get("dry_run", False)),
        state_dir=Path(args["state_dir"]),
        **fields,
    )
    return common, {key: values[key] for key in own}


def path_arg(values: Mapping[str, Any], key: str) -> Path:
    """A module path arg as an absolute `Path` (relative paths are refused: cwd is not a contract)."""
    path = Path(values[key])
    if not path.is_absolute():
        raise ArgsError(f"arg {key!r}: must be an absolute path, got {values[key]!r}")
    return path


def url_arg(values: Mapping[str, Any], key: str) -> str:
    """A module URL arg (a health endpoint): http:// or https:// with a host, else `ArgsError`."""
    url = str(values[key])
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgsError(f"arg {key!r}: must be an http:// or https:// URL, got {url!r}")
    return url
