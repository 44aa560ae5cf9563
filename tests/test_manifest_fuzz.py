"""Bad input, every path: hundreds of mutations of the shipped manifest.json through every command that reads it.

Each case is either a manifest the commands accept (they then work as usual) or one they refuse the same
way everywhere: exit 2, exactly one line on stderr that names the manifest file and the place, no
traceback, nothing run, and not one byte of the root changed. Cases whose mutation is certain to be invalid
must be refused, and where the mutation fixes the place, the line must name it.

The root holds stand-ins for the shipped modules without checksum files: a case that is accepted fails
verification instead of importing anything, so no stand-in can ever be imported under a real module's name.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from orchestrator_support import CHECKOUT
from updates.utils.checksummer import main as checksummer_main
from updates.utils.orchestrator.cli import main as index_main
from updates.utils.rollback import main as rollback_main

SHIPPED = CHECKOUT / "manifest.json"
SEED = 20240610
BASE: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
ENTRIES = len(BASE["updates"])
INDEX = {e["name"]: i for i, e in enumerate(BASE["updates"])}
MODULES = [e["name"] for e in BASE["updates"] if "children" not in e]
STAND_IN = """
import os


def main(args):
    open(os.path.join(args["state_dir"], "ran"), "w").close()
"""
# Values of the wrong type (or shape) for each entry field; every one makes the manifest invalid.
WRONG: dict[str, list[Any]] = {
    "name": [1, None, [], {}, True, 1.5],
    "version": [1, 1.5, [], {}, True],
    "lastSafeVersion": [2, [], {}, False],
    "lastApplied": ["yesterday", "2024-06-10 15:23:00", "2024-06-10T15:23:00", "2024-13-10T15:23:00Z",
                    1718032980, [], "2024-06-10T15:23:00Z\n", True],
    "enabled": ["yes", 1, 0, None, "true", [], {}],
    "description": [1, [], {}, True, 0.5],
    "checksum": ["abc", 1, "A" * 64, "g" * 64, "a" * 63, "a" * 64 + "\n", [], True],
    "children": ["adblock", [1], {}, None, [None], [["adblock"]], True],
    "args": [[], "x", 1, None, True],
    "timeout": [-1, 0, "10", True, 10**9, [], {}, 7 * 24 * 3600 + 1, -0.5],
}
BAD_NAMES = ["evil\n", "adblock\n", "\nadblock", "adblock\r", "Adblock", "1abc", "a-b", "", " adblock",
             "adblock ", "../etc", "ad/block", "utils", "tests", "venv", "state", "updates", "adblock\u0000",
             "\u00e4dblock", "adblock\t", "zzz", "a" * 300, "adblock\u2028", "ad.block", "_adblock"]
SURROGATES = ["\udc80", "\ud800", "\udfff", "\udc00\ud800"]
SCALAR_MEMBER = re.compile(r'      "([A-Za-z]+)": [^\[{]')
SAFE_NAME = re.compile(r"[a-z][a-z0-9_]*")
RESERVED = {"utils", "tests", "config", "bench", "venv", "state", "updates"}


@dataclass(frozen=True)
class Case:
    kind: str
    data: bytes
    must_refuse: bool  # False: the mutation may or may not leave a valid manifest
    place: str | None = None  # a part of the refusal line that names the place

    def label(self, number: int) -> str:
        return f"case {number} ({self.kind}, place {self.place!r}): {self.data[:120]!r}"


# -- building the cases ----------------------------------------------------------------------------------


def dump(tree: object) -> bytes:
    # ensure_ascii writes lone surrogates as `\udc80` escapes; NaN and Infinity come out as those tokens.
    return (json.dumps(tree, indent=2) + "\n").encode("utf-8")


def place(path: tuple[str | int, ...]) -> str:
    """A path as the manifest's messages name it: `updates[1].args["odd key"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def put(tree: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def pop(tree: Any, path: tuple[str | int, ...]) -> None:
    for part in path[:-1]:
        tree = tree[part]
    del tree[path[-1]]


