"""What a valid `manifest.json` is: every rule, as problem strings that name the place.

Contract: `validate(raw, root)` returns every problem of a parsed manifest, each one line such as
`updates[3].children[0]: no entry named "gogz"` (empty list: valid), checking every entry whether the
entrypoint reaches it or not. The rules of the optional parts live here too, so that reading a manifest
needs nothing above this layer: the top-level `notify` object (`validate_notify`) and legacy `script`
entries (`validate_script_entry`). Pure functions: the only file system access is looking at the module
directories and script files that entries name under `root`.

Imports: the standard library and `utils.digest` only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .digest import HEX64_RE

# \A and \Z, not ^ and $: `$` also matches before a trailing newline, so "evil\n" would pass `.match`.
NAME_RE = re.compile(r"\A[a-z][a-z0-9_]*\Z")
# Far below the file system's 255 bytes, which a name must fit with suffixes (`.rollback-...`, tags).
MAX_NAME_LENGTH = 64
# Directory names of the installation itself: a module by one of these names would shadow our own code.
RESERVED_NAMES = frozenset({"utils", "tests", "config", "bench", "venv", "state", "updates"})
RESERVED_ARGS = ("name", "dry_run", "state_dir")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_TIMEOUT = 7 * 24 * 3600
# Groups and modules run their children recursively (the runner, `descendants`): a chain of entries this
# long is far beyond any real manifest and far below Python's recursion limit.
MAX_CHILD_DEPTH = 32
_OPTIONAL_STRINGS = ("version", "lastSafeVersion", "description")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCRIPT_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
# The top-level `notify` object.
ON_VALUES = ("failure", "change", "always")
MAX_NOTIFY_TIMEOUT = 60.0
_NOTIFY_KEYS = {"webhook", "ping", "metrics_file"}
_WEBHOOK_KEYS = {"url", "on", "timeout"}


def utc_timestamp(moment: datetime | None = None) -> str:
    """`moment` (default now) in the manifest's `lastApplied` format."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(value: str) -> datetime:
    """Parse a `lastApplied` value; fractional seconds are accepted, the `Z` is required."""
    for fmt in (TIMESTAMP_FORMAT, "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"not an ISO 8601 UTC time like 2024-06-10T15:23:00Z: {value!r}")


def key_place(where: str, key: object) -> str:
    """`where.key` for a plain key; `where["key"]` (JSON-escaped, one ASCII line) for any other.

    An empty `where` is the top level: the key alone.
    """
    if isinstance(key, str) and _PLAIN_KEY_RE.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{json.dumps(key)}]"


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _check_entry(where: str, item: dict[str, Any], root: Path) -> list[str]:
    problems: list[str] = []
    name = item.get("name")
    for key in _OPTIONAL_STRINGS:
        if key in item and item[key] is not None and not isinstance(item[key], str):
            problems.append(f"{where}.{key}: must be a string or null, not {_type_name(item[key])}")
    last = item.get("lastApplied")
    if last is not None:
        if not isinstance(last, str):
            problems.append(f"{where}.lastApplied: must be a string or null, not {_type_name(last)}")
        else:
            try:
                parse_timestamp(last)
            except ValueError as exc:
                problems.append(f"{where}.lastApplied: {exc}")
    if "enabled" in item and not isinstance(item["enabled"], bool):
        problems.append(f"{where}.enabled: must be true or false, not {_type_name(item['enabled'])}")
    if "script" in item:
        problems.extend(validate_script_entry(where, item, root))
        if "dryRunAware" in item and not isinstance(item["dryRunAware"], bool):
            problems.append(f"{where}.dryRunAware: must be true or false")
    checksum = item.get("checksum")
    if (
        "script" not in item
        and checksum is not None
        and not (isinstance(checksum, str) and HEX64_RE.fullmatch(checksum))
    ):
        problems.append(f"{where}.checksum: must be 64 lowercase hex digits or null")
    if "args" in item:
        args = item["args"]
        if not isinstance(args, dict):
            problems.append(f"{where}.args: must be an object, not {_type_name(args)}")
        else:
            problems.extend(
                f"{where}.args.{key}: reserved key; the orchestrator sets it"
                for key in RESERVED_ARGS
                if key in args
            )
    if "timeout" in item:
        timeout = item["timeout"]
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_TIMEOUT
        ):
            problems.append(
                f"{where}.timeout: must be a number of seconds from 0 to {MAX_TIMEOUT} (a week), or null"
            )
    children = item.get("children")
    if "children" in item and not (isinstance(children, list) and all(isinstance(c, str) for c in children)):
        problems.append(f"{where}.children: must be an array of entry names")
    if "script" not in item and isinstance(name, str) and is_module_name(name):
        problems.extend(_directory_problems(where, name, "children" in item, root))
    return problems


