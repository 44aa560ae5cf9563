"""ansible-lint passes on config/ansible (production profile), and it did look at the role and playbooks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "config" / "ansible"
LINT = Path(sys.executable).parent / "ansible-lint"


@pytest.mark.timeout(240)
def test_ansible_lint_passes(tmp_path: Path) -> None:
    lint = str(LINT) if LINT.exists() else shutil.which("ansible-lint")
    if lint is None:
        pytest.skip("ansible-lint is not installed: pip install -r requirements-dev.txt")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_HOME": str(tmp_path / "ansible"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"), "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    proc = subprocess.run([lint, "--offline", "--nocolor", "--profile", "production"], cwd=ANSIBLE_DIR,
                          capture_output=True, text=True, timeout=220, env=env, check=False)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    processed = re.search(r"in (\d+) files processed", output)
    assert processed is not None and int(processed.group(1)) >= 15, output[-2000:]
