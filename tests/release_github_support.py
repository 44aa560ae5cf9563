"""A fake GitHub for the release installer tests: the REST API on one pytest-httpserver (host `localhost`)
and the download host on a second one (`127.0.0.1`). An asset's API URL answers `Accept:
application/octet-stream` with a 302 to the download host, like GitHub does, so a token sent to the API
host is visibly not forwarded. Every request is recorded (`seen`); faults are set per test: API 500s,
rate limiting (403 with the reset time, or 429 with `Retry-After`), per-asset download faults ("500",
"html", "truncate") and redirects of an asset to another URL (a signed one, say).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeAsset:
    id: int
    name: str
    data: bytes
    digest: bool


@dataclass
class FakeRelease:
    tag: str
    assets: list[FakeAsset]
    prerelease: bool = False
    draft: bool = False


@dataclass
class Seen:
    host: str
    path: str
    headers: dict[str, str]
    status: int
    body_bytes: int


class FakeGitHub:
    """GitHub API on `api` (localhost), release files on `dl` (127.0.0.1). Faults are set per test."""

    def __init__(self, api: HTTPServer, dl: HTTPServer) -> None:
        self.api, self.dl = api, dl
        self.releases: dict[str, list[FakeRelease]] = {}
        self._next_id = 100
        self.seen: list[Seen] = []
        self.rate_limited_until: int | None = None  # epoch seconds of x-ratelimit-reset
        self.api_failures = 0  # answer this many API requests with 500 first
        self.dl_faults: dict[str, list[str]] = {}  # asset name -> faults to apply, one per request
        self.redirects: dict[str, str] = {}  # asset name -> where its API URL redirects instead (signed URLs)
        self.retry_after: str | None = None  # answer every API request 429 with this Retry-After
        api.expect_request(re.compile("^/.*")).respond_with_handler(self._api)
        dl.expect_request(re.compile("^/.*")).respond_with_handler(self._dl)

    @property
    def api_url(self) -> str:
        return self.api.url_for("").rstrip("/")

    def add_release(self, repo: str, tag: str, assets: dict[str, bytes], *, digests: bool = True,
                    checksums: str | None = None, prerelease: bool = False, draft: bool = False) -> FakeRelease:
        """Add a release (newest last). `checksums`: also publish a checksum file with this name, listing
        every asset (`<hex> *<name>` when the name ends with .sha256/.sum, else `<hex>  <name>`)."""
        items = dict(assets)
        if checksums:
            star = "*" if checksums.endswith((".sha256", ".sum")) else " "
            items[checksums] = "".join(f"{sha256(d)} {star}{n}\n" for n, d in assets.items()).encode()
        fake = []
        for name, data in items.items():
            self._next_id += 1
            fake.append(FakeAsset(self._next_id, name, data, digests))
        release = FakeRelease(tag, fake, prerelease, draft)
        self.releases.setdefault(repo, []).append(release)
        return release

    def api_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.host == "api"]

    def dl_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.host == "dl"]

    def _asset_json(self, repo: str, asset: FakeAsset) -> dict[str, Any]:
        return {
            "id": asset.id, "name": asset.name, "size": len(asset.data), "content_type": "application/gzip",
            "url": f"{self.api_url}/repos/{repo}/releases/assets/{asset.id}",
            "browser_download_url": self.dl.url_for(f"/download/{asset.id}/{asset.name}"),
            "digest": f"sha256:{sha256(asset.data)}" if asset.digest else None,
        }

    def _release_json(self, repo: str, release: FakeRelease) -> dict[str, Any]:
        return {"tag_name": release.tag, "name": release.tag, "draft": release.draft,
                "prerelease": release.prerelease, "assets": [self._asset_json(repo, a) for a in release.assets]}

    def _record(self, host: str, request: Request, response: Response) -> Response:
        body = 0 if response.status_code == 304 else len(response.get_data())
        self.seen.append(Seen(host, request.path, dict(request.headers), response.status_code, body))
        return response

    def _api(self, request: Request) -> Response:
        return self._record("api", request, self._api_answer(request))

    def _api_answer(self, request: Request) -> Response:
        if self.api_failures > 0:
            self.api_failures -= 1
            return Response("upstream error", status=500)
        limit = {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-reset": "1900000000"}
        if self.retry_after is not None:
            return Response(json.dumps({"message": "You have exceeded a secondary rate limit"}), status=429,
                            headers={"Retry-After": self.retry_after}, content_type="application/json")
        if self.rate_limited_until is not None:
            limit.update({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(self.rate_limited_until)})
            return Response(json.dumps({"message": "API rate limit exceeded"}), status=403, headers=limit,
                            content_type="application/json")
        match = re.match(r"^/repos/([^/]+/[^/]+)/releases(?:/(latest|tags/(.+)|assets/(\d+)))?$", request.path)
        if not match or match.group(1) not in self.releases:
            return Response('{"message": "Not Found"}', status=404, content_type="application/json")
        repo, which, tag, asset_id = match.groups()
        releases = self.releases[repo]
        if asset_id:
            asset = next((a for r in releases for a in r.assets if a.id == int(asset_id)), None)
            if asset is None:
                return Response('{"message": "Not Found"}', status=404)
            if request.headers.get("Accept") != "application/octet-stream":
                return Response(json.dumps(self._asset_json(repo, asset)), content_type="application/json")
            where = self.redirects.get(asset.name) or self.dl.url_for(f"/objects/{asset.id}/{asset.name}")
            return Response(status=302, headers={"Location": where})
        if which is None:
            data: Any = [self._release_json(repo, r) for r in reversed(releases)]
        else:
            if which == "latest":
                found = [r for r in releases if not r.draft and not r.prerelease]
            else:
                found = [r for r in releases if r.tag == tag and not r.draft]
            if not found:
                return Response('{"message": "Not Found"}', status=404, content_type="application/json")
            data = self._release_json(repo, found[-1])
        body = json.dumps(data)
        etag = f'W/"{hashlib.sha1(body.encode()).hexdigest()}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag, **limit})
        return Response(body, content_type="application/json", headers={"ETag": etag, **limit})

    def _dl(self, request: Request) -> Response:
        return self._record("dl", request, self._dl_answer(request))

    def _dl_answer(self, request: Request) -> Response:
        match = re.match(r"^/(?:objects|download)/(\d+)/(.+)$", request.path)
        asset = next((a for rs in self.releases.values() for r in rs for a in r.assets
                      if match and a.id == int(match.group(1))), None)
        if asset is None:
            return Response("no such object", status=404)
        faults = self.dl_faults.get(asset.name) or []
        fault = faults.pop(0) if faults else None
        if fault == "500":
            return Response("<html>server error</html>", status=500, content_type="text/html")
        if fault == "html":
            return Response("<!DOCTYPE html><html><body>Sign in to GitHub</body></html>",
                            content_type="text/html; charset=utf-8")
        if fault == "truncate":
            return Response(asset.data[: len(asset.data) // 2], content_type="application/octet-stream")
        return Response(asset.data, content_type="application/octet-stream")