def is_module_name(name: str) -> bool:
    """Whether `name` can name a module directory (and a Python package, and part of a git tag)."""
    return bool(NAME_RE.fullmatch(name)) and len(name) <= MAX_NAME_LENGTH and name not in RESERVED_NAMES


def _directory_problems(where: str, name: str, has_children: bool, root: Path) -> list[str]:
    directory = root / name
    try:
        if directory.is_symlink():
            return [f"{where}: module directory {name}/ is a symlink; links are never followed"]
        if not directory.is_dir():
            return [] if has_children else [f"{where}: module directory {name}/ is missing"]
        if not (directory / "index.py").is_file():
            return [f"{where}: {name}/index.py is missing"]
    except OSError as exc:  # e.g. a parent directory we may not search
        return [f"{where}: cannot look at {name}/: {exc.strerror or exc}"]
    return []


def validate(raw: dict[str, Any], root: Path) -> list[str]:
    """Every problem in a parsed manifest, each as `place: message`; empty when it is valid."""
    problems: list[str] = []
    entries = raw.get("updates")
    if not isinstance(entries, list):
        return [f"updates: must be an array of entries, not {_type_name(entries)}"]
    names: dict[str, int] = {}
    for i, item in enumerate(entries):
        where = f"updates[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object, not {_type_name(item)}")
            continue
        name = item.get("name")
        if not isinstance(name, str):
            problems.append(f"{where}.name: required, and must be a string")
        elif not NAME_RE.fullmatch(name):
            problems.append(
                f"{where}.name: {name!r} is not a safe name (lowercase letters, digits, _; a letter first)"
            )
        elif len(name) > MAX_NAME_LENGTH:
            problems.append(f"{where}.name: longer than {MAX_NAME_LENGTH} characters")
        elif name in RESERVED_NAMES:
            problems.append(f"{where}.name: {name!r} is reserved for the installation's own directories")
        elif name in names:
            problems.append(f"{where}.name: duplicate name {name!r} (first at updates[{names[name]}])")
        else:
            names[name] = i
        problems.extend(_check_entry(where, item, root))
    for i, item in enumerate(entries):
        children = item.get("children") if isinstance(item, dict) else None
        if not isinstance(children, list):
            continue
        seen: set[str] = set()
        for j, child in enumerate(children):
            if not isinstance(child, str):
                continue
            if child not in names:
                problems.append(f"updates[{i}].children[{j}]: no entry named {json.dumps(child)}")
            elif child in seen:
                problems.append(f"updates[{i}].children[{j}]: {json.dumps(child)} is listed twice")
            seen.add(child)
    entrypoint = raw.get("entrypoint")
    if not isinstance(entrypoint, str):
        problems.append(
            f"entrypoint: required, and must be a string naming an entry, not {_type_name(entrypoint)}"
        )
    elif entrypoint not in names:
        problems.append(f"entrypoint: no entry named {json.dumps(entrypoint)}")
    if "notify" in raw:
        problems.extend(validate_notify(raw["notify"]))
    cycle = _find_cycle(entries, names)
    if cycle:
        problems.append(f"updates[{names[cycle[0]]}].children: cycle {' -> '.join(cycle)}")
    elif chain := _too_deep_chain(entries, names):  # only without cycles: a cycle has no depth
        problems.append(chain)
    return problems


def _find_cycle(entries: list[Any], names: Mapping[str, int]) -> list[str] | None:
    """The first cycle through `children`, as names from its first entry back to it; None when there is none.

    Iterative (a depth-first walk with an explicit stack), so that a long chain of entries cannot exhaust
    Python's recursion limit here.
    """
    graph = _child_graph(entries, names)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in graph:
        if start in state:
            continue
        state[start] = 1
        path = [start]
        pending = [iter(graph[start])]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                pending.append(iter(graph[child]))
    return None


def _child_graph(entries: list[Any], names: Mapping[str, int]) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {}
    for name, i in names.items():
        children = entries[i].get("children")
        graph[name] = (
            [c for c in children if isinstance(c, str) and c in names] if isinstance(children, list) else []
        )
    return graph


