"""`isolated()` puts everything back even when one restore step fails (here: the working directory is gone)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

import pytest
from updates.utils.orchestrator.isolation import isolated


def ignore(signum: int, frame: FrameType | None) -> None:
    pass


def test_a_failing_chdir_does_not_skip_the_rest(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    test_cwd = os.getcwd()
    environ, path, argv = dict(os.environ), list(sys.path), list(sys.argv)
    umask = os.umask(0o022)
    os.umask(umask)
    term_handler = signal.getsignal(signal.SIGTERM)
    os.chdir(gone)
    try:
        with pytest.raises(FileNotFoundError), isolated():
            os.environ["UPDATES_TEST_LEFT_BEHIND"] = "1"
            sys.path.append(str(elsewhere))
            sys.argv.append("--module-arg")
            os.umask(0o077)
            signal.signal(signal.SIGTERM, ignore)
            os.chdir(elsewhere)
            gone.rmdir()  # the module removed the directory the run was started from
        assert dict(os.environ) == environ
        assert sys.path == path and sys.argv == argv
        assert os.umask(umask) == umask
        assert signal.getsignal(signal.SIGTERM) is term_handler
    finally:
        os.chdir(test_cwd)
