"""Parse one downloaded list into the names it blocks, in one pass over the text.

Contract: `parse_list(data, lenient=...)` accepts hosts files (`0.0.0.0`, `127.0.0.1`, `::`, `::1` prefixes;
any IPv4/IPv6 prefix when `lenient`), plain domain lists and AdBlock `||name^` rules, with `#` comments
(inline too, cut off before anything else is looked at, as hblock does) and whole-line `!` comments, CRLF,
tabs, upper case, trailing dots, IDN (to punycode) and several names per line. A line with any invalid name
is rejected whole (hblock's rule); reserved/local names are dropped on their own. AdBlock rules with paths,
modifiers, wildcards or exceptions, and element hiding / scriptlet rules (`site##.ad`, `#@#`, `#?#`, `#$#`,
`#%#`, `##+js(...)`), are skipped and counted as unsupported: they never block their site.

Speed: a 1,000,000-line list must parse in a fraction of a second in CPython, so the common line shapes
(`[0.0.0.0|127.0.0.1|::|::1] name [# comment]`, comment and blank lines) are recognised by one compiled
regex over each piece of text (`re.split` on PIECE bytes of whole lines at a time, no Python code per
line). Every line the fast pattern does not take goes through `parse_line`, the careful path. The fast
pattern is deliberately narrower than the rules: it only takes lines whose result is certain, except for
label and name lengths, which are re-checked afterwards on the few names longer than 63 characters.
Possessive quantifiers keep it from backtracking.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .domains import INVALID, RESERVED, RESERVED_TLDS, is_valid, normalize
from .order import SortedNames, sorted_names
from .parallel import parse_in_two

log = logging.getLogger(__name__)

SAMPLES = 5
# Bytes decoded and split at a time: the whole text is never decoded at once (at 5,000,000 lines it would
# weigh three times 150 MB on the way), and a piece's text and its split stay in the CPU's cache (the parse
# is about a tenth faster with 1 MB pieces than with 4 MB ones).
PIECE = 1 << 20
# Bytes; below this the helper's start and the exchange cost about what a second CPU saves (100,000 lines,
# 2.9 MB: 0.20 s in two processes against 0.21 s in one; 300,000 lines: 0.33 s against 0.38 s).
PARALLEL_MIN = 4 << 20
# Bytes; above this one process: the helper adds about 60 MB per million lines at the peak (a 5,000,000-line
# list would take 890 MB instead of 570 MB).
PARALLEL_MAX = 64 << 20
STRICT_IPS = frozenset({"0.0.0.0", "127.0.0.1", "::", "::1"})  # noqa: S104 - blocklist prefixes, not binds

# Element hiding and scriptlet rules (`site##.ad`, `#@#`, `#?#`, `#$#`, `#%#`, `#@$?#`, `##+js(...)`): the `#`
# that follows a name directly, with one of these after it, starts a rule for the page, not a comment.
_COSMETIC_REST = r"@?[$?%]{0,2}#"
_COSMETIC = re.compile(_COSMETIC_REST)
# Top-level names the fast path must leave to the careful path: reserved ones, and `arpa` (home.arpa).
_SLOW_TLDS = "|".join(sorted(RESERVED_TLDS | {"arpa"}, key=len, reverse=True))
_FAST = re.compile(
    r"^(?:(?:0\.0\.0\.0|127\.0\.0\.1|::1?)[ \t]++)?+"
    # Labels: no empty label, no hyphen at an edge (one possessive run per label, then a look back: a
    # quarter faster than spelling the hyphen runs out).
    r"((?:[0-9a-z_][0-9a-z_-]*+(?<!-)\.)++"
    r"(?!(?:" + _SLOW_TLDS + r")(?![0-9a-z-]))[a-z][0-9a-z-]++(?<!-))"  # last label: 2+ characters
    r"\.?[ \t]*+(?:#(?!" + _COSMETIC_REST + r")[^\n]*+)?\n"  # a comment, but not `##` & co
    r"|^[ \t]*+(?:[#!][^\n]*+)?\n",
    re.MULTILINE,
)
# AdBlock syntax markers (looked for once the comment is cut off); hosts and domain lines never contain them.
_ABP_MARK = re.compile(r"[|^$*/@]")
_ABP_DOMAIN = re.compile(r"\|\|([^|^$*/@#\s]+)\^")

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
    names: SortedNames  # sorted, no duplicates
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
    hash_at = text.find("#")
    if hash_at != -1:
        # `site##.ad` (no blank before the `#`) is a rule for the page: it blocks nothing. Any other `#`
        # starts a comment, cut off before anything else is looked at (it may hold URLs, `|`, `$`, `##`).
        if text[hash_at - 1] not in " \t" and _COSMETIC.match(text, hash_at + 1):
            return [], UNSUPPORTED, 0
        text = text[:hash_at].rstrip()
    if _ABP_MARK.search(text):
        match = _ABP_DOMAIN.fullmatch(text)
        if match is None:
            return [], UNSUPPORTED, 0
        tokens = [match.group(1)]
    else:
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
    """The names of decoded text (unordered, duplicates kept) and its counts (`names` left at 0)."""
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


def parse_part(data: bytes, start: int, end: int, lenient: bool = False) -> tuple[list[str], ListStats]:
    """The names of the lines of `data[start:end]` (unordered, duplicates kept) and their counts; decoded
    PIECE bytes (whole lines) at a time. `start` is at a line's beginning."""
    names: list[str] = []
    stats = ListStats()
    while start < end:
        stop = data.find(b"\n", min(start + PIECE, end) - 1, end) + 1 or end
        found, counts = parse_chunk(decode(data[start:stop]), lenient)
        names += found
        del found
        stats.add(*counts.counts())
        start = stop
    return names, stats


