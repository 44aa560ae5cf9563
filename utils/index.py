"""Compatibility surface for update modules: `from ..utils.index import compute_folder_sha256`.

DESIGN.md promises modules this import path; the implementation lives in `digest.py`.
"""
from __future__ import annotations

from .digest import compute_folder_sha256, read_checksum_file

__all__ = ["compute_folder_sha256", "read_checksum_file"]
