"""adblock: compile public DNS blocklists into one list and install it where the resolver reads it."""
import os

from ..utils.index import compute_folder_sha256

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(_HERE, "checksum"), encoding="ascii") as _fh:
        CHECKSUM = _fh.read().strip() or None
except FileNotFoundError:
    CHECKSUM = None
LIVE_CHECKSUM = compute_folder_sha256(_HERE)
