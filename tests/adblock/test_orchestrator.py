"""adblock under the real orchestrator: a copied installation, a sealed module, `index.py run --json`."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from orchestrator_support import CHECKOUT, group, install_copy, run_index, seal_module, write_manifest


def test_runs_under_the_orchestrator(tmp_path: Path) -> None:
    root = install_copy(tmp_path / "updates")
    shutil.copytree(CHECKOUT / "adblock", root / "adblock", ignore=shutil.ignore_patterns("__pycache__", "checksum"))
    seal_module(root / "adblock")
    source = tmp_path / "list.txt"
    source.write_text("0.0.0.0 ads.example.com\n0.0.0.0 track.example.net\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    entry = {
        "name": "adblock", "version": "1.0.0", "timeout": 120,
        "args": {"sources": [f"file://{source}"], "output": str(hosts)},
    }
    write_manifest(root, [group(["adblock"]), entry])
    env = {**os.environ, "UPDATES_STATE_DIR": str(tmp_path / "state")}

    first = run_index(root, "run", "--json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert [(m["name"], m["status"], m["summary"]) for m in report["modules"]] == [
        ("adblock", "changed", "+2 -0 = 2 domains from 1/1 sources")
    ]
    assert hosts.read_text().startswith("127.0.0.1 localhost\n# BEGIN updates-adblock\n")
    assert "0.0.0.0 track.example.net\n# END updates-adblock\n" in hosts.read_text()

    second = run_index(root, "run", "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert [m["status"] for m in json.loads(second.stdout)["modules"]] == ["ok"]

    source.write_text("")  # an empty download: nothing usable, the cached copy stands in
    third = run_index(root, "run", "--json", env=env)
    assert json.loads(third.stdout)["modules"][0]["status"] == "ok"
    assert "0.0.0.0 ads.example.com\n" in hosts.read_text()