def edited(edit: Callable[[dict[str, Any]], None]) -> bytes:
    tree = copy.deepcopy(BASE)
    edit(tree)
    return dump(tree)


def with_value(path: tuple[str | int, ...], value: Any) -> bytes:
    return edited(lambda tree: put(tree, path, value))


def with_token(path: tuple[str | int, ...], token: str) -> bytes:
    """The manifest with the raw JSON text `token` (which json.dumps cannot write) at `path`."""
    marker = "@@token@@"
    return with_value(path, marker).replace(json.dumps(marker).encode(), token.encode())


def string_paths() -> list[tuple[str | int, ...]]:
    """Where the shipped manifest holds strings (values, not keys)."""
    found: list[tuple[str | int, ...]] = [("entrypoint",)]
    for i, entry in enumerate(BASE["updates"]):
        found += [("updates", i, key) for key, value in entry.items() if isinstance(value, str)]
        found += [("updates", i, "children", j) for j in range(len(entry.get("children", [])))]
    return found


def value_paths(rng: random.Random) -> Iterator[tuple[str | int, ...]]:
    """Random places for a value: an entry field, an args member, a child, the entrypoint."""
    while True:
        i = rng.randrange(ENTRIES)
        yield rng.choice(
            [("updates", i, "timeout"), ("updates", i, "description"), ("updates", i, "version"),
             ("updates", i, "x-extra"), ("updates", 0, "children", 0), ("entrypoint",)]
        )  # fmt: skip


def wrong_types(rng: random.Random) -> Iterator[Case]:
    combos = [(i, key, value) for i in range(ENTRIES) for key, values in WRONG.items() for value in values]
    for i, key, value in rng.sample(combos, 130):
        yield Case("wrong type", with_value(("updates", i, key), value), True, place(("updates", i, key)))
    for value in ({}, "x", None, 1, True):
        yield Case("wrong type", with_value(("updates",), value), True, "updates: must be an array")
    yield Case("wrong type", with_value(("updates",), []), True, "entrypoint: no entry named")
    for value in (1, None, [], "", "nosuch", "Adblock", "adblock\n", {}):
        yield Case("wrong type", with_value(("entrypoint",), value), True, "entrypoint")
    for value in ([], "x", 1, None, True, [BASE]):
        yield Case("wrong type", dump(value), True, "top level must be a JSON object")


def deleted_keys(rng: random.Random) -> Iterator[Case]:
    def delete(*path: str | int) -> bytes:
        return edited(lambda tree: pop(tree, path))

    for i in range(ENTRIES):
        yield Case("deleted key", delete("updates", i, "name"), True, place(("updates", i, "name")))
    yield Case("deleted key", delete("updates", 0, "children"), True, "updates[0]: module directory")
    yield Case("deleted key", delete("entrypoint"), True, "entrypoint")
    yield Case("deleted key", delete("updates"), True, "updates")
    optional = [(i, key) for i in range(1, ENTRIES) for key in BASE["updates"][i] if key != "name"]
    for i, key in rng.sample(optional, 5):  # few: an accepted run as root checks the install (slow)
        yield Case("deleted key", delete("updates", i, key), False)


def duplicated_keys(rng: random.Random) -> Iterator[Case]:
    lines = dump(BASE).decode().splitlines()
    for _ in range(30):
        i = rng.randrange(ENTRIES)
        start = lines.index(f'      "name": {json.dumps(BASE["updates"][i]["name"])},')
        end = next(n for n in range(start, len(lines)) if lines[n] == "    }" or lines[n] == "    },")
        # Members with a scalar value, one line each: `      "version": "1.0.0",`
        members = {n: m.group(1) for n in range(start, end) if (m := SCALAR_MEMBER.match(lines[n]))}
        n = rng.choice(sorted(members))
        key = members[n]
        copy_line = lines[n] if lines[n].endswith(",") else lines[n] + ","
        mutated = [*lines[:n], copy_line, *lines[n:]]
        yield Case("duplicate key", ("\n".join(mutated) + "\n").encode(), True,
                   f'updates[{i}]: duplicate key "{key}"')  # fmt: skip
    top = dump(BASE).replace(b'\n  "entrypoint"', b'\n  "entrypoint": "gogs",\n  "entrypoint"')
    yield Case("duplicate key", top, True, 'top level: duplicate key "entrypoint"')
    for i in range(1, ENTRIES):
        nested = with_value(("updates", i, "args"), {"same": 1}).replace(b'"same": 1', b'"same": 1, "same": 2')
        yield Case("duplicate key", nested, True, f'updates[{i}].args: duplicate key "same"')
    for i in range(ENTRIES):
        twice = edited(lambda tree, i=i: tree["updates"].append(copy.deepcopy(tree["updates"][i])))
        yield Case("duplicate entry", twice, True, f"updates[{ENTRIES}].name: duplicate name")


