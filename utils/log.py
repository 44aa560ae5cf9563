"""Logging configuration, done once per command.

Contract: everything logs through `logging.getLogger(__name__)` below the `updates` logger. The terminal
(stderr) gets one line per record and never a traceback; the rotating file `<state>/logs/updates.log`
gets timestamps and full tracebacks. Under systemd (`JOURNAL_STREAM` set) terminal lines carry no
timestamp, since the journal adds its own. Calling `setup_logging` again replaces what it installed.
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

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
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


def setup_logging(log_dir: Path | None, verbosity: int = 0) -> Path | None:
    """Configure the `updates` logger; returns the log file in use (None when it cannot be opened)."""
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
    _installed.append(terminal)

    log_file: Path | None = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            file_handler = _NoFollowRotatingHandler(
                log_dir / LOG_FILE, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8",
                errors="backslashreplace",  # a module's message with a lone surrogate still gets logged
            )
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
