"""The README's commands do what it says (issue 13): every `index.py` command it shows runs, in a real
installation with modules of the names it uses, as a real subprocess; its command table matches the parser;
the JSON the commands print follows the shipped schemas. README.md is read when the tests run, so an edit of
the README is checked as it is."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from orchestrator_support import OK_MODULE, add_module, group, install_copy, write_manifest
from updates.utils.orchestrator.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCHEMAS = ROOT / "config" / "schemas"
CORE = ("run", "status", "verify", "history")
# Names the README's examples use; the test installation has a harmless module of each.
EXAMPLE_MODULES = ("adblock", "atuin", "filebrowser", "gogs", "mymodule")
INLINE = re.compile(r"`((?:[A-Z_]+=\S+ )*venv/bin/python index\.py[^`]*)`")
# Commands that need what this installation cannot give (`pull`: a git remote to pull from); their own
# tests run them against one.
NEEDS_MORE = ("pull",)
PLACEHOLDER = re.compile(r"\[|\]|\.\.\.|…|<|>|\bNAME\b|\bPATH\b|\bN\b")


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced block."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    language = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if current is None:
                language, current = stripped[3:].strip(), []
            else:
                blocks.append((language, current))
                current = None
        elif current is not None:
            current.append(stripped)
    return blocks


def shown_commands(text: str) -> list[str]:
    """Every runnable `venv/bin/python index.py ...` the README shows: in sh blocks (each part of an `&&`
    chain, comments dropped) and in inline code; synopses with placeholders are not runnable."""
    found: list[str] = []
    candidates = [m.group(1) for m in INLINE.finditer(text)]
    for language, lines in fenced_blocks(text):
        if language in ("sh", "bash", "shell"):
            for line in lines:
                candidates += [part.split(" #")[0].strip() for part in line.split("&&")]
    for command in candidates:
        if "venv/bin/python index.py" in command and not PLACEHOLDER.search(command) and command not in found:
            found.append(command)
    return found


def command_table(text: str) -> list[str]:
    """The synopsis lines of the first block under "## Command line"."""
    section = text.split("## Command line", 1)[1]
    for _language, lines in fenced_blocks(section):
        rows = [line for line in lines if line.startswith("index.py")]
        if rows:
            return rows
    raise AssertionError("README: no command table under ## Command line")


def test_the_readme_shows_the_commands_an_operator_needs() -> None:
    commands = shown_commands(README.read_text(encoding="utf-8"))
    joined = "\n".join(commands)
    for needed in ("index.py status", "index.py verify", "--dry-run"):
        assert needed in joined, f"README shows no runnable `{needed}`"


def test_the_command_table_matches_the_parser() -> None:
    rows = command_table(README.read_text(encoding="utf-8"))
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    shown: set[str] = set()
    for row in rows:
        words = row.split()
        command = "run" if words[1].startswith("[run]") or words[1].startswith("[") else words[1]
        shown.add(command)
        assert command in subparsers.choices, f"README shows `index.py {command}`, which does not exist"
        known = {o for a in subparsers.choices[command]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", row.split("  ")[0]):
            assert option in known, f"README shows `index.py {command} {option}`, which it does not take"
    assert set(CORE) <= shown, f"the README's command table lacks {set(CORE) - shown}"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = install_copy(tmp_path_factory.mktemp("readme") / "updates")
    for name in EXAMPLE_MODULES:
        add_module(root, name, OK_MODULE)
    write_manifest(root, [group(list(EXAMPLE_MODULES[:4])), *({"name": n} for n in EXAMPLE_MODULES)])
    return root


def schema_for(argv: list[str]) -> str | None:
    if "--json" not in argv:
        return None
    return {"status": "status", "history": None}.get(argv[0], "run-report")


def test_every_command_the_readme_shows_runs(install: Path, tmp_path: Path) -> None:
    commands = shown_commands(README.read_text(encoding="utf-8"))
    assert commands
    env = {**os.environ, "UPDATES_STATE_DIR": str(tmp_path / "state")}
    env.pop("JOURNAL_STREAM", None)
    for command in commands:
        words = shlex.split(command)
        at = words.index("venv/bin/python")
        assignments = dict(w.split("=", 1) for w in words[:at])
        assignments.pop("UPDATES_STATE_DIR", None)  # the test's own state directory, never /var/lib
        argv = words[at + 2 :]
        if argv and argv[0] in NEEDS_MORE:
            continue
        done = subprocess.run([sys.executable, str(install / "index.py"), *argv], cwd=install,
                              env={**env, **assignments}, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert done.returncode == 0, f"README command `{command}` exited {done.returncode}: {done.stderr}"
        assert not [line for line in done.stderr.splitlines() if line.startswith("error:")], (command, done.stderr)
        subcommand = argv[0] if argv and argv[0] in CORE else "run"
        if subcommand in ("status", "verify") and "--json" not in argv:
            assert f"state directory: {tmp_path / 'state'}" in done.stdout, command
        schema = schema_for([subcommand, *argv])
        if schema is not None:
            document = json.loads(done.stdout)
            jsonschema.validate(document, json.loads((SCHEMAS / f"{schema}.schema.json").read_text()))
    # The commands changed nothing outside the installation and the state directory they were given.
    assert not (install / "state").exists()


def test_the_extraction_finds_what_an_operator_would_copy() -> None:
    text = (
        "```sh\n./setup_venv.sh && venv/bin/python index.py run --dry-run   # try\n```\n"
        "Then `venv/bin/python index.py status` and `index.py history [-n N]`.\n"
        "```\nindex.py verify                 check\n```\n"
    )
    assert shown_commands(text) == ["venv/bin/python index.py status", "venv/bin/python index.py run --dry-run"]
