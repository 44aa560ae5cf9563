"""Module digests: the DESIGN algorithm, equality with the coreutils pipeline, and refusals."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from updates.utils.digest import compute_folder_sha256, read_checksum_file
from updates.utils.errors import ChecksumError

PIPELINE = (
    "find . -type f ! -path ./checksum ! -path '*/__pycache__/*' ! -path '*/.pytest_cache/*' "
    "! -name '*.pyc' -printf '%P\\n' | LC_ALL=C sort | xargs -r -d '\\n' sha256sum -- | sha256sum"
)

needs_coreutils = pytest.mark.skipif(
    not (shutil.which("find") and shutil.which("sha256sum")), reason="GNU find/sha256sum not installed"
)


def coreutils_digest(directory):
    out = subprocess.run(["bash", "-c", PIPELINE], cwd=directory, capture_output=True, check=True, timeout=60)
    return out.stdout.split()[0].decode()


def build_tree(root):
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "index.py").write_text("def main(args):\n    pass\n")
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep\n")
    (root / "a" / "b-sibling.txt").write_text("sorts after a/b/... by bytes? no: '-' < '/'")
    (root / "a-b.txt").write_text("dash")
    (root / "empty").write_bytes(b"")
    (root / "ünïcødé-名前.txt").write_text("unicode name")
    (root / "Zupper.txt").write_text("upper case sorts first in C locale")
    (root / "sp ace.txt").write_text("a space")
    (root / "back\\slash.txt").write_text("coreutils escapes this name")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    # Excluded from the digest:
    (root / "checksum").write_text("0" * 64 + "\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "index.cpython-311.pyc").write_bytes(b"junk")
    (root / "a" / "__pycache__").mkdir()
    (root / "a" / "__pycache__" / "x.txt").write_text("excluded too")
    (root / ".pytest_cache").mkdir()
    (root / ".pytest_cache" / "v").write_text("cache")
    (root / "stray.pyc").write_bytes(b"pyc anywhere")
    # A file named checksum below the top level counts.
    (root / "a" / "checksum").write_text("nested checksum file counts\n")


@needs_coreutils
def test_digest_equals_coreutils_pipeline(tmp_path):
    build_tree(tmp_path)
    assert compute_folder_sha256(tmp_path) == coreutils_digest(tmp_path)
    assert compute_folder_sha256(str(tmp_path)) == coreutils_digest(tmp_path)


@needs_coreutils
def test_large_files_hashed_in_parallel_still_match(tmp_path):
    for i in range(3):
        (tmp_path / f"large{i}.bin").write_bytes(os.urandom(5 * 1024 * 1024 + i))
    (tmp_path / "small.txt").write_text("x")
    assert compute_folder_sha256(tmp_path) == coreutils_digest(tmp_path)


def test_excluded_files_do_not_change_the_digest(tmp_path):
    build_tree(tmp_path)
    before = compute_folder_sha256(tmp_path)
    (tmp_path / "checksum").write_text("different\n")
    (tmp_path / "__pycache__" / "new.pyc").write_bytes(b"new")
    (tmp_path / "b.pyc").write_bytes(b"new")
    assert compute_folder_sha256(tmp_path) == before


def test_any_content_or_name_change_changes_the_digest(tmp_path):
    build_tree(tmp_path)
    before = compute_folder_sha256(tmp_path)
    (tmp_path / "empty").write_bytes(b"\0")
    after_content = compute_folder_sha256(tmp_path)
    assert after_content != before
    (tmp_path / "empty").rename(tmp_path / "empty2")
    assert compute_folder_sha256(tmp_path) not in (before, after_content)


def test_empty_directory_has_the_digest_of_empty_input(tmp_path):
    import hashlib

    assert compute_folder_sha256(tmp_path) == hashlib.sha256(b"").hexdigest()


def test_symlink_is_refused_and_never_followed(tmp_path):
    (tmp_path / "index.py").write_text("x")
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(ChecksumError, match="symlink"):
        compute_folder_sha256(tmp_path)


def test_symlinked_directory_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "dirlink").symlink_to(tmp_path / "real")
    with pytest.raises(ChecksumError, match="symlink"):
        compute_folder_sha256(tmp_path)


def test_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ChecksumError, match="not a regular file"):
        compute_folder_sha256(tmp_path)


def test_newline_in_a_name_is_refused(tmp_path):
    (tmp_path / "bad\nname").write_text("x")
    with pytest.raises(ChecksumError, match="newline"):
        compute_folder_sha256(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(ChecksumError, match="no such directory"):
        compute_folder_sha256(tmp_path / "absent")


def test_read_checksum_file(tmp_path):
    assert read_checksum_file(tmp_path) is None
    (tmp_path / "checksum").write_text("ab" * 32 + "\n")
    assert read_checksum_file(tmp_path) == "ab" * 32


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads directories whatever their mode")
def test_unreadable_subdirectory_is_named(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0)
    try:
        with pytest.raises(ChecksumError, match="locked"):
            compute_folder_sha256(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_digest_folder_keeps_the_hash_of_every_covered_file(tmp_path):
    import hashlib

    from updates.utils.digest import digest_folder

    build_tree(tmp_path)
    snapshot = digest_folder(tmp_path)
    assert snapshot.digest == compute_folder_sha256(tmp_path)
    expected = {
        path.relative_to(tmp_path).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in tmp_path.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and ".pytest_cache" not in path.parts
        and path.suffix != ".pyc"
        and path != tmp_path / "checksum"
    }
    assert dict(snapshot.files) == expected
    assert snapshot.directories == {"", "a", "a/b", "a/b/c"}
    assert snapshot.read_verified("a/b/c/deep.txt") == b"deep\n"


def test_read_verified_refuses_what_the_digest_did_not_see(tmp_path):
    from updates.utils.digest import digest_folder

    (tmp_path / "index.py").write_text("A = 1\n")
    (tmp_path / "helper.pyc").write_bytes(b"bytecode")
    snapshot = digest_folder(tmp_path)
    with pytest.raises(ChecksumError, match=r"helper\.pyc: not covered by the verified checksum"):
        snapshot.read_verified("helper.pyc")
    (tmp_path / "index.py").write_text("A = 2\n")
    with pytest.raises(ChecksumError, match=r"index\.py: changed since .* was verified \(sha256 [0-9a-f]{64}, verified"):
        snapshot.read_verified("index.py")
    # Swapped for a link to a file with the verified content: refused all the same, never followed.
    (tmp_path / "copy.py").write_text("A = 1\n")
    (tmp_path / "index.py").unlink()
    (tmp_path / "index.py").symlink_to(tmp_path / "copy.py")
    with pytest.raises(ChecksumError, match=r"index\.py: cannot read"):
        snapshot.read_verified("index.py")
    (tmp_path / "index.py").unlink()
    os.mkfifo(tmp_path / "index.py")
    with pytest.raises(ChecksumError, match=r"index\.py: not a regular file"):
        snapshot.read_verified("index.py")
