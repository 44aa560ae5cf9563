"""Manifest parsing, validation messages, and atomic order-preserving writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from orchestrator_support import OK_MODULE, add_module, group, install_copy, write_manifest
from updates.utils.errors import ManifestError
from updates.utils.manifest import load_manifest, update_entry
from updates.utils.paths import Paths
from updates.utils.schema import validate


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # Messages show the manifest relative to the working directory, as an operator in the root sees it.
    monkeypatch.chdir(tmp_path)


def paths_for(root):
    return Paths.create(root, environ={"UPDATES_STATE_DIR": f"{root}/state"})


def error_of(root) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(paths_for(root))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_valid_manifest_loads_entries_in_order(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    add_module(tmp_path, "beta", OK_MODULE)
    write_manifest(tmp_path, [group(["beta", "alpha"]), {"name": "alpha", "timeout": 5},
                              {"name": "beta", "enabled": False, "args": {"x": 1}}])
    manifest = load_manifest(paths_for(tmp_path))
    assert list(manifest.entries) == ["all_services", "alpha", "beta"]
    assert manifest.entries["all_services"].is_group
    assert manifest.entries["alpha"].timeout == 5.0
    assert manifest.entries["beta"].enabled is False
    assert manifest.entries["beta"].args == {"x": 1}
    assert manifest.descendants("all_services") == ["beta", "alpha"]


def test_malformed_json_names_line_and_column(tmp_path):
    (tmp_path / "manifest.json").write_text('{\n  "updates": [\n    {"name": "a",}\n  ]\n}\n')
    message = error_of(tmp_path)
    assert message.startswith("manifest.json: line 3 column") or "manifest.json: line 3 column" in message


def test_duplicate_json_key_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"updates": [], "entrypoint": "a", "entrypoint": "b"}')
    assert error_of(tmp_path) == 'manifest.json: top level: duplicate key "entrypoint"'


def test_nan_and_infinity_are_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"updates": [{"name": "a", "children": [], "timeout": NaN}], "entrypoint": "a"}')
    assert error_of(tmp_path) == "manifest.json: updates[0].timeout: NaN is not valid JSON"
    (tmp_path / "manifest.json").write_text('{"updates": [{"name": "a", "children": [], "timeout": Infinity}], "entrypoint": "a"}')
    assert error_of(tmp_path) == "manifest.json: updates[0].timeout: Infinity is not valid JSON"


# Python's json accepts each of these; the manifest refuses each one, naming where it is.
A_MODULE = '{{"updates": [{{"name": "all_services", "children": ["alpha"]}}, {{"name": "alpha", {}}}], "entrypoint": "all_services"}}'


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ('"description": "x\\udc80"', "updates[1].description: the string holds a lone surrogate \\udc80, which is not valid Unicode"),
        ('"description": "\\ud800 high"', "updates[1].description: the string holds a lone surrogate \\ud800"),
        ('"args": {"list": ["ok", "\\udfff"]}', "updates[1].args.list[1]: the string holds a lone surrogate \\udfff"),
        ('"args": {"k\\udc80": 1}', 'updates[1].args["k\\udc80"]: the key holds a lone surrogate \\udc80'),
        ('"description": "x", "description": "y"', 'updates[1]: duplicate key "description"'),
        ('"args": {"a": {"b": 1, "b": 2}}', 'updates[1].args.a: duplicate key "b"'),
        ('"args": {"x": -Infinity}', "updates[1].args.x: -Infinity is not valid JSON"),
        ('"timeout": 1e400', "updates[1].timeout: the number 1e400 is out of range"),
        ('"args": {"n": ' + "9" * 5000 + "}", "updates[1].args.n: an integer of 5000 digits is too large"),
        ('"args": {"n": -' + "9" * 4301 + "}", "updates[1].args.n: an integer of 4301 digits is too large"),
        ('"args": {"odd key": NaN}', 'updates[1].args["odd key"]: NaN is not valid JSON'),
    ],
)
def test_what_python_json_accepts_is_refused_with_its_place(tmp_path, member, expected):
    add_module(tmp_path, "alpha", OK_MODULE)
    (tmp_path / "manifest.json").write_text(A_MODULE.format(member))
    message = error_of(tmp_path)
    assert message == f"manifest.json: {expected}" or message.startswith(f"manifest.json: {expected}")
    assert "set_int_max_str_digits" not in message


def test_a_long_valid_integer_and_a_surrogate_pair_are_kept(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    member = '"description": "smile \\ud83d\\ude00", "args": {"n": ' + "7" * 4000 + "}"
    (tmp_path / "manifest.json").write_text(A_MODULE.format(member))
    entry = load_manifest(paths_for(tmp_path)).entries["alpha"]
    assert entry.description == "smile \U0001f600" and entry.args["n"] == int("7" * 4000)


@pytest.mark.parametrize("depth", [62, 1000, 100_000])
def test_deep_nesting_is_refused_with_line_and_column(tmp_path, depth):
    add_module(tmp_path, "alpha", OK_MODULE)
    # args is the 4th level; its value "deep" starts the 5th: 60 more lists make 64, the limit.
    member = '"args": {"deep": \n' + "[" * depth + "]" * depth + "}"
    (tmp_path / "manifest.json").write_text(A_MODULE.format(member))
    # The 61st list from the line's start is the 65th level.
    assert error_of(tmp_path) == "manifest.json: line 2 column 61: nested more than 64 levels deep"


def test_nesting_up_to_the_limit_is_accepted(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    member = '"args": {"deep": ' + "[" * 60 + "]" * 60 + "}"
    (tmp_path / "manifest.json").write_text(A_MODULE.format(member))
    deep = load_manifest(paths_for(tmp_path)).entries["alpha"].args["deep"]
    assert json.dumps(deep) == "[" * 60 + "]" * 60


def test_bytes_that_are_not_utf8_name_line_and_column(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"updates": [],\n "entrypoint": "\xed\xb2\x80"}')
    assert error_of(tmp_path) == "manifest.json: line 2 column 17: not UTF-8 text (byte 32)"


def test_a_name_ending_in_a_newline_is_refused_even_when_its_directory_exists(tmp_path):
    add_module(tmp_path, "evil\n", OK_MODULE)
    write_manifest(tmp_path, [group(["evil\n"]), {"name": "evil\n"}])
    assert error_of(tmp_path).startswith("manifest.json: updates[1].name: 'evil\\n' is not a safe name")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "alpha", "checksum": "a" * 64 + "\n"}, "updates[1].checksum: must be 64 lowercase hex digits"),
        ({"name": "alpha", "script": "run.sh\n", "checksum": "a" * 64}, "updates[1].script: must be a plain file name"),
        ({"name": "a" * 65, "children": []}, "updates[1].name: longer than 64 characters"),
        ({"name": "alpha", "script": "s" * 300 + ".sh", "checksum": "a" * 64}, "updates[1].script: cannot look at"),
    ],
)
def test_no_trailing_newline_or_overlong_name_slips_through(tmp_path, entry, expected):
    add_module(tmp_path, "alpha", OK_MODULE)
    (tmp_path / "run.sh\n").write_text("#!/bin/sh\n")
    write_manifest(tmp_path, [group([]), entry])
    assert error_of(tmp_path).startswith(f"manifest.json: {expected}")


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        ({"webhook": {"url": "http://[::1"}}, "notify.webhook.url: must be an http:// or https:// URL"),
        ({"bad\nkey": 1}, 'notify["bad\\nkey"]: unknown key'),
        ({"webhook": {"url": "https://example.invalid/", "x y": 1}}, 'notify.webhook["x y"]: unknown key'),
    ],
)
def test_notify_problems_are_one_line_and_never_raise(tmp_path, notify, expected):
    (tmp_path / "manifest.json").write_text(json.dumps({"updates": [group([])], "entrypoint": "all_services",
                                                         "notify": notify}))
    assert error_of(tmp_path).startswith(f"manifest.json: {expected}")


def test_a_long_chain_of_children_is_refused_without_recursion_error(tmp_path):
    names = [f"g{n}" for n in range(5000)]
    entries = [group([names[0]]), *({"name": name, "children": names[n + 1 : n + 2]} for n, name in enumerate(names))]
    write_manifest(tmp_path, entries)
    assert "levels of children below it" in error_of(tmp_path)
    entries[-1]["children"] = ["g0"]  # and a cycle that long is found as well
    write_manifest(tmp_path, entries)
    assert "children: cycle g0 -> g1 -> " in error_of(tmp_path)


def test_a_chain_within_the_limit_loads(tmp_path):
    names = [f"g{n}" for n in range(32)]
    entries = [group([names[0]]), *({"name": name, "children": names[n + 1 : n + 2]} for n, name in enumerate(names))]
    write_manifest(tmp_path, entries)
    assert load_manifest(paths_for(tmp_path)).descendants("all_services") == names


def test_update_entry_refuses_a_manifest_it_could_not_write_back(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    (tmp_path / "manifest.json").write_text(A_MODULE.format('"description": "x\\udc80"'))
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(ManifestError, match=r"updates\[1\]\.description: the string holds a lone surrogate"):
        update_entry(tmp_path / "manifest.json", "alpha", {"lastApplied": "2024-06-10T15:23:00Z"})
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_symlinked_module_directory_is_refused(tmp_path):
    real = add_module(tmp_path / "elsewhere", "real", OK_MODULE)
    (tmp_path / "linked").symlink_to(real)
    write_manifest(tmp_path, [group(["linked"]), {"name": "linked"}])
    assert "updates[1]: module directory linked/ is a symlink" in error_of(tmp_path)


def test_writes_go_through_a_symlinked_manifest_and_keep_the_owner(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    target_dir = tmp_path / "etc"
    target_dir.mkdir()
    target = write_manifest(target_dir, [group(["alpha"]), {"name": "alpha"}])
    link = tmp_path / "manifest.json"
    link.symlink_to(target)
    if os.geteuid() == 0:
        os.chown(target, 1234, 5678)
    update_entry(link, "alpha", {"version": "9"})
    assert link.is_symlink()
    assert json.loads(target.read_text())["updates"][1]["version"] == "9"
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (1234, 5678)


def test_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path)


@pytest.mark.parametrize(
    ("entries", "entrypoint", "expected"),
    [
        ([group(["gogz"])], "all_services", 'updates[0].children[0]: no entry named "gogz"'),
        ([group([]), group([], name="all_services")], "all_services", "duplicate name 'all_services'"),
        ([group([])], "everything", 'entrypoint: no entry named "everything"'),
        ([group(["b"]), group(["c"], "b"), group(["b"], "c")], "all_services", "cycle b -> c -> b"),
        ([group(["all_services"])], "all_services", "cycle all_services -> all_services"),
        ([{"name": "Bad-Name", "children": []}], "all_services", "'Bad-Name' is not a safe name"),
        ([{"name": "../etc", "children": []}], "all_services", "is not a safe name"),
        ([{"name": "utils", "children": []}], "all_services", "'utils' is reserved"),
        ([group(["ghost"]), {"name": "ghost"}], "all_services", "updates[1]: module directory ghost/ is missing"),
        ([group([]), {"children": []}], "all_services", "updates[1].name: required"),
        ([group([]), {"name": "x", "version": 3, "children": []}], "all_services", "updates[1].version: must be a string"),
        ([group([]), {"name": "x", "enabled": "yes", "children": []}], "all_services", "updates[1].enabled: must be true"),
        ([group([]), {"name": "x", "checksum": "ABC", "children": []}], "all_services", "updates[1].checksum: must be 64"),
        ([group([]), {"name": "x", "timeout": -1, "children": []}], "all_services", "updates[1].timeout: must be a number of seconds"),
        ([group([]), {"name": "x", "timeout": 1e300, "children": []}], "all_services", "updates[1].timeout: must be a number"),
        ([group([]), {"name": "x", "timeout": True, "children": []}], "all_services", "updates[1].timeout"),
        ([group([]), {"name": "x", "args": [], "children": []}], "all_services", "updates[1].args: must be an object"),
        ([group([]), {"name": "x", "args": {"dry_run": False}, "children": []}], "all_services",
         "updates[1].args.dry_run: reserved key"),
        ([group([]), {"name": "x", "children": "a"}], "all_services", "updates[1].children: must be an array"),
        ([group(["x", "x"]), group([], "x")], "all_services", 'updates[0].children[1]: "x" is listed twice'),
        ([group([]), {"name": "x", "lastApplied": "yesterday", "children": []}], "all_services",
         "updates[1].lastApplied: not an ISO 8601"),
        ([group([]), "just a string"], "all_services", "updates[1]: must be an object"),
    ],
)
def test_each_validation_error_is_one_line_naming_the_place(tmp_path, entries, entrypoint, expected):
    write_manifest(tmp_path, entries, entrypoint)
    message = error_of(tmp_path)
    assert message.startswith("manifest.json: ")
    assert expected in message


def test_module_without_index_py(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "__init__.py").write_text("")
    write_manifest(tmp_path, [group(["half"]), {"name": "half"}])
    assert "updates[1]: half/index.py is missing" in error_of(tmp_path)


def test_unreachable_entries_are_validated_too(tmp_path):
    write_manifest(tmp_path, [group([]), {"name": "orphan"}])
    assert "orphan/ is missing" in error_of(tmp_path)


def test_top_level_shape(tmp_path):
    (tmp_path / "manifest.json").write_text("[]")
    assert "top level must be a JSON object" in error_of(tmp_path)
    assert validate({"entrypoint": "x"}, tmp_path) == ["updates: must be an array of entries, not null"]


def test_several_problems_are_counted(tmp_path):
    write_manifest(tmp_path, [group(["a", "b"])])
    assert "(and 1 more" in error_of(tmp_path)


def test_update_entry_keeps_order_unknown_fields_and_indentation(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    original = {
        "comment": "top-level unknown field",
        "updates": [
            {"name": "all_services", "children": ["alpha"], "x-owner": "ops"},
            {"name": "alpha", "version": "1.0", "lastApplied": None, "custom": {"nested": [1, 2.5, "é"]}},
        ],
        "entrypoint": "all_services",
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(original, indent=2, ensure_ascii=False) + "\n")
    update_entry(path, "alpha", {"lastApplied": "2024-06-10T15:23:00Z"})
    text = path.read_text()
    expected = json.loads(json.dumps(original))
    expected["updates"][1]["lastApplied"] = "2024-06-10T15:23:00Z"
    assert text == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    assert list(json.loads(text)["updates"][1]) == ["name", "version", "lastApplied", "custom"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_update_entry_keeps_file_mode(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    path = write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha"}])
    path.chmod(0o600)
    update_entry(path, "alpha", {"version": "2"})
    assert path.stat().st_mode & 0o777 == 0o600


def test_update_entry_unknown_name(tmp_path):
    path = write_manifest(tmp_path, [group([])])
    with pytest.raises(ManifestError, match='no entry named "nope"'):
        update_entry(path, "nope", {"version": "1"})


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import conftest  # registers the package
    from updates.utils.manifest import update_entry
    path = sys.argv[1]
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        update_entry(__import__("pathlib").Path(path), "alpha", {{"version": str(i), "blob": "x" * 200000}})
    """
)


