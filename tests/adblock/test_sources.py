"""adblock sources over real HTTP (pytest-httpserver on 127.0.0.1): conditional GET, cache, fallbacks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from adblock_support import block_names, cut_short_server, hosts_list, module_args, numbered
from pytest_httpserver import HTTPServer
from updates.adblock.index import main
from updates.adblock.sources import Cache
from updates.utils.errors import UpdatesError

NAMES = numbered("ads", 1000)


def serve(httpserver: HTTPServer, path: str, body: bytes, etag: str | None = None, **kw: object) -> None:
    headers = {"ETag": etag} if etag else {}
    if etag:
        httpserver.expect_request(path, headers={"If-None-Match": etag}).respond_with_data("", status=304)
    httpserver.expect_request(path).respond_with_data(body, headers=headers, **kw)


def requests_to(httpserver: HTTPServer, path: str) -> list:
    return [request for request, _ in httpserver.log if request.path == path]


def test_not_modified_reuses_cache_and_changes_nothing(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/list", hosts_list(NAMES), etag='"v1"')
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    first = main(args)
    assert first == {"changed": True, "summary": "+1,000 -0 = 1,000 domains from 1/1 sources"}
    hosts = tmp_path / "hosts"
    before = hosts.stat()
    second = main(args)
    assert second is not None and second["changed"] is False
    assert hosts.stat().st_mtime_ns == before.st_mtime_ns
    assert hosts.stat().st_ino == before.st_ino
    conditional = requests_to(httpserver, "/list")[1]
    assert conditional.headers["If-None-Match"] == '"v1"'
    assert httpserver.log[1][1].status_code == 304
    assert block_names(hosts) == NAMES


def test_if_modified_since_is_sent_back(httpserver: HTTPServer, tmp_path: Path) -> None:
    stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
    httpserver.expect_request("/list", headers={"If-Modified-Since": stamp}).respond_with_data("", status=304)
    httpserver.expect_request("/list").respond_with_data(hosts_list(NAMES), headers={"Last-Modified": stamp})
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    main(args)
    assert main(args)["changed"] is False
    assert httpserver.log[1][1].status_code == 304


def test_new_etag_refreshes_the_list_and_cache(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/list", hosts_list(NAMES), etag='"v1"')
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    main(args)
    httpserver.clear()
    newer = [*NAMES[10:], "new-one.example.net", "new-two.example.net"]
    serve(httpserver, "/list", hosts_list(newer), etag='"v2"')
    result = main(args)
    assert result == {"changed": True, "summary": "+2 -10 = 992 domains from 1/1 sources"}
    assert block_names(tmp_path / "hosts") == sorted(newer)
    assert requests_to(httpserver, "/list")[0].headers["If-None-Match"] == '"v1"'
    cache = tmp_path / "state" / "cache"
    metas = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert [m["etag"] for m in metas] == ['"v2"']
    assert [p.read_bytes() for p in cache.glob("*.list")] == [hosts_list(newer)]  # the old copy is gone
    assert main(args)["changed"] is False
    assert httpserver.log[-1][1].status_code == 304


def test_server_error_falls_back_to_the_last_good_copy(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/a", hosts_list(NAMES), etag='"a1"')
    serve(httpserver, "/b", hosts_list(["b-one.example.org"]))
    args = module_args(tmp_path, [{"url": httpserver.url_for("/a"), "name": "list-a"}, httpserver.url_for("/b")])
    main(args)
    httpserver.clear()
    httpserver.expect_request("/a").respond_with_data("oops", status=500)
    serve(httpserver, "/b", hosts_list(["b-one.example.org", "b-two.example.org"]))
    result = main(args)
    assert result is not None
    assert result["summary"] == "+1 -0 = 1,002 domains from 2/2 sources (1 from cache: list-a)"
    assert set(NAMES) <= set(block_names(tmp_path / "hosts"))


def test_html_page_is_not_a_list(httpserver: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in to the captive portal</body></html>"
    serve(httpserver, "/list", hosts_list(NAMES))
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    main(args)
    httpserver.clear()
    httpserver.expect_request("/list").respond_with_data(page, content_type="text/html")
    with caplog.at_level(logging.WARNING):
        result = main(args)
    assert result is not None and result["changed"] is False
    assert "1 from cache" in result["summary"]
    assert block_names(tmp_path / "hosts") == NAMES
    # Without a cached copy the HTML page is skipped, and with nothing else to use the run fails.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(UpdatesError, match="no source could be fetched"):
        main(module_args(fresh, [httpserver.url_for("/list")]))
    assert not (fresh / "hosts").exists()


def test_truncated_download_keeps_the_cached_list(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/list", hosts_list(NAMES))
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    main(args)
    before = (tmp_path / "hosts").read_bytes()
    httpserver.clear()
    serve(httpserver, "/list", hosts_list(NAMES[:100]))  # a cut-off transfer: 10% of the names
    result = main(args)
    assert result is not None and result["changed"] is False
    assert "1 from cache" in result["summary"]
    assert (tmp_path / "hosts").read_bytes() == before
    # The short copy was staged on disk to be parsed, then thrown away: the good copy is still the cache.
    assert [p.read_bytes() for p in (tmp_path / "state" / "cache").glob("*.list")] == [hosts_list(NAMES)]


def test_all_sources_down_writes_nothing(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a").respond_with_data("gone", status=404)
    httpserver.expect_request("/b").respond_with_data("broken", status=503)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    args = module_args(tmp_path, [httpserver.url_for("/a"), httpserver.url_for("/b"), "file:///nonexistent/list"])
    with pytest.raises(UpdatesError, match=r"no source could be fetched .*\(0/3\)"):
        main(args)
    assert hosts.read_text() == "127.0.0.1 localhost\n"
    assert not (tmp_path / "state" / "state.json").exists()


def test_idn_names_become_punycode(httpserver: HTTPServer, tmp_path: Path) -> None:
    body = "0.0.0.0 Bücher.example.de\n0.0.0.0 пример.рф\nzürich-ads.ch # inline\n".encode()
    serve(httpserver, "/idn", body, content_type="text/plain; charset=utf-8")
    main(module_args(tmp_path, [httpserver.url_for("/idn")]))
    # Python's own IDNA 2003 codec agrees with IDNA 2008 on these names.
    expected = sorted(n.encode("idna").decode() for n in ("bücher.example.de", "пример.рф", "zürich-ads.ch"))
    assert block_names(tmp_path / "hosts") == expected
    assert "xn--e1afmkfd.xn--p1ai" in expected


def test_allow_and_deny_interplay(httpserver: HTTPServer, tmp_path: Path) -> None:
    names = ["ads.example.com", "cdn.example.com", "track.example.com", "a.b.example.com",
             "metrics.other.net", "keep.other.net", "x1.regex.org", "x22.regex.org"]
    serve(httpserver, "/list", hosts_list(names))
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text("# allowed\nkeep.other.net  # trailing comment\n/^x[0-9]\\.regex\\.org$/\n")
    args = module_args(
        tmp_path,
        [httpserver.url_for("/list")],
        allow=["*.example.com"],
        allow_files=[str(allow_file)],
        deny=["track.example.com", "||extra.example.net^"],
    )
    main(args)
    # *.example.com removes the name and all below it, but an explicit deny wins over it.
    assert block_names(tmp_path / "hosts") == sorted(
        ["track.example.com", "extra.example.net", "metrics.other.net", "x22.regex.org"]
    )


def test_dry_run_writes_nothing(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/list", hosts_list(NAMES), etag='"v1"')
    args = module_args(tmp_path, [httpserver.url_for("/list")], dry_run=True)
    result = main(args)
    assert result == {
        "changed": False,
        "summary": f"dry run: would write +1,000 -0 = 1,000 domains from 1/1 sources to {tmp_path / 'hosts'}",
    }
    assert not (tmp_path / "hosts").exists()
    assert list((tmp_path / "state").iterdir()) == []


def test_cache_keeps_the_copy_in_use_until_commit(tmp_path: Path) -> None:
    url = "https://lists.example/hosts"
    cache = Cache(tmp_path)
    cache.commit(url, cache.stage(url, b"0.0.0.0 old.example.com\n"), size=25, names=1, validators=None)
    staged = cache.stage(url, b"0.0.0.0 new.example.com\n")  # a crash here leaves the old copy in use
    assert Cache(tmp_path).body(url) == b"0.0.0.0 old.example.com\n"
    cache.discard(url, staged)
    assert [p.read_bytes() for p in tmp_path.glob("*.list")] == [b"0.0.0.0 old.example.com\n"]
    cache.discard(url, cache.stage(url, b"0.0.0.0 old.example.com\n"))  # the same content came back
    assert Cache(tmp_path).body(url) == b"0.0.0.0 old.example.com\n"
    cache.stage(url, b"stray copy from a killed run\n")
    cache.commit(url, cache.stage(url, b"0.0.0.0 new.example.com\n"), size=25, names=1, validators=None)
    assert Cache(tmp_path).body(url) == b"0.0.0.0 new.example.com\n"
    assert len(list(tmp_path.glob("*.list"))) == 1


def test_transfer_cut_short_keeps_the_cached_list(tmp_path: Path) -> None:
    full = hosts_list(NAMES)
    hosts = tmp_path / "hosts"
    with cut_short_server(full, [len(full), len(full) // 10]) as url:  # the whole list, then a tenth of it
        # No size guards: only noticing the short transfer itself keeps the 100 names it brings from being used.
        args = module_args(tmp_path, [url], min_source_fraction=0, shrink_guard=0)
        main(args)
        before = hosts.read_bytes()
        result = main(args)
    assert result is not None and result["changed"] is False
    assert "1 from cache" in result["summary"]
    assert hosts.read_bytes() == before
    assert block_names(hosts) == NAMES


def test_damaged_cache_is_downloaded_again_in_full(httpserver: HTTPServer, tmp_path: Path) -> None:
    serve(httpserver, "/list", hosts_list(NAMES), etag='"v1"')
    args = module_args(tmp_path, [httpserver.url_for("/list")])
    main(args)
    [copy] = (tmp_path / "state" / "cache").glob("*.list")
    copy.write_bytes(copy.read_bytes().replace(b"ads00007", b"adsXXXXX"))  # bit rot on disk
    result = main(args)
    assert result is not None and result["changed"] is False
    last = requests_to(httpserver, "/list")[-1]
    assert "If-None-Match" not in last.headers  # a 304 would have left nothing usable
    assert httpserver.log[-1][1].status_code == 200
    assert [p.read_bytes() for p in (tmp_path / "state" / "cache").glob("*.list")] == [hosts_list(NAMES)]
    assert block_names(tmp_path / "hosts") == NAMES
