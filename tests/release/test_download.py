"""Streamed download and SHA-256 verification of release assets, through the API redirect."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_support import FakeGitHub, github_fixture, sha256  # noqa: F401 - fixture
from updates.utils.http import make_session
from updates.utils.release.download import (
    ChecksumMismatch,
    DownloadError,
    Expected,
    UnverifiedAsset,
    download_asset,
    downloaded,
    expected_digest,
    parse_checksums,
)
from updates.utils.release.github import Asset, GitHubReleases, RateLimitError, Release, ReleaseQuery

REPO = "filebrowser/filebrowser"
NAME = "linux-amd64-filebrowser.tar.gz"
DATA = bytes(range(256)) * 4000  # ~1 MB: several chunks


def latest(github: FakeGitHub, token: str | None = None) -> tuple[Release, object]:
    session = make_session(backoff=0, token=token, token_origin=github.api_url)
    return GitHubReleases(session, github.api_url).lookup(ReleaseQuery(REPO)).release, session


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_checksum_lines_in_both_formats() -> None:
    a, b = "a" * 64, "B" * 64
    text = f"{a}  linux-amd64-filebrowser.tar.gz\n{b} *atuin-x86_64-unknown-linux-gnu.tar.gz\r\n"
    text += "garbage line\n" + f"{'c' * 64}  ./gogs_0.13.4_linux_amd64.tar.gz\n"
    assert parse_checksums(text) == {
        "linux-amd64-filebrowser.tar.gz": a,
        "atuin-x86_64-unknown-linux-gnu.tar.gz": "b" * 64,
        "gogs_0.13.4_linux_amd64.tar.gz": "c" * 64,
    }


def test_api_digest_is_preferred(github: FakeGitHub) -> None:
    github.add_release(
        REPO, "v2.63.23", {NAME: DATA}, digests=True, checksums="filebrowser_2.63.23_checksums.txt"
    )
    release, session = latest(github)
    expected = expected_digest(session, release, release.find(NAME), ["filebrowser_2.63.23_checksums.txt"])
    assert expected == Expected(sha256(DATA), "the GitHub API digest")
    assert github.dl_requests() == []  # no checksum file fetched when the API has the digest


@pytest.mark.parametrize("sums", ["filebrowser_2.63.23_checksums.txt", f"{NAME}.sha256"])
def test_checksum_file_when_there_is_no_digest(github: FakeGitHub, sums: str) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA}, digests=False, checksums=sums)
    release, session = latest(github)
    assert release.find(NAME).sha256 is None
    expected = expected_digest(session, release, release.find(NAME), [sums])
    assert expected == Expected(sha256(DATA), f"checksum file {sums}")


def test_verified_download_goes_through_the_redirect_without_the_token(
    github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA}, digests=False, checksums=f"{NAME}.sha256")
    release, session = latest(github, token="s3cret")
    expected = expected_digest(session, release, release.find(NAME), [f"{NAME}.sha256"])
    with downloaded(session, release.find(NAME), tmp_path, expected) as path:
        assert path.parent == tmp_path and path.name.startswith(".")
        assert path.read_bytes() == DATA
    assert leftovers(tmp_path) == []  # the context manager removed it
    api = github.api_requests()
    assert all(s.headers.get("Authorization") == "Bearer s3cret" for s in api)
    assert [s.status for s in api if "/assets/" in s.path] == [302, 302]  # checksum file and archive
    dl = github.dl_requests()
    assert [s.path.rsplit("/", 1)[1] for s in dl] == [f"{NAME}.sha256", NAME]
    assert all("Authorization" not in s.headers for s in dl)


def test_wrong_checksum_is_refused_and_leaves_nothing(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA})
    release, session = latest(github)
    with pytest.raises(ChecksumMismatch, match=sha256(DATA)):
        download_asset(session, release.find(NAME), tmp_path, Expected("0" * 64, "test"))
    assert leftovers(tmp_path) == []


def test_missing_checksum_is_refused_before_downloading(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA}, digests=False)
    release, session = latest(github)
    expected = expected_digest(session, release, release.find(NAME), ["filebrowser_2.63.23_checksums.txt"])
    assert expected.sha256 is None
    with pytest.raises(UnverifiedAsset, match="allow_unverified"):
        download_asset(session, release.find(NAME), tmp_path, expected)
    assert github.dl_requests() == []
    assert leftovers(tmp_path) == []


def test_allow_unverified_downloads_with_a_warning(
    github: FakeGitHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA}, digests=False)
    release, session = latest(github)
    with caplog.at_level(logging.WARNING):
        path = download_asset(
            session, release.find(NAME), tmp_path, Expected(None, "nothing"), allow_unverified=True
        )
    assert path.read_bytes() == DATA
    assert any("UNVERIFIED" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(("fault", "message"), [("truncate", "announces"), ("html", "HTML page")])
def test_truncated_or_html_download_is_refused(
    github: FakeGitHub, tmp_path: Path, fault: str, message: str
) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA})
    github.dl_faults[NAME] = [fault]
    release, session = latest(github)
    asset = release.find(NAME)
    with pytest.raises(DownloadError, match=message):
        download_asset(session, asset, tmp_path, Expected(asset.sha256, "digest"))
    assert leftovers(tmp_path) == []


def test_download_host_errors_are_retried(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA})
    github.dl_faults[NAME] = ["500", "500"]
    release, session = latest(github)
    asset = release.find(NAME)
    path = download_asset(session, asset, tmp_path, Expected(asset.sha256, "digest"))
    assert path.read_bytes() == DATA
    assert [s.status for s in github.dl_requests()] == [500, 500, 200]


@pytest.fixture
def cut_server() -> Iterator[str]:
    """A raw HTTP server that announces the full length, sends half the body and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\nContent-Type: application/gzip\r\n\r\n"
                conn.sendall(head.encode() + DATA[: len(DATA) // 2])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/asset"
    listener.close()


def test_connection_cut_mid_body_every_time_fails_with_the_true_count(cut_server: str, tmp_path: Path) -> None:
    """A server that ignores Range and always hangs up half-way: resumed (from zero) a bounded number of
    times, then one line with the bytes that really arrived, in words, no urllib3 tuple."""
    asset = Asset(NAME, len(DATA), cut_server, cut_server)
    with pytest.raises(DownloadError) as raised:
        download_asset(make_session(retries=0), asset, tmp_path, Expected(sha256(DATA), "test"))
    assert str(raised.value) == (
        f"download of {NAME} broke off after {len(DATA) // 2} of {len(DATA)} bytes "
        "(connection broken off; resumed 3 times)"
    )
    assert leftovers(tmp_path) == []


@pytest.fixture
def resuming_server() -> Iterator[tuple[str, list[str]]]:
    """A raw HTTP server that honours `Range: bytes=N-` (206 with Content-Range) and hangs up after
    `len(DATA) // 3` body bytes on each of its first two answers. Records each request's Range header."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ranges: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).decode("latin-1")
                wanted = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                               if line.lower().startswith("range:")), "")
                ranges.append(wanted)
                start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
                body = DATA[start:]
                status = "206 Partial Content" if start else "200 OK"
                extra = f"Content-Range: bytes {start}-{len(DATA) - 1}/{len(DATA)}\r\n" if start else ""
                reply = (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}"
                         "Content-Type: application/gzip\r\n\r\n").encode()
                cut = len(DATA) // 3 if len(ranges) <= 2 else len(body)
                conn.sendall(reply + body[:cut])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/asset", ranges
    listener.close()


def test_a_break_mid_body_is_resumed_with_a_range_request(
    resuming_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, ranges = resuming_server
    asset = Asset(NAME, len(DATA), url, url)
    path = download_asset(make_session(retries=0), asset, tmp_path, Expected(sha256(DATA), "test"))
    assert path.read_bytes() == DATA  # verified over the whole file
    third = len(DATA) // 3
    assert ranges == ["", f"bytes={third}-", f"bytes={2 * third}-"]  # exactly where each break left off


def test_a_connection_error_names_the_host_in_words_without_the_signed_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens
    url = f"http://user:pw@127.0.0.1:{port}/objects/7/{NAME}?sig=s3cr3tSIG&exp=1900000000"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DownloadError) as raised:
        download_asset(make_session(retries=1, backoff=0), Asset(NAME, 10, url, url), tmp_path,
                       Expected("0" * 64, "test"))
    assert str(raised.value) == f"cannot download {NAME}: cannot reach 127.0.0.1:{port}: connection refused"
    assert "s3cr3tSIG" not in caplog.text and "pw@" not in caplog.text
    assert leftovers(tmp_path) == []


def test_rate_limited_asset_download_names_the_reset_time(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA})
    release, session = latest(github)
    github.rate_limited_until = 1_900_000_000  # the asset URL is on the API host: it counts too
    asset = release.find(NAME)
    with pytest.raises(RateLimitError, match="2030-03-17T17:46:40Z"):
        download_asset(session, asset, tmp_path, Expected(asset.sha256, "digest"))
    assert leftovers(tmp_path) == [] and github.dl_requests() == []


def test_an_asset_mismatch_is_not_a_module_checksum_error() -> None:
    """The orchestrator reports a ChecksumError as a module that was "not run"; this module did run."""
    from updates.utils.errors import ChecksumError

    assert not issubclass(ChecksumMismatch, ChecksumError)


def test_per_asset_sha256_file_with_the_bare_digest(github: FakeGitHub) -> None:
    github.add_release(REPO, "v2.63.23", {NAME: DATA, f"{NAME}.sha256": sha256(DATA).encode() + b"\n"}, digests=False)
    release, session = latest(github)
    expected = expected_digest(session, release, release.find(NAME), [f"{NAME}.sha256"])
    assert expected == Expected(sha256(DATA), f"checksum file {NAME}.sha256")


@pytest.fixture
def watching_server() -> Iterator[tuple[str, threading.Event]]:
    """A raw HTTP server that sends the headers and part of the body, then waits for the client to hang up.

    The event is set when the client closes the connection: an unclosed response keeps it open.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    closed = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\nContent-Type: application/gzip\r\n\r\n"
            conn.sendall(head.encode() + DATA[:1000])
            conn.settimeout(10)
            try:
                while conn.recv(65536):
                    pass
                closed.set()
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/asset", closed
    listener.close()


def test_the_response_is_closed_when_the_temporary_file_cannot_be_created(
    watching_server: tuple[str, threading.Event], tmp_path: Path
) -> None:
    url, closed = watching_server
    asset = Asset(NAME, len(DATA), url, url)
    # `raised` holds the traceback, so download_asset's frame and any response it left open stay alive.
    with pytest.raises(FileNotFoundError) as raised:
        download_asset(make_session(retries=0), asset, tmp_path / "missing", Expected(sha256(DATA), "test"))
    assert closed.wait(5), f"the connection stayed open after {raised.value}: the response was not closed"
