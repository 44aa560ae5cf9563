"""An undo runs to its end even when the module's time runs out during it (real service command, real
health endpoint, the install inside a real `deadline`).

The service command is a shell script standing in for `systemctl`: the unit's state is one line in a file,
written by `start` as "started <what the installed binary's version command prints>". The first stop (the
install's own) is quick; every later one, the undo's, takes 3 s: longer than the 1 s after which the
expired deadline fires again. The health endpoint answers 500 until the service runs the old version again,
so the new version fails its health check, the deadline expires during the health wait, and the undo
starts on a module whose time is already up.

The last test interrupts both installs before each of their lines in turn: whatever the instant, the old
or the new version is installed and running, never a mix and never nothing.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType

import pytest
from pytest_httpserver import HTTPServer
from release_support import install_script, tool_script
from updates.utils.deadline import deadline
from updates.utils.errors import ModuleTimeout
from updates.utils.release.appdir import DirectoryInstall, install_directory
from updates.utils.release.binary import BinaryInstall, ServicePlan, VersionProbe, install_binary
from updates.utils.release.service import HealthCheck, ServiceManager, gogs_database_ok, json_status
from updates.utils.release.version import Version
from werkzeug import Request, Response

_SYSTEMCTL = """#!/bin/sh
# systemctl double for one unit: state in ./state, every call logged in ./calls.
here=$(dirname "$0")
[ "$2" = --quiet ] && set -- "$1" "$3"
echo "$*" >> "$here/calls"
case "$1" in
is-active) [ "$(cut -d' ' -f1 "$here/state")" = started ] ;;
stop)
    if [ -e "$here/stopped-once" ]; then sleep {stop_delay}; fi
    touch "$here/stopped-once"
    echo stopped > "$here/state" ;;
start) echo "started $({version_command})" > "$here/state" ;;
*) exit 2 ;;
esac
"""


class SlowService:
    """The unit, its service command and a health endpoint that is healthy only for `healthy_line`."""

    def __init__(self, root: Path, version_command: list[str], stop_delay: float = 3) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.script = root / "systemctl"
        self.script.write_text(
            _SYSTEMCTL.format(stop_delay=stop_delay, version_command=shlex.join(version_command))
        )
        self.script.chmod(0o755)
        self.healthy_line = ""
        self.any_version_healthy = False

    @property
    def state(self) -> str:
        return (self.root / "state").read_text().strip()

    def calls(self) -> list[str]:
        return (self.root / "calls").read_text().splitlines()

    def start(self) -> None:
        """Start the unit as the test's setup (not one of the calls the test checks)."""
        import subprocess

        subprocess.run([self.script, "start", "unit"], check=True)
        (self.root / "calls").unlink()
        self.healthy_line = self.state

    def serve_health(self, httpserver: HTTPServer, path: str, good_body: str, timeout_s: float = 60) -> HealthCheck:
        def answer(_request: Request) -> Response:
            if self.state == self.healthy_line or (self.any_version_healthy and self.state != "stopped"):
                return Response(good_body, 200)
            return Response("internal error", 500)

        httpserver.expect_request(path).respond_with_handler(answer)
        accept = gogs_database_ok if path.endswith("/healthcheck") else json_status("OK")
        # 60 s: the module's deadline, not the health timeout, is what ends the wait for the new version.
        return HealthCheck(httpserver.url_for(path), accept, timeout_s=timeout_s, interval_s=0.05)

    def plan(self, health: HealthCheck) -> ServicePlan:
        return ServicePlan("unit", ServiceManager((str(self.script),), timeout=30), health)


