"""SIGKILL at every write step of a GitHub-release upgrade run by the real orchestrator: the binary (and
its database) or the application directory is old or new, never a mix; the next command that takes the
run lock reverts or finishes what the kill left, with the service running the version on disk; and the
next `index.py run` completes the upgrade and leaves nothing behind (DESIGN.md, "Crash consistency").

Each kill point gets its own copied installation, service rig (unit, port, pid files) and state
directory; the fake GitHub is shared (it only serves). Only the orchestrator's own process is traced
(`follow_forks=False`): the fake systemctl and the services it starts must live through the kill, as
systemd and the real services would. Each run makes about 45 (filebrowser) and 60 (gogs) calls of the
traced kinds, so every kind is killed at every step."""

from __future__ import annotations

import compileall
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from crash_support import PYTHON, STRACE, Scenario, kill_everywhere, leftovers, run
from orchestrator_support import CHECKOUT, group, install_copy, seal_module, write_manifest
from release_support import (  # noqa: F401 - fixtures
    FakeGitHub,
    ServiceRig,
    filebrowser_archive,
    github_fixture,
    gogs_archive,
    install_script,
    snapshot,
    tool_script,
)

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)")


def _report(name: str, kills: int, violations: list[str]) -> None:
    # The closing note quotes these figures; -s shows them.
    print(f"\n{name}: {kills} kills, {len(violations)} violations")
    assert kills > 0, "the kill injection never fired: strace did not trace the command"
    assert violations == [], "\n".join(violations[:20])


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDATES_")}
    return {**env, "UPDATES_STATE_DIR": str(work / "state"), "UPDATES_TIMER_STATE_DIR": str(work / "timer-state")}


def _template(dest: Path, module: str) -> None:
    """A copied installation holding the real `module`, sealed, its shared code compiled once: otherwise
    every run would write the same bytecode again, and each of those renames would be one more kill point,
    one that tests Python's import system instead of ours."""
    root = install_copy(dest)
    shutil.copytree(
        CHECKOUT / module, root / module, ignore=shutil.ignore_patterns("__pycache__", "checksum")
    )
    seal_module(root / module)
    assert compileall.compile_dir(root / "utils", quiet=1)


def _common_args(github: FakeGitHub, rig: ServiceRig) -> dict[str, Any]:
    """The release modules' shared args (the orchestrator adds name, dry_run and state_dir): the local
    API, no pauses between retries, quick health polling, this run's own service rig."""
    return {
        "api_url": github.api_url, "token_env": "UPDATES_TEST_GITHUB_TOKEN", "http_backoff": 0,
        "health_timeout": 5, "health_interval": 0.05, "service_command": rig.command, "arch": "x86_64",
    }  # fmt: skip


def _healthy(url: str, accept: Callable[[str], bool]) -> bool:
    try:
        answer = requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and accept(answer.text)


def _index_run(work: Path, *extra: str) -> list[str]:
    done = run([PYTHON, "index.py", "run", *extra], work / "updates", _env(work))
    if done.returncode != 0:
        return [f"`index.py run {' '.join(extra)}` failed ({done.returncode}): {done.stdout} {done.stderr}"]
    return []


def _strangers(directory: Path, expected: set[str]) -> list[str]:
    """Names in `directory` other than `expected`: what a run left there (downloads `.*.part`, extracted
    binaries `.*.new`, staging directories `.gogs-*.new-*`, a `gogs-failed-*` directory)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in expected)


class Rigs:
    """One service rig per kill point, kept outside the run's folder: the harness deletes that folder after
    the run it could not kill, with its service still running; every service started is stopped at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._made: dict[str, ServiceRig] = {}
        self._lock = threading.Lock()  # runs are prepared two at a time

    def new(self, work: Path, unit: str, binary: Path) -> tuple[ServiceRig, str]:
        """A rig with `unit` serving `binary`, started; returns it and the unit's base URL."""
        rig = ServiceRig(self.base / work.name)
        with self._lock:
            self._made[work.name] = rig
        base = rig.add(unit, binary)
        for _ in range(100):
            try:
                rig.start(unit)
                break
            except OSError as exc:
                # The rig has just written its svcctl script; a child the other worker forked meanwhile
                # holds that write descriptor until it execs, and until then the script cannot run.
                if exc.errno != errno.ETXTBSY:
                    raise
                time.sleep(0.02)
        return rig, base

    def at(self, work: Path) -> ServiceRig:
        with self._lock:
            return self._made[work.name]

    def stop_all(self) -> None:
        with self._lock:
            rigs = list(self._made.values())
        for rig in rigs:
            rig.stop_all()


