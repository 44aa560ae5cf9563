"""GitHub release lookup: release/asset records and a conditional-request cache.

Contract:
- `GitHubReleases.lookup(query)` asks `GET /repos/{owner}/{repo}/releases/latest`, or
  `/releases/tags/{tag}` for a pinned version, or the release list when prereleases are wanted, with the
  API's `Accept` and `X-GitHub-Api-Version` headers. Each response's ETag is cached (atomically) in the
  module's state directory and sent back as `If-None-Match`, so a run with nothing new costs one 304 and no
  body. Drafts are never returned; prereleases only when the query asks for them or pins one.
- Rate-limit exhaustion raises `RateLimitError` naming the reset time (UTC), at once when the wait is long
  (see `utils.http`); every other failure raises a `ReleaseError` with one readable line: a connection
  failure in words (`cannot reach the GitHub API at api.github.com: connection refused`), a 401 naming the
  token variable (`token_env`). No URL in a message carries a query string or credentials.
The session is passed in (see `utils/http.make_session`), so the token and retry policy stay in one place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UpdatesError
from ..fsutil import atomic_write_text
from ..http import RequestException, Response, Session, cannot_reach, scrub_url
from .version import Version

log = logging.getLogger(__name__)

DEFAULT_API = "https://api.github.com"
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class ReleaseError(UpdatesError):
    """The release could not be looked up, or it does not fit what the module needs."""


class RateLimitError(ReleaseError):
    """The GitHub API refused the request because the rate limit is used up."""


class ReleaseNotFound(ReleaseError):
    """The API answered 404: no such repository, release or tag."""


@dataclass(frozen=True)
class Asset:
    name: str
    size: int
    api_url: str
    download_url: str
    digest: str | None = None

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 from the API's `digest` field (`sha256:<hex>`), when GitHub recorded one."""
        if self.digest and self.digest.lower().startswith("sha256:"):
            value = self.digest.split(":", 1)[1].strip().lower()
            if re.fullmatch(r"[0-9a-f]{64}", value):
                return value
        return None


@dataclass(frozen=True)
class Release:
    repo: str
    tag: str
    draft: bool
    prerelease: bool
    assets: tuple[Asset, ...]

    @property
    def version(self) -> Version | None:
        return Version.parse(self.tag)

    def find(self, name: str) -> Asset | None:
        return next((a for a in self.assets if a.name == name), None)

    @classmethod
    def from_api(cls, repo: str, data: object) -> Release:
        if not isinstance(data, dict) or not isinstance(data.get("tag_name"), str):
            raise ReleaseError(f"{repo}: the API answered with something that is not a release")
        assets = []
        for raw in data.get("assets") or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                continue
            assets.append(
                Asset(
                    name=raw["name"],
                    size=int(raw.get("size") or 0),
                    api_url=str(raw.get("url") or ""),
                    download_url=str(raw.get("browser_download_url") or ""),
                    digest=raw.get("digest") if isinstance(raw.get("digest"), str) else None,
                )
            )
        return cls(
            repo=repo,
            tag=data["tag_name"],
            draft=bool(data.get("draft")),
            prerelease=bool(data.get("prerelease")),
            assets=tuple(assets),
        )


@dataclass(frozen=True)
class ReleaseQuery:
    repo: str
    tag: str | None = None
    include_prereleases: bool = False


@dataclass(frozen=True)
class Lookup:
    release: Release
    not_modified: bool  # True when the API answered 304 and the cached body was used


def rate_limit_reset(headers: Any) -> str | None:
    """The `x-ratelimit-reset` epoch as an ISO 8601 UTC time, or None."""
    try:
        stamp = int(headers.get("x-ratelimit-reset", ""))
    except ValueError:
        return None
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rate_limit(response: Response) -> None:
    """Raise `RateLimitError` when `response` is GitHub's primary or secondary rate-limit refusal."""
    if response.status_code not in (403, 429):
        return
    remaining = response.headers.get("x-ratelimit-remaining")
    retry_after = response.headers.get("retry-after")
    if remaining != "0" and retry_after is None and response.status_code != 429:
        return
    reset = rate_limit_reset(response.headers)
    if reset and remaining == "0":
        when = f"resets at {reset}"
    elif retry_after is not None and retry_after.strip().isdigit():
        at = datetime.fromtimestamp(time.time() + int(retry_after), tz=timezone.utc)
        when = f"retry after {int(retry_after)} s, at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    elif reset:
        when = f"resets at {reset}"
    else:
        when = f"retry after {retry_after or '?'} s"
    # Said in the message itself: the orchestrator's summary shows a module's message, not its hint.
    anonymous = "Authorization" not in (response.request.headers if response.request else {})
    advice = "; a token (the variable named by the token_env arg) raises the limit" if anonymous else ""
    raise RateLimitError(f"GitHub API rate limit exceeded ({when}){advice}")


