"""Shared code of the orchestrator and its update modules.

The names below are loaded on first use, so that `index.py --help` and modules that need only one helper
do not pay for importing everything (the HTTP stack in particular).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compute_folder_sha256": "checksum",
    "run_children": "runner",
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
