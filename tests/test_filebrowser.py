"""The filebrowser module end to end: checksum file, database backup, service health, archived upstream."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from release_support import (  # noqa: F401 - fixtures
    FakeGitHub,
    ServiceRig,
    filebrowser_archive,
    github_fixture,
    install_script,
    module_args,
    services_fixture,
    snapshot,
    tool_script,
)
from updates.filebrowser.index import main
from updates.utils.argspec import ArgsError
from updates.utils.release.binary import InstallError
from updates.utils.release.download import DownloadError
from updates.utils.release.github import RateLimitError

REPO = "filebrowser/filebrowser"
ASSET = "linux-amd64-filebrowser.tar.gz"


def publish(github: FakeGitHub, version: str, **script: Any) -> None:
    """Like GoReleaser: no API digest here, `filebrowser_<version>_checksums.txt` with `<hex>  <name>`."""
    assets = {ASSET: filebrowser_archive(version, **script), "linux-arm64-filebrowser.tar.gz": b"other arch"}
    github.add_release(
        REPO, f"v{version}", assets, digests=False, checksums=f"filebrowser_{version}_checksums.txt"
    )


@pytest.fixture
def setup(github: FakeGitHub, tmp_path: Path, services: ServiceRig) -> dict[str, Any]:
    """filebrowser 2.63.22 installed and running, with a database; 2.63.22 and 2.63.23 released."""
    binary = install_script(tmp_path / "bin" / "filebrowser", tool_script("filebrowser", "2.63.22"))
    database = tmp_path / "var" / "filebrowser.db"
    database.parent.mkdir()
    database.write_bytes(b"\x00bolt\x00" * 1000)
    base = services.add("filebrowser", binary)
    services.start("filebrowser")
    args = module_args(
        github,
        tmp_path,
        "filebrowser",
        binary_path=str(binary),
        database_path=str(database),
        health_url=f"{base}/health",
        service_command=services.command,
        arch="x86_64",
        health_timeout=3,
    )
    return {"args": args, "binary": binary, "database": database}


def test_upgrade_backs_up_the_database_and_restarts(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "2.63.22")
    publish(github, "2.63.23")
    assert main(setup["args"]) == {"changed": True, "summary": "2.63.22 -> 2.63.23"}
    assert setup["binary"].read_bytes() == tool_script("filebrowser", "2.63.23")
    backups = {p.name.rsplit("-", 1)[0]: p.read_bytes() for p in (tmp_path / "state" / "backups").iterdir()}
    assert backups == {
        "filebrowser-2.63.22": tool_script("filebrowser", "2.63.22"),
        "filebrowser.db-2.63.22": setup["database"].read_bytes(),
    }
    assert services.running_version("filebrowser") == "2.63.23"
    assert [s.path.rsplit("/", 1)[1] for s in github.dl_requests()] == [
        "filebrowser_2.63.23_checksums.txt",
        ASSET,
    ]


def test_archived_upstream_is_reported_not_an_error(
    github: FakeGitHub, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "2.63.23")
    install_script(setup["binary"], tool_script("filebrowser", "2.63.23"))
    result = main(setup["args"])
    assert result["changed"] is False
    assert result["summary"].startswith("up to date (2.63.23); upstream archived")
    assert "no further releases" in result["summary"]
    assert services.calls() == [] and github.dl_requests() == []


def test_failed_health_check_restores_binary_and_database(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "2.63.23", health="bad")
    db_before = setup["database"].read_bytes()
    with pytest.raises(InstallError, match="rolled back"):
        main(setup["args"])
    assert setup["binary"].read_bytes() == tool_script("filebrowser", "2.63.22")
    assert setup["database"].read_bytes() == db_before
    assert services.running_version("filebrowser") == "2.63.22"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["filebrowser"]


@pytest.mark.parametrize("case", [("html", "HTML page"), ("truncate", "bytes")])
def test_bad_downloads_change_nothing(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any], case: tuple[str, str]
) -> None:
    fault, match = case
    publish(github, "2.63.23")
    github.dl_faults[ASSET] = [fault]
    pid = services.pid("filebrowser")
    before = snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False)
    with pytest.raises(DownloadError, match=match):
        main(setup["args"])
    assert snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False) == before
    assert services.pid("filebrowser") == pid and services.calls() == []


def test_server_errors_then_success(github: FakeGitHub, services: ServiceRig, setup: dict[str, Any]) -> None:
    publish(github, "2.63.23")
    github.api_failures = 2
    github.dl_faults[ASSET] = ["500", "500"]
    assert main(setup["args"]) == {"changed": True, "summary": "2.63.22 -> 2.63.23"}
    assert [s.status for s in github.api_requests()][:3] == [500, 500, 200]
    assert [s.status for s in github.dl_requests() if s.path.endswith(ASSET)] == [500, 500, 200]
    assert services.running_version("filebrowser") == "2.63.23"


def test_rate_limited_run_changes_nothing(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "2.63.23")
    github.rate_limited_until = 1_900_000_000
    before = snapshot(tmp_path / "bin", tmp_path / "var", tmp_path / "state")
    with pytest.raises(RateLimitError, match="2030-03-17T17:46:40Z"):
        main(setup["args"])
    assert snapshot(tmp_path / "bin", tmp_path / "var", tmp_path / "state") == before
    assert services.calls() == []


def test_missing_database_file_is_refused(github: FakeGitHub, setup: dict[str, Any]) -> None:
    publish(github, "2.63.23")
    setup["database"].unlink()
    with pytest.raises(ArgsError, match="database_path"):
        main(setup["args"])
    assert setup["binary"].read_bytes() == tool_script("filebrowser", "2.63.22")


def test_dry_run_touches_nothing(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict
) -> None:
    publish(github, "2.63.23")
    pid = services.pid("filebrowser")
    before = snapshot(tmp_path / "bin", tmp_path / "var", tmp_path / "state")
    result = main({**setup["args"], "dry_run": True})
    assert result == {
        "changed": False,
        "summary": f"would install 2.63.22 -> 2.63.23 from {ASSET} (SHA-256 from checksum file "
        "filebrowser_2.63.23_checksums.txt)",
    }
    assert snapshot(tmp_path / "bin", tmp_path / "var", tmp_path / "state") == before
    assert services.calls() == [] and services.pid("filebrowser") == pid


# --- quiet when there is nothing to do, loud when something is wrong (issue 12) -------------------------


def test_absent_tool_costs_no_request_and_works_offline(tmp_path: Path) -> None:
    """install_missing false and no binary: "not installed" and success, without asking GitHub; the API
    here is a closed loopback port, so any request would fail the run."""
    from release_support import free_port

    args = {
        "name": "filebrowser", "dry_run": False, "state_dir": str(tmp_path / "state"),
        "api_url": f"http://127.0.0.1:{free_port()}", "binary_path": str(tmp_path / "bin" / "filebrowser"),
        "service_command": ["/bin/false"], "http_backoff": 0,
    }
    assert main(args) == {"changed": False, "summary": "not installed (set install_missing to install it)"}
    assert not (tmp_path / "state" / "github").exists()


def test_misnamed_service_fails_before_anything_changes(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    from updates.utils.release.service import ServiceError

    publish(github, "2.63.23")
    before = snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False)
    with pytest.raises(ServiceError) as raised:
        main({**setup["args"], "service": "filebrowsr"})
    assert str(raised.value) == (
        f"no service unit named 'filebrowsr' (`{services.command[0]} is-active --quiet filebrowsr` answered "
        'exit code 4); fix the module\'s service arg, or set it to "" when the tool runs without a service'
    )
    assert snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False) == before
    assert services.running_version("filebrowser") == "2.63.22"
    assert services.calls() == ["is-active filebrowsr"]


def test_service_command_that_cannot_answer_fails_before_anything_changes(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    """A service command that does not know `is-active --quiet` (exit 1) is not taken for "stopped"."""
    from updates.utils.release.service import ServiceError

    ctl = install_script(tmp_path / "rc-service", b"#!/bin/sh\necho \"rc-service: unknown option $1\" >&2\nexit 1\n")
    publish(github, "2.63.23")
    before = snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False)
    with pytest.raises(ServiceError, match=r"cannot tell whether the service filebrowser runs: .* exit code 1 "
                       r"\(rc-service: unknown option is-active\); service_command must understand"):
        main({**setup["args"], "service_command": [str(ctl)]})
    assert snapshot(tmp_path / "bin", tmp_path / "var", dir_mtimes=False) == before
    assert services.running_version("filebrowser") == "2.63.22"


def test_a_broken_new_binary_is_named_by_its_asset_not_a_temp_file(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any]
) -> None:
    publish(github, "2.63.23", version_exit=127)
    with pytest.raises(InstallError) as raised:
        main(setup["args"])
    assert str(raised.value) == (
        f"the new filebrowser 2.63.23 (from {ASSET}): version check failed: `version` exit code 127: "
        "error while loading shared libraries: libfoo.so.1"
    )
    assert setup["binary"].read_bytes() == tool_script("filebrowser", "2.63.22")


def test_signed_download_url_never_reaches_a_message_or_the_log(
    github: FakeGitHub, tmp_path: Path, services: ServiceRig, setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from release_support import free_port

    publish(github, "2.63.23")
    port = free_port()  # nothing listens there: connection refused
    github.redirects[ASSET] = f"http://127.0.0.1:{port}/objects/1/{ASSET}?sig=s3cr3tSIG&exp=1900000000"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DownloadError) as raised:
        main({**setup["args"], "http_retries": 1})
    assert str(raised.value) == f"cannot download {ASSET}: cannot reach 127.0.0.1:{port}: connection refused"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no urllib3 text chained
    assert "s3cr3tSIG" not in caplog.text and "exp=1900000000" not in caplog.text
    assert f"127.0.0.1:{port}/objects/1/{ASSET}" in caplog.text  # the detail is logged, scrubbed
    assert setup["binary"].read_bytes() == tool_script("filebrowser", "2.63.22")


def test_rejected_token_names_its_variable(
    httpserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from updates.utils.release.github import ReleaseError

    httpserver.expect_request("/repos/filebrowser/filebrowser/releases/latest").respond_with_json(
        {"message": "Bad credentials"}, status=401
    )
    install_script(tmp_path / "bin" / "filebrowser", tool_script("filebrowser", "2.63.22"))
    monkeypatch.setenv("FILEBROWSER_GH_TOKEN", "expired")
    args = {
        "name": "filebrowser", "dry_run": False, "state_dir": str(tmp_path / "state"),
        "api_url": httpserver.url_for("").rstrip("/"), "binary_path": str(tmp_path / "bin" / "filebrowser"),
        "token_env": "FILEBROWSER_GH_TOKEN", "service": "", "http_backoff": 0,
    }
    with pytest.raises(ReleaseError) as raised:
        main(args)
    assert str(raised.value) == (
        "the GitHub API rejected the token in $FILEBROWSER_GH_TOKEN (HTTP 401); replace it, or unset "
        "FILEBROWSER_GH_TOKEN to ask anonymously"
    )
