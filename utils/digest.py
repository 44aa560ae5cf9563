"""Module directory digests, exactly as DESIGN.md ("Module checksum") specifies.

Contract: `compute_folder_sha256(dir)` returns the SHA-256 of the text made of one line per regular file,
`<sha256 of the file>  <relative path>\\n`, sorted by the path's bytes. It excludes the top-level `checksum`
file, `__pycache__/` and `.pytest_cache/` directories and `*.pyc` files. It never follows a link: a symlink,
any other non-regular file or a name with a newline raises `ChecksumError`. The result equals

    find . -type f ... -printf '%P\\n' | LC_ALL=C sort | xargs -r -d '\\n' sha256sum -- | sha256sum

including coreutils' escaping of names that contain a backslash or a carriage return.

`digest_folder(dir)` returns the same digest as a `FolderDigest`, which also keeps the SHA-256 of every
file it covered. The loader imports module code through `FolderDigest.read_verified(rel)`: the bytes it
returns are read once, checked against the hash the digest was built from, and are then the bytes that get
compiled, so a file changed (or added) after verification is refused instead of run.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .errors import ChecksumError

CHECKSUM_FILE = "checksum"
HEX64_RE = re.compile(r"\A[0-9a-f]{64}\Z")
EXCLUDED_DIRS = frozenset({"__pycache__", ".pytest_cache"})
_CHUNK = 1 << 20
# Files at least this large are hashed on worker threads: hashlib releases the GIL on big buffers, so two
# large files hash on two cores at once. Small files stay on the calling thread, where a thread hop costs
# more than the hashing.
_PARALLEL_MIN = 4 << 20


def _hash_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        digest = hashlib.sha256()
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _collect(top: str) -> list[tuple[bytes, str, int]]:
    """(relative path bytes, absolute path, size) of every file that counts, unsorted."""
    found: list[tuple[bytes, str, int]] = []
    stack = [("", top)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            for item in it:
                rel = f"{rel_dir}{item.name}"
                if "\n" in item.name:
                    raise ChecksumError(f"{top}: file name with a newline: {rel!r}")
                st = item.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    if item.name not in EXCLUDED_DIRS:
                        stack.append((rel + "/", item.path))
                elif stat.S_ISREG(mode):
                    if item.name.endswith(".pyc") or rel == CHECKSUM_FILE:
                        continue
                    found.append((os.fsencode(rel), item.path, st.st_size))
                elif stat.S_ISLNK(mode):
                    raise ChecksumError(f"{top}: symlink inside a module is not allowed: {rel}")
                else:
                    raise ChecksumError(f"{top}: not a regular file: {rel}")
    return found


def _line(hexdigest: str, rel: bytes) -> bytes:
    # sha256sum marks a line whose name needed escaping with a leading backslash.
    if b"\\" in rel or b"\r" in rel:
        escaped = rel.replace(b"\\", b"\\\\").replace(b"\r", b"\\r")
        return b"\\" + hexdigest.encode() + b"  " + escaped + b"\n"
    return hexdigest.encode() + b"  " + rel + b"\n"


@dataclass(frozen=True, eq=False)
class FolderDigest:
    """A module directory's digest and the SHA-256 of each file it covers ('/'-separated relative paths)."""

    top: Path
    digest: str
    files: Mapping[str, str]
    directories: frozenset[str]  # every directory holding a covered file, relative ("" for the top)

    def read_verified(self, rel: str) -> bytes:
        """The bytes of `<top>/<rel>` now, when they are exactly those the digest covered.

        Raises `ChecksumError` naming the file when the digest did not cover it, when it is no longer a
        regular file, or when its content changed since.
        """
        path = self.top / rel
        expected = self.files.get(rel)
        if expected is None:
            raise ChecksumError(f"{path}: not covered by the verified checksum of {self.top}")
        try:
            # O_NONBLOCK: a FIFO planted under the name must not hang the import.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ChecksumError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ChecksumError(f"{path}: not a regular file")
            data = handle.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"{path}: changed since {self.top} was verified (sha256 {actual}, verified {expected})"
            )
        return data


def digest_folder(path: str | os.PathLike[str]) -> FolderDigest:
    """The digest of a module directory with the hash of each file it covers (see the module docstring)."""
    top = os.fspath(path)
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            raise ChecksumError(f"{top}: not a directory")
        files = _collect(top)
    except FileNotFoundError as exc:
        raise ChecksumError(f"{top}: no such directory") from exc
    except OSError as exc:
        raise ChecksumError(f"{top}: cannot read {exc.filename or top}: {exc.strerror}") from exc
    files.sort(key=lambda f: f[0])
    big = [f[1] for f in files if f[2] >= _PARALLEL_MIN]
    digests: dict[str, str] = {}
    covered: dict[str, str] = {}
    try:
        if len(big) > 1:
            with ThreadPoolExecutor(max_workers=min(len(big), os.cpu_count() or 2)) as pool:
                digests = dict(zip(big, pool.map(_hash_file, big), strict=True))
        total = hashlib.sha256()
        for rel, abs_path, _size in files:
            hexdigest = digests.get(abs_path) or _hash_file(abs_path)
            covered[os.fsdecode(rel)] = hexdigest
            total.update(_line(hexdigest, rel))
    except OSError as exc:
        raise ChecksumError(f"{top}: cannot read {exc.filename}: {exc.strerror}") from exc
    directories = {""}
    for rel_name in covered:
        parts = rel_name.split("/")[:-1]
        directories.update("/".join(parts[: n + 1]) for n in range(len(parts)))
    return FolderDigest(Path(top), total.hexdigest(), MappingProxyType(covered), frozenset(directories))


def digest_of_files(files: Iterable[tuple[str, bytes]]) -> str:
    """The digest `compute_folder_sha256` gives a directory holding exactly these (relative path, content)
    files: the same exclusions, order and escaping; for trees read from git without writing them out."""
    lines = []
    for rel, data in files:
        parts = rel.split("/")
        if "\n" in rel:
            raise ChecksumError(f"file name with a newline: {rel!r}")
        if rel == CHECKSUM_FILE or rel.endswith(".pyc") or EXCLUDED_DIRS.intersection(parts[:-1]):
            continue
        lines.append((os.fsencode(rel), hashlib.sha256(data).hexdigest()))
    total = hashlib.sha256()
    for rel_bytes, hexdigest in sorted(lines):
        total.update(_line(hexdigest, rel_bytes))
    return total.hexdigest()


def compute_folder_sha256(path: str | os.PathLike[str]) -> str:
    """The digest of a module directory (see the module docstring)."""
    return digest_folder(path).digest


def read_checksum_file(module_dir: Path) -> str | None:
    """The digest recorded in `<module_dir>/checksum`, or None when the file is missing."""
    try:
        return (Path(module_dir) / CHECKSUM_FILE).read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChecksumError(f"{module_dir}/{CHECKSUM_FILE}: unreadable: {exc}") from exc


def script_checksum(path: Path) -> str:
    """SHA-256 hex digest of the file; a link or a non-regular file raises ChecksumError."""
    try:
        # O_NONBLOCK: a FIFO planted under the script's name must not hang the run.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ChecksumError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ChecksumError(f"{path}: not a regular file")
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()
