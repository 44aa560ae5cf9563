#!/usr/bin/env python3
"""Entry point: `python index.py [run|status|verify] ...`. All behaviour lives in `utils/cli.py`."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def load_package() -> None:
    """Register the root directory as the package `updates`, whatever the folder is called."""
    if "updates" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "updates", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["updates"] = package
    spec.loader.exec_module(package)


if __name__ == "__main__":
    load_package()
    from updates.utils.cli import main

    raise SystemExit(main(sys.argv[1:]))