def _too_deep_chain(entries: list[Any], names: Mapping[str, int]) -> str | None:
    """A problem when some entry has more than MAX_CHILD_DEPTH levels of children below it (no cycles)."""
    graph = _child_graph(entries, names)
    height: dict[str, int] = {}  # levels of children below each entry, computed children first
    for start in graph:
        stack = [start]
        while stack:
            node = stack[-1]
            waiting = [c for c in graph[node] if c not in height]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            height[node] = max((height[c] + 1 for c in graph[node]), default=0)
            if height[node] > MAX_CHILD_DEPTH:
                where = f"updates[{names[node]}].children"
                return f"{where}: more than {MAX_CHILD_DEPTH} levels of children below it"
    return None


def _url_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:  # "http://[::1", a bad port: urlsplit refuses what it cannot split
        return f"must be an http:// or https:// URL, got {value!r}"
    if parts.scheme not in ("http", "https") or not hostname:
        return f"must be an http:// or https:// URL, got {value!r}"
    if any(c.isspace() for c in value):
        return "must not contain whitespace"
    return None


def _timeout_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "must be a number of seconds"
    if not 0 < value <= MAX_NOTIFY_TIMEOUT:
        return f"must be more than 0 and at most {MAX_NOTIFY_TIMEOUT:g} seconds"
    return None


def validate_notify(obj: object, where: str = "notify") -> list[str]:
    """Problems in a manifest's `notify` object, each as `notify.<key>: <what is wrong>`."""
    if not isinstance(obj, Mapping):
        return [f"{where}: must be an object"]
    problems = [f"{key_place(where, key)}: unknown key" for key in obj if key not in _NOTIFY_KEYS]
    if "webhook" in obj:
        hook = obj["webhook"]
        if not isinstance(hook, Mapping):
            problems.append(f"{where}.webhook: must be an object with at least a url")
        else:
            here = f"{where}.webhook"
            problems += [f"{key_place(here, key)}: unknown key" for key in hook if key not in _WEBHOOK_KEYS]
            if "url" not in hook:
                problems.append(f"{where}.webhook.url: required")
            elif problem := _url_problem(hook["url"]):
                problems.append(f"{where}.webhook.url: {problem}")
            if "on" in hook and hook["on"] not in ON_VALUES:
                allowed = ", ".join(ON_VALUES)
                problems.append(f"{where}.webhook.on: must be one of {allowed}, got {hook['on']!r}")
            if "timeout" in hook and (problem := _timeout_problem(hook["timeout"])):
                problems.append(f"{where}.webhook.timeout: {problem}")
    if "ping" in obj and (problem := _url_problem(obj["ping"])):
        problems.append(f"{where}.ping: {problem}")
    if "metrics_file" in obj:
        path = obj["metrics_file"]
        if not isinstance(path, str) or not PurePosixPath(path).is_absolute():
            problems.append(f"{where}.metrics_file: must be an absolute path")
        elif not path.endswith(".prom"):
            problems.append(f"{where}.metrics_file: must end in .prom (node_exporter reads only *.prom)")
    return problems


def script_name_problem(script: object) -> str | None:
    """Why `script` is not an acceptable script name (None when it is)."""
    if not isinstance(script, str) or not script:
        return "must be a non-empty string"
    if not SCRIPT_NAME_RE.fullmatch(script):
        return f"must be a plain file name in the root (letters, digits, . _ + -), got {script!r}"
    return None


def validate_script_entry(where: str, item: Mapping[str, Any], root: Path) -> list[str]:
    """Manifest problems of an entry with a `script` key (`where` is e.g. `updates[4]`)."""
    problems = []
    script = item.get("script")
    if problem := script_name_problem(script):
        return [f"{where}.script: {problem}"]
    path = Path(root) / str(script)
    try:
        regular = not path.is_symlink() and path.is_file()
    except OSError as exc:  # a name too long for the file system, say
        return [f"{where}.script: cannot look at {script}: {exc.strerror or exc}"]
    if not regular:
        problems.append(f"{where}.script: {script} is not a regular file in {root}")
    checksum = item.get("checksum")
    if checksum is None:
        problems.append(f"{where}.checksum: required for a script entry (sha256sum {script})")
    elif not isinstance(checksum, str) or not HEX64_RE.fullmatch(checksum):
        problems.append(f"{where}.checksum: must be 64 lowercase hex digits")
    if "children" in item:
        problems.append(f"{where}.children: a script entry cannot have children")
    return problems
