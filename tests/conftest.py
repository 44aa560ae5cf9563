"""Shared test setup: register the checkout as the package `updates`, the way index.py does."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

sys.dont_write_bytecode = True  # never leave bytecode inside module directories

_spec = importlib.util.spec_from_file_location("_updates_entry", ROOT / "index.py")
assert _spec is not None and _spec.loader is not None
_entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_entry)
_entry.load_package()