class GitHubReleases:
    """Release lookups against one API base URL, with the ETag cache kept in `cache_dir`."""

    def __init__(
        self,
        session: Session,
        api_base: str = DEFAULT_API,
        cache_dir: Path | None = None,
        *,
        write_cache: bool = True,
        token_env: str = "GITHUB_TOKEN",  # noqa: S107 - the name of a variable, not a secret
    ) -> None:
        self.session = session
        self.token_env = token_env
        self.api_base = api_base.rstrip("/")
        self.cache_dir = cache_dir
        self.write_cache = write_cache
        self.requests_sent = 0
        self.not_modified = 0

    def lookup(self, query: ReleaseQuery) -> Lookup:
        if not _REPO_RE.match(query.repo):
            raise ReleaseError(f"not a GitHub owner/repo: {query.repo!r}")
        if query.tag:
            return self._pinned(query)
        if query.include_prereleases:
            return self._newest_listed(query.repo)
        data, cached = self._get_json(
            f"/repos/{query.repo}/releases/latest", f"no published release in {query.repo}"
        )
        release = Release.from_api(query.repo, data)
        if release.draft or release.prerelease:
            raise ReleaseError(f"{query.repo}: the latest release {release.tag} is a draft or prerelease")
        return Lookup(release, cached)

    def _pinned(self, query: ReleaseQuery) -> Lookup:
        tag = str(query.tag)
        tags = [tag] if tag.startswith("v") or Version.parse(tag) is None else [f"v{tag}", tag]
        for candidate in tags:
            try:
                data, cached = self._get_json(
                    f"/repos/{query.repo}/releases/tags/{candidate}",
                    f"no release tagged {tag} in {query.repo}",
                )
            except ReleaseNotFound:
                if candidate != tags[-1]:
                    continue
                raise
            release = Release.from_api(query.repo, data)
            if release.draft:
                raise ReleaseError(f"{query.repo}: release {release.tag} is a draft")
            return Lookup(release, cached)
        raise AssertionError("unreachable")

    def _newest_listed(self, repo: str) -> Lookup:
        data, cached = self._get_json(f"/repos/{repo}/releases?per_page=100", f"no releases in {repo}")
        if not isinstance(data, list):
            raise ReleaseError(f"{repo}: the release list is not a list")
        releases = [Release.from_api(repo, item) for item in data if isinstance(item, dict)]
        usable = [r for r in releases if not r.draft and r.version is not None]
        if not usable:
            raise ReleaseError(f"{repo}: no published release with a version tag")
        return Lookup(max(usable, key=lambda r: r.version), cached)  # type: ignore[arg-type,return-value]

    def _cache_file(self, path: str) -> Path | None:
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.strip("/"))
        return self.cache_dir / f"{slug}.json"

    def _read_cache(self, cache: Path | None, url: str) -> dict[str, Any] | None:
        if cache is None:
            return None
        try:
            entry = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        # An entry for another API base (api_url changed) is someone else's answer: ask plainly.
        if isinstance(entry, dict) and isinstance(entry.get("etag"), str) and "body" in entry:
            return entry if entry.get("url") == url else None
        return None

    def _get_json(self, path: str, not_found: str, *, use_cache: bool = True) -> tuple[Any, bool]:
        url = self.api_base + path
        cache = self._cache_file(path)
        entry = self._read_cache(cache, url) if use_cache else None
        headers = dict(API_HEADERS)
        if entry:
            headers["If-None-Match"] = entry["etag"]
        try:
            response = self.session.get(url, headers=headers)
        except RequestException as exc:
            # `from None`: the chained urllib3 text would carry the full URL into the log's traceback.
            where = cannot_reach(url, exc, log).replace("cannot reach ", "", 1)
            raise ReleaseError(f"cannot reach the GitHub API at {where}") from None
        self.requests_sent += 1
        with contextlib.closing(response):
            if response.status_code == 304 and entry:
                self.not_modified += 1
                log.debug("%s: not modified (ETag %s)", path, entry["etag"])
                return entry["body"], True
            if response.status_code == 304:
                # A 304 we did not ask for (the cache vanished between read and reply): ask again, plainly.
                return self._get_json(path, not_found, use_cache=False)
            check_rate_limit(response)
            if response.status_code == 404:
                raise ReleaseNotFound(not_found)
            if response.status_code == 401:
                raise ReleaseError(
                    f"the GitHub API rejected the token in ${self.token_env} (HTTP 401); "
                    f"replace it, or unset {self.token_env} to ask anonymously"
                )
            if response.status_code != 200:
                raise ReleaseError(f"GitHub API {scrub_url(path)}: HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError as exc:
                raise ReleaseError(f"GitHub API {scrub_url(path)}: the answer is not JSON") from exc
            etag = response.headers.get("ETag")
            if cache is not None and etag and self.write_cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                text = json.dumps({"url": url, "etag": etag, "body": body})
                atomic_write_text(cache, text, mode=0o600, follow_symlinks=False)
            return body, False