def bad_names(rng: random.Random) -> Iterator[Case]:
    for name in BAD_NAMES:
        for i in rng.sample(range(ENTRIES), 2):
            # A safe name without a directory is a group when the entry has children: then only the
            # entrypoint, which names the old one, is wrong.
            renamed_group = i == 0 and SAFE_NAME.fullmatch(name) and len(name) <= 64 and name not in RESERVED
            where = "entrypoint: no entry named" if renamed_group else f"updates[{i}]"
            yield Case("bad name", with_value(("updates", i, "name"), name), True, where)
    for name in ("evil\n", "nosuch", "Gogs"):
        yield Case("bad name", with_value(("updates", 0, "children", 1), name), True, "updates[0].children[1]")


def surrogates(rng: random.Random) -> Iterator[Case]:
    paths = string_paths()
    for _ in range(40):
        path = rng.choice(paths)
        text = BASE
        for part in path:
            text = text[part]
        cut = rng.randrange(len(text) + 1)
        value = text[:cut] + rng.choice(SURROGATES) + text[cut:]
        yield Case("lone surrogate", with_value(path, value), True, f"{place(path)}: the string holds")
    for i in range(ENTRIES):
        key = "x" + rng.choice(SURROGATES)
        yield Case("lone surrogate", with_value(("updates", i, key), 1), True, f"updates[{i}][")
    # A valid pair is a real character: not refused.
    yield Case("surrogate pair", with_value(("updates", 1, "description"), "smile \U0001f600"), False)


def deep_nesting(rng: random.Random) -> Iterator[Case]:
    for depth in (62, 63, 100, 1000, 5000, 100_000):  # the deep value starts at level 4 or 5
        i = rng.randrange(ENTRIES)
        lists = "[" * depth + "]" * depth
        yield Case("deep nesting", with_token(("updates", i, "args"), "{\"deep\": " + lists + "}"), True,
                   "nested more than 64 levels deep")  # fmt: skip
        objects = '{"a": ' * depth + "1" + "}" * depth
        yield Case("deep nesting", with_token(("updates", i, "x-deep"), objects), True, "line ")
    yield Case("deep nesting", ("[" * 100_000).encode(), True, "line 1 column 65")
    yield Case("deep nesting", ('{"updates": ' + "[" * 3000 + "]" * 3000 + "}").encode(), True, "line 1 ")
    for depth in (1, 60):  # within the limit: args (level 4) holding `depth` nested lists
        lists = "[" * depth + "]" * depth
        yield Case("nesting within the limit", with_token(("updates", 1, "args"), '{"ok": ' + lists + "}"),
                   False)  # fmt: skip


def constants(rng: random.Random) -> Iterator[Case]:
    tokens = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E999", "2.5e308"]
    paths = value_paths(rng)
    for _ in range(35):
        path, token = next(paths), rng.choice(tokens)
        yield Case("NaN/Infinity", with_token(path, token), True, place(path))


def huge_integers(rng: random.Random) -> Iterator[Case]:
    paths = value_paths(rng)
    for digits in (4301, 4302, 5000, 10_000, 50_000, 4301, 6000, 20_000):
        path = next(paths)
        number = rng.choice(["", "-"]) + "9" * digits
        yield Case("huge integer", with_token(path, number), True, f"{place(path)}: an integer of {digits} digits")
    yield Case("long integer", with_token(("updates", 1, "args"), '{"n": ' + "7" * 4000 + "}"), False)


