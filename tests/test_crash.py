"""SIGKILL at every write step of the journaled operations: old or new, never a mix, and the next run
completes what the kill left (DESIGN.md, "Crash consistency")."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from crash_support import PYTHON, STRACE, Scenario, kill_everywhere, leftovers, run
from git_support import MODULE, Repo, rollback_template_fixture  # noqa: F401 - fixture
from orchestrator_support import CHECKOUT, group, install_copy, seal_module, write_manifest
from updates.utils.digest import compute_folder_sha256

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)")


def _digest(directory: Path) -> str:
    try:
        return compute_folder_sha256(directory)
    except Exception as exc:  # a damaged tree is a finding, not a crash of the test
        return f"unreadable: {exc}"


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDATES_")}
    # The timer's lock too: this machine's /var/lib/updates must not decide the test (see conftest.py).
    return {**env, "UPDATES_STATE_DIR": str(root / "state"), "UPDATES_TIMER_STATE_DIR": str(root / "timer-state")}


def _report(name: str, kills: int, violations: list[str]) -> None:
    # The closing note quotes these figures; -s shows them.
    print(f"\n{name}: {kills} kills, {len(violations)} violations")
    assert kills > 0, "the kill injection never fired: strace did not trace the command"
    assert violations == [], "\n".join(violations[:20])


# -- rollback: directory swap, backup, manifest ---------------------------------------------------------------


def test_rollback_killed_at_every_step(rollback_template: Repo, tmp_path: Path) -> None:
    template = rollback_template.root
    old_manifest = (template / "manifest.json").read_bytes()
    old_digest = compute_folder_sha256(template / MODULE)
    argv = [PYTHON, "utils/rollback.py", "rollback", MODULE, "--to", "1.0.0"]

    reference = tmp_path / "reference" / "updates"
    shutil.copytree(template, reference, symlinks=True)
    done = run(argv, reference, _env(reference))
    assert done.returncode == 0, done.stderr
    new_manifest = (reference / "manifest.json").read_bytes()
    new_digest = compute_folder_sha256(reference / MODULE)
    assert new_digest != old_digest and new_manifest != old_manifest

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        root = work / "updates"
        shutil.copytree(template, root, symlinks=True)
        return argv, root, _env(root)

    def after_kill(work: Path) -> list[str]:
        root = work / "updates"
        found = []
        if (root / "manifest.json").read_bytes() not in (old_manifest, new_manifest):
            found.append("manifest is neither the old nor the new one")
        if _digest(root / MODULE) not in (old_digest, new_digest):
            found.append(f"{MODULE}/ is neither old nor new: {_digest(root / MODULE)}")
        nightly = run([PYTHON, "index.py", "run"], root, _env(root))
        if nightly.returncode != 0:
            found.append(f"the next run failed ({nightly.returncode}): {nightly.stdout} {nightly.stderr}")
        entry = next(e for e in json.loads((root / "manifest.json").read_text())["updates"] if e["name"] == MODULE)
        live = _digest(root / MODULE)
        if entry["checksum"] != live:
            found.append(f"manifest checksum {entry['checksum']} but {MODULE}/ is {live}")
        if (live, entry["version"]) not in ((old_digest, "2.0.0-rc.1"), (new_digest, "1.0.0")):
            found.append(f"version {entry['version']} with digest {live}")
        backups = sorted((root / "state" / "rollback").glob(f"{MODULE}-*"))
        if live == new_digest and [_digest(b) for b in backups] != [old_digest]:
            found.append(f"finished rollback without exactly one backup of the old directory: {backups}")
        if live == old_digest and backups:
            found.append(f"reverted rollback left backups: {backups}")
        found += leftovers(root, root / "state")
        return found

    report = kill_everywhere(Scenario("rollback", prepare, after_kill), tmp_path / "runs")
    _report("rollback", report.kills, report.violations)


# -- checksummer: checksum file, manifest --------------------------------------------------------------------


def test_checksummer_killed_at_every_step(rollback_template: Repo, tmp_path: Path) -> None:
    template = tmp_path / "template" / "updates"
    shutil.copytree(rollback_template.root, template, symlinks=True)
    with open(template / MODULE / "lib.py", "a") as handle:
        handle.write("EDITED = True\n")  # an edit to seal
    old_manifest = (template / "manifest.json").read_bytes()
    old_file = (template / MODULE / "checksum").read_bytes()
    new_digest = compute_folder_sha256(template / MODULE)
    argv = [PYTHON, "utils/checksummer.py", MODULE]

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        root = work / "updates"
        shutil.copytree(template, root, symlinks=True)
        return argv, root, _env(root)

    def after_kill(work: Path) -> list[str]:
        root = work / "updates"
        found = []
        manifest = json.loads((root / "manifest.json").read_text())
        entry = next(e for e in manifest["updates"] if e["name"] == MODULE)
        if (root / "manifest.json").read_bytes() != old_manifest and entry["checksum"] != new_digest:
            found.append("manifest is neither the old nor the new one")
        if (root / MODULE / "checksum").read_bytes() not in (old_file, f"{new_digest}\n".encode()):
            found.append("checksum file is neither old nor new")
        again = run(argv, root, _env(root))
        if again.returncode != 0:
            found.append(f"the next checksummer run failed: {again.stdout} {again.stderr}")
        check = run([PYTHON, "utils/checksummer.py", "--check"], root, _env(root))
        if check.returncode != 0:
            found.append(f"--check after the rerun: {check.stdout}")
        if (root / MODULE / "checksum").read_text().strip() != new_digest:
            found.append("the rerun sealed something other than the module's own files")
        found += leftovers(root, root / "state")
        return found

    report = kill_everywhere(Scenario("checksummer", prepare, after_kill), tmp_path / "runs")
    _report("checksummer", report.kills, report.violations)


# -- adblock: hosts block with a reload command, state, the manifest's lastApplied ------------------------------

USER_LINES = b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n192.168.1.5 nas.lan nas\n"
RELOAD = """#!/bin/sh
# The resolver: on reload it serves what the hosts file holds at that moment.
cp "$1" "$2"
"""


def _entries(hosts: bytes) -> list[str]:
    """The hosts lines without comments (the list's header carries the time it was made)."""
    return [line for line in hosts.decode().splitlines() if line and not line.startswith("#")]


def test_adblock_install_killed_at_every_step(tmp_path: Path) -> None:
    template = tmp_path / "template"
    root = install_copy(template / "updates")
    shutil.copytree(CHECKOUT / "adblock", root / "adblock", ignore=shutil.ignore_patterns("__pycache__", "checksum"))
    seal_module(root / "adblock")
    (template / "list.txt").write_text("0.0.0.0 ads.example.com\n0.0.0.0 track.example.net\n")
    reload_script = template / "reload.sh"
    reload_script.write_text(RELOAD)
    reload_script.chmod(0o755)
    hosts = template / "hosts"
    hosts.write_bytes(USER_LINES)
    (template / "served").write_bytes(USER_LINES)

    def entry(base: Path) -> dict[str, object]:
        return {
            "name": "adblock", "version": "1.0.0", "timeout": 120,
            "args": {"sources": [f"file://{base / 'list.txt'}"], "output": str(base / "hosts"),
                     "reload": [str(base / "reload.sh"), str(base / "hosts"), str(base / "served")]},
        }  # fmt: skip

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        shutil.copytree(template, work, dirs_exist_ok=True, symlinks=True)
        write_manifest(work / "updates", [group(["adblock"]), entry(work)])
        return [PYTHON, "index.py", "run"], work / "updates", _env(work / "updates")

    reference = tmp_path / "reference"
    argv, cwd, env = prepare(reference)
    assert run(argv, cwd, env).returncode == 0
    new_hosts = _entries((reference / "hosts").read_bytes())
    assert (reference / "hosts").read_bytes().startswith(USER_LINES) and "0.0.0.0 ads.example.com" in new_hosts

    def after_kill(work: Path) -> list[str]:
        root = work / "updates"
        found = []
        hosts = (work / "hosts").read_bytes()
        if hosts != USER_LINES and not (hosts.startswith(USER_LINES) and _entries(hosts) == new_hosts):
            found.append(f"hosts is neither old nor new: {hosts[:300]!r}")
        try:
            json.loads((root / "manifest.json").read_text())
        except ValueError as exc:
            found.append(f"manifest damaged: {exc}")
        nightly = run([PYTHON, "index.py", "run"], root, _env(root))
        if nightly.returncode != 0:
            found.append(f"the next run failed ({nightly.returncode}): {nightly.stdout} {nightly.stderr}")
        if _entries((work / "hosts").read_bytes()) != new_hosts:
            found.append("the next run did not install the list")
        if (work / "served").read_bytes() != (work / "hosts").read_bytes():
            found.append("the resolver serves another list than the file holds (a reload was lost)")
        found += leftovers(root, root / "state", work)
        return found

    report = kill_everywhere(Scenario("adblock", prepare, after_kill), tmp_path / "runs")
    _report("adblock", report.kills, report.violations)
