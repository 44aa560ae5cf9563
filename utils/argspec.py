"""The `args` a module gets from its manifest entry: one schema check and one error for every module.

Contract: a module describes its args as `{key: (default, type or tuple of types)}`; a None default makes
the arg optional (None, or a value of that type). `read_spec(args, spec)` returns every key with its value
or default, after refusing an unknown key (a typo such as `alow_unverified`, listing the known ones) and a
value of the wrong type (`true` where a number belongs included). Every refusal is an `ArgsError` with a
one-line message: `unknown arg(s) ... (known: ...)`, or for a known arg its place in the manifest entry
first, `args.<key>: <what is wrong>`. It is raised before the module touches the network or the system.
The reserved keys `name`, `dry_run` and `state_dir` come from the orchestrator and are never in a spec.

Imports: `utils.errors`, and `utils.schema` for the reserved keys (one list, shared with the manifest).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from .errors import UpdatesError
from .schema import RESERVED_ARGS

Types: TypeAlias = "type | tuple[type, ...]"
Spec: TypeAlias = "Mapping[str, tuple[Any, Types]]"


class ArgsError(UpdatesError):
    """A module arg is unknown, of the wrong type or unsafe; the module changed nothing."""


def arg_error(key: str, problem: str) -> ArgsError:
    """The one message shape: `args.sources[2]: must be a URL`."""
    return ArgsError(f"args.{key}: {problem}")


def _as_tuple(types: Types) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_type(key: str, value: Any, types: Types, *, optional: bool = False) -> None:
    """Refuse `value` unless it is one of `types` (or None when `optional`)."""
    if value is None and optional:
        return
    accepted = _as_tuple(types)
    # bool is an int subclass; a `true` where a number belongs is a mistake, not 1.
    wrong_bool = isinstance(value, bool) and bool not in accepted
    if wrong_bool or not isinstance(value, accepted):
        names = " or ".join(t.__name__ for t in accepted)
        raise arg_error(key, f"expected {names}, got {type(value).__name__} {value!r}")


def read_spec(args: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    """Every key of `spec` with its checked value from `args`, or its default."""
    unknown = sorted(set(args) - set(spec) - set(RESERVED_ARGS))
    if unknown:
        raise ArgsError(f"unknown arg(s) {', '.join(unknown)} (known: {', '.join(sorted(spec))})")
    values: dict[str, Any] = {}
    for key, (default, types) in spec.items():
        value = args.get(key, default)
        check_type(key, value, types, optional=default is None)
        values[key] = value
    return values


def path_arg(values: Mapping[str, Any], key: str) -> Path:
    """A path arg as an absolute `Path`; relative paths are refused, since cwd is not a contract."""
    value = values[key]
    path = Path(value)
    if not path.is_absolute():
        raise arg_error(key, f"must be an absolute path, got {value!r}")
    return path


def url_arg(values: Mapping[str, Any], key: str) -> str:
    """An http:// or https:// URL arg with a host (a health endpoint)."""
    value = str(values[key])
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise arg_error(key, f"must be an http:// or https:// URL, got {value!r}")
    return value
