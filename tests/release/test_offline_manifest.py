"""The shipped manifest's release modules on a server that uses none of the tools, offline.

The nightly unit must not fail, nor spend API calls, to say "not installed": the orchestrator runs atuin,
filebrowser and gogs from the real checkout, with the shipped manifest's entries (their own checksums and
args) plus the paths of this temporary machine and an API URL on a closed loopback port, where any request
would be "connection refused" and fail the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from release_support import free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("atuin", "filebrowser", "gogs")


def test_the_shipped_release_modules_run_offline_with_nothing_installed(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail the module
    paths = {
        "atuin": {"binary_path": str(tmp_path / "bin" / "atuin"), "server": True,
                  "server_binary_path": str(tmp_path / "bin" / "atuin-server")},
        "filebrowser": {"binary_path": str(tmp_path / "bin" / "filebrowser")},
        "gogs": {"install_dir": str(tmp_path / "home" / "git" / "gogs")},
    }
    manifest = json.loads((ROOT / "manifest.json").read_text())
    for entry in manifest["updates"]:
        if entry["name"] in TOOLS:
            assert "install_missing" not in entry["args"]  # shipped default: do not install what is absent
            entry["args"] = {**entry["args"], **paths[entry["name"]], "api_url": api}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    state = tmp_path / "state"
    env = {**os.environ, "UPDATES_STATE_DIR": str(state), "UPDATES_LOG_DIR": str(tmp_path / "logs")}
    env.pop("GITHUB_TOKEN", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "index.py"), "run", "--manifest", str(path), "--only", *TOOLS, "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    summaries = {m["name"]: (m["status"], m["summary"]) for m in report["modules"]}
    not_installed = "not installed (set install_missing to install it)"
    assert summaries == {
        "atuin": ("ok", f"atuin {not_installed}; atuin-server {not_installed}"),
        "filebrowser": ("ok", not_installed),
        "gogs": ("ok", not_installed),
    }
    assert "cannot reach" not in (tmp_path / "logs" / "updates.log").read_text()
    assert not list(state.rglob("github"))  # no release lookup, so no ETag cache either
