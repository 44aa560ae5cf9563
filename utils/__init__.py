"""Shared code of the orchestrator and its update modules, and the public Python API.

Layout (each subpackage's docstring states what it owns and what it may import):
- small shared helpers at this level (errors, paths, fsutil, proc, http, log, lock, deadline, permissions,
  digest, manifest, schema, results, argspec, cliparse, bootstrap): they import only each other;
- `orchestrator/`: the `index.py` command line and running modules; it may use `report/`;
- `release/`: installing tools from GitHub releases, for the update modules;
- `vcs/`: git, version tags and the rollback operations behind `rollback.py`;
- `report/`: run history, metrics, notifications and what the operator reads;
- the files DESIGN.md names: `index.py` (for modules), `checksummer.py`, `rollback.py`.
Nothing here imports an update module.

The names below are loaded on first use, so that `index.py --help` and modules that need only one helper
do not pay for importing everything (the HTTP stack in particular).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compute_folder_sha256": "digest",
    "run_children": "orchestrator.runner",
    "tag_module": "rollback",
    "list_available_versions": "rollback",
    "rollback_module": "rollback",
    "rollback_to_last_safe": "rollback",
    "mark_safe": "rollback",
}

__all__ = [
    "compute_folder_sha256",
    "list_available_versions",
    "mark_safe",
    "rollback_module",
    "rollback_to_last_safe",
    "run_children",
    "tag_module",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
