"""Progress bars (issue 13, item 5): drawn on a terminal only, never in a pipe, under cron, under systemd's
journal, or when the command turned them off (--json, -q). The terminal is a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from updates.utils import progress
from updates.utils.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"TERM": "xterm"}


@pytest.fixture
def tty() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A pseudo-terminal: the writer end as a text stream, the reader's descriptor."""
    reader, writer = os.openpty()
    stream = open(writer, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    try:
        yield stream, reader
    finally:
        stream.close()
        os.close(reader)
        progress.configure(enabled=True)


def drawn(reader: int) -> str:
    """What reached the terminal: read until it stays quiet for a moment (a pty passes data on later)."""
    chunks = []
    while select.select([reader], [], [], 0.3)[0]:
        chunk = os.read(reader, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_bytes_rate_and_eta(tty: tuple[io.TextIOWrapper, int]) -> None:
    stream, reader = tty
    with Progress("gogs 0.13.4", total=4 * 1024 * 1024, stream=stream, environ=TERMINAL) as bar:
        for _ in range(4):
            time.sleep(0.25)  # beyond the bar's redraw interval
            bar.update(1024 * 1024)
    text = drawn(reader)
    assert "gogs 0.13.4" in text
    assert "4.00M/4.00M" in text  # bytes, scaled by 1024
    assert "B/s" in text  # the rate
    assert bar.count == 4 * 1024 * 1024


def test_a_total_learned_later_and_lines_as_the_unit(tty: tuple[io.TextIOWrapper, int]) -> None:
    stream, reader = tty
    with Progress("compiling", unit="lines", stream=stream, environ=TERMINAL) as bar:
        bar.total = 3000
        for _ in range(2):
            time.sleep(0.25)
            bar.update(1500)
    text = drawn(reader)
    assert "3000/3000" in text and "lines/s" in text


@pytest.mark.parametrize(
    "environ",
    [
        {"TERM": "xterm", "JOURNAL_STREAM": "8:12345"},  # systemd: stderr is the journal
        {},  # cron sets no TERM
        {"TERM": "dumb"},
    ],
)
def test_no_bar_under_the_journal_cron_or_a_dumb_terminal(
    tty: tuple[io.TextIOWrapper, int], environ: dict[str, str]
) -> None:
    stream, reader = tty
    with Progress("x", total=10, stream=stream, environ=environ) as bar:
        bar.update(10)
    assert drawn(reader) == ""
    assert bar.count == 10


def test_no_bar_when_the_command_turned_progress_off(tty: tuple[io.TextIOWrapper, int]) -> None:
    stream, reader = tty
    progress.configure(enabled=False)  # --json or -q
    with Progress("x", total=10, stream=stream, environ=TERMINAL) as bar:
        bar.update(10)
    assert drawn(reader) == ""


def test_no_bar_in_a_pipe() -> None:
    stream = io.StringIO()
    with Progress("x", total=10, stream=stream, environ=TERMINAL) as bar:
        bar.update(10)
    assert stream.getvalue() == ""


def test_the_cli_turns_progress_off_for_json_and_quiet() -> None:
    code = (
        "import sys\n"
        "from updates.utils.orchestrator.cli import main\n"
        "from updates.utils import progress\n"
        "main(sys.argv[1:])\n"
        "print(progress._enabled)\n"
    )
    bootstrap = f"import runpy; runpy.run_path({str(ROOT / 'utils' / 'bootstrap.py')!r})['register_package']()\n"
    for argv, expected in ((["history", "--json"], "False"), (["history", "-q"], "False"), (["history"], "True")):
        done = subprocess.run([sys.executable, "-c", bootstrap + code, *argv], capture_output=True, text=True,
                              timeout=60, check=False, env={**os.environ})  # fmt: skip
        assert done.stdout.splitlines()[-1] == expected, (argv, done.stderr)