def test_sigkill_during_writes_leaves_a_whole_file(tmp_path):
    add_module(tmp_path, "alpha", OK_MODULE)
    path = write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha", "version": "0"}])
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    for attempt in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER.format(tests=tests_dir), str(path)],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.05 + attempt * 0.037)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        data = json.loads(path.read_text())  # never a torn file
        alpha = data["updates"][1]
        assert alpha["name"] == "alpha"
        assert alpha["version"] == "0" or alpha["blob"] == "x" * 200000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # A killed writer may leave its temp file; it is never the manifest itself.
    assert all(name.startswith(".manifest.json.") for name in leftovers)


@pytest.mark.parametrize(
    ("member", "place"),
    [
        ('"description": "x\\udc80"', "updates[1].description: the string holds a lone surrogate \\udc80"),
        ('"x": ' + "[" * 100_000 + "]" * 100_000, "line 1 column 147: nested more than 64 levels deep"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [["index.py", "run"], ["index.py", "status"], ["utils/checksummer.py"], ["utils/rollback.py", "mark-safe", "alpha"]],
)
def test_every_command_refuses_it_as_a_real_process(tmp_path, member, place, command):
    install = install_copy(tmp_path / "updates")
    add_module(install, "alpha", OK_MODULE)
    (install / "manifest.json").write_text(A_MODULE.format(member))

    def files():
        return {p: p.read_bytes() for p in sorted(install.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}

    before = files()
    done = subprocess.run([sys.executable, *command], cwd=install, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "UPDATES_STATE_DIR": str(tmp_path / "state")}, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"error: manifest.json: {place}" + (", which is not valid Unicode" if "surrogate" in place else "")]
    assert done.stdout == ""
    assert files() == before
    assert not (tmp_path / "state" / "history.jsonl").exists()
