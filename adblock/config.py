"""The module's args: defaults, type checks and typo detection, before anything is fetched or written.

Contract: `Options.from_args(args)` returns the validated options; an unknown key, a wrong type or an
unsafe value raises `ArgsError` (`args.<key>: ...`, the shape `utils.argspec` gives every module).
Defaults are safe for a server: a well-known set of public lists, installed as a managed block in
/etc/hosts, a shrink guard of one half, no reload command.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..utils.argspec import arg_error, read_spec
from .install import BLOCK_FORMATS
from .render import FORMATS
from .sources import Source, source_name

DEFAULT_SOURCES = (
    "https://raw.githubusercontent.com/StevenBlack/hosts/master/hosts",
    "https://adaway.org/hosts.txt",
    "https://pgl.yoyo.org/adservers/serverlist.php?hostformat=hosts&showintro=0&mimetype=plaintext",
    "https://someonewhocares.org/hosts/zero/hosts",
    "https://raw.githubusercontent.com/hoshsadiq/adblock-nocoin-list/master/hosts.txt",
)
DEFAULT_HOSTS = "/etc/hosts"

# key -> (default, accepted types)
ARG_SPEC: dict[str, tuple[Any, tuple[type, ...]]] = {
    "sources": (list(DEFAULT_SOURCES), (list,)),
    "format": ("hosts", (str,)),
    "output": (None, (str,)),
    "install": (None, (str,)),
    "overwrite": (False, (bool,)),
    "redirect_ip": ("0.0.0.0", (str,)),  # noqa: S104 - the blocking answer, not a bind address
    "redirect_ipv6": (None, (str,)),
    "lenient": (False, (bool,)),
    "allow": ([], (list,)),
    "allow_files": ([], (list,)),
    "deny": ([], (list,)),
    "deny_files": ([], (list,)),
    "filter_subdomains": (False, (bool,)),
    "shrink_guard": (0.5, (int, float)),
    "force": (False, (bool,)),
    "reload": (None, (list,)),
    "reload_timeout": (60, (int, float)),
    "http_timeout": ([10, 60], (int, float, list)),
    "http_retries": (3, (int,)),
    "http_backoff": (0.5, (int, float)),
    # A 5,000,000-line list is 140 MiB; the module needs about four bytes of memory per byte of list, so
    # this still keeps one runaway download well under 800 MB.
    "max_source_bytes": (160 * 1024 * 1024, (int,)),
    "min_source_fraction": (0.5, (int, float)),
}


@dataclass(frozen=True)
class Options:
    sources: tuple[Source, ...]
    format: str
    output: Path
    block: bool
    overwrite: bool
    redirect_ip: str
    redirect_ipv6: str | None
    lenient: bool
    allow: tuple[str, ...]
    allow_files: tuple[str, ...]
    deny: tuple[str, ...]
    deny_files: tuple[str, ...]
    filter_subdomains: bool
    shrink_guard: float
    force: bool
    reload: tuple[str, ...] | None
    reload_timeout: float
    http_timeout: tuple[float, float]
    http_retries: int
    http_backoff: float
    max_source_bytes: int
    min_source_fraction: float

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Options:
        values = read_spec(args, ARG_SPEC)
        fmt = values["format"]
        if fmt not in FORMATS:
            raise arg_error("format", f"must be one of {', '.join(FORMATS)}, not {fmt!r}")
        install = values["install"] or ("block" if fmt == "hosts" else "file")
        if install not in ("block", "file"):
            raise arg_error("install", "must be 'block' or 'file'")
        if install == "block" and fmt not in BLOCK_FORMATS:
            raise arg_error("install", f"format {fmt} has no '#' comments, so it needs install 'file'")
        output = values["output"] or (DEFAULT_HOSTS if fmt == "hosts" else None)
        if not output:
            raise arg_error("output", f"the file to write is required for format {fmt}")
        # A relative path would depend on the directory the timer happens to start in.
        for key, paths in (("output", [output]), ("allow_files", values["allow_files"]),
                           ("deny_files", values["deny_files"])):
            relative = [str(p) for p in paths if isinstance(p, str) and not p.startswith("/")]
            if relative:
                raise arg_error(key, f"{relative[0]!r} must be an absolute path")
        sources = _sources(values["sources"])
        for source in sources:
            # The installed list read back as a source would keep every name it ever blocked.
            if source.local_path is not None and source.local_path.resolve() == Path(output).resolve():
                raise arg_error("sources", f"{source.url!r} is the output file itself")
        return cls(
            sources=sources,
            format=fmt,
            output=Path(output),
            block=install == "block",
            overwrite=values["overwrite"],
            redirect_ip=_ip(values["redirect_ip"], "redirect_ip", 4 if fmt == "dnsmasq" else None),
            redirect_ipv6=(
                _ip(values["redirect_ipv6"], "redirect_ipv6", 6) if values["redirect_ipv6"] else None
            ),
            lenient=values["lenient"],
            allow=_strings(values["allow"], "allow"),
            allow_files=_strings(values["allow_files"], "allow_files"),
            deny=_strings(values["deny"], "deny"),
            deny_files=_strings(values["deny_files"], "deny_files"),
            filter_subdomains=values["filter_subdomains"],
            shrink_guard=_fraction(values["shrink_guard"], "shrink_guard"),
            force=values["force"],
            reload=_reload(values["reload"]),
            reload_timeout=_positive(values["reload_timeout"], "reload_timeout"),
            http_timeout=_timeout(values["http_timeout"]),
            http_retries=max(0, values["http_retries"]),
            http_backoff=max(0.0, float(values["http_backoff"])),
            max_source_bytes=int(_positive(values["max_source_bytes"], "max_source_bytes")),
            min_source_fraction=_fraction(values["min_source_fraction"], "min_source_fraction"),
        )


def _strings(value: list[Any], key: str) -> tuple[str, ...]:
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise arg_error(f"{key}[{index}]", "must be a string")
    return tuple(value)


def _sources(value: list[Any]) -> tuple[Source, ...]:
    sources = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            url, name = item, None
        elif isinstance(item, dict) and isinstance(item.get("url"), str) and set(item) <= {"url", "name"}:
            url, name = item["url"], item.get("name")
        else:
            raise arg_error(f"sources[{index}]", 'must be a URL or {"url": ..., "name": ...}')
        parts = urlsplit(url)
        if url.startswith("/") or (parts.scheme == "file" and parts.netloc in ("", "localhost")):
            pass
        elif parts.scheme == "file":
            raise arg_error(f"sources[{index}]", f"{url!r}: a file URL is file:///absolute/path")
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            raise arg_error(f"sources[{index}]", f"{url!r} is not an http(s):// or file:// URL")
        sources.append(Source(url, str(name) if name else source_name(url)))
    if len({s.url for s in sources}) != len(sources):
        raise arg_error("sources", "lists the same URL twice")
    return tuple(sources)


def _ip(value: str, key: str, version: int | None = None) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise arg_error(key, f"{value!r} is not an IP address") from exc
    if version is not None and address.version != version:
        raise arg_error(key, f"{value!r} is not an IPv{version} address")
    return str(address)


def _fraction(value: float, key: str) -> float:
    if not 0 <= value <= 1:
        raise arg_error(key, "must be between 0 and 1")
    return float(value)


def _positive(value: float, key: str) -> float:
    if value <= 0:
        raise arg_error(key, "must be positive")
    return float(value)


def _timeout(value: Any) -> tuple[float, float]:
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in value):
            raise arg_error("http_timeout", "must be seconds or [connect, read] seconds")
        return float(value[0]), float(value[1])
    seconds = _positive(value, "http_timeout")
    return seconds, seconds


def _reload(value: list[Any] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not value or not all(isinstance(v, str) and v for v in value):
        raise arg_error("reload", 'must be an argv list like ["systemctl", "reload", "dnsmasq"]')
    return tuple(value)