def truncations(rng: random.Random) -> Iterator[Case]:
    text = dump(BASE)
    end = len(text.rstrip())  # cut before the last brace: never a whole document
    for cut in [0, 1, end - 1, *rng.sample(range(2, end - 1), 47)]:
        yield Case("truncated", text[:cut], True, "line ")


def byte_flips(rng: random.Random) -> Iterator[Case]:
    text = dump(BASE)
    for _ in range(110):
        data = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            how = rng.random()
            if how < 0.6:
                data[at] ^= rng.randint(1, 255)
            elif how < 0.8:
                data.insert(at, rng.randrange(256))
            else:
                del data[at]
        yield Case("byte flip", bytes(data), False)


def cycles() -> Iterator[Case]:
    one, two, three, four = (INDEX[name] for name in ("adblock", "atuin", "filebrowser", "gogs"))

    def link(*pairs: tuple[int, list[str]]) -> bytes:
        return edited(lambda tree: [put(tree, ("updates", i, "children"), kids) for i, kids in pairs])

    yield Case("cycle", link((one, ["adblock"])), True, "children: cycle adblock -> adblock")
    yield Case("cycle", link((one, ["atuin"]), (two, ["adblock"])), True, "children: cycle")
    yield Case("cycle", link((one, ["all_services"])), True, "children: cycle")
    yield Case("cycle", link((one, ["atuin"]), (two, ["filebrowser"]), (three, ["gogs"]), (four, ["adblock"])),
               True, "children: cycle")  # fmt: skip
    yield Case("cycle", link((four, ["gogs"])), True, "children: cycle gogs -> gogs")
    yield Case("cycle", link((three, ["gogs"]), (four, ["all_services"])), True, "children: cycle")


def children(rng: random.Random) -> Iterator[Case]:
    kids = BASE["updates"][0]["children"]
    for name in ("gogz", "nosuch", "all_service", "ADBLOCK", "x" * 100):
        at = rng.randrange(len(kids) + 1)
        yield Case("unknown child", with_value(("updates", 0, "children"), [*kids[:at], name, *kids[at:]]), True,
                   f'updates[0].children[{at}]: no entry named')  # fmt: skip
    for name in kids:
        yield Case("child listed twice", with_value(("updates", 0, "children"), [*kids, name]), True,
                   f"updates[0].children[{len(kids)}]")  # fmt: skip
    yield Case("unknown child", with_value(("updates", 1, "children"), ["nosuch"]), True, "updates[1].children[0]")


def long_chains() -> Iterator[Case]:
    def chain(length: int) -> bytes:
        def edit(tree: dict[str, Any]) -> None:
            names = [f"g{n}" for n in range(length)]
            tree["updates"][0]["children"].append(names[0])
            for n, name in enumerate(names):
                tree["updates"].append({"name": name, "children": names[n + 1 : n + 2]})

        return edited(edit)

    for length in (34, 40, 300, 3000):
        yield Case("long chain", chain(length), True, "levels of children below it")
    yield Case("short chain", chain(20), False)


def odd_fields(rng: random.Random) -> Iterator[Case]:
    for i in rng.sample(range(ENTRIES), 2):
        yield Case("unknown field", with_value(("updates", i, "x-note"), {"kept": [1, "two"]}), False)
    yield Case("unknown field", with_value(("x-top",), "kept"), False)
    yield Case("disabled", with_value(("updates", 2, "enabled"), False), False)
    for key, value in (("name", "x"), ("dry_run", True), ("state_dir", "/")):
        i = rng.randrange(1, ENTRIES)
        yield Case("reserved arg", with_value(("updates", i, "args"), {key: value}), True,
                   f"updates[{i}].args.{key}: reserved")  # fmt: skip
    for script in ("nosuch.sh", "evil\n.sh", "../x.sh", ""):
        yield Case("script", with_value(("updates", 1, "script"), script), True, "updates[1]")
    notify: list[tuple[object, str]] = [
        ({"webhook": {"url": "http://[::1"}}, "notify.webhook.url"),
        ({"ping": "ftp://example.invalid/"}, "notify.ping"),
        ({"bad\nkey": 1}, 'notify["bad\\nkey"]: unknown key'),
        ({"webhook": {"url": "https://example.invalid/", "on": "never"}}, "notify.webhook.on"),
        ({"webhook": {"url": "https://example.invalid/", "timeout": 0}}, "notify.webhook.timeout"),
        ({"metrics_file": "relative.prom"}, "notify.metrics_file"),
        ([], "notify: must be an object"),
    ]
    for value, where in notify:
        yield Case("notify", with_value(("notify",), value), True, where)