def _recovered(work: Path, unit: str, rig: ServiceRig, on_disk: Callable[[], str | None]) -> list[str]:
    """A command that takes the run lock but does not run the module (a run that skips it; a rollback or
    a run with GitHub down would do the same): its recovery alone must leave the service running the
    version on disk, since nothing else may restart it before the next night."""
    found = _index_run(work, "--skip", unit)
    disk, running = on_disk(), rig.wait_version(unit)
    if running != disk:
        found.append(f"after the recovery: {disk} is on disk but the service runs {running}")
    found += [f"after the recovery: {p}" for p in leftovers(work / "state") if p.startswith("journal")]
    return found


# -- filebrowser: one binary replaced, the database backed up, the service restarted --------------------------

FB_REPO = "filebrowser/filebrowser"
FB_OLD, FB_NEW = "2.63.22", "2.63.23"
FB_DATABASE = b"\x00bolt\x00" * 1000  # the fake filebrowser never writes it: old bytes is the only answer


def _publish_filebrowser(github: FakeGitHub, version: str) -> None:
    """Like GoReleaser: no API digest, `filebrowser_<version>_checksums.txt` instead."""
    assets = {
        "linux-amd64-filebrowser.tar.gz": filebrowser_archive(version),
        "linux-arm64-filebrowser.tar.gz": b"x",
    }
    github.add_release(
        FB_REPO, f"v{version}", assets, digests=False, checksums=f"filebrowser_{version}_checksums.txt"
    )


