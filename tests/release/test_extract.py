"""Safe extraction: exact members, regular files only, whole-directory extraction for gogs."""

from __future__ import annotations

import random
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_support import atuin_archive, gogs_archive, tar_gz, tool_script
from updates.utils.release.extract import ExtractError, extract_file, extract_tree, list_members

MEMBER = "atuin-x86_64-unknown-linux-gnu/atuin"


def write(tmp_path: Path, data: bytes, name: str = "a.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_extracts_the_exact_member_into_a_temp_file(tmp_path: Path) -> None:
    archive = write(tmp_path, atuin_archive("18.19.0"))
    dest = tmp_path / "bin"
    dest.mkdir()
    out = extract_file(archive, MEMBER, dest)
    assert out.parent == dest and out.name.startswith(".atuin.")
    assert out.read_bytes() == tool_script("atuin", "18.19.0")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert [p.name for p in dest.iterdir()] == [out.name]  # README/LICENSE were not extracted


def test_missing_member_names_what_is_there(tmp_path: Path) -> None:
    archive = write(tmp_path, atuin_archive("18.19.0"))
    with pytest.raises(ExtractError, match=r"CHANGELOG\.md"):
        extract_file(archive, "atuin-x86_64-unknown-linux-gnu/atuin-server", tmp_path)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (("../evil", b"#!/bin/sh\n"), "'..'"),
        (("atuin-x86_64-unknown-linux-gnu/../../evil", b"x"), "'..'"),
        (("/etc/cron.d/evil", b"x"), "absolute"),
        (("atuin-x86_64-unknown-linux-gnu/link", ("symlink", "/etc/passwd")), "link"),
        (
            ("atuin-x86_64-unknown-linux-gnu/hard", ("hardlink", "atuin-x86_64-unknown-linux-gnu/atuin")),
            "link",
        ),
        (("atuin-x86_64-unknown-linux-gnu/tty", ("chr",)), "special"),
        (("atuin-x86_64-unknown-linux-gnu/pipe", ("fifo",)), "special"),
    ],
)
def test_one_unsafe_member_refuses_the_whole_archive(
    tmp_path: Path, entry: tuple[str, object], reason: str
) -> None:
    data = tar_gz(
        [("atuin-x86_64-unknown-linux-gnu/", None), (MEMBER, tool_script("atuin", "18.19.0")), entry]
    )
    archive = write(tmp_path, data)
    dest = tmp_path / "bin"
    dest.mkdir()
    with pytest.raises(ExtractError, match=reason):
        extract_file(archive, MEMBER, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path.parent / "evil").exists()


def test_the_wanted_member_being_a_symlink_is_refused(tmp_path: Path) -> None:
    archive = write(tmp_path, tar_gz([(MEMBER, ("symlink", "/bin/sh"))]))
    with pytest.raises(ExtractError, match="link"):
        extract_file(archive, MEMBER, tmp_path)


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    archive = write(tmp_path, tar_gz([(MEMBER, b"#!/bin/sh\n"), (MEMBER, b"#!/bin/sh\nevil\n")]))
    with pytest.raises(ExtractError, match="twice"):
        extract_file(archive, MEMBER, tmp_path)


def test_html_page_is_not_an_archive(tmp_path: Path) -> None:
    archive = write(tmp_path, b"<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(ExtractError, match=r"not a readable tar\.gz"):
        extract_file(archive, MEMBER, tmp_path)


def test_gogs_tree_is_recreated_with_safe_modes(tmp_path: Path) -> None:
    archive = write(tmp_path, gogs_archive("0.14.3"))
    assert "gogs/scripts/systemd/gogs.service" in list_members(archive)
    dest = tmp_path / "new"
    extract_tree(archive, "gogs", dest)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "LICENSE",
        "README.md",
        "gogs",
        "scripts",
        "scripts/systemd",
        "scripts/systemd/gogs.service",
    ]
    assert (dest / "gogs").read_bytes() == tool_script("gogs", "0.14.3")
    assert stat.S_IMODE((dest / "gogs").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "LICENSE").stat().st_mode) == 0o644


