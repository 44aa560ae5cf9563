"""The argparse flavour every command line of `updates` uses (index.py, utils/rollback.py).

Contract: `Parser` never exits the process: a usage mistake raises `UsageError` (one line and a `--help`
hint) and `--help` raises `ParserExit`, so each command's `main` stays the one place that picks exit codes.
`report_early_error` prints such an error before logging is set up. Imports: `utils.errors` only, so the
rollback API does not load the orchestrator to parse its arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .errors import UpdatesError, UsageError


class ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse that reports instead of exiting, so that `main` stays the only place choosing exit codes."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


def report_early_error(exc: UpdatesError) -> int:
    """Before logging is set up: the one line and hint on stderr; returns the exit code."""
    sys.stderr.write(f"error: {exc}\n")
    if exc.hint:
        sys.stderr.write(f"hint: {exc.hint}\n")
    return exc.exit_code
