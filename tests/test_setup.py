"""setup_venv.sh as a newcomer meets it: clear refusals, and a re-run that reuses what is there."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "setup_venv.sh"


def run_setup(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=full, check=False)


def fake_python(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fakepython"
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def test_too_old_python_is_refused_with_a_hint(tmp_path):
    python = fake_python(tmp_path, 'if [ "$1" = -V ]; then echo "Python 3.8.10"; exit 0; fi\nexit 1\n')
    proc = run_setup(env={"PYTHON": str(python), "VENV_DIR": str(tmp_path / "venv")})
    assert proc.returncode == 1
    assert "Python 3.8.10 is too old: updates needs Python 3.10 or newer" in proc.stderr
    assert not (tmp_path / "venv").exists()


def test_missing_venv_module_is_refused_with_a_hint(tmp_path):
    # Passes the version check, fails `import venv, ensurepip` (as on Debian without python3-venv).
    python = fake_python(tmp_path, 'case "$2" in *ensurepip*) exit 1;; esac\nexit 0\n')
    proc = run_setup(env={"PYTHON": str(python), "VENV_DIR": str(tmp_path / "venv")})
    assert proc.returncode == 1
    assert "apt-get install python3-venv" in proc.stderr


def test_missing_interpreter(tmp_path):
    proc = run_setup(env={"PYTHON": str(tmp_path / "nope"), "VENV_DIR": str(tmp_path / "venv")})
    assert proc.returncode == 1 and "not found" in proc.stderr


def test_refuses_to_delete_a_directory_that_is_not_a_venv(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me")
    proc = run_setup(env={"PYTHON": sys.executable, "VENV_DIR": str(target)})
    assert proc.returncode == 1
    assert "is not a virtual environment" in proc.stderr
    assert (target / "data.txt").read_text() == "keep me"


def test_unknown_option(tmp_path):
    proc = run_setup("--bogus", env={"VENV_DIR": str(tmp_path / "venv")})
    assert proc.returncode == 1 and "unknown option: --bogus" in proc.stderr


@pytest.mark.skipif(not Path(sys.executable).exists(), reason="no interpreter path")
def test_rerun_reuses_a_healthy_venv(tmp_path):
    try:
        import requests  # noqa: F401 - the venv below sees it, so pip has nothing to download
    except ImportError:
        pytest.skip("requests is not installed for this interpreter")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    # Offline (PIP_NO_INDEX), pip can only succeed when the base interpreter already has every runtime
    # requirement that the venv inherits.
    seen = subprocess.run([str(venv / "bin" / "python"), "-c", "import requests, tqdm"], check=False, timeout=60)
    if seen.returncode != 0:
        pytest.skip("the base interpreter lacks a runtime requirement (requests, tqdm); pip would need the network")
    env = {"PYTHON": sys.executable, "VENV_DIR": str(venv), "PIP_NO_INDEX": "1"}
    first = run_setup(env=env)
    assert first.returncode == 0, first.stderr
    assert f"reusing the virtual environment in {venv}" in first.stderr
    marker = venv / "pyvenv.cfg"
    before = marker.stat().st_mtime_ns
    second = run_setup(env=env)
    assert second.returncode == 0, second.stderr
    assert marker.stat().st_mtime_ns == before  # not recreated
