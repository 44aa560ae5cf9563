"""Progress bars for long work (a download, the blocklist compile), on a terminal only.

Contract: `with Progress("gogs 0.13.4", total=size) as bar: bar.update(len(chunk))` draws a tqdm bar on
stderr (bytes, rate, ETA; `unit="lines"` counts without byte scaling). `total` may be None (unknown
size: no ETA) and may be set later (`bar.total = n`, once a Content-Length is known). The bar is drawn
only when all of these hold, and otherwise every call is a cheap no-op that writes nothing:
- the stream is a terminal (`isatty()`): never in a pipe, a file, or under cron, which gives no terminal;
- `JOURNAL_STREAM` is not set: under systemd, stderr is the journal, where a bar is noise;
- `TERM` is set and not `dumb`;
- the command did not turn progress off (`configure(enabled=False)`: `--json` and `-q` do).
The bar is removed when the block ends (`leave=False`): the log line that follows says what was done.
tqdm is imported only when a bar is drawn. Imports: no other module of updates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

_enabled = True


def configure(*, enabled: bool) -> None:
    """Turn all progress bars of this process on or off (the CLI turns them off for --json and -q)."""
    global _enabled
    _enabled = enabled


def wanted(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether a bar may be drawn on `stream` (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if not _enabled or "JOURNAL_STREAM" in environ or environ.get("TERM", "dumb") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress bar as a context manager; see the module docstring."""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        unit: str = "B",
        stream: IO[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.description = description
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = wanted(self.stream, environ)
        self._total = total
        self.count = 0
        self._bar: Any = None

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = value
        if self._bar is not None:
            self._bar.total = value
            self._bar.refresh()

    def __enter__(self) -> Progress:
        if self.enabled:
            from tqdm import tqdm  # noqa: PLC0415 - only a terminal needs it

            scaled = self.unit == "B"
            self._bar = tqdm(
                total=self._total,
                desc=self.description,
                unit=self.unit,
                unit_scale=scaled,
                unit_divisor=1024 if scaled else 1000,
                file=self.stream,
                leave=False,
                mininterval=0.2,
            )
        return self

    def update(self, n: int) -> None:
        """Count `n` more units (bytes, lines) done."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
