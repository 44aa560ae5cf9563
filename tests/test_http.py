"""The shared HTTP session: user agent, token scoping, retries, TLS switch, over real loopback servers."""
from __future__ import annotations

import time

import pytest
from pytest_httpserver import HTTPServer
from updates.utils.http import USER_AGENT, make_session, origin
from werkzeug.wrappers import Response


def test_user_agent_and_default_timeout(httpserver: HTTPServer):
    httpserver.expect_request("/x").respond_with_data("ok")
    session = make_session()
    assert session.get(httpserver.url_for("/x")).text == "ok"
    request, _ = httpserver.log[0]
    assert request.headers["User-Agent"] == USER_AGENT
    assert session.default_timeout == (10.0, 60.0)


def test_token_goes_to_the_api_origin_only(httpserver: HTTPServer):
    other = HTTPServer(host="127.0.0.1")
    other.start()
    try:
        httpserver.expect_request("/api").respond_with_data("api")
        httpserver.expect_request("/redirect").respond_with_response(
            Response(status=302, headers={"Location": other.url_for("/download")}))
        other.expect_request("/download").respond_with_data("file")
        other.expect_request("/direct").respond_with_data("direct")
        api = httpserver.url_for("/")  # localhost:<port>
        session = make_session(token="s3cret", token_origin=api)
        session.get(httpserver.url_for("/api"))
        assert session.get(httpserver.url_for("/redirect")).text == "file"
        # Same host name, another port: another origin, no token.
        session.get(f"http://localhost:{other.port}/direct")
        auth = [(req.path, req.headers.get("Authorization")) for req, _ in httpserver.log + other.log]
        assert ("/api", "Bearer s3cret") in auth
        assert ("/redirect", "Bearer s3cret") in auth
        assert ("/download", None) in auth
        assert ("/direct", None) in auth
    finally:
        other.clear()
        other.stop()


def test_retries_5xx_honouring_retry_after(httpserver: HTTPServer):
    httpserver.expect_ordered_request("/flaky").respond_with_response(
        Response(status=503, headers={"Retry-After": "1"}))
    httpserver.expect_ordered_request("/flaky").respond_with_data("fine")
    session = make_session(backoff=0)
    started = time.monotonic()
    assert session.get(httpserver.url_for("/flaky")).text == "fine"
    assert time.monotonic() - started >= 0.9  # waited as the server asked
    assert len(httpserver.log) == 2


def test_gives_up_after_bounded_retries(httpserver: HTTPServer):
    httpserver.expect_request("/down").respond_with_data("no", status=500)
    response = make_session(retries=2, backoff=0).get(httpserver.url_for("/down"))
    assert response.status_code == 500
    assert len(httpserver.log) == 3


def test_tls_verification_cannot_be_disabled(httpserver: HTTPServer):
    with pytest.raises(ValueError, match="TLS verification"):
        make_session().get(httpserver.url_for("/"), verify=False)


def test_token_needs_an_origin():
    with pytest.raises(ValueError, match="token_origin"):
        make_session(token="t")


def test_origin_makes_default_ports_explicit():
    assert origin("https://API.github.com/repos") == ("https", "api.github.com", 443)
    assert origin("http://localhost:8080/") == ("http", "localhost", 8080)


@pytest.mark.parametrize("headers", [
    {"Retry-After": "1800"},  # a secondary rate limit: "come back in 30 minutes"
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 1800)},
])
def test_a_long_wait_is_not_waited_for(httpserver: HTTPServer, headers: dict[str, str]):
    """A 429 asking for a wait above MAX_RETRY_AFTER comes back at once, after one request: retrying
    within this run cannot succeed, and capped waits would cost minutes per module."""
    httpserver.expect_request("/limited").respond_with_response(Response("slow down", status=429, headers=headers))
    started = time.monotonic()
    response = make_session(retries=3, backoff=0).get(httpserver.url_for("/limited"))
    assert response.status_code == 429
    assert time.monotonic() - started < 5
    assert len(httpserver.log) == 1


def test_a_short_retry_after_is_still_honoured(httpserver: HTTPServer):
    httpserver.expect_ordered_request("/busy").respond_with_response(
        Response(status=429, headers={"Retry-After": "1"}))
    httpserver.expect_ordered_request("/busy").respond_with_data("fine")
    assert make_session(backoff=0).get(httpserver.url_for("/busy")).text == "fine"
    assert len(httpserver.log) == 2


def test_scrubbing_removes_queries_and_credentials():
    from updates.utils.http import scrub_text, scrub_url

    url = "https://user:tok@objects.githubusercontent.com:8443/a/b.tar.gz?sig=abc&exp=1#frag"
    assert scrub_url(url) == "https://objects.githubusercontent.com:8443/a/b.tar.gz"
    text = f"HTTPSConnectionPool(host='x', port=443): Max retries exceeded with url: /a?sig=abc&exp=1 (Caused by {url})"
    assert "abc" not in scrub_text(text) and "tok" not in scrub_text(text)