def encodings() -> Iterator[Case]:
    text = dump(BASE)
    yield Case("encoding", b"\xef\xbb\xbf" + text, True, "line 1 column 1")
    yield Case("encoding", text.decode().encode("utf-16"), True, "line 1 column 1")
    yield Case("encoding", text.replace(b"Everything", b"Every\xffthing"), True, "not UTF-8 text")
    yield Case("encoding", text.replace(b"Everything", b"Every\xed\xb2\x80thing"), True, "not UTF-8 text")
    yield Case("encoding", text + b"x", True, "Extra data")
    yield Case("encoding", text + b"{}", True, "Extra data")
    yield Case("encoding", b"", True, "line 1 column 1")
    yield Case("encoding", b"\x00" * 8, True, "line 1 column 1")
    yield Case("encoding", text.replace(b"Everything", b"Every\x01thing"), True, "Invalid control character")


def all_cases() -> list[Case]:
    rng = random.Random(SEED)
    return [
        *wrong_types(rng), *deleted_keys(rng), *duplicated_keys(rng), *bad_names(rng), *surrogates(rng),
        *deep_nesting(rng), *constants(rng), *huge_integers(rng), *truncations(rng), *byte_flips(rng),
        *cycles(), *children(rng), *long_chains(), *odd_fields(rng), *encodings(),
    ]  # fmt: skip


CASES = all_cases()


def sample() -> list[tuple[int, Case]]:
    """The first two cases of every kind and every 20th case: for the commands that are slower to run."""
    seen: dict[str, int] = {}
    picked = []
    for number, case in enumerate(CASES):
        seen[case.kind] = seen.get(case.kind, 0) + 1
        if seen[case.kind] <= 2 or number % 20 == 0:
            picked.append((number, case))
    return picked


# -- running them --------------------------------------------------------------------------------------


class Root:
    """A root with stand-ins for the shipped modules and the state directory beside it, not inside."""

    def __init__(self, base: Path) -> None:
        self.path = base / "root"
        self.state = base / "state"
        for name in MODULES:
            directory = self.path / name
            directory.mkdir(parents=True)
            (directory / "__init__.py").write_text("")
            (directory / "index.py").write_text(STAND_IN)
        (self.path / "manifest.json").write_bytes(SHIPPED.read_bytes())
        self.baseline = self.files()

    def files(self) -> dict[str, bytes | None]:
        """Every file's bytes and every directory (None) below the root."""
        return {
            p.relative_to(self.path).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(self.path.rglob("*"))
        }

    def state_record(self) -> tuple[bytes | None, list[str]]:
        """What a run that got going leaves in the state directory: history, module state."""
        history = self.state / "history.jsonl"
        modules = self.state / "modules"
        return (
            history.read_bytes() if history.exists() else None,
            sorted(p.relative_to(modules).as_posix() for p in modules.rglob("*")) if modules.exists() else [],
        )

    def load(self, case: Case) -> None:
        """Put the root back as it was, with the case's manifest."""
        current = self.files()
        for rel in sorted(set(current) - set(self.baseline), reverse=True):
            target = self.path / rel
            target.unlink() if current[rel] is not None else target.rmdir()
        for rel, data in self.baseline.items():
            if data is not None and current.get(rel) != data:
                (self.path / rel).write_bytes(data)
        (self.path / "manifest.json").write_bytes(case.data)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Root:
    made = Root(tmp_path)
    monkeypatch.setenv("UPDATES_STATE_DIR", str(made.state))
    monkeypatch.chdir(made.path)  # the messages then name the manifest as `manifest.json`
    return made


