"""Parse one downloaded list into the names it blocks, in one pass over the text.

Contract: `parse_list(data, lenient=...)` accepts hosts files (`0.0.0.0`, `127.0.0.1`, `::`, `::1` prefixes;
any IPv4/IPv6 prefix when `lenient`), plain domain lists and AdBlock `||name^` rules, with `#`/`!` comments
(inline too), CRLF, tabs, upper case, trailing dots, IDN (to punycode) and several names per line. A line
with any invalid name is rejected whole (hblock's rule); reserved/local names are dropped on their own.
AdBlock rules with paths, modifiers, wildcards or exceptions are skipped and counted as unsupported.

Speed: a 1,000,000-line list must parse in a fraction of a second in CPython, so the common line shapes
(`[0.0.0.0|127.0.0.1|::|::1] name [# comment]`, comment and blank lines) are recognised by one compiled
regex over the whole text (`re.split`, no Python code per line). Every line the fast pattern does not take
goes through `parse_line`, the careful path. The fast pattern is deliberately narrower than the rules: it
only takes lines whose result is certain, except for label and name lengths, which are re-checked
afterwards on the few names longer than 63 characters. Possessive quantifiers keep it from backtracking.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field

from .domains import INVALID, RESERVED, RESERVED_TLDS, is_valid, normalize
from .parallel import parse_in_two, unique_sorted

log = logging.getLogger(__name__)

SAMPLES = 5
PARALLEL_MIN = 8 << 20  # characters; below this a second process costs more than it saves
STRICT_IPS = frozenset({"0.0.0.0", "127.0.0.1", "::", "::1"})  # noqa: S104 - blocklist prefixes, not binds

# Top-level names the fast path must leave to the careful path: reserved ones, and `arpa` (home.arpa).
_SLOW_TLDS = "|".join(sorted(RESERVED_TLDS | {"arpa"}, key=len, reverse=True))
_FAST = re.compile(
    r"^(?:(?:0\.0\.0\.0|127\.0\.0\.1|::1?)[ \t]+)?"
    r"((?:[0-9a-z_]++(?:-++[0-9a-z_]++)*+\.)++"  # labels: no empty label, no hyphen at an edge
    r"(?!(?:" + _SLOW_TLDS + r")(?![0-9a-z-]))[a-z][0-9a-z-]*[0-9a-z])"  # last label
    r"\.?[ \t]*(?:#[^\n]*)?\n"
    r"|^[ \t]*(?:[#!][^\n]*)?\n",
    re.MULTILINE,
)
# AdBlock syntax markers; plain hosts and domain lines never contain them.
_ABP_MARK = re.compile(r"[|^$*/@]|#[@?$%]?#")
_ABP_DOMAIN = re.compile(r"\|\|([^|^$*/@#\s]+)\^")
_TRAILING_COMMENT = re.compile(r"\s+#.*")  # `||name^ # why`: cosmetic rules (`##`) never follow a blank

COMMENT = "comment"
UNSUPPORTED = "unsupported"
OK = "ok"


@dataclass
class ListStats:
    """What one list contained: line counts, and names kept after de-duplication within the list."""

    lines: int = 0
    names: int = 0
    invalid: int = 0
    reserved: int = 0
    unsupported: int = 0
    samples: list[str] = field(default_factory=list)

    def reject(self, line: str) -> None:
        self.invalid += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(line.strip()[:200])

    def counts(self) -> tuple[int, int, int, int, list[str]]:
        """The line counts and samples, as plain values for another process."""
        return self.lines, self.invalid, self.reserved, self.unsupported, self.samples

    def add(self, lines: int, invalid: int, reserved: int, unsupported: int, samples: list[str]) -> None:
        """Add the `counts()` of another part of the same list."""
        self.lines += lines
        self.invalid += invalid
        self.reserved += reserved
        self.unsupported += unsupported
        self.samples = (self.samples + samples)[:SAMPLES]


@dataclass
class ParsedList:
    names: list[str]  # sorted, no duplicates
    stats: ListStats


def _is_prefix_ip(token: str, lenient: bool) -> bool:
    if token in STRICT_IPS:
        return True
    if not (token[0].isdigit() or ":" in token):
        return False
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return False
    return lenient or str(address) in STRICT_IPS


def parse_line(line: str, lenient: bool = False) -> tuple[list[str], str, int]:
    """The careful path for one line: (names, status, reserved names dropped).

    `status` is OK, COMMENT (nothing to block), INVALID (the line is rejected whole) or UNSUPPORTED.
    """
    text = line.strip()
    if not text or text[0] in "#!" or (text[0] == "[" and text[-1] == "]"):
        return [], COMMENT, 0
    if _ABP_MARK.search(text):
        match = _ABP_DOMAIN.fullmatch(_TRAILING_COMMENT.sub("", text))
        if match is None:
            return [], UNSUPPORTED, 0
        tokens = [match.group(1)]
    else:
        text = text.split("#", 1)[0]
        tokens = text.lower().split()
        if not tokens:
            return [], COMMENT, 0
        if _is_prefix_ip(tokens[0], lenient):
            tokens = tokens[1:]
            if not tokens:
                return [], INVALID, 0
    names: list[str] = []
    reserved = 0
    for token in tokens:
        result = normalize(token)
        if result is INVALID:
            return [], INVALID, 0
        if result is RESERVED:
            reserved += 1
        else:
            names.append(result)
    return names, OK, reserved


def decode(data: bytes) -> str:
    """Lower-cased text with CRs removed and a final newline; undecodable bytes make their line invalid."""
    lowered = data.lower()
    if lowered.isascii():
        text = lowered.decode("ascii")
    else:
        text = data.decode("utf-8", "replace").lower().removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r", "")
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def parse_chunk(text: str, lenient: bool = False) -> tuple[list[str], ListStats]:
    """The names of decoded text (file order, duplicates kept) and its counts (`names` left at 0)."""
    parts = _FAST.split(text)
    names = list(filter(None, parts[1::2]))
    leftovers = list(filter(None, parts[0::2]))
    # Every match is one line; what lies between matches is whole lines, each ending in "\n".
    stats = ListStats(lines=len(parts) // 2 + sum(chunk.count("\n") for chunk in leftovers))
    del parts
    if names and max(map(len, names)) > 63:
        names = [n for n in names if len(n) <= 63 or _still_valid(n, stats)]
    for chunk in leftovers:
        for line in chunk.split("\n"):
            if line:
                found, status, reserved = parse_line(line, lenient)
                stats.reserved += reserved
                if status is OK:
                    names += found
                elif status is INVALID:
                    stats.reject(line)
                elif status is UNSUPPORTED:
                    stats.unsupported += 1
    return names, stats


def _still_valid(name: str, stats: ListStats) -> bool:
    """The length rules the fast pattern leaves out (labels up to 63, names up to 253 characters)."""
    if is_valid(name):
        return True
    stats.reject(name)
    return False


def parse_list(data: bytes, *, lenient: bool = False, parallel_min: int = PARALLEL_MIN) -> ParsedList:
    """Parse one list into its sorted, de-duplicated names; see the module docstring.

    Texts of `parallel_min` characters or more are parsed by two processes when the machine has two CPUs
    (see parallel.py); the result is the same.
    """
    text = decode(data)
    del data
    result = None
    if len(text) >= parallel_min:
        parts = [text]
        del text  # parse_in_two cuts it in halves: no whole copy beside them
        try:
            result = parse_in_two(parts, lenient, parse_chunk)
        except (EOFError, OSError, RuntimeError) as exc:
            log.warning("parallel parsing failed (%s); parsing in this process", exc)
        text = "".join(parts) if result is None else ""
        del parts
    if result is None:
        found, stats = parse_chunk(text, lenient)
        del text
        names = unique_sorted(found)
        del found
    else:
        names, stats = result
    stats.names = len(names)
    return ParsedList(names, stats)
