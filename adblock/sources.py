"""Fetch the configured lists: conditional GET, a cache of the last good copy, and fallback to it.

Contract of `fetch(source, cache, session=...)`:
- http(s) URLs are fetched with the shared session (timeouts, bounded retries) and a conditional GET
  (`If-None-Match` / `If-Modified-Since` from the cache's metadata; not when the cached copy does not match
  its digest, so that a damaged copy is replaced). 304 -> `NOT_MODIFIED` (the cached copy
  is the list). file:// URLs and absolute paths are read directly; an unchanged size and mtime count as
  not modified.
- A failure (network, HTTP status, too large) or an HTML page -> `FAILED` with a reason; the caller falls
  back to `cache.body(url)` when there is one.
- A new copy becomes the cached copy only through `cache.commit(...)`, which the caller does
  after it has judged the content plausible; every cache write is atomic (body first, then the metadata
  naming its digest).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ..utils.fsutil import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

FRESH = "fresh"
NOT_MODIFIED = "not-modified"
FAILED = "failed"
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


@dataclass(frozen=True)
class Source:
    url: str
    name: str

    @property
    def local_path(self) -> Path | None:
        if self.url.startswith("/"):
            return Path(self.url)
        parts = urlsplit(self.url)
        if parts.scheme == "file":
            return Path(unquote(parts.path))
        return None


@dataclass
class Fetched:
    source: Source
    status: str
    body: bytes | None = None
    reason: str = ""
    validators: dict[str, Any] | None = None  # what to record in the cache metadata for a new copy

    def take_body(self) -> bytes:
        """The downloaded bytes, handed over: `parse_list(item.take_body())` leaves the parser the only
        reference, so it can free them as soon as it has decoded them."""
        body, self.body = self.body, None
        assert body is not None
        return body


def looks_like_html(body: bytes, content_type: str = "") -> bool:
    """True for an error/captive-portal page served instead of a list."""
    if "html" in content_type.lower():
        return True
    head = body[:1024].lstrip().lower()
    return head.startswith(_HTML_MARKERS)


class Cache:
    """Last good copy of each source under `<state_dir>/cache/`, keyed by a digest of the URL.

    A copy is `<key>-<digest>.list`, named by its content's digest, and `<key>.json` (the metadata) names the
    one in use. A new download is staged as its own file before it is parsed, so the parser can drop the
    downloaded bytes as soon as it has decoded them; `commit` then points the metadata at it and removes the
    old copy, `discard` removes a staged copy that was not good enough. A crash at any point leaves the
    metadata naming a complete copy.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _key(self, url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]

    def _body_path(self, url: str, digest: str) -> Path:
        return self.root / f"{self._key(url)}-{digest[:32]}.list"

    def meta(self, url: str) -> dict[str, Any]:
        """The metadata of the cached copy, or {} when there is no usable copy."""
        try:
            meta = json.loads((self.root / f"{self._key(url)}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(meta, dict) or meta.get("url") != url or not isinstance(meta.get("sha256"), str):
            return {}
        if not self._body_path(url, meta["sha256"]).exists():
            return {}
        return meta

    def body(self, url: str) -> bytes | None:
        """The cached copy, verified against the digest in its metadata; None when absent or damaged."""
        meta = self.meta(url)
        if not meta:
            return None
        try:
            data = self._body_path(url, meta["sha256"]).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            log.warning("cached copy of %s is damaged; ignoring it", url)
            return None
        return data

    def intact(self, url: str) -> bool:
        """True when the cached copy is there and matches its digest (read in pieces, not kept)."""
        meta = self.meta(url)
        if not meta:
            return False
        digest = hashlib.sha256()
        try:
            with self._body_path(url, meta["sha256"]).open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        except OSError:
            return False
        return digest.hexdigest() == meta["sha256"]

    def stage(self, url: str, body: bytes) -> str:
        """Write a new copy beside the one in use (not used yet); returns its digest for commit/discard."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(body).hexdigest()
        atomic_write_bytes(self._body_path(url, digest), body, mode=0o600, follow_symlinks=False)
        return digest

    def commit(
        self, url: str, digest: str, *, size: int, names: int, validators: dict[str, Any] | None
    ) -> None:
        """Make the staged copy `digest` the one in use, then remove any other copy of this URL."""
        meta = {"url": url, "sha256": digest, "size": size, "names": names}
        meta.update(validators or {})
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.root / f"{self._key(url)}.json", text, mode=0o600, follow_symlinks=False)
        keep = self._body_path(url, digest)
        for path in self.root.glob(f"{self._key(url)}-*.list"):
            if path != keep:
                path.unlink(missing_ok=True)

    def discard(self, url: str, digest: str) -> None:
        """Remove a staged copy, unless it is the copy in use (the same content came back)."""
        if self.meta(url).get("sha256") != digest:
            self._body_path(url, digest).unlink(missing_ok=True)


def _fetch_file(source: Source, path: Path, meta: dict[str, Any], max_bytes: int) -> Fetched:
    try:
        stat = path.stat()
        if meta and meta.get("mtime_ns") == stat.st_mtime_ns and meta.get("size") == stat.st_size:
            return Fetched(source, NOT_MODIFIED)
        if stat.st_size > max_bytes:
            return Fetched(source, FAILED, reason=f"larger than {max_bytes} bytes")
        body = path.read_bytes()
    except OSError as exc:
        return Fetched(source, FAILED, reason=exc.strerror or str(exc))
    if looks_like_html(body):
        return Fetched(source, FAILED, reason="is an HTML page, not a list")
    return Fetched(source, FRESH, body, validators={"mtime_ns": stat.st_mtime_ns})


def _fetch_http(source: Source, session: Any, meta: dict[str, Any], max_bytes: int) -> Fetched:
    from ..utils.http import RequestException  # noqa: PLC0415 - loaded only where the network is used

    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = meta["last_modified"]
    try:
        with session.get(source.url, headers=headers, stream=True) as response:
            if response.status_code == 304 and meta:
                return Fetched(source, NOT_MODIFIED)
            if response.status_code != 200:
                return Fetched(source, FAILED, reason=f"HTTP {response.status_code}")
            chunks = []
            size = 0
            for chunk in response.iter_content(chunk_size=1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    return Fetched(source, FAILED, reason=f"larger than {max_bytes} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
            content_type = response.headers.get("Content-Type", "")
            validators = {
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
    except RequestException as exc:
        return Fetched(source, FAILED, reason=type(exc).__name__ + ": " + str(exc)[:200])
    if looks_like_html(body, content_type):
        return Fetched(source, FAILED, reason="returned an HTML page, not a list")
    return Fetched(source, FRESH, body, validators=validators)


def fetch(source: Source, cache: Cache, *, session: Any, max_bytes: int) -> Fetched:
    """Fetch one source; see the module docstring."""
    meta = cache.meta(source.url)
    if meta and not cache.intact(source.url):
        # A "not modified" answer would leave us with nothing usable, run after run: ask for the whole list.
        log.warning("cached copy of %s is damaged; downloading it in full", source.url)
        meta = {}
    path = source.local_path
    if path is not None:
        return _fetch_file(source, path, meta, max_bytes)
    return _fetch_http(source, session, meta, max_bytes)


def source_name(url: str) -> str:
    """A short readable name for logs and the summary: host and last path part."""
    parts = urlsplit(url)
    tail = PurePosixPath(parts.path).name or parts.path
    return f"{parts.netloc}/{tail}" if parts.netloc else tail or url