class _Meanwhile:
    """Runs `work` once in a thread of its own from `start()` (later calls: nothing); `finish()` waits for
    it and raises what it raised. File writes and hashing release the GIL, so the work costs the parse
    little. It is started only where no fork follows: a process forked while another thread holds a lock
    (logging's, a file's) could take that lock held into the child. The thread blocks every signal, so
    that a signal (a deadline's alarm, Ctrl-C) always reaches the main thread, where parse_in_two's masks
    hold it back while the helper is killed and reaped; and `finish()` waits for the thread even when such
    a signal interrupts it, so that no thread of ours outlives `parse_list`."""

    def __init__(self, work: Callable[[], object] | None) -> None:
        self.work = work
        self.thread: threading.Thread | None = None
        self.error: Exception | None = None
        self.done = threading.Event()  # set by the thread: join() interrupted may take it for ended

    def start(self) -> None:
        if self.work is None or self.thread is not None:
            return
        thread = threading.Thread(target=self._run, name="adblock-meanwhile", daemon=True)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            thread.start()  # a new thread starts with the mask of the thread that starts it
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.thread = thread

    def _run(self) -> None:
        try:
            assert self.work is not None
            self.work()
        except Exception as exc:  # raised by finish(), in the caller's thread
            self.error = exc
        finally:
            self.done.set()

    def finish(self) -> None:
        interrupted: BaseException | None = None
        while self.thread is not None:
            try:
                self.done.wait()
                self.thread.join()
                break
            except BaseException as exc:  # raised below, once the thread has ended
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if self.error is not None:
            raise self.error


def parse_list(
    data: bytes,
    *,
    lenient: bool = False,
    parallel: bool | None = None,
    meanwhile: Callable[[], object] | None = None,
    sep: str = "\n",
) -> ParsedList:
    """Parse one list into its sorted, de-duplicated names; see the module docstring.

    `parallel`: None decides by size: a list of PARALLEL_MIN to PARALLEL_MAX bytes is parsed by two
    processes (see parallel.py) where this process may use two CPUs; True tries two processes whatever the
    size; False never. The result is the same.
    `meanwhile` (e.g. writing the bytes to a cache) is called exactly once, in a thread of its own while the
    list is parsed (started after the helper process is forked, or before the parse when there is none); it
    is waited for before this returns or raises. Its failure (a full disk) is its own: raised once the list
    is parsed, never taken for the helper's. `sep` joins the names in the blocks of the SortedNames (see
    order.py): the separator of the output format (render.separator) spares rendering a pass over them.
    """
    background = _Meanwhile(meanwhile)
    # The caller hands over its only reference; this frame keeps none either, so that the bytes (150 MB at
    # 5,000,000 lines) are freed once parsed, before the names are sorted (the peak of memory).
    handed = [data]
    del data
    try:
        parsed = _parse_list(handed, lenient, parallel, background, sep)
    except BaseException:
        # Waited for even when the parse fails (a timeout), whose error is the one to raise.
        try:
            background.finish()
        except Exception as exc:  # the parse's error wins; this one is only logged
            log.warning("while the list was parsed, the cache copy failed too: %s", exc)
        raise
    background.finish()
    return parsed


def _parse_list(
    handed: list[bytes], lenient: bool, parallel: bool | None, background: _Meanwhile, sep: str
) -> ParsedList:
    data = handed.pop()
    size = len(data)
    result = None
    if parallel or (parallel is None and PARALLEL_MIN <= size <= PARALLEL_MAX):
        try:
            result = parse_in_two(data, lenient, parse_part, sep=sep, after_fork=background.start)
        except (EOFError, OSError, RuntimeError) as exc:
            log.warning("parallel parsing failed (%s); parsing in this process", exc)
    background.start()
    names: SortedNames
    if result is None:
        found, stats = parse_part(data, 0, size, lenient)
        del data  # the last reference (see parse_list): the bytes go before the sort
        names = sorted_names(found, sep)
    else:
        names, stats = result
    stats.names = len(names)
    return ParsedList(names, stats)
