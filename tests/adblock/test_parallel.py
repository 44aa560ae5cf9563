"""adblock's two-process parse gives exactly what the one-process parse gives, and survives its helper dying."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from updates.adblock.parallel import parse_in_two
from updates.adblock.parse import decode, parse_chunk, parse_list


def mixed_list(lines: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    shapes = [
        "0.0.0.0 {n}", "127.0.0.1\t{N}", "{n}", "{n} # note", "# {n}", "", "::1 {n} {m}", "||{n}^",
        "||{n}^$third-party", "0.0.0.0 {n}.local", "bad-.{n}", "  {n}.", "0.0.0.0 bücher-{i}.de", "! comment",
    ]
    out = []
    for i in range(lines):
        n = f"h{rng.randrange(lines // 3)}.example{rng.randrange(5)}.com"  # many repeats, across both halves
        m = f"x{rng.randrange(lines)}.net"
        out.append(rng.choice(shapes).format(n=n, N=n.upper(), m=m, i=i % 50))
    return ("\n".join(out) + "\n").encode()


def two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the two-process parse only runs with two CPUs")


def test_two_processes_equal_one() -> None:
    two_cpus()
    data = mixed_list(60_000)
    serial = parse_list(data, parallel_min=1 << 60)
    parallel = parse_list(data, parallel_min=0)
    assert parallel.names == serial.names
    assert parallel.names == sorted(set(parallel.names))
    s, p = serial.stats, parallel.stats
    assert (p.lines, p.names, p.invalid, p.reserved, p.unsupported) == (
        s.lines, s.names, s.invalid, s.reserved, s.unsupported
    )
    assert p.invalid > 0 and p.reserved > 0 and p.unsupported > 0
    assert any(n.startswith("xn--bcher-") for n in parallel.names)


def test_helper_result_is_direct_and_complete() -> None:
    two_cpus()
    text = decode(mixed_list(20_000, seed=9))
    result = parse_in_two([text], False, parse_chunk)
    assert result is not None  # it really ran in two processes
    names, _stats = result
    found, _ = parse_chunk(text)
    assert names == sorted(set(found))


def failing_in_child(text: str, lenient: bool = False) -> tuple[list[str], object]:
    if text.startswith("# CHILD-HALF"):  # the helper's half of the text, never the parent's or the sample
        raise ValueError("boom in the helper")
    return parse_chunk(text, lenient)


def children() -> set[int]:
    """Pids of this process's children (zombies included), from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def test_a_failing_helper_is_reported_and_reaped() -> None:
    two_cpus()
    half = "".join(f"0.0.0.0 n{i}.example.com\n" for i in range(2000))
    text = "# PARENT-HALF\n" + half + "# CHILD-HALF\n" + half
    before = children()
    parts = [text]
    with pytest.raises(EOFError, match="helper process ended early"):
        parse_in_two(parts, False, failing_in_child)
    assert children() == before  # the helper was waited for: no zombie left behind
    assert len(parts) == 2 and "".join(parts) == text  # what parse_list falls back on