def test_binary_undo_finishes_after_the_deadline_and_the_timeout_still_propagates(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    target = install_script(tmp_path / "bin" / "filebrowser", tool_script("filebrowser", "2.63.22"))
    old = target.read_bytes()
    service = SlowService(tmp_path / "svc", [str(target), "version"])
    service.start()
    health = service.serve_health(httpserver, "/health", '{"status":"OK"}')
    plan = BinaryInstall(
        target,
        VersionProbe(("version",), r"^File Browser v([^/\s]+)/"),
        tmp_path / "backups",
        service=service.plan(health),
    )
    new = install_script(target.parent / ".filebrowser.new", tool_script("filebrowser", "2.63.23"))

    started = time.monotonic()
    with pytest.raises(ModuleTimeout) as info, deadline(1) as limit:
        install_binary(plan, new, Version(2, 63, 23), Version(2, 63, 22))
    elapsed = time.monotonic() - started

    assert info.value.owner is limit  # the module's own timeout, unchanged
    assert target.read_bytes() == old
    assert service.state == "started File Browser v2.63.22/e8a388f8"
    assert service.calls() == ["is-active unit", "stop unit", "start unit", "stop unit", "start unit"]
    assert 4 <= elapsed < 15  # 1 s until the deadline, 3 s for the undo's stop, then the restart


def test_directory_undo_finishes_after_the_deadline_and_the_timeout_still_propagates(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    install_dir = tmp_path / "gogs"
    old = install_script(install_dir / "gogs", tool_script("gogs", "0.13.4")).read_bytes()
    (install_dir / "custom" / "conf").mkdir(parents=True)
    (install_dir / "custom" / "conf" / "app.ini").write_text("[database]\n")
    (install_dir / "data").mkdir()
    (install_dir / "data" / "gogs.db").write_bytes(b"sqlite \x00 pages")
    new_dir = tmp_path / ".gogs-0.14.3.new"
    install_script(new_dir / "gogs", tool_script("gogs", "0.14.3"))
    service = SlowService(tmp_path / "svc", [str(install_dir / "gogs"), "--version"])
    service.start()
    health = service.serve_health(httpserver, "/healthcheck", "* Database connection: OK\n")
    plan = DirectoryInstall(
        install_dir,
        "gogs",
        VersionProbe(("--version",), r"^Gogs version v?(\S+)"),
        tmp_path / "backups",
        service=service.plan(health),
    )

    started = time.monotonic()
    with pytest.raises(ModuleTimeout) as info, deadline(1) as limit:
        install_directory(plan, new_dir, Version(0, 14, 3), Version(0, 13, 4))
    elapsed = time.monotonic() - started

    assert info.value.owner is limit
    assert (install_dir / "gogs").read_bytes() == old
    assert (install_dir / "custom" / "conf" / "app.ini").read_text() == "[database]\n"
    assert (install_dir / "data" / "gogs.db").read_bytes() == b"sqlite \x00 pages"
    assert service.state == "started Gogs version 0.13.4"
    assert service.calls() == ["is-active unit", "stop unit", "start unit", "stop unit", "start unit"]
    kept = [p.name for p in (tmp_path / "backups").iterdir()]
    assert len(kept) == 1 and kept[0].startswith("gogs-failed-0.14.3-")  # the backup went back in place
    assert 4 <= elapsed < 15


# --- an interruption at every instant -------------------------------------------------------------------


def sh_tool(path: Path, version_line: str) -> bytes:
    """A program whose version command prints `version_line`: the unit below never runs it, and a shell
    script answers the install's version probe much faster than the Python tool doubles."""
    return install_script(path, f"#!/bin/sh\necho '{version_line}'\n".encode()).read_bytes()


class Case:
    """One install, of a directory (gogs) or a binary (filebrowser), whose new version is healthy."""

    def __init__(self, root: Path, kind: str, httpserver: HTTPServer) -> None:
        self.kind = kind
        self.backups = root / "backups"
        if kind == "directory":
            self.installed = root / "gogs"
            self.binary = self.installed / "gogs"
            self.old = sh_tool(self.binary, "Gogs version 0.13.4")
            (self.installed / "custom" / "conf").mkdir(parents=True)
            (self.installed / "custom" / "conf" / "app.ini").write_text("[database]\n")
            self.data = self.installed / "data" / "gogs.db"
            self.new = root / ".gogs-0.14.3.new"
            self.new_bytes = sh_tool(self.new / "gogs", "Gogs version 0.14.3")
            path, body = "/healthcheck", "* Database connection: OK\n"
        else:
            self.installed = self.binary = root / "bin" / "filebrowser"
            self.old = sh_tool(self.binary, "File Browser v2.63.22/e8a388f8")
            self.data = root / "db" / "filebrowser.db"
            self.new = root / "bin" / ".filebrowser.new"
            self.new_bytes = sh_tool(self.new, "File Browser v2.63.23/e8a388f8")
            path, body = "/health", '{"status":"OK"}'
        self.data.parent.mkdir(exist_ok=True)
        self.data.write_bytes(b"the service's database")
        # The unit's state names the bytes it was started from.
        self.service = SlowService(root / "svc", ["sha256sum", str(self.binary)], stop_delay=0)
        self.service.start()
        self.service.any_version_healthy = True
        health = self.service.serve_health(httpserver, f"/{root.name}{path}", body, timeout_s=10)
        probe = VersionProbe(("--version",), r"^(?:Gogs version |File Browser v)([^/\s]+)")
        if kind == "directory":
            self.plan: BinaryInstall | DirectoryInstall = DirectoryInstall(
                self.installed, "gogs", probe, self.backups, service=self.service.plan(health)
            )
        else:
            self.plan = BinaryInstall(
                self.binary, probe, self.backups, service=self.service.plan(health), extra_backups=(self.data,)
            )

    @property
    def function(self) -> Callable[..., object]:
        return install_directory if self.kind == "directory" else install_binary

    def run(self) -> None:
        if self.kind == "directory":
            assert isinstance(self.plan, DirectoryInstall)
            install_directory(self.plan, self.new, Version(0, 14, 3), Version(0, 13, 4))
        else:
            assert isinstance(self.plan, BinaryInstall)
            install_binary(self.plan, self.new, Version(2, 63, 23), Version(2, 63, 22))

    def outcome(self) -> str:
        """"old" or "new", after checking that everything agrees with it: the program, the running version,
        the data, the backups."""
        assert self.binary.is_file(), f"{self.binary} is gone"
        installed = self.binary.read_bytes()
        is_old = installed == self.old
        assert is_old or installed == self.new_bytes
        assert self.service.state == f"started {hashlib.sha256(installed).hexdigest()}  {self.binary}"
        assert self.data.read_bytes() == b"the service's database"
        if self.kind == "directory":
            assert (self.installed / "custom" / "conf" / "app.ini").read_text() == "[database]\n"
            # The previous directory is either back in place or kept as the one backup, never both or lost.
            previous = list(self.backups.glob("gogs-0.13.4-*"))
            assert len(previous) == (0 if is_old else 1)
        return "old" if is_old else "new"


def run_traced(code: CodeType, action: Callable[[], object], interrupt_at: int = 0) -> int:
    """Run `action`, counting the line events of `code`'s frames; with `interrupt_at`, raise KeyboardInterrupt
    in that frame just before its n-th line runs: what a signal landing at that instant does, placed exactly
    where a real one only lands by chance. Returns the count."""
    seen = [0]

    def local(frame: FrameType, event: str, arg: object) -> object:
        if event == "line":
            seen[0] += 1
            if seen[0] == interrupt_at:
                raise KeyboardInterrupt(f"line {frame.f_lineno}")
        return local

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: local if frame.f_code is code else None)
    try:
        action()
    finally:
        sys.settrace(previous)
    return seen[0]


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_an_interruption_at_any_line_leaves_old_or_new_never_a_mix(
    tmp_path: Path, httpserver: HTTPServer, kind: str
) -> None:
    clean = Case(tmp_path / "clean", kind, httpserver)
    code = clean.function.__code__
    count = run_traced(code, clean.run)
    assert clean.outcome() == "new"
    outcomes = []
    for n in range(1, count + 1):
        case = Case(tmp_path / f"at{n}", kind, httpserver)
        with pytest.raises(KeyboardInterrupt):
            run_traced(code, case.run, interrupt_at=n)
        outcomes.append(case.outcome())
    # Interrupted early the old version stays, interrupted after the health check the new one does; the
    # switch from one to the other happens once, at one line.
    assert outcomes == sorted(outcomes, key=["old", "new"].index)
    assert outcomes[0] == "old" and outcomes[-1] == "new"
