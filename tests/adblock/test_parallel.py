"""adblock's two-process parse gives exactly what the one-process parse gives, and survives its helper dying."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from updates.adblock.parallel import parse_in_two
from updates.adblock.parse import ListStats, parse_list, parse_part


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
    from updates.adblock.parallel import _cpus

    if _cpus() < 2:
        pytest.skip("the two-process parse only runs with two CPUs (affinity and cgroup quota)")


def test_two_processes_equal_one(monkeypatch: pytest.MonkeyPatch) -> None:
    two_cpus()
    monkeypatch.setattr("updates.adblock.parse.PIECE", 1 << 16)  # each half in several pieces
    data = mixed_list(60_000)
    serial = parse_list(data, parallel=False)
    parallel = parse_list(data, parallel=True)
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
    data = mixed_list(20_000, seed=9)
    result = parse_in_two(data, False, parse_part)
    assert result is not None  # it really ran in two processes
    names, stats = result
    found, all_stats = parse_part(data, 0, len(data))
    assert len(names) == len(set(found))
    assert list(names) == sorted(set(found))
    assert stats.counts() == all_stats.counts()
    assert stats.lines == 20_000


def failing_in_child(data: bytes, start: int, end: int, lenient: bool = False) -> tuple[list[str], ListStats]:
    if data.startswith(b"# CHILD-HALF", start):  # the helper's half of the text, never the parent's or the sample
        raise ValueError("boom in the helper")
    return parse_part(data, start, end, lenient)


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
    with pytest.raises(EOFError, match="helper process ended early"):
        parse_in_two(text.encode(), False, failing_in_child)
    assert children() == before  # the helper was waited for: no zombie left behind


ROOT = Path(__file__).resolve().parents[2]

# A throwaway process for what cannot be undone in the test process (a fork hook) or must die (SIGKILL).
_PRELUDE = f"""
import functools, os, runpy, signal, sys, time
runpy.run_path({str(ROOT / "utils" / "bootstrap.py")!r})["register_package"]()
from updates.adblock.parallel import parse_in_two
from updates.adblock.parse import parse_part
"""


def run_script(tmp_path: Path, body: str, **popen: object) -> subprocess.Popen[str]:
    script = tmp_path / "script.py"
    script.write_text(_PRELUDE + body)
    return subprocess.Popen([sys.executable, str(script)], text=True, **popen)  # type: ignore[call-overload]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_interruption_right_after_the_fork_still_reaps_the_helper(tmp_path: Path) -> None:
    """The signal comes before os.fork() has even returned the helper's pid to the parent: sent by a fork
    hook through libc (no Python code in between that would run the handler earlier)."""
    two_cpus()
    body = """
import ctypes
class Interrupted(Exception):
    pass
def interrupt(signum, frame):
    raise Interrupted
signal.signal(signal.SIGUSR1, interrupt)
libc = ctypes.CDLL(None)
os.register_at_fork(after_in_parent=functools.partial(libc.kill, os.getpid(), signal.SIGUSR1))
text = "".join(f"0.0.0.0 n{i}.example.com\\n" for i in range(50_000))
try:
    parse_in_two(text.encode(), False, parse_part)
    print("not interrupted")
except Interrupted:
    print("interrupted")
