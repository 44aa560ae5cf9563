"""Shared test setup: register the checkout as the package `updates`, the way index.py does."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

sys.dont_write_bytecode = True  # never leave bytecode inside module directories

runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()
