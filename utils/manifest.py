"""Reading, validating and rewriting `manifest.json`.

Contract:
- `load_manifest(paths)` parses and validates the whole file (every entry, reachable or not) and returns a
  `Manifest`, or raises `ManifestError` whose message is one line naming the file and the place, e.g.
  `manifest.json: updates[3].children[0]: no entry named "gogz"`.
- `validate(raw, root)` is the pure check behind it and returns every problem found, for `index.py verify`.
- `update_entry(path, name, changes)` re-reads the file, changes only the given keys of one entry and writes
  it back atomically with key order, 2-space indentation and unknown fields preserved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .checksum import HEX64_RE
from .errors import ManifestError
from .fsutil import atomic_write_text
from .notify import validate_notify
from .paths import Paths
from .script import validate_script_entry

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Directory names of the installation itself: a module by one of these names would shadow our own code.
RESERVED_NAMES = frozenset({"utils", "tests", "config", "bench", "venv", "state", "updates"})
RESERVED_ARGS = ("name", "dry_run", "state_dir")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_TIMEOUT = 7 * 24 * 3600
_OPTIONAL_STRINGS = ("version", "lastSafeVersion", "description")


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


@dataclass(frozen=True)
class Entry:
    name: str
    index: int
    version: str | None = None
    last_safe_version: str | None = None
    last_applied: str | None = None
    enabled: bool = True
    description: str | None = None
    checksum: str | None = None
    children: tuple[str, ...] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    is_group: bool = False
    script: str | None = None  # a legacy shell script in the root instead of a module directory
    dry_run_aware: bool = False


@dataclass
class Manifest:
    path: Path
    raw: dict[str, Any]
    entries: dict[str, Entry]
    entrypoint: str

    def descendants(self, name: str) -> list[str]:
        """Names reachable from `name` through `children`, depth first in manifest order, without repeats."""
        seen: list[str] = []

        def walk(current: str) -> None:
            for child in self.entries[current].children or ():
                if child not in seen:
                    seen.append(child)
                    walk(child)

        walk(name)
        return seen

    def modules(self) -> list[Entry]:
        """Every entry that runs code (a module directory or a script), in manifest order."""
        return [e for e in self.entries.values() if not e.is_group]


def display_name(path: Path) -> str:
    """The manifest path as the user should see it: relative to the cwd when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):  # elsewhere, or started from a directory that no longer exists
        return str(path)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; they are not JSON and would be written back as such.
    raise ValueError(f"{name} is not valid JSON")


def read_raw(path: Path) -> dict[str, Any]:
    """Parse the manifest file; JSON errors become a ManifestError naming line and column."""
    shown = display_name(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{shown}: no such file", hint="pass --manifest PATH or create manifest.json"
        ) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{shown}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ManifestError(f"{shown}: cannot read: {exc.strerror}") from None
    try:
        raw = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{shown}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise ManifestError(f"{shown}: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{shown}: the top level must be a JSON object")
    return raw


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
        and not (isinstance(checksum, str) and HEX64_RE.match(checksum))
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
    if "script" not in item and isinstance(name, str) and NAME_RE.match(name) and name not in RESERVED_NAMES:
        directory = root / name
        if directory.is_symlink():
            problems.append(f"{where}: module directory {name}/ is a symlink; links are never followed")
        elif not directory.is_dir():
            if "children" not in item:
                problems.append(f"{where}: module directory {name}/ is missing")
        elif not (directory / "index.py").is_file():
            problems.append(f"{where}: {name}/index.py is missing")
    return problems


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
        elif not NAME_RE.match(name):
            problems.append(
                f"{where}.name: {name!r} is not a safe name (lowercase letters, digits, _; a letter first)"
            )
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
    return problems


def _find_cycle(entries: list[Any], names: Mapping[str, int]) -> list[str] | None:
    graph: dict[str, list[str]] = {}
    for name, i in names.items():
        children = entries[i].get("children")
        graph[name] = (
            [c for c in children if isinstance(c, str) and c in names] if isinstance(children, list) else []
        )
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in graph[node]:
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _entry(i: int, item: dict[str, Any], root: Path) -> Entry:
    children = item.get("children")
    timeout = item.get("timeout")
    return Entry(
        name=item["name"],
        index=i,
        version=item.get("version"),
        last_safe_version=item.get("lastSafeVersion"),
        last_applied=item.get("lastApplied"),
        enabled=item.get("enabled", True),
        description=item.get("description"),
        checksum=item.get("checksum"),
        children=tuple(children) if children is not None else None,
        args=dict(item.get("args") or {}),
        timeout=float(timeout) if timeout is not None else None,
        is_group=children is not None and "script" not in item and not (root / item["name"]).is_dir(),
        script=item.get("script"),
        dry_run_aware=item.get("dryRunAware", False),
    )


def load_manifest(paths: Paths) -> Manifest:
    """Read and validate the manifest; raise ManifestError naming the first problem."""
    raw = read_raw(paths.manifest)
    problems = validate(raw, paths.root)
    if problems:
        more = f" (and {len(problems) - 1} more; see `index.py verify`)" if len(problems) > 1 else ""
        raise ManifestError(f"{display_name(paths.manifest)}: {problems[0]}{more}")
    entries = {item["name"]: _entry(i, item, paths.root) for i, item in enumerate(raw["updates"])}
    return Manifest(path=paths.manifest, raw=raw, entries=entries, entrypoint=raw["entrypoint"])


def dump(raw: Mapping[str, Any]) -> str:
    """The manifest's on-disk text: 2-space indentation, key order kept, trailing newline."""
    return json.dumps(raw, indent=2, ensure_ascii=False) + "\n"


def update_entry(manifest_path: Path, name: str, changes: Mapping[str, object]) -> None:
    """Set `changes` on the entry called `name`, re-reading the file first so no other edit is lost."""
    raw = read_raw(manifest_path)
    entries = raw.get("updates")
    target = (
        next((e for e in entries if isinstance(e, dict) and e.get("name") == name), None)
        if isinstance(entries, list)
        else None
    )
    if target is None:
        raise ManifestError(f"{display_name(manifest_path)}: no entry named {json.dumps(name)}")
    target.update(changes)
    atomic_write_text(manifest_path, dump(raw))
