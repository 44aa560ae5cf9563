#!/usr/bin/env python3
"""Entry point: `python index.py [run|status|verify|history] ...`; the CLI lives in utils/orchestrator/."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parent / "utils" / "bootstrap.py"))["register_package"]()
    from updates.utils.orchestrator.cli import main

    raise SystemExit(main(sys.argv[1:]))
