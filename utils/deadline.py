"""Per-module time limits, enforced in-process with SIGALRM.

Contract: inside `with deadline(seconds):` a `ModuleTimeout` is raised in the main thread once `seconds`
have passed. Deadlines nest (a child module's limit inside its parent's): the inner block never extends the
outer one, and the outer alarm and handler are put back exactly in `finally`, with the outer timer's
remaining time reduced by what the inner block used. The `ModuleTimeout` names the `Deadline` that
expired (`owner`), so an inner boundary can tell its own timeout from an outer one it must let through.
Off the main thread, where signals cannot be delivered, the block runs without a limit (yields None).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from .errors import ModuleTimeout

_REPEAT = 1.0


def _can_use_signals() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


class Deadline:
    """One enforced time limit, carried by the ModuleTimeout it raises; `expired` once it has fired."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[Deadline | None]:
    """Enforce `seconds` (None: no limit) on the block; yields the Deadline, or None when not enforced."""
    if not seconds or not _can_use_signals():
        yield None
        return
    me = Deadline(seconds)
    previous_handler: Any = signal.getsignal(signal.SIGALRM)
    outer_remaining, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    ours = not outer_remaining or seconds <= outer_remaining

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if ours:
            me.expired = True
            raise ModuleTimeout(seconds, owner=me)
        # The enclosing deadline is the earlier one: let its handler decide.
        if callable(previous_handler):
            previous_handler(signum, frame)

    signal.signal(signal.SIGALRM, on_alarm)
    # The interval re-raises every second after expiry, so a module that swallows one ModuleTimeout
    # (a bare `except:`) is interrupted again instead of running on.
    signal.setitimer(signal.ITIMER_REAL, seconds if ours else outer_remaining, _REPEAT)
    try:
        yield me
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_remaining:
            left = outer_remaining - (time.monotonic() - started)
            # An outer deadline that passed while we ran fires at once rather than never.
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)