mine = []
for stat in os.listdir("/proc"):
    try:
        if stat.isdigit() and int(open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
            mine.append(stat)
    except OSError:
        pass
print("children:", mine)
"""
    proc = run_script(tmp_path, body, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert out.splitlines() == ["interrupted", "children: []"], err


def test_the_helper_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL runs no cleanup: the helper must not compute on for nobody."""
    two_cpus()
    pid_file = tmp_path / "helper.pid"
    body = f"""
def slow(data, start, end, lenient=False):
    if data.startswith(b"# CHILD-HALF", start):
        with open({str(pid_file)!r} + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(60)
    elif data.startswith(b"# PARENT-HALF", start):
        time.sleep(60)
    return parse_part(data, start, end, lenient)
half = "".join(f"0.0.0.0 n{{i}}.example.com\\n" for i in range(2000))
parse_in_two(("# PARENT-HALF\\n" + half + "# CHILD-HALF\\n" + half).encode(), False, slow)
"""
    parent = run_script(tmp_path, body)
    helper = 0
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        helper = int(pid_file.read_text())
        assert alive(helper)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 5
        while alive(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(helper)
    finally:
        parent.kill()
        parent.wait(10)
        if helper and alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_a_module_timeout_in_the_parent_half_kills_and_reaps_the_helper() -> None:
    from updates.utils.deadline import deadline
    from updates.utils.errors import ModuleTimeout

    two_cpus()

    def slow(data: bytes, start: int, end: int, lenient: bool = False) -> tuple[list[str], ListStats]:
        if data.startswith((b"# PARENT-HALF", b"# CHILD-HALF"), start):
            time.sleep(30)
        return parse_part(data, start, end, lenient)

    half = "".join(f"0.0.0.0 n{i}.example.com\n" for i in range(2000))
    text = "# PARENT-HALF\n" + half + "# CHILD-HALF\n" + half
    before = children()
    started = time.monotonic()
    with pytest.raises(ModuleTimeout), deadline(0.3):
        parse_in_two(text.encode(), False, slow)
    assert time.monotonic() - started < 5
    assert children() == before


def test_pieces_join_up_to_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    data = mixed_list(5_000, seed=4) + b"0.0.0.0 last-line.example.com"  # no final newline
    whole, whole_stats = parse_part(data, 0, len(data))
    monkeypatch.setattr("updates.adblock.parse.PIECE", 777)  # many pieces, cut at line boundaries
    pieces, stats = parse_part(data, 0, len(data))
    assert sorted(pieces) == sorted(whole)
    assert stats.counts() == whole_stats.counts()
    assert stats.lines == 5_001


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-processes"])
def test_meanwhile_runs_once_and_its_failure_is_its_own(parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if parallel:
        two_cpus()
    monkeypatch.setattr("updates.adblock.parse.PIECE", 1 << 16)
    forks = []
    monkeypatch.setattr("os.fork", lambda real=os.fork: forks.append(1) or real())
    data = mixed_list(30_000, seed=6)
    calls: list[int] = []
    parsed = parse_list(data, parallel=parallel, meanwhile=lambda: calls.append(1))
    assert calls == [1]
    assert len(forks) == parallel  # the helper really ran, or really did not
    assert parsed.names == parse_list(data, parallel=False).names

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    before = children()
    with pytest.raises(OSError, match="No space left"):
        parse_list(data, parallel=parallel, meanwhile=full_disk)
    assert children() == before


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-processes"])
def test_meanwhile_runs_in_its_own_thread_never_across_a_fork(parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    if parallel:
        two_cpus()
    monkeypatch.setattr("updates.adblock.parse.PIECE", 1 << 16)
    threads_at_fork: list[int] = []
    monkeypatch.setattr("os.fork", lambda real=os.fork: threads_at_fork.append(threading.active_count()) or real())
    ran_in: list[str] = []
    before = threading.active_count()
    parse_list(mixed_list(30_000, seed=8), parallel=parallel,
               meanwhile=lambda: ran_in.append(threading.current_thread().name))  # fmt: skip
    assert ran_in == ["adblock-meanwhile"]
    assert threads_at_fork == ([before] if parallel else [])  # the fork saw no thread of ours
    assert threading.active_count() == before  # waited for before parse_list returned


def test_a_failure_of_meanwhile_other_than_oserror_is_raised_too() -> None:
    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused("a link where the cache file should be")

    with pytest.raises(Refused, match="a link where"):
        parse_list(mixed_list(2_000, seed=5), parallel=False, meanwhile=refuse)


def test_when_the_parse_fails_its_error_is_raised_and_meanwhile_was_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    finished: list[bool] = []

    def slow_write() -> None:
        time.sleep(0.3)
        finished.append(True)

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("the parse broke")

    monkeypatch.setattr("updates.adblock.parse.parse_part", broken)
    before = threading.active_count()
    with pytest.raises(ValueError, match="the parse broke"):
        parse_list(b"0.0.0.0 a.example.com\n", parallel=False, meanwhile=slow_write)
    assert finished == [True] and threading.active_count() == before


def test_the_meanwhile_thread_blocks_every_signal_so_they_reach_the_main_thread() -> None:
    import signal

    masks: list[set[signal.Signals]] = []
    parse_list(mixed_list(2_000, seed=4), parallel=False,
               meanwhile=lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))  # fmt: skip
    (mask,) = masks
    assert {signal.SIGALRM, signal.SIGINT, signal.SIGTERM} <= mask
    assert signal.SIGALRM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # ours is as it was


def test_an_interrupted_wait_for_meanwhile_still_waits_for_it_to_end() -> None:
    import signal
    import threading

    from updates.adblock.parse import _Meanwhile

    class Stop(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        raise Stop("the deadline")

    ended: list[float] = []
    background = _Meanwhile(lambda: (time.sleep(0.6), ended.append(time.monotonic())))
    previous = signal.signal(signal.SIGALRM, stop)
    try:
        background.start()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Stop):
            background.finish()
        raised = time.monotonic()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ended and ended[0] <= raised  # the interruption was raised only once the write had ended
    assert not any(t.name == "adblock-meanwhile" for t in threading.enumerate())


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-processes"])
def test_names_come_joined_as_the_output_format_wants_them(parallel: bool) -> None:
    """parse_list given a format's separator returns blocks that are that format's body as they stand."""
    if parallel:
        two_cpus()
    data = mixed_list(30_000, seed=11)
    plain = parse_list(data, parallel=False)
    joined = parse_list(data, parallel=parallel, sep="\n0.0.0.0 ")
    assert list(joined.names) == list(plain.names) and len(joined.names) == len(plain.names)
    blocks = list(joined.names.parts())
    assert len(blocks) == (2 if parallel else 1)  # the helper's range is a block of its own
    body = b"".join(b"0.0.0.0 " + block + b"\n" for block in blocks)
    assert body.decode().splitlines() == [f"0.0.0.0 {name}" for name in plain.names]
