"""`shielded()`: a block that must not stop half-way runs to its end; what came meanwhile comes after it.

Signals come from real child processes (`kill`) or from the real interval timer of `deadline()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest
from updates.utils.deadline import ShieldTimeout, deadline, shielded
from updates.utils.errors import ModuleTimeout
from updates.utils.proc import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def send_to_me(signum: int) -> None:
    """Another process sends us `signum`, as systemd or a terminal would."""
    subprocess.run(["kill", f"-{signal.Signals(signum).name[3:]}", str(os.getpid())], check=True)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # what `updates run` does with SIGTERM


@pytest.fixture
def sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_the_deadline_waits_for_the_block_then_raises_its_own_timeout() -> None:
    steps = []
    started = time.monotonic()
    with pytest.raises(ModuleTimeout) as info, deadline(0.2) as limit:
        with shielded("undoing", limit=10):
            run(["sleep", "0.7"], timeout=5)  # the deadline expires, and fires again, during this
            steps.append("block done")
        steps.append("after the block")
    assert steps == ["block done"]  # delivered as the block ended, not before and not later
    assert info.value.owner is limit and limit is not None and limit.expired
    assert 0.7 <= time.monotonic() - started < 1.5


@pytest.mark.usefixtures("sigterm_as_interrupt")
def test_sigterm_waits_for_the_block_then_reaches_its_handler() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with shielded("undoing", limit=10):
            send_to_me(signal.SIGTERM)
            time.sleep(0.2)
            steps.append("block done")
        steps.append("after the block")
    assert steps == ["block done"]
    assert signal.getsignal(signal.SIGTERM) is raise_interrupt  # the handler is back in place


def test_sigint_waits_for_the_block_then_is_ctrl_c() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), shielded("undoing", limit=10):
        send_to_me(signal.SIGINT)
        time.sleep(0.2)
        steps.append("block done")
    assert steps == ["block done"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("sigterm_as_interrupt")
def test_sigterm_wins_over_the_timeout_both_deferred() -> None:
    """SIGTERM ends the whole run; a module timeout only the module: the stronger one goes on."""
    with pytest.raises(KeyboardInterrupt), deadline(0.1), shielded("undoing", limit=10):
        time.sleep(0.3)
        send_to_me(signal.SIGTERM)


def test_an_error_leaving_the_block_becomes_the_context_of_the_timeout() -> None:
    with pytest.raises(ModuleTimeout) as info, deadline(0.1), shielded("undoing", limit=10):
        time.sleep(0.3)
        raise ValueError("the rollback failed too")
    assert isinstance(info.value.__context__, ValueError)


def test_an_interruption_already_leaving_the_block_is_not_doubled() -> None:
    with pytest.raises(ModuleTimeout) as info, deadline(0.1) as limit:
        try:
            time.sleep(5)
        except ModuleTimeout as first:
            with shielded("undoing", limit=10):
                time.sleep(1.2)  # the deadline fires again in here
                raise first  # what raise_after_undo does
    assert info.value.owner is limit
    assert info.value.__context__ is None  # the first timeout itself, not a second one raised over it


def test_the_block_is_bounded_by_its_own_limit() -> None:
    started = time.monotonic()
    with pytest.raises(ShieldTimeout, match=r"^hanging undo did not finish within 0\.3 s"), shielded(
        "hanging undo", limit=0.3
    ):
        run(["sleep", "10"], timeout=20)
    assert time.monotonic() - started < 2


def test_the_limit_cannot_be_swallowed() -> None:
    started = time.monotonic()
    with pytest.raises(ShieldTimeout), shielded("stubborn undo", limit=0.2):
        try:
            time.sleep(10)
        except BaseException:  # an undo that catches too much
            time.sleep(10)
    assert time.monotonic() - started < 3


def test_a_deadline_not_yet_expired_keeps_its_remaining_time() -> None:
    with deadline(2.0) as limit:
        with shielded("undoing", limit=10):
            time.sleep(1.0)
        started = time.monotonic()
        with pytest.raises(ModuleTimeout) as info:
            time.sleep(5)
    assert info.value.owner is limit
    assert 0.8 < time.monotonic() - started < 1.7  # the second left, not the deadline's full 2 s again


def test_without_anything_deferred_everything_is_as_before() -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)}
    remaining, interval = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's timer, when it runs one
    with shielded("undoing", limit=10):
        time.sleep(0.05)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    now_remaining, now_interval = signal.getitimer(signal.ITIMER_REAL)
    assert now_interval == interval
    assert (now_remaining == 0) == (remaining == 0)
    assert now_remaining <= remaining


def test_off_the_main_thread_the_block_just_runs() -> None:
    result: list[object] = []

    def work() -> None:
        try:
            with shielded("undoing", limit=0.1):
                time.sleep(0.3)  # no limit there: signals only reach the main thread
            result.append("done")
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    assert result == ["done"]


def test_a_deferred_sigterm_with_the_default_action_still_ends_the_process() -> None:
    """Re-sent, not re-raised: without a handler SIGTERM kills, as it would have; but after the block."""
    script = f"""
import os, runpy, signal, sys, time
runpy.run_path({os.path.join(ROOT, "utils", "bootstrap.py")!r})["register_package"]()
from updates.utils.deadline import shielded
with shielded("undoing", limit=10):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("block done", flush=True)
print("after the block", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stdout == "block done\n"
