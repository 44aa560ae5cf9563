"""The role's own Python files, loaded as plain modules for the tests (as Ansible would load them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROLE = Path(__file__).resolve().parents[2] / "config" / "ansible" / "roles" / "updates"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"role_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
