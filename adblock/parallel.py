"""Parse one large list with two processes: each parses half the lines, then they split the names by range.

Contract: `parse_in_two(data, lenient, parse_part)` returns (the sorted unique names of `data`, its
ListStats) equal to what the single-process path gives, or None when it cannot run here (fewer than two
CPUs for this process by affinity or cgroup quota, no fork or memfd), in which case the caller parses
serially.

Why two processes whenever two CPUs are there, busy or not: the work splits with next to no extra CPU
(the same CPU time as one process, measured), and on CPUs that other processes keep busy the scheduler
shares time per process, so two of ours get more of it than one (1,000,000 lines with both CPUs spinning,
on a 2-CPU VM: 1.69 s in two processes against 2.05 s in one). Measuring the load first (as this module
once did) cost a serial piece of work before every fork and never changed the answer for the better.

How: the parent forks; parent and child each parse half of the lines (at a line boundary) and file their
names in groups by their first characters (order.py). A pivot (from a sample taken before the fork, see
PIVOT_AT) cuts the groups in two ranges: the child sends its groups of the lower range to the parent and
receives the parent's groups of the upper range (marshal over pipes, each group as one string); each then
sorts and de-duplicates its range group by group into one block of text (order.sorted_text); the child
writes its block into a memory file (memfd) and tells the parent its size, and the parent keeps it as it
is (an order.SortedNames of the two blocks).
The two ranges are disjoint, so lower + upper is the sorted, de-duplicated whole. The bytes are shared
with the child by the fork (never written, so never copied). The child only computes, talks over its
pipes and writes its memory file, then leaves with `os._exit` (no cleanup handlers, no logging, none of its
names freed one by one); any failure in it makes the parent raise.

Whatever ends the parent's part (an error, a module timeout, Ctrl-C, even one landing right after the fork)
the child is killed unless it finished and is always reaped before `parse_in_two` returns or raises; on
Linux it is also killed when the parent dies (SIGKILL included), so it never computes on for nobody.
"""
from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .order import KEY, SortedNames, group, sorted_text

