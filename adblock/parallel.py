"""Parse one large list with two processes: each parses half the lines, then they split the names by range.

Contract: `parse_in_two([text], lenient, parse_chunk)` returns (sorted unique names, merged ListStats)
equal to what the single-process path gives, or None when it cannot run here (one CPU, no fork), in which
case the caller parses serially. It exists because a 1,000,000-line list must compile in about a second of
CPython: parsing, de-duplicating and sorting are each a few hundred nanoseconds per line, and two cores
halve them.

How: the parent forks; parent and child each parse half of the lines (at a line boundary), sort their names
and cut them at a common pivot (the median of a sample taken before the fork). The child sends its lower
part to the parent and receives the parent's upper part (marshal over pipes), merges and de-duplicates the
upper range and sends it back; the parent does the same for the lower range. The two ranges are disjoint, so
lower + upper is the sorted, de-duplicated whole. The child only computes and talks over its pipes, then
leaves with `os._exit` (no cleanup handlers, no logging); any failure in it makes the parent raise.

Whatever ends the parent's part (an error, a module timeout, Ctrl-C, even one landing right after the fork)
the child is killed unless it finished and is always reaped before `parse_in_two` returns or raises; on
Linux it is also killed when the parent dies (SIGKILL included), so it never computes on for nobody.
"""
from __future__ import annotations

import bisect
import contextlib
import itertools
import marshal
import operator
import os
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

SAMPLE_WINDOWS = 64
SAMPLE_SIZE = 4096
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _send(stream: BinaryIO, data: bytes) -> None:
    stream.write(struct.pack("!Q", len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes:
    header = stream.read(8)
    if len(header) != 8:
        raise EOFError("the helper process ended early")
    (size,) = struct.unpack("!Q", header)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the helper process ended early")
    return data


def _send_names(stream: BinaryIO, names: list[str]) -> None:
    # Names are ASCII (punycode) without newlines: one join is much cheaper than pickling a list.
    _send(stream, "\n".join(names).encode("ascii"))


def _receive_names(stream: BinaryIO) -> list[str]:
    data = _receive(stream)
    return data.decode("ascii").split("\n") if data else []


def _pivot(text: str, lenient: bool, parse_chunk: Callable[..., Any]) -> str:
    """The median name of evenly spaced samples of whole lines: a cut that splits the work about evenly."""
    step = max(len(text) // SAMPLE_WINDOWS, 1)
    sample = []
    for start in range(0, len(text), step):
        begin = text.find("\n", start) + 1
        end = text.rfind("\n", begin, begin + SAMPLE_SIZE) + 1
        if 0 < begin < end:
            sample.append(text[begin:end])
    names = sorted(parse_chunk("".join(sample), lenient)[0])
    return names[len(names) // 2] if names else ""


def unique_sorted(names: list[str]) -> list[str]:
    """Sort `names` in place and return them without duplicates (cheaper than hashing them all)."""
    names.sort()
    return list(map(operator.itemgetter(0), itertools.groupby(names)))


def _merge_range(mine: list[str], theirs: list[str]) -> list[str]:
    mine += theirs
    return unique_sorted(mine)  # two sorted runs: Timsort merges them in one pass


def _child(
    text: str, lenient: bool, pivot: str, parse_chunk: Callable[..., Any], *, out: BinaryIO, inp: BinaryIO
) -> None:
    names, stats = parse_chunk(text, lenient)
    del text
    names.sort()
    cut = bisect.bisect_left(names, pivot)
    _send(out, marshal.dumps(stats.counts()))
    _send_names(out, names[:cut])
    upper = names[cut:]
    del names
    _send_names(out, _merge_range(upper, _receive_names(inp)))


def _die_with(parent: int) -> None:
    """In the child: be killed when the parent dies, even by SIGKILL, which runs none of its cleanup."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415 - only the child loads it, after the fork

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _pipe(stack: contextlib.ExitStack) -> tuple[BinaryIO, BinaryIO]:
    """A pipe as (reader, writer) files that `stack` closes."""
    read_fd, write_fd = os.pipe()
    reader = stack.enter_context(os.fdopen(read_fd, "rb"))
    return reader, stack.enter_context(os.fdopen(write_fd, "wb"))


def parse_in_two(
    parts: list[str], lenient: bool, parse_chunk: Callable[..., Any]
) -> tuple[list[str], Any] | None:
    """See the module docstring. `parts` holds the whole text (and the only reference to it) on the way in;
    it is cut there into its two halves, whose concatenation is the text, so that no process keeps the
    whole text beside its half, and the helper keeps only its own half. After a failure `"".join(parts)`
    is the text again."""
    if _cpus() < 2 or not hasattr(os, "fork") or not hasattr(signal, "pthread_sigmask") or len(parts) != 1:
        return None
    middle = parts[0].find("\n", len(parts[0]) // 2) + 1
    if middle <= 0:
        return None
    pivot = _pivot(parts[0], lenient, parse_chunk)
    text = parts.pop()
    parts += [text[:middle], text[middle:]]
    del text
    parent = os.getpid()
    pid = 0
    finished = False
    # Signals wait from here until the child is known and owned by the `try`: an interruption landing
    # between the fork and the assignment of its pid would leave nobody to kill and reap the child.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        with contextlib.ExitStack() as pipes:
            from_child, to_parent = _pipe(pipes)
            from_parent, to_child = _pipe(pipes)
            pid = os.fork()
            if pid == 0:  # the child: compute, talk over the pipes, leave without running any cleanup
                code = 1
                try:
                    _die_with(parent)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                    from_child.close()
                    to_child.close()
                    del parts[0]  # the parent's half
                    _child(parts.pop(), lenient, pivot, parse_chunk, out=to_parent, inp=from_parent)
                    to_parent.close()
                    code = 0
                finally:
                    os._exit(code)
            to_parent.close()
            from_parent.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what came meanwhile is raised here
            names, stats = parse_chunk(parts[0], lenient)
            names.sort()
            cut = bisect.bisect_left(names, pivot)
            their_stats = marshal.loads(_receive(from_child))  # noqa: S302 - our own child, a private pipe
            their_lower = _receive_names(from_child)
            _send_names(to_child, names[cut:])
            lower = _merge_range(names[:cut], their_lower)
            del names, their_lower
            upper = _receive_names(from_child)
        finished = True
    finally:
        # Signals wait again, so that the child is reaped even when one comes now: otherwise it would stay
        # a zombie, or run on, after an interruption here. The wait is short: it was killed or has finished.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            if pid:
                if not finished:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the parsing helper process failed (status {status})")
    stats.add(*their_stats)
    lower += upper
    return lower, stats
