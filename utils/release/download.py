"""Download a release asset to the destination's file system and verify its SHA-256.

Contract:
- `expected_digest` finds what the asset must hash to: the API's `digest` field (`sha256:<hex>`) first,
  else the project's checksum file(s) among the release's assets, in either line format that tools write,
  `<hex>  <name>` (text mode) and `<hex> *<name>` (binary mode); a per-asset `<asset>.sha256` file may
  also hold the bare digest.
- `download_asset` refuses before any byte is fetched when nothing can verify the asset, unless the caller
  passes `allow_unverified=True` (then it logs a warning, on every run). It streams the asset (through the
  API's asset URL, whose redirect goes to another host without the token) into a temporary file in
  `dest_dir`, so the later rename stays on one file system; memory use is constant (one chunk). It checks
  the size announced by the API, refuses an HTML page, and compares the SHA-256 over the whole file. A
  connection that breaks off mid-body is resumed with a `Range` request from the byte where it stopped
  (at most `MAX_RESUMES` times; a server that ignores `Range` sends the whole file again, which restarts
  the count). On any failure the temporary file is gone and a one-line error says why, with the bytes that
  really arrived, the asset's name and never a URL's query string (a signed URL's `?sig=` is a secret).
  On success the caller owns the file.
- `sweep_stale` removes the hidden temporary files and directories a killed earlier run left behind;
  `journaled_temps` records the temp names a step is about to create in the crash journal first, so the
  next command that takes the run lock removes them even when no upgrade follows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import UpdatesError
from ..http import (
    RequestException,
    Response,
    Session,
    StreamError,
    cannot_reach,
    connection_problem,
    scrub_text,
    scrub_url,
)
from ..journal import operation, sweep
from ..progress import Progress
from .github import Asset, Release, check_rate_limit

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_RESUMES = 3
CHECKSUM_FILE_LIMIT = 1024 * 1024
_LINE_RE = re.compile(r"^([0-9A-Fa-f]{64}) ([ *])(.+)$")


class DownloadError(UpdatesError):
    """The asset could not be downloaded completely."""


class ChecksumMismatch(UpdatesError):
    """The downloaded bytes do not hash to the published SHA-256.

    Not a `ChecksumError`: that one means a module directory failed verification (the orchestrator reports
    such a module as "not run"); this module ran and refused a download.
    """


class UnverifiedAsset(UpdatesError):
    """Nothing published lets us verify the asset, and the module's args do not allow that."""


@dataclass(frozen=True)
class Expected:
    sha256: str | None
    source: str  # where the digest came from, for the log and error messages