SAMPLE_WINDOWS = 64
SAMPLE_SIZE = 4096
# Where the pivot cuts the names: in halves. The parent's extra work (a thread writing the cache copy,
# reading the child's block) and the child's (sending its groups first) weigh about the same: measured, the
# two finish sorting together.
PIVOT_AT = 0.5
SPLIT_AT = 0.5  # where the lines are cut: the parent parses those before, the child those after
PIPE_BUFFER = 1 << 20
_RANGE = struct.Struct("!QQ")  # names, bytes
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _quota() -> float | None:
    """CPUs a cgroup v2 quota (systemd CPUQuota=) allows this process, or None when unlimited/unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines()
        path = next(line[3:] for line in lines if line.startswith("0::"))
        quota, period = (Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, StopIteration, ValueError, UnicodeDecodeError):
        return None


def _cpus() -> float:
    try:
        count: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _quota()
    return count if quota is None else min(count, quota)


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


def _receive_range(stream: BinaryIO, range_file: int) -> tuple[bytes, int]:
    """The helper's sorted range (its block and the number of names in it): the size comes down the pipe
    once the block is in `range_file`."""
    data = _receive(stream)
    if len(data) != _RANGE.size:
        raise EOFError("the helper process sent something other than the size of its range")
    count, size = _RANGE.unpack(data)
    pieces = []
    offset = 0
    while offset < size:  # pread may return less than asked
        piece = os.pread(range_file, size - offset, offset)
        if not piece:
            raise EOFError("the helper process left its range incomplete")
        pieces.append(piece)
        offset += len(piece)
    block = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not block.isascii():  # names are punycode: anything else is not what our helper writes
        raise EOFError("the helper process sent something other than names")
    return block, count


def _send_groups(stream: BinaryIO, groups: dict[str, list[str]], keys: list[str]) -> list[list[str]]:
    """Send the groups `keys` (one joined string each) and take them out of `groups`; returns them."""
    sent = [groups.pop(key) for key in keys]
    _send(stream, marshal.dumps(dict(zip(keys, map("\n".join, sent), strict=True))))
    return sent


def _receive_groups(stream: BinaryIO) -> dict[str, str]:
    groups = marshal.loads(_receive(stream))  # noqa: S302 - our own child or parent, a private pipe
    if not isinstance(groups, dict):
        raise EOFError("the helper process sent something other than names")
    return groups


def _pivot(data: bytes, lenient: bool, parse_part: Callable[..., Any]) -> str:
    """The group key at PIVOT_AT of evenly spaced samples of whole lines: a cut sharing the work evenly."""
    step = max(len(data) // SAMPLE_WINDOWS, 1)
    sample = []
    for at in range(0, len(data), step):
        begin = data.find(b"\n", at) + 1
        end = data.rfind(b"\n", begin, begin + SAMPLE_SIZE) + 1
        if 0 < begin < end:
            sample.append(data[begin:end])
    joined = b"".join(sample)
    names = sorted(parse_part(joined, 0, len(joined), lenient)[0])
    return names[int(len(names) * PIVOT_AT)][:KEY] if names else ""


def _merged(
    groups: dict[str, list[str]], theirs: dict[str, str], sep: str, keep: list[list[str]] | None = None
) -> tuple[bytes, int]:
    """The sorted, de-duplicated names of our remaining groups and of the other process's same range, as
    one block of text (names joined by `sep`), and their number (order.sorted_text, which explains
    `keep`)."""
    return sorted_text(groups, sorted(groups.keys() | theirs.keys()), theirs, keep, sep)


def _child(
    part: tuple[bytes, int, int], lenient: bool, pivot: str, parse_part: Callable[..., Any], *,
    sep: str, out: BinaryIO, inp: BinaryIO, range_file: int,
) -> list[list[str]]:
    """The helper's work; returns its names, for the caller to hold until it ends: the process leaves with
    os._exit, so they are never freed one by one (half a million deallocations saved)."""
    names, stats = parse_part(*part, lenient)
    groups = group(names)
    del names
    _send(out, marshal.dumps(stats.counts()))
    kept = _send_groups(out, groups, [key for key in groups if key < pivot])
    block, count = _merged(groups, _receive_groups(inp), sep, kept)
    # Into memory of its own, not down the pipe: a pipe would hold the helper until the parent, still
    # sorting, reads; the parent reads the file at once when it is done.
    with open(range_file, "wb", closefd=False) as handle:
        handle.write(block)
    _send(out, _RANGE.pack(count, len(block)))
    return kept


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
    # Tens of MB cross it: a 1 MiB buffer (the unprivileged limit) instead of 64 KiB halves the switches
    # between writer and reader and takes about a third off the time. Refused (a user over the pages the
    # kernel allows for pipes): the default serves.
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
    return reader, stack.enter_context(os.fdopen(write_fd, "wb"))


def parse_in_two(
    data: bytes,
    lenient: bool,
    parse_part: Callable[..., Any],
    *,
    sep: str = "\n",
    after_fork: Callable[[], object] | None = None,
) -> tuple[SortedNames, Any] | None:
    """See the module docstring; the names come as a SortedNames whose blocks join them by `sep`.
    `parse_part(data, begin, end, lenient)` parses the lines of `data[begin:end]` into (unordered names,
    ListStats). `after_fork` is called once in the parent, right after the fork (not at all when this
    returns None or raises before forking): where a thread may start."""
    if _cpus() < 2 or not all(hasattr(os, name) for name in ("fork", "memfd_create", "pread")):
        return None
    if not hasattr(signal, "pthread_sigmask"):
        return None
    middle = data.find(b"\n", int(len(data) * SPLIT_AT)) + 1
    if middle <= 0:
        return None
    pivot = _pivot(data, lenient, parse_part)
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
            range_file = os.memfd_create("adblock-parse-range", os.MFD_CLOEXEC)
            pipes.callback(os.close, range_file)
            pid = os.fork()
            if pid == 0:  # the child: compute, talk over the pipes, leave without running any cleanup
                code = 1
                try:
                    _die_with(parent)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                    from_child.close()
                    to_child.close()
                    part = (data, middle, len(data))
                    # Held until os._exit below: the helper's names are never freed one by one.
                    kept = _child(  # noqa: F841
                        part, lenient, pivot, parse_part, sep=sep, out=to_parent, inp=from_parent,
                        range_file=range_file,
                    )
                    to_parent.close()
                    code = 0
                finally:
                    os._exit(code)
            to_parent.close()
            from_parent.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what came meanwhile is raised here
            if after_fork is not None:
                after_fork()
            names, stats = parse_part(data, 0, middle, lenient)
            groups = group(names)
            del names
            their_stats = marshal.loads(_receive(from_child))  # noqa: S302 - our own child, a private pipe
            theirs = _receive_groups(from_child)
            _send_groups(to_child, groups, [key for key in groups if key >= pivot])
            lower = _merged(groups, theirs, sep)
            del groups, theirs
            upper, upper_count = _receive_range(from_child, range_file)
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
    return SortedNames([lower, (upper, upper_count)], sep), stats
