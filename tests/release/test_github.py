"""Release lookup (ETag cache, pinned tags, prereleases, rate limits, retries) and asset choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from release_support import FakeGitHub, fixture_facts, github_fixture  # noqa: F401 - fixture
from updates.atuin import index as atuin_mod
from updates.filebrowser import index as filebrowser_mod
from updates.gogs import index as gogs_mod
from updates.utils.http import make_session
from updates.utils.release.assets import (
    NoAssetError,
    Platform,
    choose_asset,
    detect_platform,
    libc_order,
    normalize_arch,
)
from updates.utils.release.github import (
    GitHubReleases,
    RateLimitError,
    Release,
    ReleaseError,
    ReleaseQuery,
    Version,
)

REPO = "atuinsh/atuin"


def client(github: FakeGitHub, cache: Path | None, **session: object) -> GitHubReleases:
    return GitHubReleases(make_session(backoff=0, **session), github.api_url, cache)  # type: ignore[arg-type]


def fixture_release(tool: str, tag: str) -> Release:
    facts = fixture_facts()[tool]
    entry = next(r for r in facts["releases"] if r["tag"] == tag)
    assets = [
        {"name": n, "size": 1, "url": f"https://api/{n}"}
        for n in entry["assets"] + entry.get("other_assets", [])
    ]
    return Release.from_api(
        facts["repo"], {"tag_name": tag, "prerelease": entry["prerelease"], "assets": assets}
    )


def test_version_parsing_and_order() -> None:
    assert str(Version.parse("v18.19.0")) == "18.19.0"
    assert Version.parse("0.14") == Version(0, 14, 0)
    assert Version.parse("v18.20.0-beta.3") < Version.parse("18.20.0")
    assert Version.parse("v18.20.0-beta.3") > Version.parse("18.19.0")
    assert Version.parse("18.20.0-beta.10") > Version.parse("18.20.0-beta.3")
    assert Version.parse("2.63.23") > Version.parse("2.63.22") > Version.parse("2.9.0")
    for junk in ("latest-commit-build", "", "abc1234", "v1"):
        assert Version.parse(junk) is None


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("armv7l", "armv7"),
        ("i686", "i686"),
        ("i386", "i686"),
        ("armv6l", "armv6"),
        ("riscv64", "riscv64"),
    ],
)
def test_machine_names_map_to_canonical_arches(machine: str, arch: str) -> None:
    assert normalize_arch(machine) == arch
    assert detect_platform(machine, "gnu", "Linux") == Platform("linux", arch, "gnu")


def test_unknown_arch_and_os_are_refused() -> None:
    with pytest.raises(NoAssetError, match="s390x"):
        normalize_arch("s390x")
    with pytest.raises(NoAssetError, match="darwin"):
        detect_platform("x86_64", "gnu", "Darwin")


def test_this_machine_is_detected() -> None:
    here = detect_platform()
    assert here.arch in {"x86_64", "aarch64", "armv7", "i686"}
    assert here.libc in {"gnu", "musl"}


def test_libc_preference() -> None:
    assert libc_order("gnu", "gnu") == ["gnu", "musl"]
    assert libc_order("gnu", "musl") == ["musl", "gnu"]
    assert libc_order("musl", "gnu") == ["musl"]  # a glibc build would not run on a musl host


@pytest.mark.parametrize(
    ("arch", "libc", "expected"),
    [
        ("x86_64", "gnu", "atuin-x86_64-unknown-linux-gnu.tar.gz"),
        ("x86_64", "musl", "atuin-x86_64-unknown-linux-musl.tar.gz"),
        ("aarch64", "gnu", "atuin-aarch64-unknown-linux-gnu.tar.gz"),
        ("aarch64", "musl", "atuin-aarch64-unknown-linux-musl.tar.gz"),
    ],
)
def test_atuin_asset_choice_on_real_names(arch: str, libc: str, expected: str) -> None:
    release = fixture_release("atuin", "v18.19.0")
    where = Platform("linux", arch, libc)
    names = atuin_mod.asset_names("atuin")(where, release.version, libc_order(libc, "gnu"))
    assert choose_asset(release, names, where).name == expected
    server = atuin_mod.asset_names("atuin-server")(where, release.version, libc_order(libc, "gnu"))
    assert choose_asset(release, server, where).name == expected.replace("atuin-", "atuin-server-", 1)


@pytest.mark.parametrize("arch", ["armv7", "i686", "armv6", "riscv64"])
def test_no_asset_for_arch_lists_what_is_available(arch: str) -> None:
    release = fixture_release("atuin", "v18.19.0")
    where = Platform("linux", arch, "gnu")
    with pytest.raises(NoAssetError) as info:
        choose_asset(release, atuin_mod.asset_names("atuin")(where, release.version, ["gnu", "musl"]), where)
    message = str(info.value)
    assert f"linux/{arch}" in message
    assert (
        "atuin-x86_64-unknown-linux-gnu.tar.gz" in message
        and "atuin-aarch64-unknown-linux-musl.tar.gz" in message
    )


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("x86_64", "linux-amd64-filebrowser.tar.gz"),
        ("aarch64", "linux-arm64-filebrowser.tar.gz"),
        ("armv7", "linux-armv7-filebrowser.tar.gz"),
        ("i686", "linux-386-filebrowser.tar.gz"),
        ("armv6", "linux-armv6-filebrowser.tar.gz"),
        ("riscv64", "linux-riscv64-filebrowser.tar.gz"),
    ],
)
def test_filebrowser_asset_choice_on_real_names(arch: str, expected: str) -> None:
    release = fixture_release("filebrowser", "v2.63.23")
    where = Platform("linux", arch, "musl")
    names = filebrowser_mod.asset_names(where, release.version, ["musl"])
    assert choose_asset(release, names, where).name == expected


@pytest.mark.parametrize(
    ("tag", "arch", "expected"),
    [
        ("v0.14.3", "x86_64", "gogs_0.14.3_linux_amd64.tar.gz"),
        ("v0.14.3", "aarch64", "gogs_0.14.3_linux_arm64.tar.gz"),
        ("v0.14.3", "i686", "gogs_0.14.3_linux_386.tar.gz"),
        ("v0.13.4", "aarch64", "gogs_0.13.4_linux_armv8.tar.gz"),
        ("v0.13.4", "armv7", "gogs_0.13.4_linux_armv7.tar.gz"),
        ("v0.14.1", "x86_64", "gogs_v0.14.1_linux_amd64.tar.gz"),
    ],
)
def test_gogs_asset_choice_on_real_names(tag: str, arch: str, expected: str) -> None:
    release = fixture_release("gogs", tag)
    where = Platform("linux", arch, "gnu")
    assert choose_asset(release, gogs_mod.asset_names(where, release.version), where).name == expected


def test_gogs_014_has_no_armv7_and_does_not_fall_back() -> None:
    release = fixture_release("gogs", "v0.14.3")
    where = Platform("linux", "armv7", "gnu")
    with pytest.raises(NoAssetError, match=r"gogs_0\.14\.3_linux_arm64\.tar\.gz"):
        choose_asset(release, gogs_mod.asset_names(where, release.version), where)


def test_latest_sends_api_headers_and_caches_the_etag(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v18.19.0", {"atuin-x86_64-unknown-linux-gnu.tar.gz": b"x"})
    cache = tmp_path / "cache"
    first = client(github, cache).lookup(ReleaseQuery(REPO))
    assert first.release.tag == "v18.19.0" and not first.not_modified
    sent = github.api_requests()[0]
    assert sent.path == "/repos/atuinsh/atuin/releases/latest"
    assert sent.headers["Accept"] == "application/vnd.github+json"
    assert sent.headers["X-Github-Api-Version"] == "2022-11-28"
    assert sent.headers["User-Agent"].startswith("updates-")
    assert "If-None-Match" not in sent.headers
    cached = json.loads(next(cache.iterdir()).read_text())
    assert cached["body"]["tag_name"] == "v18.19.0"

    second = client(github, cache).lookup(ReleaseQuery(REPO))
    again = github.api_requests()[1]
    assert again.headers["If-None-Match"] == cached["etag"]
    assert (again.status, again.body_bytes) == (304, 0)
    assert second.not_modified and second.release == first.release


def test_cache_of_another_api_base_is_not_used(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v18.19.0", {})
    client(github, tmp_path).lookup(ReleaseQuery(REPO))
    cache = next(tmp_path.iterdir())
    entry = json.loads(cache.read_text())
    cache.write_text(json.dumps({**entry, "url": "https://ghe.example.com/api/v3/repos/atuinsh/atuin/releases/latest"}))
    result = client(github, tmp_path).lookup(ReleaseQuery(REPO))
    assert not result.not_modified and "If-None-Match" not in github.api_requests()[-1].headers
    assert json.loads(cache.read_text())["url"] == entry["url"]  # rewritten for this base


def test_new_release_replaces_the_cached_one(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v18.18.1", {})
    client(github, tmp_path).lookup(ReleaseQuery(REPO))
    github.add_release(REPO, "v18.19.0", {})
    result = client(github, tmp_path).lookup(ReleaseQuery(REPO))
    assert result.release.tag == "v18.19.0" and not result.not_modified
    assert github.api_requests()[-1].status == 200


def test_dry_run_client_does_not_write_the_cache(github: FakeGitHub, tmp_path: Path) -> None:
    github.add_release(REPO, "v18.19.0", {})
    releases = GitHubReleases(make_session(backoff=0), github.api_url, tmp_path / "cache", write_cache=False)
    assert releases.lookup(ReleaseQuery(REPO)).release.tag == "v18.19.0"
    assert not (tmp_path / "cache").exists()


def test_pinned_tag_with_or_without_v(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.18.1", {})
    github.add_release(REPO, "v18.19.0", {})
    assert client(github, None).lookup(ReleaseQuery(REPO, tag="18.18.1")).release.tag == "v18.18.1"
    assert client(github, None).lookup(ReleaseQuery(REPO, tag="v18.18.1")).release.tag == "v18.18.1"
    with pytest.raises(ReleaseError, match=r"no release tagged 9\.9\.9"):
        client(github, None).lookup(ReleaseQuery(REPO, tag="9.9.9"))


def test_prereleases_and_drafts_are_ignored_unless_asked(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.19.0", {})
    github.add_release(REPO, "v18.20.0-beta.3", {}, prerelease=True)
    github.add_release(REPO, "v18.21.0", {}, draft=True)
    github.add_release(REPO, "latest-commit-build", {}, prerelease=True)
    assert client(github, None).lookup(ReleaseQuery(REPO)).release.tag == "v18.19.0"
    chosen = client(github, None).lookup(ReleaseQuery(REPO, include_prereleases=True)).release
    assert chosen.tag == "v18.20.0-beta.3"  # not the draft, not the non-version build tag


def test_rate_limit_names_the_reset_time(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.19.0", {})
    github.rate_limited_until = 1_900_000_000
    with pytest.raises(RateLimitError, match=r"resets at 2030-03-17T17:46:40Z\); a token .*token_env"):
        client(github, None).lookup(ReleaseQuery(REPO))
    assert len(github.api_requests()) == 1  # a 403 rate-limit answer is not retried
    with pytest.raises(RateLimitError, match=r"resets at 2030-03-17T17:46:40Z\)$"):  # has a token already
        client(github, None, token="t", token_origin=github.api_url).lookup(ReleaseQuery(REPO))


def test_a_long_retry_after_stops_at_once_with_the_time(github: FakeGitHub) -> None:
    """GitHub's secondary limit: 429 with `Retry-After: 1800`. One request, no 60-second waits, and the
    error says when to come back."""
    import time

    github.add_release(REPO, "v18.19.0", {})
    github.retry_after = "1800"
    started = time.monotonic()
    with pytest.raises(RateLimitError, match=r"^GitHub API rate limit exceeded \(retry after 1800 s, at "
                       r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); a token"):
        client(github, None, retries=1).lookup(ReleaseQuery(REPO))
    assert len(github.api_requests()) == 1 and time.monotonic() - started < 10


def test_server_errors_are_retried_then_succeed(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.19.0", {})
    github.api_failures = 2
    assert client(github, None, retries=3).lookup(ReleaseQuery(REPO)).release.tag == "v18.19.0"
    assert [s.status for s in github.api_requests()] == [500, 500, 200]


def test_server_errors_beyond_the_retry_budget_fail(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.19.0", {})
    github.api_failures = 5
    with pytest.raises(ReleaseError, match="HTTP 500"):
        client(github, None, retries=2).lookup(ReleaseQuery(REPO))
    assert len(github.api_requests()) == 3


def test_unknown_repo_is_a_clear_error(github: FakeGitHub) -> None:
    github.add_release(REPO, "v18.19.0", {})
    with pytest.raises(ReleaseError, match="no published release in nobody/nothing"):
        client(github, None).lookup(ReleaseQuery("nobody/nothing"))


@pytest.mark.parametrize("module", [atuin_mod, filebrowser_mod, gogs_mod])
def test_every_module_arg_is_documented_with_its_default(module: object) -> None:
    import re

    from updates.utils.release.args import COMMON

    readme = (Path(module.__file__).parent / "README.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| (.+?) \|", readme, re.MULTILINE))
    spec = {**COMMON, **module.OWN_ARGS}
    assert set(documented) == set(spec)
    for name, (default, _types) in spec.items():
        if default is not None:
            assert json.dumps(default) in documented[name], name
