"""Domain names: validation (hblock's rules), reserved/local names, IDN to punycode.

Contract: `normalize(token)` turns one token from a list into the name to block (lower case, no trailing
dot, punycode) or tells why it cannot be blocked: `INVALID` (not a blockable host name; hblock rejects the
whole line) or `RESERVED` (a local/special-use name that must never be blocked; dropped on its own).
Validity is judged first, so an invalid name under a reserved TLD still rejects its line (hblock's order).
The rules follow hblock: labels of `[0-9a-z_-]` (1-63 chars), at least two labels, a last label that starts
with a letter and ends with a letter or digit. Two additions: no label starts or ends with a hyphen (host
name rule; it also keeps AdBlock URL fragments like `-coin-hive.js` out), and names are capped at 253
characters (DNS limit).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

idna: ModuleType | None
try:
    # Imported here, not on first use: the parse helper process (parallel.py) must never import anything.
    import idna
except ImportError:  # pragma: no cover - requests depends on idna
    idna = None

INVALID = "invalid"
RESERVED = "reserved"

# Top-level names that are local or special-use: hblock's set plus the ones IANA/ICANN reserved since.
RESERVED_TLDS = frozenset(
    {
        "corp", "domain", "example", "home", "host", "invalid", "lan", "local",
        "localdomain", "localhost", "test", "internal", "alt",
    }
)  # fmt: skip
RESERVED_SUFFIXES = (".home.arpa",)
# Names hosts files carry for the machine itself; they are dropped quietly, never counted as invalid.
LOCAL_NAMES = frozenset(
    {
        "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
        "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
        "ip6-allhosts", "localdomain", "home.arpa",
    }
)  # fmt: skip

NAME_RE = re.compile(r"(?:[0-9a-z_](?:[0-9a-z_-]{0,61}[0-9a-z_])?\.)+[a-z][0-9a-z-]{0,61}[0-9a-z]")
MAX_NAME = 253


def is_reserved(name: str) -> bool:
    """True for names that must never be blocked (`name` is lower case, without trailing dot)."""
    if name in LOCAL_NAMES or name.endswith(RESERVED_SUFFIXES):
        return True
    return name.rpartition(".")[2] in RESERVED_TLDS


def is_valid(name: str) -> bool:
    """True when `name` (lower case ASCII, no trailing dot) is a blockable host name."""
    return len(name) <= MAX_NAME and NAME_RE.fullmatch(name) is not None


def to_ascii(name: str) -> str | None:
    """Punycode form of an internationalized name (IDNA 2008 with UTS 46 mapping when the `idna` package,
    a dependency of requests, is there; Python's IDNA 2003 codec otherwise), or None when it is not valid."""
    try:
        if idna is None:
            return name.encode("idna").decode("ascii")
        return idna.encode(name, uts46=True).decode("ascii")
    except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
        return None


def normalize(token: str) -> str:
    """The name to block for `token`, or `INVALID` / `RESERVED` (see the module docstring)."""
    name = token.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        converted = to_ascii(name)
        if converted is None:
            return INVALID
        name = converted
    # Validity first (hblock's order): an invalid name rejects its line even when it ends in `.local`.
    # The machine's own names (`localhost`, one label) are dropped quietly all the same.
    if name in LOCAL_NAMES:
        return RESERVED
    if not is_valid(name):
        return INVALID
    return RESERVED if is_reserved(name) else name
