"""Reading, validating and rewriting `manifest.json`.

Contract:
- `load_manifest(paths)` parses and validates the whole file (every entry, reachable or not) and returns a
  `Manifest`, or raises `ManifestError` whose message is one line naming the file and the place, e.g.
  `manifest.json: updates[3].children[0]: no entry named "gogz"`. That holds for any bytes in the file:
  JSON syntax errors and nesting deeper than MAX_DEPTH name the line and column; duplicate keys, NaN,
  Infinity, out-of-range numbers and strings with lone surrogates name the place (`read_raw`).
- The rules themselves are `utils.schema.validate(raw, root)`, the pure check behind it, which returns
  every problem found (for `index.py verify`).
- `update_entry(path, name, changes)` re-reads the file, changes only the given keys of one entry and writes
  it back atomically with key order, 2-space indentation and unknown fields preserved.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .fsutil import atomic_write_text
from .paths import Paths
from .schema import key_place, validate


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


# The shipped manifest nests 4 levels (object, `updates`, entry, `args`); 64 leaves room for any module's
# args while keeping every later parse and dump of the file far from Python's recursion limit.
MAX_DEPTH = 64
# A string token (escapes included) or a bracket: enough to find how deep the text nests without parsing it.
_NESTING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class _Refused:
    """Put in the parsed tree where a value cannot be accepted, so that the walk can name its place."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Parser:
    """One `json.loads` with hooks that record what the standard parser would accept or lose silently."""

    def __init__(self) -> None:
        # id(object) -> its first repeated key. A repeated key's value is dropped; `kept` holds it so that
        # the ids of objects inside it stay unique while the tree is walked.
        self.duplicates: dict[int, str] = {}
        self.kept: list[Any] = []

    def object_pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                self.duplicates.setdefault(id(result), key)
                self.kept.append(value)
                continue
            result[key] = value
        return result

    @staticmethod
    def constant(name: str) -> _Refused:
        # Python's json accepts NaN and Infinity; they are not JSON and would be written back as such.
        return _Refused(f"{name} is not valid JSON")

    @staticmethod
    def integer(digits: str) -> int | _Refused:
        try:
            return int(digits)
        except ValueError:  # longer than the interpreter converts (4300 digits by default)
            return _Refused(f"an integer of {len(digits.lstrip('-'))} digits is too large")

    @staticmethod
    def number(text: str) -> float | _Refused:
        value = float(text)
        if not math.isfinite(value):  # 1e400 parses as inf and would be written back as Infinity
            shown = text if len(text) <= 20 else text[:17] + "..."
            return _Refused(f"the number {shown} is out of range")
        return value

    def loads(self, text: str) -> Any:
        return json.loads(
            text,
            object_pairs_hook=self.object_pairs,
            parse_constant=self.constant,
            parse_int=self.integer,
            parse_float=self.number,
        )


def _line_column(text: str, offset: int) -> str:
    """`line L column C` of `offset`, counted as JSONDecodeError counts them."""
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line} column {column}"


def _too_deep(text: str) -> str:
    """Where `text` first nests deeper than MAX_DEPTH, as JSON's own errors name a place."""
    depth = 0
    for token in _NESTING_RE.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return f"{_line_column(text, token.start())}: nested more than {MAX_DEPTH} levels deep"
        elif bracket in ("]", "}"):
            depth -= 1
    return f"nested more than {MAX_DEPTH} levels deep"


def _lone_surrogate(text: str, what: str) -> str | None:
    """Why `text` cannot be kept when it holds a lone surrogate (UTF-8 cannot encode one), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        escape = f"\\u{ord(text[exc.start]):04x}"
        return f"{what} holds a lone surrogate {escape}, which is not valid Unicode"
    return None


def _tree_problem(tree: Any, parser: _Parser, text: str) -> str | None:
    """The first value in `tree` (parsed from `text`) that the manifest must not hold, as `place: what`.

    Iterative, and nesting deeper than MAX_DEPTH is reported (with its line and column), not walked into.
    """
    stack: list[tuple[Any, str, int]] = [(tree, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        place = where or "top level"
        if isinstance(value, _Refused):
            return f"{place}: {value.reason}"
        if isinstance(value, str):
            if problem := _lone_surrogate(value, "the string"):
                return f"{place}: {problem}"
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            return _too_deep(text)
        if isinstance(value, dict):
            if id(value) in parser.duplicates:
                key = parser.duplicates[id(value)]
                return f"{place}: duplicate key {json.dumps(key)}"
            for key in value:
                if problem := _lone_surrogate(key, "the key"):
                    return f"{key_place(where, key)}: {problem}"
            children = [(item, key_place(where, key), depth + 1) for key, item in value.items()]
        else:
            children = [(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
        stack.extend(reversed(children))  # popped in document order: the first problem is reported
    return None


def _parse(text: str, shown: str) -> Any:
    parser = _Parser()
    try:
        tree = parser.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{shown}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ManifestError(f"{shown}: {_too_deep(text)}") from None
    except ValueError as exc:  # any other refusal of the standard parser, kept to its first line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(f"{shown}: {first}") from None
    problem = _tree_problem(tree, parser, text)
    if problem is not None:
        raise ManifestError(f"{shown}: {problem}")
    return tree


def _decode(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")  # valid up to the first bad byte
        where = _line_column(before, len(before))
        raise ManifestError(f"{shown}: {where}: not UTF-8 text (byte {exc.start})") from None


def read_raw(path: Path) -> dict[str, Any]:
    """Parse the manifest file; any problem becomes a ManifestError naming the line and column or the place.

    Beyond JSON syntax it refuses what Python's parser accepts but the manifest must not hold: duplicate
    keys, NaN and Infinity, numbers Python cannot convert or write back, strings with lone surrogates
    (`"\\udc80"`), and nesting deeper than MAX_DEPTH.
    """
    shown = display_name(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{shown}: no such file", hint="pass --manifest PATH or create manifest.json"
        ) from None
    except OSError as exc:
        raise ManifestError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    raw = _parse(_decode(data, shown), shown)
    if not isinstance(raw, dict):
        raise ManifestError(f"{shown}: the top level must be a JSON object")
    return raw


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
