"""The args every GitHub-release module shares: defaults, type checks and typo detection.

Contract: `read_args(args, own)` returns a `CommonArgs` plus the module's own values (defaults filled
in). An unknown key (a typo such as `alow_unverified`), a value of the wrong type or an unsafe value
raises `ArgsError` (`args.<key>: ...`) before anything touches the network or the system. The reserved
keys `name`, `dry_run` and `state_dir` come from the orchestrator. The schema check itself is
`utils.argspec`, which every module shares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..argspec import ArgsError, arg_error, path_arg, read_spec
from .github import DEFAULT_API

LOOPBACK = ("localhost", "127.0.0.1", "::1")
# (arg, lower bound, whether the bound itself is refused)
_LOWER_BOUNDS = (
    ("keep_backups", 1, False),
    ("http_retries", 0, False),
    ("http_backoff", 0, False),
    ("health_timeout", 0, True),
    ("health_interval", 0, True),
)

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


def read_args(
    args: Mapping[str, Any], own: Mapping[str, tuple[Any, Any]]
) -> tuple[CommonArgs, dict[str, Any]]:
    """Validate `args` against the common spec plus `own`; return both parts with defaults filled in."""
    values = read_spec(args, {**COMMON, **own})
    if not args.get("state_dir"):
        raise ArgsError("the orchestrator did not pass state_dir")
    api = urlsplit(values["api_url"])
    if api.scheme != "https" and not (api.scheme == "http" and api.hostname in LOOPBACK):
        problem = f"must be https:// (plain http only on loopback), got {values['api_url']!r}"
        raise arg_error("api_url", problem)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", values["token_env"]):
        raise arg_error("token_env", f"not an environment variable name: {values['token_env']!r}")
    if values["libc"] not in ("auto", "gnu", "musl"):
        raise arg_error("libc", f"use auto, gnu or musl, not {values['libc']!r}")
    command = values["service_command"]
    if not command or not all(isinstance(part, str) and part for part in command):
        raise arg_error("service_command", 'must be a non-empty list of strings, e.g. ["systemctl"]')
    for key, low, strict in _LOWER_BOUNDS:
        if values[key] < low or (strict and values[key] == low):
            bound = f"{'more than' if strict else 'at least'} {low}"
            raise arg_error(key, f"must be {bound}, got {values[key]!r}")
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
