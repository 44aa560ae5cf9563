"""The atuin module end to end: fake GitHub, real tarballs, real binaries and a real service process."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import pytest
from release_support import (  # noqa: F401 - fixtures
    FakeGitHub,
    ServiceRig,
    atuin_archive,
    github_fixture,
    install_script,
    module_args,
    services_fixture,
    sha256,
    snapshot,
    tar_gz,
    tool_script,
)
from updates.atuin.index import main
from updates.utils.argspec import ArgsError
from updates.utils.release.assets import NoAssetError
from updates.utils.release.binary import InstallError
from updates.utils.release.download import ChecksumMismatch, UnverifiedAsset
from updates.utils.release.extract import ExtractError
from updates.utils.release.github import ReleaseError
from updates.utils.release.update import PartialUpdate

REPO = "atuinsh/atuin"
TRIPLES = ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl", "aarch64-unknown-linux-gnu")


def publish(
    github: FakeGitHub,
    version: str,
    *,
    per_asset_sums: bool = True,
    digests: bool = False,
    bad_sum: str | None = None,
    server: dict[str, Any] | None = None,
    **script: Any,
) -> None:
    """A release like cargo-dist builds it: archives, `<archive>.sha256` files and sha256.sum."""
    assets: dict[str, bytes] = {}
    for triple in TRIPLES:
        assets[f"atuin-{triple}.tar.gz"] = atuin_archive(version, triple, **script)
        if server is not None:
            assets[f"atuin-server-{triple}.tar.gz"] = atuin_archive(version, triple, "atuin-server", **server)
    if per_asset_sums:
        for name, data in list(assets.items()):
            digest = "0" * 64 if name == bad_sum else sha256(data)
            assets[f"{name}.sha256"] = f"{digest} *{name}\n".encode()
    github.add_release(REPO, f"v{version}", assets, digests=digests)


def args(github: FakeGitHub, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    defaults = {"binary_path": str(tmp_path / "bin" / "atuin"), "arch": "x86_64", "libc": "gnu"}
    return module_args(github, tmp_path, "atuin", **{**defaults, **extra})


def installed(tmp_path: Path, version: str) -> Path:
    return install_script(tmp_path / "bin" / "atuin", tool_script("atuin", version))


def bin_names(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "bin").iterdir())


def test_missing_tool_is_not_installed_unless_allowed(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0")
    (tmp_path / "bin").mkdir()
    result = main(args(github, tmp_path))
    assert result == {"changed": False, "summary": "not installed (set install_missing to install it)"}
    assert bin_names(tmp_path) == []
    assert github.seen == []  # absent and not to be installed: not one request, offline it succeeds


def test_fresh_install(github: FakeGitHub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publish(github, "18.19.0")
    (tmp_path / "bin").mkdir()
    dry = main(args(github, tmp_path, install_missing=True, dry_run=True))
    assert dry == {
        "changed": False,
        "summary": "would install 18.19.0 from atuin-x86_64-unknown-linux-gnu.tar.gz "
        "(SHA-256 from checksum file atuin-x86_64-unknown-linux-gnu.tar.gz.sha256)",
    }
    caplog.set_level(logging.INFO)
    assert main(args(github, tmp_path, install_missing=True)) == {
        "changed": True,
        "summary": "installed 18.19.0",
    }
    binary = tmp_path / "bin" / "atuin"
    assert binary.read_bytes() == tool_script("atuin", "18.19.0")
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert bin_names(tmp_path) == ["atuin"]  # no temp files left behind
    assert f"installed {binary} 18.19.0 (fresh install, nothing to back up)" in caplog.messages


def test_upgrade_verified_by_the_per_asset_sha256_file(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.18.1")
    publish(github, "18.19.0")
    old = installed(tmp_path, "18.18.1").read_bytes()
    assert main(args(github, tmp_path)) == {"changed": True, "summary": "18.18.1 -> 18.19.0"}
    assert (tmp_path / "bin" / "atuin").read_bytes() == tool_script("atuin", "18.19.0")
    backups = list((tmp_path / "state" / "backups").iterdir())
    assert [b.read_bytes() for b in backups] == [old] and backups[0].name.startswith("atuin-18.18.1-")
    fetched = [s.path.rsplit("/", 1)[1] for s in github.dl_requests()]
    assert fetched == [
        "atuin-x86_64-unknown-linux-gnu.tar.gz.sha256",
        "atuin-x86_64-unknown-linux-gnu.tar.gz",
    ]
    assert bin_names(tmp_path) == ["atuin"]


def test_up_to_date_costs_one_304_and_no_body(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0")
    installed(tmp_path, "18.19.0")
    assert main(args(github, tmp_path)) == {"changed": False, "summary": "up to date (18.19.0)"}
    assert main(args(github, tmp_path)) == {"changed": False, "summary": "up to date (18.19.0)"}
    second = github.api_requests()[1]
    assert second.headers.get("If-None-Match") and (second.status, second.body_bytes) == (304, 0)
    assert github.dl_requests() == []


def test_musl_is_used_when_asked(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0")
    installed(tmp_path, "18.18.1")
    main(args(github, tmp_path, libc="musl"))
    assert github.dl_requests()[-1].path.endswith("/atuin-x86_64-unknown-linux-musl.tar.gz")


def test_wrong_checksum_changes_nothing(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0", bad_sum="atuin-x86_64-unknown-linux-gnu.tar.gz")
    binary = installed(tmp_path, "18.18.1")
    before = snapshot(tmp_path / "bin", dir_mtimes=False)
    with pytest.raises(ChecksumMismatch):
        main(args(github, tmp_path))
    assert snapshot(tmp_path / "bin", dir_mtimes=False) == before
    assert binary.read_bytes() == tool_script("atuin", "18.18.1")


def test_missing_checksum_is_refused_unless_allowed(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0", per_asset_sums=False)
    installed(tmp_path, "18.18.1")
    before = snapshot(tmp_path / "bin", dir_mtimes=False)
    with pytest.raises(UnverifiedAsset):
        main(args(github, tmp_path))
    assert snapshot(tmp_path / "bin", dir_mtimes=False) == before and github.dl_requests() == []
    dry = main(args(github, tmp_path, allow_unverified=True, dry_run=True))
    assert dry["summary"].endswith("UNVERIFIED (no SHA-256 published)")
    assert snapshot(tmp_path / "bin", dir_mtimes=False) == before
    assert main(args(github, tmp_path, allow_unverified=True))["changed"] is True
    assert (tmp_path / "bin" / "atuin").read_bytes() == tool_script("atuin", "18.19.0")


def test_no_asset_for_this_arch(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0")
    installed(tmp_path, "18.18.1")
    with pytest.raises(NoAssetError) as info:
        main(args(github, tmp_path, arch="armv7l"))
    assert "linux/armv7" in str(info.value) and "atuin-aarch64-unknown-linux-gnu.tar.gz" in str(info.value)
    assert (tmp_path / "bin" / "atuin").read_bytes() == tool_script("atuin", "18.18.1")


def test_new_binary_failing_its_version_check_changes_nothing(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0", version_exit=127)
    installed(tmp_path, "18.18.1")
    before = snapshot(tmp_path / "bin", dir_mtimes=False)
    with pytest.raises(InstallError, match="version check failed"):
        main(args(github, tmp_path))
    assert snapshot(tmp_path / "bin", dir_mtimes=False) == before
    assert not (tmp_path / "state" / "backups").exists()


def test_pinned_version_and_refused_downgrade(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.18.1")
    publish(github, "18.19.0")
    installed(tmp_path, "18.18.1")
    assert main(args(github, tmp_path, version="18.18.1")) == {
        "changed": False,
        "summary": "up to date (18.18.1)",
    }
    installed(tmp_path, "18.19.0")
    with pytest.raises(ReleaseError, match="refusing to downgrade"):
        main(args(github, tmp_path, version="v18.18.1"))
    assert (tmp_path / "bin" / "atuin").read_bytes() == tool_script("atuin", "18.19.0")


def test_token_goes_to_the_api_host_only(
    github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPDATES_TEST_GITHUB_TOKEN", "ghp_test")
    publish(github, "18.19.0")
    installed(tmp_path, "18.18.1")
    main(args(github, tmp_path))
    assert {s.headers.get("Authorization") for s in github.api_requests()} == {"Bearer ghp_test"}
    assert github.dl_requests() and all("Authorization" not in s.headers for s in github.dl_requests())


def test_unknown_or_bad_args_are_refused_before_any_request(github: FakeGitHub, tmp_path: Path) -> None:
    with pytest.raises(ArgsError, match="alow_unverified"):
        main(args(github, tmp_path, alow_unverified=True))
    with pytest.raises(ArgsError, match="api_url"):
        main(args(github, tmp_path, api_url="http://example.com"))
    with pytest.raises(ArgsError, match="binary_path"):
        main(args(github, tmp_path, binary_path="bin/atuin"))
    with pytest.raises(ArgsError, match="server_health_url"):
        main(args(github, tmp_path, server=True, server_health_url="127.0.0.1:8888/healthz"))
    assert github.api_requests() == []


def server_setup(github: FakeGitHub, tmp_path: Path, services: ServiceRig, **server: Any) -> dict[str, Any]:
    publish(github, "18.18.1", server={})
    publish(github, "18.19.0", server=server)
    installed(tmp_path, "18.19.0")
    binary = install_script(tmp_path / "bin" / "atuin-server", tool_script("atuin-server", "18.18.1"))
    base = services.add("atuin-server", binary)
    services.start("atuin-server")
    return args(
        github,
        tmp_path,
        server=True,
        server_binary_path=str(binary),
        server_health_url=f"{base}/healthz",
        service_command=services.command,
        health_timeout=3,
    )


def test_server_upgrade_restarts_the_service(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig
) -> None:
    result = main(server_setup(github, tmp_path, services))
    assert result == {
        "changed": True,
        "summary": "atuin up to date (18.19.0); atuin-server 18.18.1 -> 18.19.0",
    }
    assert services.running_version("atuin-server") == "18.19.0"
    assert services.calls() == ["is-active atuin-server", "stop atuin-server", "start atuin-server"]


def test_server_failing_health_is_rolled_back_and_running(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig
) -> None:
    module_args_ = server_setup(github, tmp_path, services, health="bad")
    with pytest.raises(InstallError, match="rolled back"):
        main(module_args_)
    assert (tmp_path / "bin" / "atuin-server").read_bytes() == tool_script("atuin-server", "18.18.1")
    assert services.running_version("atuin-server") == "18.18.1"
    assert bin_names(tmp_path) == ["atuin", "atuin-server"]


def test_dry_run_touches_nothing(github: FakeGitHub, tmp_path: Path, services: ServiceRig) -> None:
    module_args_ = server_setup(github, tmp_path, services)
    installed(tmp_path, "18.18.1")
    pid = services.pid("atuin-server")
    before = snapshot(tmp_path / "bin", tmp_path / "state")
    result = main({**module_args_, "dry_run": True})
    assert result["changed"] is False
    assert result["summary"].startswith(
        "atuin would install 18.18.1 -> 18.19.0 from atuin-x86_64-unknown-linux-gnu"
    )
    assert snapshot(tmp_path / "bin", tmp_path / "state") == before
    assert services.calls() == [] and services.pid("atuin-server") == pid
    assert all(
        not s.path.endswith(".tar.gz") for s in github.dl_requests()
    )  # checksums looked up, no archive


def test_archive_with_a_dotdot_member_is_refused(github: FakeGitHub, tmp_path: Path) -> None:
    top = "atuin-x86_64-unknown-linux-gnu"
    evil = tar_gz([(f"{top}/", None), (f"{top}/atuin", tool_script("atuin", "18.19.0")),
                   (f"{top}/../../evil", b"#!/bin/sh\necho owned\n")])
    github.add_release(REPO, "v18.19.0", {f"{top}.tar.gz": evil}, digests=True)
    installed(tmp_path, "18.18.1")
    before = snapshot(tmp_path / "bin", dir_mtimes=False)
    with pytest.raises(ExtractError) as raised:
        main(args(github, tmp_path))
    # Named by the asset and its release, not by the hidden temp file it was downloaded to.
    assert str(raised.value) == (
        f"{top}.tar.gz (release 18.19.0): refusing member path with '..': '{top}/../../evil'"
    )
    assert snapshot(tmp_path / "bin", dir_mtimes=False) == before
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_symlinked_binary_path_is_refused(github: FakeGitHub, tmp_path: Path) -> None:
    publish(github, "18.19.0")
    real = install_script(tmp_path / "opt" / "atuin", tool_script("atuin", "18.18.1"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "atuin").symlink_to(real)
    with pytest.raises(ArgsError, match="symbolic link"):
        main(args(github, tmp_path))
    assert (tmp_path / "bin" / "atuin").readlink() == real
    assert real.read_bytes() == tool_script("atuin", "18.18.1")


def test_allow_unverified_is_warned_about_on_every_run(
    github: FakeGitHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(github, "18.19.0")
    installed(tmp_path, "18.19.0")
    with caplog.at_level(logging.WARNING):
        assert main(args(github, tmp_path, allow_unverified=True))["changed"] is False  # nothing to install
    assert any("allow_unverified" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_server_failure_after_the_client_upgrade_says_what_was_done(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig
) -> None:
    module_args_ = server_setup(github, tmp_path, services, health="bad")
    installed(tmp_path, "18.18.1")
    with pytest.raises(PartialUpdate, match=r"^atuin-server 18\.19\.0 failed: .*rolled back.*already done, and kept: atuin 18\.18\.1 -> 18\.19\.0$"):
        main(module_args_)
    assert (tmp_path / "bin" / "atuin").read_bytes() == tool_script("atuin", "18.19.0")  # stays upgraded
    assert (tmp_path / "bin" / "atuin-server").read_bytes() == tool_script("atuin-server", "18.18.1")
    assert services.running_version("atuin-server") == "18.18.1"


def test_leftovers_of_a_killed_run_are_swept_before_the_download(github: FakeGitHub, tmp_path: Path) -> None:
    import os
    import time

    publish(github, "18.19.0")
    installed(tmp_path, "18.18.1")
    bin_dir = tmp_path / "bin"
    stale = [bin_dir / ".atuin-x86_64-unknown-linux-gnu.tar.gz.k1ll3d.part", bin_dir / ".atuin.k1ll3d.new"]
    fresh = bin_dir / ".atuin.0ther.new"  # a minute old: maybe someone else's, left alone
    mine = bin_dir / ".atuin.notes"  # not one of our temp names
    for path in [*stale, fresh, mine]:
        path.write_bytes(b"partial")
    old = time.time() - 7200
    for path in [*stale, mine]:
        os.utime(path, (old, old))
    os.utime(fresh, (time.time() - 60,) * 2)
    assert main(args(github, tmp_path))["changed"] is True
    assert bin_names(tmp_path) == sorted([".atuin.0ther.new", ".atuin.notes", "atuin"])