def test_setuid_and_world_writable_bits_are_dropped(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mode in (("gogs/", 0o777), ("gogs/gogs", 0o6777)):
            info = tarfile.TarInfo(name)
            info.mode = mode
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = 3
                tar.addfile(info, io.BytesIO(b"abc"))
    dest = tmp_path / "new"
    extract_tree(write(tmp_path, buf.getvalue()), "gogs", dest)
    assert stat.S_IMODE((dest / "gogs").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    "entries",
    [
        [("gogs/", None), ("gogs/gogs", b"x"), ("gogs/data", ("symlink", "/var/lib"))],
        [("gogs/", None), ("gogs/gogs", b"x"), ("gogs/../../escape", b"x")],
        [("gogs/", None), ("gogs/gogs", b"x"), ("other/file", b"x")],
        [("gogs-0.14/", None), ("gogs-0.14/gogs", b"x")],
    ],
)
def test_bad_gogs_trees_are_refused_and_leave_nothing(
    tmp_path: Path, entries: list[tuple[str, object]]
) -> None:
    dest = tmp_path / "new"
    with pytest.raises(ExtractError):
        extract_tree(write(tmp_path, tar_gz(entries)), "gogs", dest)
    assert not dest.exists()
    assert not (tmp_path.parent / "escape").exists()


def test_tree_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    dest = tmp_path / "new"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(ExtractError, match="not empty"):
        extract_tree(write(tmp_path, gogs_archive("0.14.3")), "gogs", dest)
    assert (dest / "keep").read_text() == "mine"


def test_gogs_tree_without_directory_entries(tmp_path: Path) -> None:
    """Some tar builders store no directory entries; the top directory is then implied by the paths."""
    entries = [("gogs/gogs", tool_script("gogs", "0.14.3")), ("gogs/scripts/systemd/gogs.service", b"[Unit]\n")]
    dest = tmp_path / "new"
    extract_tree(write(tmp_path, tar_gz(entries)), "gogs", dest)
    assert (dest / "gogs").read_bytes() == tool_script("gogs", "0.14.3")
    assert (dest / "scripts" / "systemd" / "gogs.service").read_bytes() == b"[Unit]\n"
    assert stat.S_IMODE((dest / "scripts").stat().st_mode) == 0o755


def test_tree_whose_top_is_a_file_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "new"
    with pytest.raises(ExtractError, match="top directory"):
        extract_tree(write(tmp_path, tar_gz([("gogs", b"#!/bin/sh\n")])), "gogs", dest)
    assert not dest.exists()


# -- which side failed: reading the archive, or writing the output -----------------------------------------

BIG = random.Random(7).randbytes(1 << 20)  # incompressible, so a small archive holds more than 64 KiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system, so that writing the output fails with ENOSPC."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_while_extracting_a_file_says_so(tmp_path: Path, small_disk: Path) -> None:
    archive = write(tmp_path, tar_gz([("tool/", None), ("tool/big", BIG)]))
    with pytest.raises(ExtractError) as raised:
        extract_file(archive, "tool/big", small_disk)
    message = str(raised.value)
    assert message.startswith(f"no space left on device writing {small_disk}/.big.")
    assert "not a readable" not in message
    assert list(small_disk.iterdir()) == []  # the partial temporary file is gone


def test_a_full_disk_while_extracting_a_tree_says_so(tmp_path: Path, small_disk: Path) -> None:
    archive = write(tmp_path, tar_gz([("gogs/", None), ("gogs/gogs", b"#!/bin/sh\n"), ("gogs/public/big", BIG)]))
    dest = small_disk / "new"
    with pytest.raises(ExtractError) as raised:
        extract_tree(archive, "gogs", dest)
    assert str(raised.value) == f"no space left on device writing {dest}/public/big"
    assert not dest.exists()


def test_a_missing_destination_is_an_output_error(tmp_path: Path) -> None:
    archive = write(tmp_path, atuin_archive("18.19.0"))
    with pytest.raises(ExtractError) as raised:
        extract_file(archive, MEMBER, tmp_path / "nowhere")
    assert str(raised.value).startswith(f"no such file or directory writing {tmp_path / 'nowhere'}/")


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_archive_is_still_not_readable(tmp_path: Path, damage: str) -> None:
    data = tar_gz([("tool/", None), ("tool/big", BIG)])
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        # Just after the 10-byte gzip header: the deflate stream itself no longer decodes.
        data = data[:10] + bytes(b ^ 0x5A for b in data[10:74]) + data[74:]
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ExtractError, match=r"^a\.tar\.gz: not a readable tar\.gz archive"):
        extract_file(write(tmp_path, data), "tool/big", dest)
    assert list(dest.iterdir()) == []
