"""The gogs module end to end: whole-directory upgrade, carried-over data, minor-skip rule, undo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from release_support import (  # noqa: F401 - fixtures
    FakeGitHub,
    ServiceRig,
    github_fixture,
    gogs_archive,
    install_script,
    module_args,
    services_fixture,
    snapshot,
    tar_gz,
    tool_script,
)
from updates.gogs.index import UpgradePathError, check_upgrade_path, main
from updates.utils.argspec import ArgsError
from updates.utils.release.binary import InstallError
from updates.utils.release.extract import ExtractError
from updates.utils.release.version import Version

REPO = "gogs/gogs"
ADMIN_FILES = {
    "custom/conf/app.ini": b"[database]\nTYPE = sqlite3\nPATH = data/gogs.db\n",
    "custom/templates/inject/head.tmpl": b"<meta name=x>\n",
    "data/gogs.db": bytes(range(256)) * 64,
    "data/avatars/1": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
    "log/gogs.log": b"2026/01/01 started\n",
}


def publish(
    github: FakeGitHub, version: str, *, prefix: str = "", archive: bytes | None = None, **script: Any
) -> None:
    """Like gogs' release workflow: tar.gz and zip per arch, no checksum file, API digests only."""
    data = archive if archive is not None else gogs_archive(version, **script)
    assets = {
        f"gogs_{prefix}{version}_linux_amd64.tar.gz": data,
        f"gogs_{prefix}{version}_linux_amd64.zip": b"PK",
    }
    github.add_release(REPO, f"v{version}", assets, digests=True)