def test_filebrowser_upgrade_killed_at_every_step(github: FakeGitHub, tmp_path: Path) -> None:
    _publish_filebrowser(github, FB_OLD)
    _publish_filebrowser(github, FB_NEW)
    template = tmp_path / "template"
    _template(template / "updates", "filebrowser")
    install_script(template / "bin" / "filebrowser", tool_script("filebrowser", FB_OLD))
    (template / "var").mkdir()
    (template / "var" / "filebrowser.db").write_bytes(FB_DATABASE)
    version_of = {tool_script("filebrowser", v): v for v in (FB_OLD, FB_NEW)}
    rigs = Rigs(tmp_path / "svc")

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        shutil.copytree(template, work, dirs_exist_ok=True, symlinks=True)
        rig, base = rigs.new(work, "filebrowser", work / "bin" / "filebrowser")
        args = {
            **_common_args(github, rig), "binary_path": str(work / "bin" / "filebrowser"),
            "database_path": str(work / "var" / "filebrowser.db"), "health_url": f"{base}/health",
        }  # fmt: skip
        entry = {"name": "filebrowser", "version": "1.0.0", "timeout": 120, "args": args}
        write_manifest(work / "updates", [group(["filebrowser"]), entry])
        return [PYTHON, "index.py", "run"], work / "updates", _env(work)

    def on_disk(work: Path) -> str | None:
        binary = work / "bin" / "filebrowser"
        return version_of.get(binary.read_bytes()) if binary.is_file() else None

    def settled(work: Path) -> tuple[str | None, list[str]]:
        """The version on disk, and what is wrong with the state a finished run left."""
        rig = rigs.at(work)
        found = []
        version = on_disk(work)
        if version is None:
            found.append("the binary is missing or neither old nor new")
        running = rig.wait_version("filebrowser")
        if running != version:
            found.append(f"the binary is {version} but the service runs {running}")
        elif not _healthy(
            f"http://127.0.0.1:{rig.ports['filebrowser']}/health", lambda b: '"status":"OK"' in b
        ):
            found.append(f"the service runs {running} but is not healthy")
        if (work / "var" / "filebrowser.db").read_bytes() != FB_DATABASE:
            found.append("the database is not the old bytes")
        found += [f"left in bin/: {n}" for n in _strangers(work / "bin", {"filebrowser"})]
        found += [f"left in var/: {n}" for n in _strangers(work / "var", {"filebrowser.db"})]
        found += leftovers(work / "updates", work / "state")
        return version, found

    def after_kill(work: Path) -> list[str]:
        rig = rigs.at(work)
        found = []
        if on_disk(work) is None:
            found.append("crashed: the binary is missing or neither old nor new")
        if (work / "var" / "filebrowser.db").read_bytes() != FB_DATABASE:
            found.append("crashed: the database is not the old bytes")
        found += _recovered(work, "filebrowser", rig, lambda: on_disk(work))
        found += _index_run(work)
        version, problems = settled(work)
        found += problems
        if version == FB_OLD and not found:
            found += _index_run(work)  # reverted and left at the old version: the run after upgrades it
            version, problems = settled(work)
            found += problems + ([] if version == FB_NEW else ["the second run did not upgrade"])
        rig.stop_all()
        return found

    try:
        reference = tmp_path / "reference"
        argv, cwd, env = prepare(reference)
        done = run(argv, cwd, env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert settled(reference) == (FB_NEW, [])
        scenario = Scenario("filebrowser", prepare, after_kill, follow_forks=False)
        report = kill_everywhere(scenario, tmp_path / "runs")
    finally:
        rigs.stop_all()
    _report("filebrowser", report.kills, report.violations)


# -- gogs: the application directory swapped for a new one, custom/ data/ log/ carried over ---------------------

GOGS_REPO = "gogs/gogs"
GOGS_OLD, GOGS_NEW = "0.13.4", "0.14.3"
ADMIN_FILES = {
    "custom/conf/app.ini": b"[database]\nTYPE = sqlite3\nPATH = data/gogs.db\n",
    "custom/templates/inject/head.tmpl": b"<meta name=x>\n",
    "data/gogs.db": bytes(range(256)) * 64,
    "data/avatars/1": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
    "log/gogs.log": b"2026/01/01 started\n",
}


def _publish_gogs(github: FakeGitHub, version: str) -> None:
    """Like gogs' release workflow: tar.gz and zip, no checksum file, API digests only."""
    assets = {
        f"gogs_{version}_linux_amd64.tar.gz": gogs_archive(version),
        f"gogs_{version}_linux_amd64.zip": b"PK",
    }
    github.add_release(GOGS_REPO, f"v{version}", assets, digests=True)


def _admin_state(install_dir: Path) -> dict[str, tuple[bytes | None, int]]:
    """custom/ and data/ (the administrator's configuration, gogs' database, a link): bytes and mtimes,
    relative to the install directory. log/ grows with every start, so it is not compared."""
    state = snapshot(install_dir / "custom", install_dir / "data", dir_mtimes=False)
    return {os.path.relpath(path, install_dir): value for path, value in state.items()}


def _gogs_ok(body: str) -> bool:
    return any(line.strip() == "* Database connection: OK" for line in body.splitlines())


def test_gogs_upgrade_killed_at_every_step(github: FakeGitHub, tmp_path: Path) -> None:
    _publish_gogs(github, GOGS_OLD)
    _publish_gogs(github, GOGS_NEW)
    template = tmp_path / "template"
    _template(template / "updates", "gogs")
    installed = template / "home" / "git" / "gogs"
    install_script(installed / "gogs", tool_script("gogs", GOGS_OLD))
    (installed / "README.md").write_text(f"# Gogs {GOGS_OLD}\n")
    for rel, data in ADMIN_FILES.items():
        (installed / rel).parent.mkdir(parents=True, exist_ok=True)
        (installed / rel).write_bytes(data)
    (installed / "data" / "current.db").symlink_to("gogs.db")
    version_of = {tool_script("gogs", v): v for v in (GOGS_OLD, GOGS_NEW)}
    rigs = Rigs(tmp_path / "svc")
    admin: dict[str, dict[str, tuple[bytes | None, int]]] = {}  # per run: custom/ and data/ before it
    inodes: dict[str, int] = {}  # per run: the installed directory's inode before it

    def prepare(work: Path) -> tuple[list[str], Path, dict[str, str]]:
        shutil.copytree(template, work, dirs_exist_ok=True, symlinks=True)
        install_dir = work / "home" / "git" / "gogs"
        admin[work.name] = _admin_state(install_dir)
        inodes[work.name] = install_dir.stat().st_ino
        rig, base = rigs.new(work, "gogs", install_dir / "gogs")
        args = {
            **_common_args(github, rig),
            "install_dir": str(install_dir),
            "health_url": f"{base}/healthcheck",
        }
        entry = {"name": "gogs", "version": "1.0.0", "timeout": 120, "args": args}
        write_manifest(work / "updates", [group(["gogs"]), entry])
        return [PYTHON, "index.py", "run"], work / "updates", _env(work)

    def on_disk(work: Path) -> str | None:
        binary = work / "home" / "git" / "gogs" / "gogs"
        return version_of.get(binary.read_bytes()) if binary.is_file() else None

    def crashed(work: Path) -> list[str]:
        """The state the kill left: the install directory is whole, the old one or the new one."""
        install_dir = work / "home" / "git" / "gogs"
        if not install_dir.is_dir() or install_dir.is_symlink():
            return ["crashed: the install directory is missing (the switch is not atomic)"]
        found = []
        version = on_disk(work)
        if version is None:
            found.append("crashed: gogs/gogs is missing or neither old nor new")
        elif version == GOGS_OLD and install_dir.stat().st_ino != inodes[work.name]:
            found.append("crashed: the old version is in place, but not as the original directory")
        if _admin_state(install_dir) != admin[work.name]:
            found.append("crashed: custom/ or data/ differs from before")
        return found

    def settled(work: Path) -> tuple[str | None, list[str]]:
        """The version in place, and what is wrong with the state a finished run left."""
        rig = rigs.at(work)
        install_dir = work / "home" / "git" / "gogs"
        if not install_dir.is_dir():
            return None, ["the install directory is missing"]
        found = []
        version = on_disk(work)
        if version is None:
            found.append("gogs/gogs is missing or neither old nor new")
        running = rig.wait_version("gogs")
        if running != version:
            found.append(f"gogs {version} is installed but the service runs {running}")
        elif not _healthy(f"http://127.0.0.1:{rig.ports['gogs']}/healthcheck", _gogs_ok):
            found.append(f"the service runs {running} but its database check fails")
        if _admin_state(install_dir) != admin[work.name]:
            found.append("custom/ or data/ differs from before")
        backups = sorted(p.name for p in install_dir.parent.glob(f"gogs-{GOGS_OLD}-*"))
        if version == GOGS_NEW and len(backups) != 1:
            found.append(f"upgraded, but the backups of the old directory are {backups}")
        elif version == GOGS_OLD and backups:
            found.append(f"still at the old version, yet a backup of it: {backups}")
        elif backups and version_of.get((install_dir.parent / backups[0] / "gogs").read_bytes()) != GOGS_OLD:
            found.append(f"the backup {backups[0]} does not hold the old version")
        # Only a failed health check keeps a `gogs-failed-*` directory, and none fails here; staging
        # (`.gogs-*.new-*`) and downloads (`.*.part`) must be gone too.
        found += [f"left in home/git/: {n}" for n in _strangers(install_dir.parent, {"gogs", *backups})]
        found += leftovers(work / "updates", work / "state")
        return version, found

    def after_kill(work: Path) -> list[str]:
        rig = rigs.at(work)
        found = crashed(work)
        found += _recovered(work, "gogs", rig, lambda: on_disk(work))
        found += _index_run(work)
        version, problems = settled(work)
        found += problems
        if version == GOGS_OLD and not found:
            found += _index_run(work)  # reverted and left at the old version: the run after upgrades it
            version, problems = settled(work)
            found += problems + ([] if version == GOGS_NEW else ["the second run did not upgrade"])
        rig.stop_all()
        return found

    try:
        reference = tmp_path / "reference"
        argv, cwd, env = prepare(reference)
        done = run(argv, cwd, env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert settled(reference) == (GOGS_NEW, [])
        scenario = Scenario("gogs", prepare, after_kill, follow_forks=False)
        report = kill_everywhere(scenario, tmp_path / "runs")
    finally:
        rigs.stop_all()
    _report("gogs", report.kills, report.violations)