def parse_checksums(text: str) -> dict[str, str]:
    """Map file name -> lowercase hex from `sha256sum`-style lines (`<hex>  <name>` or `<hex> *<name>`)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE_RE.match(line.strip("\r\n").rstrip())
        if match:
            name = match.group(3).strip()
            name = name.removeprefix("./")
            sums[name] = match.group(1).lower()
    return sums


def _get_asset(session: Session, asset: Asset, start: int = 0) -> Response:
    """The open response for `asset`, from byte `start` on (a `Range` request; 206 expected) when not 0."""
    url = asset.api_url or asset.download_url
    # identity: the bytes on disk must be the published file; requests would silently gunzip a
    # `Content-Encoding: gzip` answer, and the size and SHA-256 checks would then fail.
    headers = {"Accept": "application/octet-stream", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = session.get(url, headers=headers, stream=True)
    except RequestException as exc:
        # `from None`: the chained urllib3 text names the full (signed) URL; the log gets it scrubbed.
        raise DownloadError(f"cannot download {asset.name}: {cannot_reach(url, exc, log)}") from None
    if response.status_code not in ((200, 206) if start else (200,)):
        with contextlib.closing(response):
            check_rate_limit(response)  # the asset URL is on the API host and counts against the limit
            raise DownloadError(
                f"cannot download {asset.name}: HTTP {response.status_code} from {scrub_url(response.url)}"
            )
    if "text/html" in response.headers.get("Content-Type", "").lower():
        response.close()
        raise DownloadError(f"cannot download {asset.name}: the server sent an HTML page instead of the file")
    return response


def _fetch_small(session: Session, asset: Asset) -> str:
    with contextlib.closing(_get_asset(session, asset)) as response:
        data = b""
        try:
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > CHECKSUM_FILE_LIMIT:
                    raise DownloadError(
                        f"{asset.name}: checksum file larger than {CHECKSUM_FILE_LIMIT} bytes"
                    )
        except RequestException as exc:
            problem = connection_problem(exc)
            raise DownloadError(f"download of {asset.name} broke off ({problem})") from None
    return data.decode("utf-8", "replace")


def expected_digest(
    session: Session, release: Release, asset: Asset, checksum_files: Sequence[str]
) -> Expected:
    """The SHA-256 `asset` must have, from the API digest or the first checksum file that lists it."""
    if asset.sha256:
        return Expected(asset.sha256, "the GitHub API digest")
    for name in checksum_files:
        sums_asset = release.find(name)
        if sums_asset is None:
            continue
        text = _fetch_small(session, sums_asset)
        found = parse_checksums(text).get(asset.name)
        if found is None and name == f"{asset.name}.sha256" and re.fullmatch(r"[0-9A-Fa-f]{64}\s*", text):
            found = text.strip().lower()  # a per-asset file may hold the bare digest, without the name
        if found:
            return Expected(found, f"checksum file {name}")
        log.warning("%s does not list %s", name, asset.name)
    return Expected(None, "nothing")


def check_verifiable(asset: Asset, expected: Expected, *, allow_unverified: bool, warn: bool = True) -> None:
    """Raise `UnverifiedAsset` when nothing can verify `asset` and the args do not allow that; when they do,
    log the warning (unless `warn` is False: the download itself will say it)."""
    if expected.sha256 is not None:
        return
    if not allow_unverified:
        raise UnverifiedAsset(
            f"refusing {asset.name}: no SHA-256 published for it (no API digest, no checksum file); "
            "set allow_unverified: true in the module's args to install it anyway"
        )
    if warn:
        log.warning("installing %s UNVERIFIED: no SHA-256 published and allow_unverified is set", asset.name)


def download_asset(
    session: Session,
    asset: Asset,
    dest_dir: Path,
    expected: Expected,
    *,
    allow_unverified: bool = False,
    chunk_size: int = CHUNK,
    resumes: int = MAX_RESUMES,
) -> Path:
    """Stream `asset` into a new temporary file in `dest_dir`, verified; return its path."""
    check_verifiable(asset, expected, allow_unverified=allow_unverified)
    # Closed on every path, mkstemp failing included: a response left open keeps its connection (and the
    # server's upload) alive for as long as anything, a traceback say, refers to it.
    with contextlib.closing(_get_asset(session, asset)) as response:
        return _stream(session, response, asset, dest_dir, expected, chunk_size=chunk_size, resumes=resumes)


def _start_of(response: Response) -> int | None:
    """Where a 206 answer's bytes start (`Content-Range: bytes 1058-2115/2116`); 0 for a 200."""
    if response.status_code == 200:
        return 0
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)$", response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _stream(
    session: Session,
    response: Response,
    asset: Asset,
    dest_dir: Path,
    expected: Expected,
    *,
    chunk_size: int,
    resumes: int,
) -> Path:
    """Write the open `response` into a new temporary file in `dest_dir`, resuming a break, checked."""
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{asset.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, Progress(asset.name, total=asset.size or None) as bar:
            received = _receive(
                session, response, asset, out, chunk_size=chunk_size, resumes=resumes, bar=bar
            )
            out.flush()
            os.fsync(out.fileno())
        if asset.size and received != asset.size:
            raise DownloadError(f"truncated download of {asset.name}: got {received} of {asset.size} bytes")
        actual = _sha256_of(tmp)
        if expected.sha256 is not None and actual != expected.sha256:
            raise ChecksumMismatch(
                f"SHA-256 mismatch for {asset.name}: expected {expected.sha256} "
                f"({expected.source}), got {actual}"
            )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    log.info("downloaded %s (%d bytes, verified against %s)", asset.name, received, expected.source)
    return tmp


def _sha256_of(path: Path) -> str:
    """Over the whole file as written: a resumed download is verified exactly like one in one piece."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _receive(
    session: Session,
    response: Response,
    asset: Asset,
    out: IO[bytes],
    *,
    chunk_size: int,
    resumes: int,
    bar: Progress | None = None,
) -> int:
    """Copy the body into `out`; on a break, ask again from the byte reached. Returns the bytes written."""
    received = 0
    left = resumes
    current = response
    try:
        while True:
            announced = current.headers.get("Content-Length")
            if current.status_code == 200:
                if received:
                    log.info("%s: the server ignored the range and sends the whole file again", asset.name)
                    out.seek(0)
                    out.truncate()
                    if bar is not None:
                        bar.update(-received)
                    received = 0
                if asset.size and announced and announced.isdigit() and int(announced) != asset.size:
                    raise DownloadError(
                        f"{asset.name}: the server announces {announced} bytes, the release says {asset.size}"
                    )
            elif _start_of(current) != received:
                raise DownloadError(
                    f"{asset.name}: the server resumed at the wrong place "
                    f"({current.headers.get('Content-Range')!r}, wanted byte {received})"
                )
            try:
                # read1 hands over what has arrived, so a break loses nothing already received.
                while chunk := current.raw.read1(chunk_size, decode_content=False):
                    received += len(chunk)
                    if asset.size and received > asset.size:
                        raise DownloadError(
                            f"{asset.name}: more bytes than the {asset.size} the release lists"
                        )
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                return received
            except (RequestException, StreamError) as exc:
                problem = connection_problem(exc)
                log.info("download of %s broke off after %d bytes (%s: %s)", asset.name, received,
                         type(exc).__name__, scrub_text(str(exc)))
                if left <= 0 or (asset.size and received >= asset.size):
                    raise DownloadError(
                        f"download of {asset.name} broke off after {received} of {asset.size or '?'} bytes "
                        f"({problem}; resumed {resumes - left} times)"
                    ) from None
            left -= 1
            current.close()
            log.warning("download of %s broke off after %d bytes; resuming", asset.name, received)
            current = _get_asset(session, asset, start=received)
    finally:
        if current is not response:
            current.close()


def sweep_stale(directory: Path, patterns: Sequence[str], *, older_than: float = 3600.0) -> list[Path]:
    """Remove what a killed earlier run left in `directory`: only our own hidden temp names (`patterns`,
    globs), only when older than `older_than` seconds, never through a symbolic link. Returns what went."""
    removed = []
    cutoff = time.time() - older_than
    for pattern in patterns:
        for path in directory.glob(pattern):
            try:
                st = path.lstat()
                if not path.name.startswith(".") or st.st_mtime > cutoff or path.is_symlink():
                    continue
                log.warning("removing %s, left by an interrupted earlier run", path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
            except OSError as exc:
                log.warning("cannot remove the leftover %s: %s", path, exc)
    return removed


@contextlib.contextmanager
def downloaded(
    session: Session,
    asset: Asset,
    dest_dir: Path,
    expected: Expected,
    *,
    allow_unverified: bool = False,
) -> Iterator[Path]:
    """`download_asset` as a context manager that removes the temporary file afterwards."""
    path = download_asset(session, asset, dest_dir, expected, allow_unverified=allow_unverified)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def journaled_temps(
    journal: Path, directory: Path, names: Sequence[tuple[str, str]], *, describe: str
) -> Iterator[None]:
    """Around a step that makes temp files `<prefix>...<suffix>` (`names`) in `directory` and removes them
    itself on every way out: the record is on disk before the first is made, so after a kill the next
    command removes them. Only files changed since the record was written go, never an older namesake."""
    # A second of slack: some file systems keep coarse modification times.
    since = time.time() - 1.0
    with operation(journal, "temp-files", describe=describe) as record:
        record.undo.extend(sweep(directory, prefix, suffix, since=since) for prefix, suffix in names)
        record.save()
        yield
        record.commit()