def check(
    root: Root,
    case: Case,
    label: str,
    command: Callable[[], int],
    capsys: pytest.CaptureFixture[str],
    *,
    report_on_stdout: bool = False,
    json_stdout: bool = False,
) -> bool:
    """Run `command` on the case's manifest; assert a clean refusal or a clean run. True when refused."""
    root.load(case)
    before, state_before = root.files(), root.state_record()
    code = command()
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, f"{label}\n{err}"
    assert "this is a bug" not in err, f"{label}\n{err}"
    if code != 2:
        assert not case.must_refuse, f"{label}: accepted (exit {code})\n{err}"
        return False
    lines = err.splitlines()
    if report_on_stdout and not lines:  # `verify` lists every schema problem on stdout instead
        lines = out.splitlines()
        assert lines and all(line.startswith("manifest.json: ") for line in lines), f"{label}\n{out}"
    else:
        assert len(lines) == 1, f"{label}: stderr is not one line:\n{err}"
        assert lines[0].startswith("error: manifest.json: "), f"{label}\n{err}"
        if json_stdout:  # `--json` keeps `| jq` pipelines parsing: the same line as a JSON object
            report = json.loads(out)  # the run report's shape (config/schemas/run-report.schema.json)
            assert (report["ok"], report["error"], report["exit_code"]) == (False, lines[0][7:], 2), label
        else:
            assert out == "", f"{label}: stdout: {out}"
    if case.place is not None:
        assert case.place in lines[0], f"{label}: the place is not named in {lines[0]!r}"
    assert root.files() == before, f"{label}: the root changed"
    assert root.state_record() == state_before, f"{label}: a run got going"
    return True


def test_the_cases_are_many_deterministic_and_cover_every_kind() -> None:
    assert len(CASES) >= 500
    assert [c.data for c in all_cases()] == [c.data for c in CASES]
    kinds = {c.kind for c in CASES}
    assert {"wrong type", "deleted key", "duplicate key", "bad name", "lone surrogate", "deep nesting",
            "NaN/Infinity", "huge integer", "truncated", "byte flip", "cycle", "unknown child",
            "unknown field", "long chain"} <= kinds  # fmt: skip
    assert sum(c.must_refuse for c in CASES) >= 400


def test_run_refuses_every_bad_manifest_cleanly(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    refused = accepted = 0
    for number, case in enumerate(CASES):
        label = case.label(number)
        if check(root, case, label, lambda: index_main(["run"], root=root.path), capsys):
            refused += 1
        else:
            accepted += 1
            # Accepted: a normal run whose stand-ins fail verification (they have no checksum file).
            assert not list(root.state.glob("modules/*/ran")), label
    assert refused >= sum(c.must_refuse for c in CASES) and accepted >= 10


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["verify"]])
def test_status_and_verify_refuse_the_same_way(
    root: Root, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    for number, case in sample():
        check(root, case, case.label(number), lambda: index_main(argv, root=root.path), capsys,
              report_on_stdout=argv == ["verify"], json_stdout="--json" in argv)  # fmt: skip


def test_history_does_not_read_the_manifest(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    for number, case in sample():
        root.load(case)
        before = root.files()
        assert index_main(["history"], root=root.path) == 0, case.label(number)
        out, err = capsys.readouterr()
        assert err == "" and out.startswith("no runs recorded yet"), case.label(number)
        assert root.files() == before


@pytest.mark.parametrize("argv", [["--check"], []])
def test_checksummer_refuses_the_same_way(
    root: Root, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    for number, case in sample():
        check(root, case, case.label(number), lambda: checksummer_main(argv, root=root.path), capsys)


@pytest.mark.parametrize(
    "argv", [["mark-safe", "adblock"], ["tag", "gogs"], ["rollback", "atuin", "--to", "1.0.0"]]
)
def test_rollback_commands_refuse_the_same_way(
    root: Root, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    for number, case in sample():
        check(root, case, case.label(number), lambda: rollback_main(argv, root=root.path), capsys)