@pytest.fixture
def setup(github: FakeGitHub, tmp_path: Path, services: ServiceRig) -> dict[str, Any]:
    """gogs 0.13.4 installed in tmp/home/git/gogs with the administrator's data, running as `gogs`."""
    install_dir = tmp_path / "home" / "git" / "gogs"
    install_script(install_dir / "gogs", tool_script("gogs", "0.13.4"))
    (install_dir / "README.md").write_text("# Gogs 0.13.4\n")
    for rel, data in ADMIN_FILES.items():
        (install_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (install_dir / rel).write_bytes(data)
    (install_dir / "data" / "current.db").symlink_to("gogs.db")
    base = services.add("gogs", install_dir / "gogs")
    services.start("gogs")
    args = module_args(
        github,
        tmp_path,
        "gogs",
        install_dir=str(install_dir),
        health_url=f"{base}/healthcheck",
        service_command=services.command,
        arch="x86_64",
        health_timeout=3,
    )
    return {"args": args, "dir": install_dir, "inode": install_dir.stat().st_ino}


def admin_state(install_dir: Path) -> dict[str, Any]:
    return {
        k: v for k, v in snapshot(install_dir / "custom", install_dir / "data").items() if "/log/" not in k
    }


def relative(state: dict[str, Any], root: Path) -> dict[str, Any]:
    return {os.path.relpath(k, root): v for k, v in state.items()}


def test_upgrade_carries_data_over_and_keeps_the_old_directory(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "0.13.4")
    publish(github, "0.14.3")
    install_dir = setup["dir"]
    before = relative(admin_state(install_dir), install_dir)
    assert main(setup["args"]) == {"changed": True, "summary": "0.13.4 -> 0.14.3"}
    # The new directory: the release's files plus custom/ and data/ byte for byte (mtimes too).
    assert (install_dir / "gogs").read_bytes() == tool_script("gogs", "0.14.3")
    assert (install_dir / "scripts" / "systemd" / "gogs.service").is_file()
    assert relative(admin_state(install_dir), install_dir) == before
    assert os.readlink(install_dir / "data" / "current.db") == "gogs.db"
    assert (install_dir / "log" / "gogs.log").read_text() == "2026/01/01 started\nstarted 0.13.4\nstarted 0.14.3\n"
    # The switch was a rename: the old directory (same inode) is the backup, untouched.
    backups = [p for p in install_dir.parent.iterdir() if p.name.startswith("gogs-0.13.4-")]
    assert len(backups) == 1 and backups[0].stat().st_ino == setup["inode"]
    assert (backups[0] / "gogs").read_bytes() == tool_script("gogs", "0.13.4")
    assert sorted(p.name for p in install_dir.parent.iterdir()) == ["gogs", backups[0].name]
    # The service runs the new version and its health says the database is OK (it needs custom/conf).
    assert services.running_version("gogs") == "0.14.3"
    assert services.calls() == ["is-active gogs", "stop gogs", "start gogs"]
    # No checksum file on GitHub for 0.14.x: the API digest verified it, nothing else was fetched.
    assert [s.path.rsplit("/", 1)[1] for s in github.dl_requests()] == ["gogs_0.14.3_linux_amd64.tar.gz"]


def test_minor_skip_is_refused_and_nothing_changes(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    install_script(setup["dir"] / "gogs", tool_script("gogs", "0.12.11"))
    publish(github, "0.14.3")
    before = snapshot(tmp_path / "home", dir_mtimes=False)
    with pytest.raises(UpgradePathError, match=r"would skip 0\.13"):
        main(setup["args"])
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert github.dl_requests() == [] and services.calls() == []


def test_upgrade_path_rule() -> None:
    check_upgrade_path(Version(0, 13, 4), Version(0, 14, 3))
    check_upgrade_path(Version(0, 14, 2), Version(0, 14, 3))
    check_upgrade_path(Version(0, 11, 91), Version(0, 12, 11))
    check_upgrade_path(Version(0, 9, 141), Version(0, 12, 11))  # below 0.12: straight to 0.12 is the path
    for old, new in (((0, 12, 11), (0, 14, 3)), ((0, 11, 91), (0, 13, 4)), ((0, 14, 3), (2, 0, 0))):
        with pytest.raises(UpgradePathError):
            check_upgrade_path(Version(*old), Version(*new))


def test_unhealthy_new_version_is_undone(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "0.14.3", health="bad")
    install_dir = setup["dir"]
    before = relative(admin_state(install_dir), install_dir)
    with pytest.raises(InstallError, match=r"Database connection: ERROR.*rolled back"):
        main(setup["args"])
    assert install_dir.stat().st_ino == setup["inode"]  # the original directory is back in place
    assert (install_dir / "gogs").read_bytes() == tool_script("gogs", "0.13.4")
    assert relative(admin_state(install_dir), install_dir) == before
    assert services.running_version("gogs") == "0.13.4"
    failed = [p.name for p in install_dir.parent.iterdir() if p.name != "gogs"]
    assert len(failed) == 1 and failed[0].startswith("gogs-failed-0.14.3-")


def test_archive_with_a_symlink_member_is_refused(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    evil = tar_gz(
        [("gogs/", None), ("gogs/gogs", tool_script("gogs", "0.14.3")), ("gogs/custom", ("symlink", "/etc"))]
    )
    publish(github, "0.14.3", archive=evil)
    before = snapshot(tmp_path / "home", dir_mtimes=False)
    with pytest.raises(ExtractError, match="link"):
        main(setup["args"])
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert services.calls() == []


def test_v_prefixed_asset_names_are_accepted(github: FakeGitHub, services: ServiceRig, setup: dict) -> None:
    publish(github, "0.14.1", prefix="v")
    assert main(setup["args"]) == {"changed": True, "summary": "0.13.4 -> 0.14.1"}
    assert services.running_version("gogs") == "0.14.1"


def test_fresh_install_when_allowed(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "0.14.3")
    install_dir = tmp_path / "srv" / "gogs"
    install_dir.parent.mkdir()
    args = module_args(
        github, tmp_path, "gogs", install_dir=str(install_dir), arch="x86_64", service_command=["/bin/false"]
    )
    assert main(args)["summary"] == "not installed (set install_missing to install it)"
    assert list(install_dir.parent.iterdir()) == []
    assert github.seen == []  # absent and not to be installed: not one request
    assert main({**args, "install_missing": True}) == {"changed": True, "summary": "installed 0.14.3"}
    assert sorted(p.name for p in install_dir.iterdir()) == ["LICENSE", "README.md", "gogs", "scripts"]


def test_up_to_date_and_dry_run_touch_nothing(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "0.14.3")
    pid = services.pid("gogs")
    before = snapshot(tmp_path / "home", tmp_path / "state")
    result = main({**setup["args"], "dry_run": True})
    assert result == {
        "changed": False,
        "summary": "would install 0.13.4 -> 0.14.3 from "
        "gogs_0.14.3_linux_amd64.tar.gz (SHA-256 from the GitHub API digest)",
    }
    assert snapshot(tmp_path / "home", tmp_path / "state") == before
    assert services.calls() == [] and services.pid("gogs") == pid and github.dl_requests() == []
    install_script(setup["dir"] / "gogs", tool_script("gogs", "0.14.3"))
    assert main(setup["args"]) == {"changed": False, "summary": "up to date (0.14.3)"}
    assert main(setup["args"]) == {"changed": False, "summary": "up to date (0.14.3)"}
    assert [s.status for s in github.api_requests()] == [200, 200, 304]


def test_entries_the_release_does_not_ship_are_refused_unless_carried_over(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    """Only custom/, data/ and log/ carry over (as gogs documents); anything else must be named, or the new
    version would run without it and the pruned backup would take it away."""
    install_dir = setup["dir"]
    (install_dir / "repositories" / "x.git").mkdir(parents=True)
    (install_dir / "repositories" / "x.git" / "HEAD").write_text("ref: refs/heads/main\n")
    publish(github, "0.14.3")
    pid = services.pid("gogs")
    before = snapshot(tmp_path / "home", dir_mtimes=False)
    with pytest.raises(InstallError, match=r"holds repositories.*carry_over.*nothing changed"):
        main(setup["args"])
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert services.pid("gogs") == pid and services.calls() == []
    with pytest.raises(ArgsError, match="must keep data"):
        main({**setup["args"], "carry_over": ["custom", "log", "repositories"]})
    result = main({**setup["args"], "carry_over": ["custom", "data", "log", "repositories"]})
    assert result == {"changed": True, "summary": "0.13.4 -> 0.14.3"}
    assert (install_dir / "repositories" / "x.git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert services.running_version("gogs") == "0.14.3"


def test_symlinked_install_dir_is_refused(github: FakeGitHub, tmp_path: Path, setup: dict[str, Any]) -> None:
    real = setup["dir"].parent / "gogs-0.13.4-real"
    setup["dir"].rename(real)
    setup["dir"].symlink_to(real.name)
    publish(github, "0.14.3")
    before = snapshot(tmp_path / "home", dir_mtimes=False)
    with pytest.raises(ArgsError, match="symbolic link"):
        main(setup["args"])
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert github.dl_requests() == []


def test_not_enough_space_for_the_copies_is_refused_before_the_service_stops(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    import shutil

    before = snapshot(tmp_path / "home", dir_mtimes=False)
    huge = setup["dir"] / "data" / "lfs.img"
    size = shutil.disk_usage(tmp_path).free * 2 + 2**30  # sparse: takes no space until copied
    try:
        with huge.open("wb") as fh:
            fh.truncate(size)
    except OSError as exc:
        pytest.skip(f"this file system cannot hold a sparse file of {size} bytes: {exc}")
    publish(github, "0.14.3")
    pid = services.pid("gogs")
    with pytest.raises(InstallError, match=r"not enough free space.*nothing changed"):
        main(setup["args"])
    assert huge.stat().st_size == size
    huge.unlink()  # (too big for the snapshot's byte comparison)
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert services.pid("gogs") == pid and services.calls() == []


def test_failed_copies_are_kept_to_a_bounded_number(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    """Each failed attempt keeps its new directory (with a copy of data/) for diagnosis; a release that
    fails every night must not add one per night forever: the newest keep_backups stay."""
    publish(github, "0.14.3", health="bad")
    install_dir = setup["dir"]
    kept: list[list[str]] = []
    for _night in range(4):
        with pytest.raises(InstallError, match="rolled back"):
            main({**setup["args"], "keep_backups": 2, "health_timeout": 0.5})
        kept.append(sorted(p.name for p in install_dir.parent.iterdir() if p.name.startswith("gogs-failed-")))
    assert [len(names) for names in kept] == [1, 2, 2, 2]
    assert kept[3][0] not in kept[0]  # the oldest went, not the newest
    assert install_dir.stat().st_ino == setup["inode"] and services.running_version("gogs") == "0.13.4"


def test_a_service_that_cannot_be_stopped_changes_nothing_and_says_so(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "0.14.3")
    (services.root / "gogs.stop-fails").touch()
    pid = services.pid("gogs")
    before = snapshot(tmp_path / "home", dir_mtimes=False)
    with pytest.raises(InstallError) as raised:
        main(setup["args"])
    assert str(raised.value) == (
        f"cannot stop gogs for the upgrade ({services.command[0]} stop gogs: exit code 1: Job for gogs.service "
        "canceled.); nothing changed, gogs 0.13.4 is still installed"
    )
    assert snapshot(tmp_path / "home", dir_mtimes=False) == before
    assert services.pid("gogs") == pid and services.running_version("gogs") == "0.13.4"


def test_an_absent_gogs_costs_no_request(tmp_path: Path) -> None:
    from release_support import free_port

    args = {
        "name": "gogs", "dry_run": False, "state_dir": str(tmp_path / "state"),
        "api_url": f"http://127.0.0.1:{free_port()}", "install_dir": str(tmp_path / "home" / "git" / "gogs"),
        "http_backoff": 0,
    }
    assert main(args) == {"changed": False, "summary": "not installed (set install_missing to install it)"}
