"""Logging configuration, done once per command.

Contract: everything logs through `logging.getLogger(__name__)` below the `updates` logger. The terminal
(stderr) gets one line per record and never a traceback; the rotating file `<state>/logs/updates.log`
gets timestamps and full tracebacks. Under systemd (`JOURNAL_STREAM` set) terminal lines carry no
timestamp, since the journal adds its own. Calling `setup_logging` again replaces what it installed.
With `create=False` (the read-only commands) nothing is created: the file is appended to only when it
already exists. With `summary_follows`, records marked `in_summary` (a module's failure, which the summary
on stdout repeats) reach the log file but not the terminal, so the operator reads each problem once.
"""
from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOGGER = "updates"
LOG_FILE = "updates.log"
MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 5

_installed: list[logging.Handler] = []


class _NoFollowRotatingHandler(logging.handlers.RotatingFileHandler):
    """The rotating log file, opened without following a link: root appends to it every night, so a link
    planted in its place must not turn that into an append to a file of the planter's choosing."""

    def __init__(self, filename: Path, *, create: bool) -> None:
        self.create = create  # before the base class opens the file
        super().__init__(
            filename,
            maxBytes=MAX_BYTES if create else 0,  # a read-only command never rotates (renames) files either
            backupCount=BACKUPS,
            encoding="utf-8",
            errors="backslashreplace",  # a module's message with a lone surrogate still gets logged
        )

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if self.create else 0)
        fd = os.open(self.baseFilename, flags, 0o640)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class _TerminalFormatter(logging.Formatter):
    """`level: message`, first line of the message only, no traceback."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().splitlines()
        line = f"{record.levelname.lower()}: {message[0] if message else ''}"
        if self.timestamps:
            line = f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} {line}"
        return line


def terminal_level(verbosity: int) -> int:
    """-q: errors only; default: warnings; -v: progress; -vv: debug."""
    return {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)


def _not_in_summary(record: logging.LogRecord) -> bool:
    return not getattr(record, "in_summary", False)


def setup_logging(
    log_dir: Path | None, verbosity: int = 0, *, create: bool = True, summary_follows: bool = False
) -> Path | None:
    """Configure the `updates` logger; returns the log file in use (None when it cannot be opened).

    `create=False`: use the log file only when it exists (a read-only command creates nothing)."""
    logger = logging.getLogger(LOGGER)
    for handler in _installed:
        logger.removeHandler(handler)
        handler.close()
    _installed.clear()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(terminal_level(verbosity))
    terminal.setFormatter(_TerminalFormatter(timestamps="JOURNAL_STREAM" not in os.environ and verbosity > 0))
    if summary_follows:
        terminal.addFilter(_not_in_summary)
    _installed.append(terminal)

    log_file: Path | None = None
    if log_dir is not None and (create or (log_dir / LOG_FILE).is_file()):
        try:
            if create:
                log_dir.mkdir(parents=True, exist_ok=True)
            file_handler = _NoFollowRotatingHandler(log_dir / LOG_FILE, create=create)
        except OSError as exc:
            logger.addHandler(terminal)
            logger.warning("cannot open the log file in %s (%s); logging to the terminal only", log_dir, exc)
            logger.removeHandler(terminal)
        else:
            file_handler.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
            file_handler.setFormatter(
                logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
            )
            _installed.append(file_handler)
            log_file = log_dir / LOG_FILE
    for handler in _installed:
        logger.addHandler(handler)
    return log_file
