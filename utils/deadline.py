"""Per-module time limits, enforced in-process with SIGALRM.

Contract: inside `with deadline(seconds):` a `ModuleTimeout` is raised in the main thread once `seconds`
have passed. Deadlines nest (a child module's limit inside its parent's): the inner block never extends the
outer one, and the outer alarm and handler are put back exactly in `finally`, with the outer timer's
remaining time reduced by what the inner block used. The `ModuleTimeout` names the `Deadline` that
expired (`owner`), so an inner boundary can tell its own timeout from an outer one it must let through.
Off the main thread, where signals cannot be delivered, the block runs without a limit (yields None).

`with shielded(what, limit=seconds):` protects a block that must not stop half-way (an undo, a restore):
on the main thread, a SIGALRM (the expired deadline, which fires again every second), SIGTERM and SIGINT
that arrive during it are deferred, not raised, and the block is bounded by its own `limit` instead
(`ShieldTimeout` once it has passed, repeated every second). On exit the outer timer is put back, reduced by
the time the block took, and what was deferred is delivered again to the handlers that were in place:
SIGTERM and SIGINT are re-sent in the order they came; the alarm (one that came, or the outer timer's time
having passed meanwhile) is re-sent unless an interruption (a BaseException that is not an Exception: a
ModuleTimeout, Ctrl-C, a ShieldTimeout) already leaves the block. An ordinary error leaving the block becomes
the context of what is re-delivered. Off the main thread the block runs unshielded and without a limit.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from .errors import ModuleTimeout

log = logging.getLogger(__name__)

_REPEAT = 1.0
_DEFERRED = (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)


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


class ShieldTimeout(BaseException):
    """A shielded block ran past its own limit; what it was undoing or restoring may be half done.

    Like ModuleTimeout it is not an Exception, so that the block's own `except OSError`/`except
    UpdatesError` around single steps cannot swallow it and run on without a bound."""

    def __init__(self, what: str, limit: float) -> None:
        super().__init__(f"{what} did not finish within {limit:g} s and was stopped; it may be half done")
        self.what = what
        self.limit = limit


@contextlib.contextmanager
def shielded(what: str, *, limit: float) -> Iterator[None]:
    """Run the block to its end despite the deadline, SIGTERM and SIGINT, within `limit` seconds; see the
    module docstring. `what` names the block in the log and in the ShieldTimeout ("rolling back gogs")."""
    if not _can_use_signals():
        yield
        return
    started = time.monotonic()
    arrived: list[int] = []
    running = [True]  # cleared by a plain store at the start of `finally`: no handler runs between

    def defer(signum: int, frame: FrameType | None) -> None:
        # Our own timer is the only one armed meanwhile and cannot fire before `limit` has passed; an
        # earlier SIGALRM is one that came before the handlers were swapped, or was sent by hand.
        if signum == signal.SIGALRM and time.monotonic() - started >= limit:
            if running[0]:
                raise ShieldTimeout(what, limit)
            return  # our own alarm, late: the block is over, and raising now would cut the restore short
        if signum not in arrived:
            arrived.append(signum)  # logged on the way out: writing a log from a handler can fail

    # The handlers go in first: a signal already pending when this is entered then meets `defer`.
    # A handler installed from C (getsignal gives None) cannot be put back, so that signal is left alone.
    previous: dict[signal.Signals, Any] = {}
    for sig in _DEFERRED:
        if signal.getsignal(sig) is not None:
            previous[sig] = signal.signal(sig, defer)
    # Without SIGALRM in our hands the timer stays as it is (and the block has no limit of its own).
    timed = signal.SIGALRM in previous
    outer_remaining, outer_interval = signal.getitimer(signal.ITIMER_REAL) if timed else (0.0, 0.0)
    if timed:
        signal.setitimer(signal.ITIMER_REAL, limit, _REPEAT)
    leaving: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        leaving = exc
        raise
    finally:
        running[0] = False
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for taken, handler in previous.items():
            signal.signal(taken, handler)
        left = outer_remaining - (time.monotonic() - started) if outer_remaining else None
        alarm_due = signal.SIGALRM in arrived or (left is not None and left <= 0)
        deliver_alarm = alarm_due and (leaving is None or isinstance(leaving, Exception))
        if left is not None:
            # The outer timer goes on with what it had left. If its time came meanwhile and is delivered now
            # (below), it repeats as it would have; if an interruption is on its way instead, it fires soon.
            if left > 0:
                first = left
            elif deliver_alarm:
                first = outer_interval
            else:
                first = outer_interval or 0.001
            signal.setitimer(signal.ITIMER_REAL, first, outer_interval)
        deferred = [signal.Signals(num).name for num in arrived if num != signal.SIGALRM]
        if deliver_alarm:
            deferred.append("the time limit")
        if deferred:
            log.warning("%s is over; now delivering what came during it: %s", what, ", ".join(deferred))
        for num in arrived:
            if num != signal.SIGALRM:
                # Re-sent, not raised here: whatever handles it normally (SIGTERM as Ctrl-C in `run`, or the
                # default action) decides, as if it had come now.
                signal.raise_signal(num)
        if deliver_alarm:
            signal.raise_signal(signal.SIGALRM)
