"""Parse one large list with two processes: each parses half the lines, then they split the names by range.

Contract: `parse_in_two(data, start, lenient, parse_part, head=...)` returns (sorted unique names of `head`
plus `data[start:]`, the ListStats of `data[start:]`) equal to what the single-process path gives, or None
when it cannot run here (one CPU, no fork), in which case the caller parses serially. `CpuWindow` tells
whether a second process would get a CPU of its own now (`free_cpus()`), so that the caller takes this path
only where it pays: on a machine whose CPUs are busy, two processes lose to one.

How: the parent forks; parent and child each parse half of the lines (at a line boundary) and file their
names in groups by their first characters (order.py). A pivot (from a sample taken before the fork, see
PIVOT_AT) cuts the groups in two ranges: the child sends its groups of the lower range to the parent and
receives the parent's groups of the upper range (marshal over pipes, each group as one string); each then
sorts and de-duplicates its range group by group into one block of text (order.sorted_text), and the child
sends its block to the parent, which keeps it as it is (an order.SortedNames of the two blocks).
The two ranges are disjoint, so lower + upper is the sorted, de-duplicated whole. The bytes are shared
with the child by the fork (never written, so never copied). The child only computes and talks over its
pipes, then leaves with `os._exit` (no cleanup handlers, no logging); any failure in it makes the parent
raise.

Whatever ends the parent's part (an error, a module timeout, Ctrl-C, even one landing right after the fork)
the child is killed unless it finished and is always reaped before `parse_in_two` returns or raises; on
Linux it is also killed when the parent dies (SIGKILL included), so it never computes on for nobody.
"""
from __future__ import annotations

import contextlib
import marshal
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .order import KEY, SortedNames, group, sorted_text

SAMPLE_WINDOWS = 64
SAMPLE_SIZE = 4096
# Where the pivot cuts the names: the child sorts the upper range and must also send it back, and the
# parent split what comes back, so the child gets less than half of the names and both finish together.
PIVOT_AT = 0.6
_COUNT = struct.Struct("!Q")
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


def _busy_seconds() -> float | None:
    """CPU time spent by everything on the machine (all CPUs, not idle), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # idle and iowait are not busy


class CpuWindow:
    """Measures, around a piece of this process's own work, how much CPU everything else used meanwhile:
    `free_cpus()` is the CPUs this process may use minus the others' load (0 when unknown)."""

    def __enter__(self) -> CpuWindow:
        self.busy, self.mine, self.wall = _busy_seconds(), time.process_time(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _busy_seconds()
        self.others = None
        wall = time.monotonic() - self.wall
        if busy is not None and self.busy is not None and wall > 0:
            self.others = max(0.0, (busy - self.busy - (time.process_time() - self.mine)) / wall)

    def free_cpus(self) -> float:
        return 0.0 if self.others is None else _cpus() - self.others


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


def _receive_count(stream: BinaryIO) -> int:
    data = _receive(stream)
    if len(data) != _COUNT.size:
        raise EOFError("the helper process sent something other than a count")
    count: int = _COUNT.unpack(data)[0]
    return count


def _send_groups(stream: BinaryIO, groups: dict[str, list[str]], keys: list[str]) -> None:
    """Send the groups `keys` (one joined string each) and drop them from `groups`."""
    _send(stream, marshal.dumps({key: "\n".join(groups.pop(key)) for key in keys}))


def _receive_groups(stream: BinaryIO) -> dict[str, str]:
    groups = marshal.loads(_receive(stream))  # noqa: S302 - our own child or parent, a private pipe
    if not isinstance(groups, dict):
        raise EOFError("the helper process sent something other than names")
    return groups


def _pivot(data: bytes, start: int, lenient: bool, parse_part: Callable[..., Any]) -> str:
    """The group key at PIVOT_AT of evenly spaced samples of whole lines: a cut sharing the work evenly."""
    step = max((len(data) - start) // SAMPLE_WINDOWS, 1)
    sample = []
    for at in range(start, len(data), step):
        begin = data.find(b"\n", at) + 1
        end = data.rfind(b"\n", begin, begin + SAMPLE_SIZE) + 1
        if 0 < begin < end:
            sample.append(data[begin:end])
    joined = b"".join(sample)
    names = sorted(parse_part(joined, 0, len(joined), lenient)[0])
    return names[int(len(names) * PIVOT_AT)][:KEY] if names else ""


def _merged(groups: dict[str, list[str]], theirs: dict[str, str]) -> tuple[bytes, int]:
    """The sorted, de-duplicated names of our remaining groups and of the other process's same range, as
    one block of text, and their number (order.sorted_text)."""
    return sorted_text(groups, sorted(groups.keys() | theirs.keys()), theirs)


def _child(
    part: tuple[bytes, int, int], lenient: bool, pivot: str, parse_part: Callable[..., Any], *,
    out: BinaryIO, inp: BinaryIO,
) -> None:
    names, stats = parse_part(*part, lenient)
    groups = group(names)
    del names
    _send(out, marshal.dumps(stats.counts()))
    _send_groups(out, groups, [key for key in groups if key < pivot])
    block, count = _merged(groups, _receive_groups(inp))
    _send(out, _COUNT.pack(count))
    _send(out, block)


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
    data: bytes,
    start: int,
    lenient: bool,
    parse_part: Callable[..., Any],
    *,
    head: list[str] | None = None,
    after_fork: Callable[[], object] | None = None,
) -> tuple[SortedNames, Any] | None:
    """See the module docstring; the names come as a SortedNames. `parse_part(data, begin, end, lenient)`
    parses the lines of `data[begin:end]` into (unordered names, ListStats); `head` (not modified) holds
    names the caller parsed already, which join the parent's half. `after_fork` is called once in the
    parent, right after the fork (not at all when this returns None or raises before forking): where a
    thread may start."""
    if _cpus() < 2 or not hasattr(os, "fork") or not hasattr(signal, "pthread_sigmask"):
        return None
    # Half of the rest each, a little less for the parent, which sorts the first `start` bytes' names too.
    middle = data.find(b"\n", (start + len(data)) // 2 - start // 5) + 1
    if middle <= start:
        return None
    pivot = _pivot(data, start, lenient, parse_part)
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
                    part = (data, middle, len(data))
                    _child(part, lenient, pivot, parse_part, out=to_parent, inp=from_parent)
                    to_parent.close()
                    code = 0
                finally:
                    os._exit(code)
            to_parent.close()
            from_parent.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what came meanwhile is raised here
            if after_fork is not None:
                after_fork()
            names, stats = parse_part(data, start, middle, lenient)
            if head:
                names = head + names
            groups = group(names)
            del names
            their_stats = marshal.loads(_receive(from_child))  # noqa: S302 - our own child, a private pipe
            theirs = _receive_groups(from_child)
            _send_groups(to_child, groups, [key for key in groups if key >= pivot])
            lower = _merged(groups, theirs)
            del groups, theirs
            upper_count = _receive_count(from_child)
            upper = _receive(from_child)
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
    if not upper.isascii():  # names are punycode: anything else is not what our helper sends
        raise EOFError("the helper process sent something other than names")
    return SortedNames([lower, (upper, upper_count)]), stats
