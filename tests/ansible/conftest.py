"""The Ansible tests' support modules (sshd_support, fleet_support) live beside them: make them importable
the way tests/*_support.py are (pyproject puts only tests/ on the path)."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
