"""The cache of compiled module code: used when it is ours, intact and of the same source; else compiled anew."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from orchestrator_support import add_module, group, write_manifest
from updates.utils.orchestrator.bytecode import BytecodeCache, pack, unpack
from updates.utils.orchestrator.cli import main

SOURCE = b"VALUE = 'from the source'\n"
PATH = "/srv/updates/mod/index.py"


def value_of(code: object) -> str:
    space: dict[str, object] = {}
    exec(code, space)  # code compiled by the test itself
    return str(space["VALUE"])


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.code"))


def planted_entry(directory: Path) -> Path:
    """The one entry of `directory`, its payload swapped for other code with a correct hash."""
    (entry,) = entries(directory)
    entry.write_bytes(pack(compile("VALUE = 'from the cache'\n", PATH, "exec")))
    return entry


def test_code_is_stored_once_and_then_taken_from_the_cache(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    code = cache.code(SOURCE, PATH)
    assert value_of(code) == "from the source" and code.co_filename == PATH
    (entry,) = entries(tmp_path / "bytecode")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "bytecode").stat().st_mode & 0o777 == 0o700
    planted_entry(tmp_path / "bytecode")
    # A valid entry is what a later run executes (this is how the test tells it was read, not compiled).
    assert value_of(BytecodeCache(tmp_path / "bytecode").code(SOURCE, PATH)) == "from the cache"


def test_other_source_or_another_path_never_meets_the_entry(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    planted_entry(tmp_path / "bytecode")
    assert value_of(cache.code(b"VALUE = 'changed'\n", PATH)) == "changed"
    elsewhere = cache.code(SOURCE, "/srv/updates/other/index.py")
    assert value_of(elsewhere) == "from the source"
    assert elsewhere.co_filename == "/srv/updates/other/index.py"
    assert len(entries(tmp_path / "bytecode")) == 3


def test_a_damaged_entry_is_compiled_anew_and_replaced(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    entry = planted_entry(tmp_path / "bytecode")
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0x40  # one bit of the payload: its hash no longer matches
    entry.write_bytes(bytes(data))
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"
    assert entry.read_bytes() != bytes(data)
    assert value_of(BytecodeCache(tmp_path / "bytecode").code(SOURCE, PATH)) == "from the source"


@pytest.mark.parametrize("damage", [b"", b"updates-code\n", b"not an entry at all"])
def test_a_truncated_or_foreign_file_is_compiled_anew(tmp_path: Path, damage: bytes) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    (entry,) = entries(tmp_path / "bytecode")
    entry.write_bytes(damage)
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"


def test_an_entry_others_can_write_is_not_used(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    entry = planted_entry(tmp_path / "bytecode")
    entry.chmod(0o620)
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"
    assert entry.stat().st_mode & 0o777 == 0o600  # replaced by one of our own


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_owned_by_another_user_is_not_used_and_replaced(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    entry = planted_entry(tmp_path / "bytecode")
    os.chown(entry, 4242, 4242)
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"
    assert entry.stat().st_uid == 0


def test_a_link_in_the_cache_is_not_followed(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    cache.code(SOURCE, PATH)
    (entry,) = entries(tmp_path / "bytecode")
    elsewhere = tmp_path / "elsewhere.code"
    elsewhere.write_bytes(pack(compile("VALUE = 'from the cache'\n", PATH, "exec")))
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"
    assert not entry.is_symlink() and entry.is_file()
    assert elsewhere.read_bytes() == pack(compile("VALUE = 'from the cache'\n", PATH, "exec"))


def test_a_directory_others_can_write_is_neither_read_nor_written(tmp_path: Path) -> None:
    directory = tmp_path / "bytecode"
    BytecodeCache(directory).code(SOURCE, PATH)
    planted_entry(directory)
    directory.chmod(0o777)
    assert value_of(BytecodeCache(directory).code(SOURCE, PATH)) == "from the source"
    assert value_of(BytecodeCache(directory).code(b"VALUE = 'new'\n", PATH)) == "new"
    assert len(entries(directory)) == 1  # nothing added to a directory others could have planted into


def test_without_write_nothing_is_created(tmp_path: Path) -> None:
    cache = BytecodeCache(tmp_path / "bytecode", write=False)
    assert value_of(cache.code(SOURCE, PATH)) == "from the source"
    assert not (tmp_path / "bytecode").exists()


def test_the_oldest_entries_and_killed_writes_are_pruned(tmp_path: Path) -> None:
    directory = tmp_path / "bytecode"
    cache = BytecodeCache(directory, max_entries=3)
    leftover = directory / ".abc.code.x1y2.tmp"  # what a kill during a write leaves
    for number in range(5):
        before = set(entries(directory)) if directory.exists() else set()
        cache.code(f"VALUE = '{number}'\n".encode(), PATH)
        (new,) = set(entries(directory)) - before
        os.utime(new, ns=(number + 1, number + 1))  # written in this order, whatever the names' order
        if number == 0:
            leftover.write_bytes(b"partial")
    assert len(entries(directory)) == 3
    assert not leftover.exists()
    kept = {value_of(BytecodeCache(directory, write=False).code(f"VALUE = '{n}'\n".encode(), PATH)) for n in "234"}
    assert kept == {"2", "3", "4"}
    assert {value_of(unpack(entry.read_bytes())) for entry in entries(directory)} == {"2", "3", "4"}


# --- through the orchestrator (the state directory is <tmp_path>/state, see conftest.py) ------------------


def run_summary(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["run", "--json", *extra], root=root) == 0
    return json.loads(capsys.readouterr().out)["modules"][0]["summary"]


def test_a_run_keeps_each_imported_file_s_code_and_a_dry_run_keeps_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, cache = tmp_path / "root", tmp_path / "state" / "bytecode"
    body = "from .helper import VALUE\ndef main(args):\n    return {'summary': VALUE}\n"
    add_module(root, "cached", body, files={"helper.py": "VALUE = 'helped'\n"})
    write_manifest(root, [group(["cached"]), {"name": "cached"}])
    assert run_summary(root, capsys, "--dry-run") == "helped"
    assert not cache.exists()
    assert run_summary(root, capsys) == "helped"
    assert len(entries(cache)) == 3  # __init__.py, index.py, helper.py
    assert run_summary(root, capsys) == "helped"
    assert len(entries(cache)) == 3
    # The next run takes helper.py's code from the cache: a valid entry planted there is what runs.
    (helper,) = [e for e in entries(cache) if unpack(e.read_bytes()).co_filename.endswith("helper.py")]
    filename = unpack(helper.read_bytes()).co_filename
    helper.write_bytes(pack(compile("VALUE = 'from the cache'\n", filename, "exec")))
    assert run_summary(root, capsys) == "from the cache"


def test_an_edited_module_runs_its_new_code_not_the_cached_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    add_module(root, "edited", "def main(args):\n    return {'summary': 'first'}\n")
    write_manifest(root, [group(["edited"]), {"name": "edited"}])
    assert run_summary(root, capsys) == "first"
    add_module(root, "edited", "def main(args):\n    return {'summary': 'second'}\n")
    write_manifest(root, [group(["edited"]), {"name": "edited"}])
    assert run_summary(root, capsys) == "second"
