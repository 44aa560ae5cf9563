"""Reading, validating and rewriting `manifest.json`.

Contract:
- `load_manifest(paths)` parses and validates the whole file (every entry, reachable or not) and returns a
  `Manifest`, or raises `ManifestError` whose message is one line naming the file and the place, e.g.
  `manifest.json: updates[3].children[0]: no entry named "gogz"`.
- The rules themselves are `utils.schema.validate(raw, root)`, the pure check behind it, which returns
  every problem found (for `index.py verify`).
- `update_entry(path, name, changes)` re-reads the file, changes only the given keys of one entry and writes
  it back atomically with key order, 2-space indentation and unknown fields preserved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .fsutil import atomic_write_text
from .paths import Paths
from .schema import validate


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
