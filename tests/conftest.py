"""Shared test setup: register the checkout as the package `updates`, the way index.py does."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

sys.dont_write_bytecode = True  # never leave bytecode inside module directories

runpy.run_path(str(ROOT / "utils" / "bootstrap.py"))["register_package"]()


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the default state and logs are /var/lib/updates and /var/log/updates: no test may reach
    them, so every test gets `<tmp_path>/state` unless it says otherwise, and a timer state of its own."""
    monkeypatch.setenv("UPDATES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("UPDATES_LOG_DIR", raising=False)
    # A rollback also takes the timer's lock; this machine's timer (or a checksummer run as root) must not
    # decide a test. Tests of that lock name their own directory.
    monkeypatch.setenv("UPDATES_TIMER_STATE_DIR", str(tmp_path / "timer-state"))
    # Signing stays off unless a test turns it on: a machine's own /etc/updates/allowed_signers must not
    # decide what the tests run.
    monkeypatch.setenv("UPDATES_ALLOWED_SIGNERS", str(tmp_path / "no-allowed-signers"))
