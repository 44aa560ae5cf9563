"""Atomic binary install with service stop/start, health polling and automatic undo (real processes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from release_support import ServiceRig, install_script, services_fixture, tool_script  # noqa: F401 - fixture
from updates.utils.release.appdir import DirectoryInstall, install_directory
from updates.utils.release.binary import (
    BinaryInstall,
    InstallError,
    ServicePlan,
    VersionProbe,
    install_binary,
    probe_version,
)
from updates.utils.release.service import (
    HealthCheck,
    HealthError,
    ServiceManager,
    gogs_database_ok,
    json_status,
    poll_health,
)
from updates.utils.release.version import Version

PROBE = VersionProbe(("version",), r"^File Browser v([^/\s]+)/")
OLD, NEW = Version(2, 63, 22), Version(2, 63, 23)


@pytest.fixture
def rig(tmp_path: Path, services: ServiceRig) -> dict[str, object]:
    """filebrowser 2.63.22 installed in tmp/bin, running as service `filebrowser`, with a database."""
    target = install_script(tmp_path / "bin" / "filebrowser", tool_script("filebrowser", "2.63.22"))
    base = services.add("filebrowser", target)
    services.start("filebrowser")
    database = tmp_path / "db" / "filebrowser.db"
    database.parent.mkdir()
    database.write_bytes(b"bolt database \x00\x01 contents")
    health = HealthCheck(f"{base}/health", json_status("OK"), timeout_s=3, interval_s=0.05)
    plan = BinaryInstall(
        target,
        PROBE,
        tmp_path / "backups",
        3,
        ServicePlan("filebrowser", ServiceManager(tuple(services.command)), health),
        (database,),
    )
    return {"target": target, "plan": plan, "database": database, "old": target.read_bytes()}


def new_binary(target: Path, **script: object) -> Path:
    path = target.parent / ".filebrowser.test.new"
    return install_script(path, tool_script("filebrowser", "2.63.23", **script))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "args", "line", "version"),
    [
        ("atuin", ["-V"], "atuin 18.19.0", "18.19.0"),
        ("atuin-server", ["--version"], "atuin-server 18.19.0", "18.19.0"),
        ("filebrowser", ["version"], "File Browser v2.63.23/e8a388f8", "2.63.23"),
        ("gogs", ["--version"], "Gogs version 0.14.3", "0.14.3"),
    ],
)
def test_version_commands_print_and_parse_the_real_formats(
    tmp_path: Path, kind: str, args: list[str], line: str, version: str
) -> None:
    from updates.atuin.index import CLIENT_PROBE, SERVER_PROBE
    from updates.filebrowser.index import PROBE as FB
    from updates.gogs.index import PROBE as GOGS

    probe = {"atuin": CLIENT_PROBE, "atuin-server": SERVER_PROBE, "filebrowser": FB, "gogs": GOGS}[kind]
    assert list(probe.args) == args
    binary = install_script(tmp_path / kind, tool_script(kind, version))
    import subprocess

    assert subprocess.run([binary, *args], capture_output=True, text=True, check=True).stdout.strip() == line
    assert probe_version(binary, probe) == Version.parse(version)


def test_upgrade_replaces_backs_up_and_restarts(rig: dict, services: ServiceRig, tmp_path: Path) -> None:
    target, plan = rig["target"], rig["plan"]
    old_pid = services.pid("filebrowser")
    new = new_binary(target)
    new_bytes = new.read_bytes()
    install_binary(plan, new, NEW, OLD)
    assert target.read_bytes() == new_bytes and not new.exists()
    backups = {p.name.rsplit("-", 1)[0]: p for p in (tmp_path / "backups").iterdir()}
    assert backups["filebrowser-2.63.22"].read_bytes() == rig["old"]
    assert backups["filebrowser.db-2.63.22"].read_bytes() == rig["database"].read_bytes()
    assert services.running_version("filebrowser") == "2.63.23"
    assert services.pid("filebrowser") != old_pid
    assert services.calls() == ["is-active filebrowser", "stop filebrowser", "start filebrowser"]


@pytest.mark.parametrize(
    ("script", "reason"),
    [({"version_exit": 1}, "version check failed"), ({"reported": "2.63.21"}, "reports 2.63.21")],
)
def test_bad_new_binary_is_refused_before_anything_changes(
    rig: dict, services: ServiceRig, tmp_path: Path, script: dict, reason: str
) -> None:
    target, plan = rig["target"], rig["plan"]
    pid = services.pid("filebrowser")
    mtime = target.stat().st_mtime_ns
    with pytest.raises(InstallError, match=reason):
        install_binary(plan, new_binary(target, **script), NEW, OLD)
    assert target.read_bytes() == rig["old"] and target.stat().st_mtime_ns == mtime
    assert services.pid("filebrowser") == pid  # the service was never stopped
    assert services.calls() == []
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("health", ["bad", "crash"])
def test_unhealthy_new_version_is_undone_and_the_old_one_runs(
    rig: dict, services: ServiceRig, health: str
) -> None:
    target, plan, database = rig["target"], rig["plan"], rig["database"]
    db_before = database.read_bytes()
    started = time.monotonic()
    with pytest.raises(InstallError, match=r"not healthy.*rolled back to the previous binary"):
        install_binary(plan, new_binary(target, health=health), NEW, OLD)
    assert time.monotonic() - started < 10  # bounded by health_timeout (3 s) plus the restart
    assert target.read_bytes() == rig["old"]
    assert database.read_bytes() == db_before
    assert services.running_version("filebrowser") == "2.63.22"
    assert services.calls() == [
        "is-active filebrowser",
        "stop filebrowser",
        "start filebrowser",  # the attempt
        "stop filebrowser",
        "start filebrowser",  # the undo
    ]


def test_stopped_service_stays_stopped(rig: dict, services: ServiceRig) -> None:
    services.ctl("stop", "filebrowser")
    services.calls_path.unlink()
    install_binary(rig["plan"], new_binary(rig["target"]), NEW, OLD)
    assert services.pid("filebrowser") is None
    assert services.calls() == ["is-active filebrowser"]
    assert probe_version(rig["target"], PROBE) == NEW


def test_fresh_install_and_backup_pruning(tmp_path: Path) -> None:
    target = tmp_path / "bin" / "filebrowser"
    target.parent.mkdir()
    plan = BinaryInstall(target, PROBE, tmp_path / "backups", keep_backups=2)
    install_binary(
        plan,
        install_script(target.parent / ".n1", tool_script("filebrowser", "2.63.21")),
        Version(2, 63, 21),
        None,
    )
    assert probe_version(target, PROBE) == Version(2, 63, 21)
    assert list((tmp_path / "backups").iterdir()) == []
    for version in ("2.63.22", "2.63.23", "2.63.24"):
        new = install_script(target.parent / ".n", tool_script("filebrowser", version))
        install_binary(plan, new, Version.parse(version), probe_version(target, PROBE))
    names = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "backups").iterdir())
    assert len(names) == 2 and "filebrowser-2.63.21" not in names


def test_health_polling_is_bounded_and_checks_the_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/healthcheck").respond_with_data("* Database connection: ERROR: dial tcp\n")
    check = HealthCheck(httpserver.url_for("/healthcheck"), gogs_database_ok, timeout_s=0.5, interval_s=0.05)
    started = time.monotonic()
    with pytest.raises(HealthError, match="unhealthy body"):
        poll_health(check)
    assert 0.4 < time.monotonic() - started < 3
    assert len(httpserver.log) >= 3


def test_health_body_rules() -> None:
    assert gogs_database_ok("* Database connection: OK\n")
    assert not gogs_database_ok("* Database connection: ERROR: no such host\n")
    assert json_status("OK")('{"status":"OK"}') and not json_status("OK")('{"status":"down"}')
    assert json_status("healthy")('{"status": "healthy"}') and not json_status("healthy")("<html>")


def test_directory_backup_must_share_the_file_system(tmp_path: Path) -> None:
    proc_dir = Path("/proc/self")  # a different file system than tmp, never written to
    install_dir = tmp_path / "gogs"
    install_dir.mkdir()
    new_dir = tmp_path / ".gogs.new"
    install_script(new_dir / "gogs", tool_script("gogs", "0.14.3"))
    probe = VersionProbe(("--version",), r"^Gogs version v?(\S+)")
    plan = DirectoryInstall(install_dir, "gogs", probe, backup_dir=proc_dir)
    with pytest.raises((InstallError, OSError)):
        install_directory(plan, new_dir, Version(0, 14, 3), Version(0, 13, 4))
    assert install_dir.is_dir() and (new_dir / "gogs").exists()


def test_module_timeout_during_health_wait_is_undone_then_propagates(
    tmp_path: Path, services: ServiceRig, rig: dict
) -> None:
    from dataclasses import replace

    from updates.utils.deadline import deadline
    from updates.utils.errors import ModuleTimeout

    plan = rig["plan"]
    slow = replace(plan.service, health=replace(plan.service.health, timeout_s=60))
    with pytest.raises(ModuleTimeout), deadline(1.5):
        install_binary(replace(plan, service=slow), new_binary(rig["target"], health="bad"), NEW, OLD)
    assert rig["target"].read_bytes() == rig["old"]
    assert services.running_version("filebrowser") == "2.63.22"


def test_health_of_a_service_that_is_not_listening_says_so_briefly() -> None:
    from release_support import free_port

    check = HealthCheck(f"http://127.0.0.1:{free_port()}/health", json_status("OK"), timeout_s=0.2, interval_s=0.05)
    with pytest.raises(HealthError) as info:
        poll_health(check)
    assert str(info.value).endswith("not healthy after 0.2 s: connection refused")


def test_owners_are_kept_and_given_back_on_undo(rig: dict, services: ServiceRig, tmp_path: Path) -> None:
    """A service running as its own user must still own its database after a rollback written by root."""
    import os

    if os.geteuid() != 0:
        pytest.skip("giving files to another user needs root")
    target, database = rig["target"], rig["database"]
    os.chown(target, 4242, 4243)
    os.chown(database, 4244, 4245)
    new = new_binary(target, health="bad")
    with pytest.raises(InstallError, match=r"rolled back.*restored"):
        install_binary(rig["plan"], new, NEW, OLD)
    assert (target.stat().st_uid, target.stat().st_gid) == (4242, 4243)
    assert (database.stat().st_uid, database.stat().st_gid) == (4244, 4245)
    install_binary(rig["plan"], new_binary(target), NEW, OLD)
    assert (target.stat().st_uid, target.stat().st_gid) == (4242, 4243)  # the new binary: the old owner
    assert services.running_version("filebrowser") == "2.63.23"


def test_health_poll_ignores_a_proxy_from_the_environment(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from release_support import free_port

    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, dead_proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    httpserver.expect_request("/health").respond_with_data('{"status":"OK"}')
    poll_health(HealthCheck(httpserver.url_for("/health"), json_status("OK"), timeout_s=1, interval_s=0.05))
    assert len(httpserver.log) == 1
