"""`index.py new NAME --github OWNER/REPO [--binary B] [--service UNIT] [--health URL]`.

Contract: `add_new_parser(sub, parents)` registers the command; `cmd_new(paths, opts) -> int` holds the
run lock (exit 75 while a run holds it; an unfinished change a crash left is recovered first, as every
writing command does), writes the module with `utils/scaffold.create_module` (checked, sealed, its manifest
entry disabled), and prints what it made and what to do next. A bad or taken name or a malformed value is
one error line and exit 2, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..lock import run_lock
from ..paths import Paths
from ..recovery import recover
from ..report.history import append_recovery
from ..scaffold import NewModule, create_module


def add_new_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    new = sub.add_parser(
        "new",
        parents=list(parents),
        help="write a module that keeps a GitHub-release tool current (added disabled)",
    )
    new.add_argument("name", metavar="NAME", help="the module's name (lowercase letters, digits, _)")
    add = new.add_argument
    add("--github", required=True, metavar="OWNER/REPO", help="the repository whose releases to follow")
    add("--binary", default="", metavar="B", help="the executable's name (default: the repo's name)")
    add("--service", default="", metavar="UNIT", help="systemd unit to restart around an upgrade")
    add("--health", default="", metavar="URL", help="polled after the restart until it answers HTTP 200")


def cmd_new(paths: Paths, opts: argparse.Namespace) -> int:
    spec = NewModule(opts.name, opts.github, opts.binary, opts.service, opts.health)
    with run_lock(paths):
        append_recovery(paths, recover(paths), command="new")
        directory = create_module(paths, spec)
    sys.stdout.write(
        f"created module {spec.name} in {directory} (sealed; manifest entry added, disabled)\n"
        f"next: review {directory / 'README.md'} and the entry's args, set \"enabled\": true, and commit\n"
    )
    return 0
